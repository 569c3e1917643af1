"""Lab command: measure "not one of my breeds" scorers on an artifact and calibrate its rule.

    python -m training.release.open_set --artifact model/efficientnet_lite0_imagewoof.pt [--write]

For every candidate scorer (``model.open_set.SCORERS`` with a small parameter grid fixed in
advance) it computes scores on Imagewoof train, Imagewoof val, ood/cats and ood/dogs, and
sets the threshold by a rule fixed in advance: the ``--target-val-refusal`` quantile of the
TRAIN scores (never the OOD pass rate). The method is chosen by measurement on one half of
the OOD breeds (the "selection" half; the other half is reported as held out): highest mean
of cats-refused and dogs-refused at that threshold, AUROC(train vs OOD) as tie-break.
``--threshold-from val-crossfit`` is for models fine-tuned on train (inflated train scores):
val quantile, with val figures measured 2-fold cross-fitted. ``--write`` stores the rule and
its figures in the artifact's metadata in place, leaving the weights untouched (verified).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.backends import ArtifactError, load_backend
from model.metadata import ModelMetadata, OpenSetRule
from model.open_set import known_scores
from training.lab.answers import read_answers
from training.lab.evaluate import model_outputs
from training.lab.paths import REPO_ROOT, data_root
from training.release.artifact_metadata import rewrite_metadata
from training.release.open_set_data import PhotoSet, load_sets

log = logging.getLogger(__name__)

# (method, params) tried by default; the grid is fixed here, before any measurement.
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("max_softmax", {}),
    ("max_logit", {}),
    ("energy", {}),
    ("imagenet_breed_mass", {"temperature": 0.5}),
    ("imagenet_breed_mass", {}),
    ("imagenet_breed_mass", {"temperature": 2.0}),
    ("imagenet_breed_margin", {}),
    ("breed_mass_x_softmax", {}),
)
NEEDS_IMAGENET = {"imagenet_breed_mass", "imagenet_breed_margin", "breed_mass_x_softmax"}
THRESHOLD_SOURCES = ("train", "val-crossfit")
TARGETS = {"cats_refused": 0.90, "dogs_refused": 0.80, "val_refused_max": 0.03}


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known photo > score of an unknown one), ties counted half (Mann-Whitney)."""
    if len(known) == 0 or len(unknown) == 0:
        return float("nan")
    both = np.concatenate([known, unknown])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.arange(1, len(both) + 1)
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # average ranks of tied values
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    known_ranks = ranks[: len(known)].sum()
    return float((known_ranks - len(known) * (len(known) + 1) / 2) / (len(known) * len(unknown)))


def quantile_threshold(scores: np.ndarray, target: float) -> float:
    """Threshold that refuses ``target`` of these photos (scores strictly below it)."""
    ordered = np.sort(scores)
    return float(ordered[min(int(target * len(ordered)), len(ordered) - 1)])


def crossfit_refused(scores: np.ndarray, target: float) -> np.ndarray:
    """Each half of the photos (alternate ones) refused at the threshold set on the other half.

    An honest refusal estimate when the served threshold is set on these same photos.
    """
    folds = np.arange(len(scores)) % 2
    refused = np.zeros(len(scores), dtype=bool)
    for fold in (0, 1):
        threshold = quantile_threshold(scores[folds != fold], target)
        refused[folds == fold] = scores[folds == fold] < threshold
    return refused


def split_by_breed(groups: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Alternate OOD breeds (sorted by name) into a selection half and a held-out half."""
    names = sorted(set(groups))
    selection = {n for i, n in enumerate(names) if i % 2 == 0}
    mask = np.array([g in selection for g in groups])
    return mask, ~mask


@dataclass
class Evaluation:
    """Figures for one scorer at its train-quantile threshold."""

    method: str
    params: dict[str, Any]
    threshold: float
    figures: dict[str, float] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.method}({extra})" if extra else self.method

    @property
    def selection_key(self) -> tuple[float, float]:
        f = self.figures
        return ((f["cats_refused_sel"] + f["dogs_refused_sel"]) / 2, f["auroc_train_vs_ood_sel"])


def evaluate(
    meta: ModelMetadata,
    method: str,
    params: dict[str, Any],
    outputs: dict[str, np.ndarray],
    sets: dict[str, PhotoSet],
    target: float,
    threshold_from: str = "train",
) -> Evaluation:
    """Score every set with the serving code path and compute the report's figures.

    Scores come from the runtime's scorer (a threshold is set on them); the val accuracy
    reads the served answers (``read_answers``) under the artifact's own metadata.

    ``threshold_from="val-crossfit"`` (for models fine-tuned on train, whose train scores are
    inflated): the threshold is the val quantile, and val refusal/accuracy are measured 2-fold
    cross-fitted so no val photo is judged by a threshold it helped set.
    """
    trial = dataclasses.replace(meta, open_set=OpenSetRule(method=method, params=params))
    scores = {name: known_scores(out, trial) for name, out in outputs.items()}
    source = "val" if threshold_from == "val-crossfit" else "train"
    threshold = quantile_threshold(scores[source], target)
    refused = {name: s < threshold for name, s in scores.items()}
    if source == "val":
        refused["val"] = crossfit_refused(scores["val"], target)
    sel = {k: split_by_breed(sets[k].groups or ())[0] for k in ("cats", "dogs")}
    ood_all = np.concatenate([scores["cats"], scores["dogs"]])
    ood_sel = np.concatenate([scores["cats"][sel["cats"]], scores["dogs"][sel["dogs"]]])
    predicted = read_answers(outputs["val"], meta).top1
    correct = predicted == np.asarray(sets["val"].labels)
    accepted = ~refused["val"]
    figures = {
        "train_refused": float(refused["train"].mean()),
        "val_refused": float(refused["val"].mean()),
        "cats_refused": float(refused["cats"].mean()),
        "dogs_refused": float(refused["dogs"].mean()),
        "cats_refused_sel": float(refused["cats"][sel["cats"]].mean()),
        "dogs_refused_sel": float(refused["dogs"][sel["dogs"]].mean()),
        "cats_refused_held_out": float(refused["cats"][~sel["cats"]].mean()),
        "dogs_refused_held_out": float(refused["dogs"][~sel["dogs"]].mean()),
        "auroc_val_vs_cats": auroc(scores["val"], scores["cats"]),
        "auroc_val_vs_dogs": auroc(scores["val"], scores["dogs"]),
        "auroc_val_vs_ood": auroc(scores["val"], ood_all),
        "auroc_train_vs_ood_sel": auroc(scores["train"], ood_sel),
        **{
            f"{name}_refused": float(refused[name].mean())
            for name in ("unseen", "web")
            if name in refused
        },
        "val_accuracy": float(correct.mean()),
        "val_accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else 0.0,
    }
    return Evaluation(method, dict(params), threshold, figures, scores)


def candidates_for(meta: ModelMetadata, method: str | None) -> list[tuple[str, dict[str, Any]]]:
    chosen = [c for c in CANDIDATES if method in (None, c[0])] or [(method or "", {})]
    if meta.outputs.imagenet is None:
        chosen = [c for c in chosen if c[0] not in NEEDS_IMAGENET]
    if not chosen:
        raise ValueError(f"method {method!r} needs ImageNet logits, which this artifact lacks")
    return chosen


def choose(evaluations: list[Evaluation]) -> Evaluation:
    return max(evaluations, key=lambda e: e.selection_key)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


TABLE_COLUMNS = (
    ("scorer", None),
    ("threshold", None),
    ("val refused", "val_refused"),
    ("unseen refused", "unseen_refused"),
    ("web refused", "web_refused"),
    ("cats refused", "cats_refused"),
    ("other dogs refused", "dogs_refused"),
    ("AUROC val/cats", "auroc_val_vs_cats"),
    ("AUROC val/dogs", "auroc_val_vs_dogs"),
    ("AUROC val/OOD", "auroc_val_vs_ood"),
    ("val acc accepted (all)", "val_accuracy_accepted"),
)


def table_rows(evaluations: list[Evaluation], chosen: Evaluation) -> list[list[str]]:
    rows = []
    for e in evaluations:
        f = e.figures
        mark = " *" if e is chosen else ""
        row = [e.label + mark, f"{e.threshold:.4g}"]
        for _, key in TABLE_COLUMNS[2:]:
            if key is None:
                continue
            if key not in f:
                row.append("–")
            elif key.startswith("auroc"):
                row.append(f"{f[key]:.4f}")
            elif key == "val_accuracy_accepted":
                row.append(f"{pct(f[key])} ({pct(f['val_accuracy'])})")
            else:
                row.append(pct(f[key]))
        rows.append(row)
    return rows


def markdown_report(
    artifact: Path, meta: ModelMetadata, evaluations: list[Evaluation], chosen: Evaluation, args
) -> str:
    header = [name for name, _ in TABLE_COLUMNS]
    rule = threshold_rule(args.target_val_refusal, args.threshold_from, args.held_out_every)
    lines = [
        f"# Open-set figures: `{artifact.name}` ({meta.name} {meta.version})",
        "",
        "Generated by `python -m training.release.open_set --artifact "
        f"{artifact} --target-val-refusal {args.target_val_refusal} "
        f"--threshold-from {args.threshold_from}`.",
        "",
        f"Threshold rule (fixed in advance): the {rule} "
        "of each scorer; photos scoring below it are refused. The scorer "
        "is chosen by the mean of cats-refused and other-dogs-refused on the *selection* half of "
        "the OOD breeds (alternate breeds by name); `*` marks it.",
        "",
        "Caveat: ~96% of Imagewoof val are ImageNet-1k train photos, so ImageNet-pretrained "
        "backbones have seen them (val is optimistic); the ood/dogs photos likely overlap "
        "ImageNet too.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(evaluations, chosen)]
    f = chosen.figures
    lines += [
        "",
        f"Chosen: **{chosen.label}**, threshold {chosen.threshold:.6g}. "
        f"Selection half: cats {pct(f['cats_refused_sel'])}, dogs {pct(f['dogs_refused_sel'])}; "
        f"held-out half: cats {pct(f['cats_refused_held_out'])}, "
        f"dogs {pct(f['dogs_refused_held_out'])}. Train refused {pct(f['train_refused'])}.",
        "",
        "Targets: ≥90% cats refused, ≥80% other dogs refused, ≤3% val refused, accuracy on "
        f"accepted val ≥ overall. Met: {', '.join(targets_met(f)) or 'none'}; "
        f"missed: {', '.join(targets_missed(f)) or 'none'}.",
        "",
        f"Photos: train {len(chosen.scores['train'])}, val {len(chosen.scores['val'])}, "
        f"cats {len(chosen.scores['cats'])}, other dogs {len(chosen.scores['dogs'])}.",
        "",
        f"![score distributions]({artifact.stem}.png)",
        "",
    ]
    return "\n".join(lines)


def _checks(f: dict[str, float]) -> dict[str, bool]:
    return {
        "cats ≥90%": f["cats_refused"] >= TARGETS["cats_refused"],
        "dogs ≥80%": f["dogs_refused"] >= TARGETS["dogs_refused"],
        "val ≤3%": f["val_refused"] <= TARGETS["val_refused_max"],
        "accepted acc ≥ overall": f["val_accuracy_accepted"] >= f["val_accuracy"],
    }


def targets_met(f: dict[str, float]) -> list[str]:
    return [k for k, ok in _checks(f).items() if ok]


def targets_missed(f: dict[str, float]) -> list[str]:
    return [k for k, ok in _checks(f).items() if not ok]


def plot(evaluations: list[Evaluation], chosen: Evaluation, path: Path) -> None:
    """One small histogram per scorer: val vs cats vs other dogs, threshold as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(evaluations))
    rows = -(-len(evaluations) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, e in zip(axes.flat, evaluations, strict=False):
        pool = np.concatenate([e.scores[k] for k in ("val", "cats", "dogs")])
        # Probabilities pile up at 0 and 1: show them on a log axis so the threshold is visible.
        as_log = bool(pool.min() >= 0 and pool.max() <= 1)
        view = (lambda s: np.log10(np.maximum(s, 1e-12))) if as_log else (lambda s: s)
        bins = np.linspace(float(view(pool).min()), float(view(pool).max()) + 1e-9, 40)
        for key, colour in (("val", "tab:green"), ("cats", "tab:red"), ("dogs", "tab:orange")):
            label = {"val": "Imagewoof val", "cats": "cats", "dogs": "other dogs"}[key]
            values = view(e.scores[key])
            ax.hist(values, bins=bins, density=True, alpha=0.5, color=colour, label=label)
        ax.axvline(float(view(np.float64(e.threshold))), color="black", linestyle="--", lw=1)
        ax.set_xlabel("log10(score)" if as_log else "score", fontsize=7)
        ax.set_yscale("log")
        title = e.label + ("  [chosen]" if e is chosen else "")
        ax.set_title(title, fontsize=8, fontweight="bold" if e is chosen else "normal")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(evaluations) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Known-breed score distributions (dashed: train-quantile threshold)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_table(evaluations: list[Evaluation], chosen: Evaluation) -> None:
    header = [name for name, _ in TABLE_COLUMNS]
    rows = [header, *table_rows(evaluations, chosen)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def threshold_rule(target: float, threshold_from: str, held_out_every: int = 0) -> str:
    if threshold_from == "val-crossfit":
        return f"{target:g} quantile of Imagewoof val scores (val figures 2-fold cross-fitted)"
    if held_out_every:
        return (
            f"{target:g} quantile of the scores of the Imagewoof train photos held out of "
            f"training (every {held_out_every}th)"
        )
    return f"{target:g} quantile of Imagewoof train scores"


def metrics_entry(
    chosen: Evaluation, target: float, threshold_from: str, n: dict[str, int], held_out_every: int
) -> dict[str, Any]:
    return {
        "method": chosen.label,
        "threshold_rule": threshold_rule(target, threshold_from, held_out_every),
        "photos": n,
        **{k: round(v, 4) for k, v in chosen.figures.items()},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help=".pt or .onnx artifact")
    parser.add_argument("--write", action="store_true", help="store the rule in the artifact")
    parser.add_argument("--method", default=None, help="evaluate only this scorer")
    parser.add_argument("--target-val-refusal", type=float, default=0.02)
    parser.add_argument(
        "--threshold-from",
        choices=THRESHOLD_SOURCES,
        default="train",
        help="train: quantile of train scores (default); val-crossfit: quantile of val scores, "
        "val figures 2-fold cross-fitted (for models fine-tuned on train)",
    )
    parser.add_argument("--max-train", type=int, default=0, help="subset of train (0 = all)")
    parser.add_argument(
        "--held-out-every",
        type=int,
        default=0,
        help="k: threshold from the train photos the run held out of training (every k-th), "
        "which it never fit; use the run's holdout_every",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "open_set")
    args = parser.parse_args(argv)
    if not 0 < args.target_val_refusal < 0.5:
        parser.error("--target-val-refusal must be in (0, 0.5)")
    return args


def run(args: argparse.Namespace) -> Evaluation:
    backend = load_backend(args.artifact, args.threads)
    meta = backend.metadata
    sets = load_sets(
        args.data_dir or data_root(),
        [c.wnid for c in meta.classes],
        args.max_train,
        args.held_out_every,
    )
    outputs = {
        name: model_outputs(args.artifact, list(s.paths), backend, args.batch_size)
        for name, s in sets.items()
    }
    evaluations = [
        evaluate(meta, method, params, outputs, sets, args.target_val_refusal, args.threshold_from)
        for method, params in candidates_for(meta, args.method)
    ]
    chosen = choose(evaluations)
    print_table(evaluations, chosen)
    f = chosen.figures
    print(
        f"\nchosen: {chosen.label} threshold={chosen.threshold:.6g}  "
        f"(held-out OOD half: cats {pct(f['cats_refused_held_out'])}, "
        f"dogs {pct(f['dogs_refused_held_out'])})"
    )
    memorised = args.threshold_from == "train" and not args.held_out_every
    if memorised and f["val_refused"] > 1.5 * args.target_val_refusal:
        print(
            f"note: val refused {pct(f['val_refused'])} vs {pct(f['train_refused'])} of train: "
            "a model fine-tuned on train scores its own training photos higher than new ones, "
            "so a train quantile refuses more new photos; consider --threshold-from val-crossfit."
        )
    missed = targets_missed(f)
    print("targets met" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = args.out_dir / f"{args.artifact.stem}.md"
    md.write_text(markdown_report(args.artifact, meta, evaluations, chosen, args))
    plot(evaluations, chosen, args.out_dir / f"{args.artifact.stem}.png")
    print(f"wrote {md} and {md.with_suffix('.png')}")
    if args.write:
        rule = OpenSetRule(chosen.method, chosen.threshold, chosen.params)
        counts = {name: len(s.paths) for name, s in sets.items()}
        metrics = {
            **meta.metrics,
            "open_set": metrics_entry(
                chosen, args.target_val_refusal, args.threshold_from, counts, args.held_out_every
            ),
        }
        new_meta = dataclasses.replace(meta, open_set=rule, metrics=metrics)
        del backend  # release the file before replacing it
        rewrite_metadata(args.artifact, new_meta)
        print(f"wrote rule {json.dumps(dataclasses.asdict(rule))} into {args.artifact}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ArtifactError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"open-set calibration failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
