"""Write results/looks_like.md: what the shipped artifact says a photo looks like when it is not
one of the ten breeds, measured on photos no threshold was set on.

    flock /tmp/breedrec-cpu.lock python -m training.reports.looks_like [--artifact PATH]

Through the service runtime (the artifact's own open-set and looks_like rules), on ``ood/dogs``
(other breeds named right, by ``training.lab.ood_breeds``; breeds ImageNet lacks counted apart),
``ood/cats`` (called cats), ``unseen`` and ``web`` (photos of the ten: how often they are said
to look like something else, and the ten's right-breed share, which looks_like never changes)
and, where people sent corrections naming other breeds, those photos. Model outputs are the
lab's cached ones (``training.lab.evaluate.model_outputs``): seconds after the first run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import atomic_write
from model.backends import ArtifactError, load_backend
from model.defaults import SHIPPED_MODEL
from model.looks_like import OTHER_BY_WNID, PLAIN_CERTAINTY
from model.metadata import ModelMetadata
from training.lab.answers import read_answers
from training.lab.data import has_feedback, load_feedback_others
from training.lab.evaluate import model_outputs, wilson
from training.lab.looks_like_scoring import (
    TARGETS,
    dog_breed_rows,
    set_figures,
    targets_missed,
)
from training.lab.open_set_data import PhotoSet, load_sets
from training.lab.paths import REPO_ROOT, data_root
from training.lab.pretrained_reference import PretrainedReference, reference_archs
from training.lab.weights import WeightsUnavailableError
from training.reports.markdown import table

log = logging.getLogger(__name__)
SETS = ("unseen", "web", "cats", "dogs")
SET_NAMES = {
    "unseen": "`unseen` (ten breeds, ImageNet validation)",
    "web": "`web` (ten breeds, web photos)",
    "cats": "`ood/cats`",
    "dogs": "`ood/dogs` (65 other breeds)",
    "feedback_other": "people's corrections naming another class",
}


def pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.1f}%"  # nan: no photos


def share_ci(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{pct(hits / n) if n else '–'} [{pct(low)}, {pct(high)}] of {n}"


def _share_row(what: str, share: float, n: int, target: str = "") -> list[str]:
    """A headline row: a share of ``n`` photos with its confidence interval, and its target."""
    return [what, share_ci(round(share * n), n), target]


def _headline(figures: dict[str, dict[str, Any]], meta: ModelMetadata) -> list[list[str]]:
    rows = []
    dogs = figures.get("dogs")
    if dogs and dogs["mapped"]:
        rows.append(
            _share_row(
                "other breeds named right (`ood/dogs`, breeds ImageNet has)",
                dogs["named_right_mapped"],
                dogs["mapped"],
                f"≥ {TARGETS['dogs_named_right']:.0%}",
            )
        )
    cats = figures.get("cats")
    if cats:
        rows.append(
            _share_row(
                "cats said to be cats (`ood/cats`)",
                cats["cat"],
                cats["n"],
                f"≥ {TARGETS['cats_called_cats']:.0%}",
            )
        )
    people = figures.get("feedback_other")
    if people:
        rows.append(
            _share_row(
                "classes people named, named right (their corrections)",
                people["named_right"],
                people["n"],
            )
        )
    before = (meta.metrics.get("open_set") or {}).get("verdicts", {})
    for name in ("unseen", "web"):
        row = figures.get(name)
        if not row:
            continue
        rows.append(
            _share_row(
                f"looks_like on photos of the ten (`{name}`)",
                row["looks_like"],
                row["n"],
                f"≤ {TARGETS['genuine_looks_like_max']:.0%}",
            )
        )
        was = before.get(name, {}).get("named_right")
        note = f" (open-set calibration: {pct(was)})" if was is not None else ""
        rows.append(
            [f"right breed named (`{name}`), unchanged", f"{pct(row['named_right'])}{note}", ""]
        )
    return rows


def _set_rows(figures: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            SET_NAMES.get(name, name),
            str(row["n"]),
            pct(row["looks_like"]),
            pct(row["plain"]),
            pct(row["on_unknown"]),
            pct(row["on_unsure"]),
            pct(row["dog"]),
            pct(row["wild"]),
            pct(row["cat"]),
        ]
        for name, row in figures.items()
        if row["n"]
    ]


def _ceiling_rows(ceilings: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    return [
        [
            network,
            pct(figures.get("dogs", {}).get("best_right_mapped", float("nan"))),
            pct(figures.get("cats", {}).get("best_cat", float("nan"))),
        ]
        for network, figures in ceilings.items()
    ]


def _ceiling_lines(ceilings: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """How much the rule could name at most, for the artifact and the pretrained networks."""
    dogs_best = max(f.get("dogs", {}).get("best_right_mapped", 0.0) for f in ceilings.values())
    lines = [
        "",
        "## What the network could name at most",
        "",
        "Share of the photos whose ImageNet head's best class of the table (other breeds, "
        "wild canids, cats) is the right one, whatever the verdict and margin: the most a "
        "rule that names the head's best class can get right. The pretrained networks are the "
        "artifact's architecture and the lab's others with their ImageNet weights and no breed "
        "training, each at its own input size (`training/lab/pretrained_reference.py`).",
        "",
        table(
            ["network", "other breeds: best class right", "cats: best class a cat"],
            _ceiling_rows(ceilings),
            "lrr",
        ),
    ]
    if dogs_best < TARGETS["dogs_named_right"]:
        lines += [
            "",
            f"Other breeds named right ≥ {TARGETS['dogs_named_right']:.0%} is above what "
            "any of these networks' ImageNet heads names even when every answer carries it.",
        ]
    return lines


def _class_names(wnids: tuple[str, ...]) -> str:
    return " / ".join(OTHER_BY_WNID[w].name for w in wnids) if wnids else "none in ImageNet"


def _cat_rows(meta: ModelMetadata, outputs: np.ndarray, photos: PhotoSet) -> list[list[str]]:
    answers = read_answers(outputs, meta)
    breeds = photos.groups or ()
    rows = []
    for breed in sorted(set(breeds)):
        picked = [o for b, o in zip(breeds, answers.looks_like, strict=True) if b == breed]
        called = sum(o is not None and o.kind == "cat" for o in picked)
        other = Counter(o.name for o in picked if o is not None and o.kind != "cat")
        instead = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in other.most_common())
        rows.append([breed.replace("_", " "), str(len(picked)), str(called), instead])
    return rows


def feedback_set() -> PhotoSet | None:
    """People's corrections that name another breed, wild canid or cat, if any."""
    if not has_feedback():
        return None
    others = load_feedback_others()
    if not others:
        return None
    return PhotoSet(
        "feedback_other", tuple(p for p, _ in others), groups=tuple(w for _, w in others)
    )


def render(
    artifact: Path,
    meta: ModelMetadata,
    figures: dict[str, dict[str, Any]],
    breeds: list[dict[str, Any]],
    cats: list[list[str]],
    ceilings: dict[str, dict[str, dict[str, Any]]],
) -> str:
    rule = meta.looks_like
    entry = meta.metrics.get("looks_like") or {}
    missed = targets_missed(figures)
    try:
        shown = artifact.resolve().relative_to(REPO_ROOT)
    except ValueError:
        shown = artifact
    lines = [
        "# What else a photo looks like: the shipped artifact's figures",
        "",
        f"Written by `python -m training.reports.looks_like` for `{shown}` ({meta.name} "
        f"{meta.version}), through the service runtime: every figure is of the answers the "
        "service gives. What `looks_like` is and how its rule was made: "
        "[docs/open-set.md](../docs/open-set.md#what-else-it-looks-like). No threshold was set "
        "on any photo below.",
        "",
        f"Rule in the artifact: `{rule.method}`, unknown answers at a margin ≥ "
        f"{rule.unknown_margin:g}, unsure answers at a margin ≥ "
        + (f"{rule.unsure_margin:.3f}" if rule.unsure_margin is not None else "never")
        + f" ({entry.get('threshold_rule', 'no calibration recorded')}).",
        "",
        "## The promises",
        "",
        table(["figure", "share [95% CI]", "target"], _headline(figures, meta), "lrl"),
        "",
        "Targets met." if not missed else f"**Targets missed**: {', '.join(missed)}.",
        "",
        "## Per photo set",
        "",
        "Share of the photos whose answer carries `looks_like`; said plainly, not with a doubt "
        f"(a named breed or canid at ≥ {PLAIN_CERTAINTY:.0%} of the softmax, a cat when all "
        "cats together are); "
        "on an `unknown` or an `unsure` answer (never on a `sure` one); and of which kind.",
        "",
        table(
            [
                "photos",
                "n",
                "looks_like",
                "said plainly",
                "on unknown",
                "on unsure",
                "dog",
                "wild",
                "cat",
            ],
            _set_rows(figures),
            "lrrrrrrrr",
        ),
        *_ceiling_lines(ceilings),
    ]
    dogs = figures.get("dogs")
    if dogs:
        nan = float("nan")
        best, sure = dogs.get("best_right_mapped", nan), dogs.get("sure_mapped", nan)
        lines += [
            "",
            "## Other dog breeds (`ood/dogs`), per breed",
            "",
            f"{dogs['mapped']} photos are of a breed ImageNet has (its classes below, "
            "`training/lab/ood_breeds.py`); named right = `looks_like` names one of them. "
            f"The ImageNet head's best class outside the ten is right for {pct(best)} of them, "
            f"whatever the verdict: what the rule could name at most; {pct(sure)} are answered "
            "`sure` of one of the ten (a `sure` answer never carries `looks_like`), and an "
            f"`unsure` one carries it only past its margin. The {dogs['unmapped']} photos of "
            f"breeds ImageNet lacks are counted apart: {pct(dogs.get('dog_unmapped', nan))} of "
            "them are said to look like some other dog breed.",
            "",
            table(
                ["folder", "ImageNet class", "photos", "named right", "carried", "named most"],
                [
                    [
                        b["folder"],
                        _class_names(b["classes"]),
                        str(b["photos"]),
                        str(b["named_right"]) if b["classes"] else "–",
                        str(b["carried"]),
                        b["most_named"],
                    ]
                    for b in breeds
                ],
                "llrrrl",
            ),
        ]
    if cats:
        lines += [
            "",
            "## Cats (`ood/cats`), per breed",
            "",
            table(["breed", "photos", "called a cat", "called instead"], cats, "lrrl"),
        ]
    return "\n".join(lines) + "\n"


def run(artifact: Path, out: Path, data_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    backend = load_backend(artifact, 2)
    meta = backend.metadata
    sets = load_sets(data_dir or data_root(), [c.wnid for c in meta.classes], 1)
    chosen = {name: sets[name] for name in SETS if name in sets}
    people = feedback_set()
    if people is not None:
        chosen["feedback_other"] = people
    outputs = {name: model_outputs(artifact, list(s.paths), backend) for name, s in chosen.items()}
    figures = {name: set_figures(meta, outputs[name], s) for name, s in chosen.items()}
    if people is not None:
        named = read_answers(outputs["feedback_other"], meta).looks_like
        right = [o is not None and o.wnid == w for o, w in zip(named, people.groups, strict=True)]
        figures["feedback_other"]["named_right"] = float(np.mean(right))
    breeds = dog_breed_rows(meta, outputs["dogs"], chosen["dogs"]) if "dogs" in chosen else []
    cats = _cat_rows(meta, outputs["cats"], chosen["cats"]) if "cats" in chosen else []
    ceilings = {"shipped (fine-tuned)": figures, **_pretrained_figures(meta, chosen)}
    with atomic_write(out) as part:
        part.write_text(render(artifact, meta, figures, breeds, cats, ceilings))
    return figures


def _pretrained_figures(
    meta: ModelMetadata, chosen: dict[str, PhotoSet]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The ceilings of the artifact's architecture and the lab's others, before fine-tuning
    (an architecture without local weights gets no row)."""
    ceilings = {}
    for arch in reference_archs(meta):
        try:
            reference = PretrainedReference(meta, arch)
        except WeightsUnavailableError as exc:
            log.warning("no pretrained reference row: %s", exc)
            continue
        figures = {}
        for name in ("dogs", "cats"):
            if name in chosen:
                rows = model_outputs(reference.weights, list(chosen[name].paths), reference)
                figures[name] = set_figures(meta, rows, chosen[name])
        size = reference.metadata.preprocessing.input_size
        ceilings[f"{arch} pretrained, before fine-tuning ({size} px)"] = figures
    return ceilings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "looks_like.md")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        figures = run(args.artifact, args.out, args.data_dir)
    except (ArtifactError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"looks_like report failed: {exc}", file=sys.stderr)
        return 1
    for name, row in figures.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    missed = targets_missed(figures)
    print("targets met" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
