"""Whether the shipped network may take a smaller input: its speed/accuracy curve by input size.

The shipped fp32 TorchScript artifact runs at 160, 176, 192, 208 and 224 px (its ONNX copy is
static at 224; the TorchScript graph computes its "same" padding from the input, and the
network ends in a global pool, so any size is a valid input). Each size keeps the artifact's
own ``Preprocessing`` with the resize scaled by the same ratio as at 224 (256/224). Answers are
read as the service gives them (``training.lab.answers``: prior and open-set rule, threshold
unchanged), on ``unseen``, ``web`` and the cats and other dogs of ``ood/``, each paired with
the shipped size. Model time per photo is measured at batch 1 on one thread.

The rule is fixed before any figure is read (``RULE``): a smaller size ships only if, on both
``unseen`` and ``web``, its top-1 is not lower than the shipped size's and McNemar's exact test
against it gives p >= 0.05, and the "unknown" shares on cats and on other dogs each drop by at
most 1 pt. Of the sizes that pass, the smallest would ship; if none does, the shipped size
stays. The command only reports the verdict; it changes no artifact.

    flock /tmp/breedrec-cpu.lock python -m training.reports.resolution
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import math
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from model.backends import Backend, TorchScriptBackend
from model.metadata import ModelMetadata, Preprocessing
from model.preprocessing import preprocess_bytes
from training.lab.answers import Answers, read_answers
from training.lab.distributed import hardware
from training.lab.evaluate import model_outputs
from training.lab.open_set_data import load_sets
from training.lab.paths import REPO_ROOT, data_root
from training.reports.markdown import table
from training.timing import time_calls

log = logging.getLogger(__name__)

ARTIFACT = REPO_ROOT / "model" / "efficientnet_lite0_imagewoof.pt"
SIZES = (160, 176, 192, 208, 224)
LABELLED = ("unseen", "web")  # judged on the breed named
OUT_OF_SET = ("cats", "dogs")  # judged on the verdict: right = "unknown"
COMMAND = "flock /tmp/breedrec-cpu.lock python -m training.reports.resolution"


@dataclass(frozen=True)
class Rule:
    """What a smaller input must keep of the shipped size's answers to ship instead of it."""

    min_p: float = 0.05  # McNemar's exact p on correctness, on each of ``accuracy_splits``
    max_unknown_drop_pt: float = 1.0  # "unknown" share on each of ``unknown_splits``
    accuracy_splits: tuple[str, ...] = LABELLED
    unknown_splits: tuple[str, ...] = OUT_OF_SET


RULE = Rule()


@dataclass(frozen=True)
class Paired:
    """One size on one split, against the shipped size on the same photos (shares in %)."""

    split: str
    size: int
    photos: int
    top1: float | None  # labelled splits only
    named_right: float | None  # right breed AND not refused; labelled splits only
    unknown: float  # refused share (= "unknown" on ood)
    top1_agreement: float
    verdict_agreement: float
    only_shipped_right: int  # McNemar's b: right at the shipped size, wrong at this one
    only_this_right: int  # McNemar's c
    p_value: float


def scaled_preprocessing(spec: Preprocessing, size: int) -> Preprocessing:
    """``spec`` at input ``size``, the resize scaled by the artifact's own resize/input ratio."""
    resize = round(size * spec.resize_size / spec.input_size)
    return dataclasses.replace(spec, input_size=size, resize_size=resize)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs ``b``, ``c`` under Binomial(b+c, ½)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def _pct(values: np.ndarray) -> float:
    return round(float(np.mean(values)) * 100, 2) if len(values) else 0.0


def pair(
    split: str, size: int, got: Answers, shipped: Answers, labels: np.ndarray | None
) -> Paired:
    """This size's answers against the shipped size's; correctness is the breed on labelled
    splits and the "unknown" verdict on out-of-set photos."""
    if labels is not None:
        right, right_shipped = got.top1 == labels, shipped.top1 == labels
    else:
        right, right_shipped = ~got.known, ~shipped.known
    b = int((right_shipped & ~right).sum())
    c = int((~right_shipped & right).sum())
    return Paired(
        split=split,
        size=size,
        photos=len(got.known),
        top1=_pct(right) if labels is not None else None,
        named_right=_pct(right & got.known) if labels is not None else None,
        unknown=_pct(~got.known),
        top1_agreement=_pct(got.top1 == shipped.top1),
        verdict_agreement=_pct(got.known == shipped.known),
        only_shipped_right=b,
        only_this_right=c,
        p_value=mcnemar_exact_p(b, c),
    )


def passes(size_rows: dict[str, Paired], shipped_rows: dict[str, Paired], rule: Rule) -> bool:
    """Whether one size keeps what ``rule`` asks of the shipped size (rows keyed by split)."""
    for split in rule.accuracy_splits:
        got, ref = size_rows[split], shipped_rows[split]
        if got.top1 is None or ref.top1 is None or got.top1 < ref.top1:
            return False
        if got.p_value < rule.min_p:
            return False
    return all(
        size_rows[s].unknown >= shipped_rows[s].unknown - rule.max_unknown_drop_pt
        for s in rule.unknown_splits
    )


def verdict(rows: list[Paired], shipped: int, rule: Rule = RULE) -> int:
    """The size that ships by ``rule``: the smallest that passes, else ``shipped``."""
    by_size: dict[int, dict[str, Paired]] = {}
    for row in rows:
        by_size.setdefault(row.size, {})[row.split] = row
    passing = [
        size
        for size in sorted(by_size)
        if size < shipped and passes(by_size[size], by_size[shipped], rule)
    ]
    return passing[0] if passing else shipped


class _AtSize:
    """The artifact's backend with its preprocessing set to another input size."""

    def __init__(self, backend: Backend, size: int) -> None:
        spec = scaled_preprocessing(backend.metadata.preprocessing, size)
        self.metadata = dataclasses.replace(backend.metadata, preprocessing=spec)
        self.name = backend.name
        self._backend = backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._backend.run(batch)


def measure_curve(
    artifact: Path, root: Path, sizes: tuple[int, ...] = SIZES
) -> tuple[list[Paired], dict[int, float], ModelMetadata]:
    """Paired figures for every size and split, and model ms per photo (batch 1, one thread)."""
    backend = TorchScriptBackend(artifact, threads=None)
    meta = backend.metadata
    shipped = meta.preprocessing.input_size
    sets = load_sets(root, [c.wnid for c in meta.classes])
    splits = {name: sets[name] for name in (*LABELLED, *OUT_OF_SET) if name in sets}
    answers: dict[int, dict[str, Answers]] = {}
    for size in sorted({*sizes, shipped}):
        at_size = _AtSize(backend, size)
        answers[size] = {
            name: read_answers(model_outputs(artifact, list(s.paths), at_size), meta)
            for name, s in splits.items()
        }
    rows = [
        pair(name, size, answers[size][name], answers[shipped][name], _labels(s.labels))
        for size in sorted(answers)
        for name, s in splits.items()
    ]
    photo = next(iter(splits.values())).paths[0].read_bytes()
    return rows, model_ms(artifact, photo, sorted(answers)), meta


def _labels(labels: tuple[int, ...] | None) -> np.ndarray | None:
    return np.asarray(labels) if labels is not None else None


def model_ms(
    artifact: Path, photo: bytes, sizes: list[int], rounds: int = 5, repeats: int = 20
) -> dict[int, float]:
    """Median model time per photo in ms at each size: batch 1, one thread, after warm-up.

    The sizes take turns for ``rounds`` rounds, so a slow spell of the shared machine falls on
    all of them alike rather than on one.
    """
    backend = TorchScriptBackend(artifact, threads=1)
    spec = backend.metadata.preprocessing
    batches = {
        size: preprocess_bytes(photo, scaled_preprocessing(spec, size))[None] for size in sizes
    }
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    for turn in range(rounds):
        for size, batch in batches.items():
            seconds[size] += time_calls(
                partial(backend.run, batch), repeats=repeats, warmup=10 if turn == 0 else 2
            )
    return {size: round(statistics.median(times) * 1000, 2) for size, times in seconds.items()}


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}%"


def render(
    rows: list[Paired],
    ms: dict[int, float],
    meta: ModelMetadata,
    chosen: int,
    artifact: Path,
    plot: str,
) -> str:
    """The report page: how it was made, the rule, the table and the verdict."""
    shipped = meta.preprocessing.input_size
    ratio = f"{meta.preprocessing.resize_size}/{shipped}"
    header = [
        "size",
        "resize",
        "ms/photo",
        "split",
        "photos",
        "top-1",
        "named right",
        "unknown",
        f"top-1 = {shipped}",
        f"verdict = {shipped}",
        "b / c",
        "McNemar p",
    ]
    body = [
        [
            r.size,
            scaled_preprocessing(meta.preprocessing, r.size).resize_size,
            f"{ms[r.size]:.2f}",
            r.split,
            r.photos,
            _share(r.top1),
            _share(r.named_right),
            _share(r.unknown),
            _share(r.top1_agreement),
            _share(r.verdict_agreement),
            f"{r.only_shipped_right} / {r.only_this_right}",
            f"{r.p_value:.3g}",
        ]
        for r in rows
    ]
    outcome = (
        f"**{chosen} px passes the rule**: it would ship instead of {shipped} px."
        if chosen != shipped
        else f"**No smaller size passes the rule: {shipped} px stays.**"
    )
    return f"""# Input resolution of the shipped network (`{artifact.name}`)

Generated by `{COMMAND}` on {hardware()}, {datetime.date.today().isoformat()}.

The fp32 TorchScript artifact at each input size; resize = size × {ratio}, rounded; answers
as the service gives them (prior, open-set rule, threshold unchanged); model time per photo at
batch 1, one thread (median of 100 calls, the sizes taking turns).

Rule, fixed before the run (`training/reports/resolution.py`): a smaller size ships only if on
both `unseen` and `web` its top-1 is not lower than {shipped} px's and McNemar's exact test
against {shipped} px gives p ≥ {RULE.min_p}, and the "unknown" shares on cats and on other dogs
each drop by at most {RULE.max_unknown_drop_pt:g} pt; the smallest size that passes would ship.
This report changes no artifact.

{outcome}

{table(header, body, ["r", "r", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r"])}

`named right`: right breed and not refused. `unknown`: refused share (on cats and other dogs,
the right answer). b / c: photos right only at {shipped} px / only at this size (correct breed
on `unseen` and `web`, "unknown" on cats and dogs), the pairs McNemar's test counts.

![accuracy vs model time]({plot})
"""


def plot_curve(rows: list[Paired], ms: dict[int, float], path: Path) -> None:
    """Top-1 and "unknown" shares against model ms per photo, one line per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for split in dict.fromkeys(r.split for r in rows):
        mine = sorted((r for r in rows if r.split == split), key=lambda r: r.size)
        values = [r.top1 if r.top1 is not None else r.unknown for r in mine]
        label = f"{split} top-1" if mine[0].top1 is not None else f"{split} unknown"
        ax.plot([ms[r.size] for r in mine], values, marker="o", label=label)
        for r, value in zip(mine, values, strict=True):
            offset = {"xytext": (3, 3), "textcoords": "offset points"}
            ax.annotate(str(r.size), (ms[r.size], value), fontsize=7, **offset)
    ax.set_xlabel("model ms per photo (batch 1, one thread)")
    ax.set_ylabel("%")
    ax.set_title("Shipped network by input size (px)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=ARTIFACT)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "resolution.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows, ms, meta = measure_curve(args.artifact, data_root())
    chosen = verdict(rows, meta.preprocessing.input_size)
    plot = args.out.with_suffix(".png")
    plot_curve(rows, ms, plot)
    args.out.write_text(render(rows, ms, meta, chosen, args.artifact, plot.name))
    log.info("wrote %s and %s; size that ships by the rule: %d px", args.out, plot, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
