"""Lab command: choose and store a deployment prior between two confusable breeds.

    python -m training.release.prior --artifact model/efficientnet_lite0_imagewoof.pt \
        --favour Beagle --over "English foxhound" [--write]

People photograph beagles far more often than English foxhounds, while training photos are
balanced and ImageNet's foxhound class is full of beagle-like photos. The prior is a log-odds
shift ``s`` between the two breeds (``+s/2`` on the favoured breed's logit, ``-s/2`` on the
other; every other breed untouched), i.e. a deployment prior that deems the favoured breed
``exp(s)`` times as likely as the other one.

How ``s`` is chosen (fixed before any measurement): the grid ``SHIFTS``, the objective of the
ship rule (mean of ``unseen`` and ``web`` top-1), 2-fold cross-fitting over the photos of both
splits (alternate photos of each split): each fold's figures come from the shift chosen on the
other fold, so no photo judges a shift it helped choose; ties go to the smaller shift. The
stored shift is the one chosen on all photos. The figures go to ``--report`` (Markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from model.backends import load_backend
from model.metadata import ClassPrior, ModelMetadata
from training.lab.answers import read_answers
from training.lab.data import load_split
from training.lab.evaluate import model_outputs
from training.release.artifact_metadata import rewrite_metadata
from training.reports.prior_report import markdown

log = logging.getLogger(__name__)
SHIFTS = tuple(round(0.25 * i, 2) for i in range(9))  # 0 .. 2 (odds up to e^2 ~ 7.4 : 1)
SPLITS = ("unseen", "web")


@dataclasses.dataclass(frozen=True)
class SplitData:
    outputs: np.ndarray
    labels: np.ndarray


def with_shift(meta: ModelMetadata, favour: int, over: int, shift: float) -> ModelMetadata:
    """``meta`` with a prior moving ``shift`` log-odds from class ``over`` to ``favour``."""
    adjustment = np.zeros(len(meta.classes))
    adjustment[favour], adjustment[over] = shift / 2, -shift / 2
    source = (
        f"{meta.classes[favour].name} deemed e^{shift:g} = {np.exp(shift):.2f} times as likely "
        f"as {meta.classes[over].name} (log-odds shift {shift:g}), "
        "chosen by training.release.prior: "
        "2-fold cross-fitted on unseen+web, objective mean top-1"
    )
    prior = ClassPrior(tuple(float(x) for x in adjustment), source) if shift else ClassPrior()
    return dataclasses.replace(meta, prior=prior)


def top1(data: SplitData, meta: ModelMetadata, rows: np.ndarray) -> float:
    predicted = read_answers(data.outputs[rows], meta).top1
    return float((predicted == data.labels[rows]).mean())


def objective(splits: dict[str, SplitData], meta: ModelMetadata, folds: dict, fold: int) -> float:
    return float(np.mean([top1(d, meta, folds[s] == fold) for s, d in splits.items()]))


def choose_shift(splits: dict[str, SplitData], meta: ModelMetadata, favour: int, over: int) -> dict:
    """The cross-fitted figures and the shift chosen on all photos."""
    folds = {s: np.arange(len(d.labels)) % 2 for s, d in splits.items()}
    everything = {s: np.zeros(len(d.labels), dtype=int) for s, d in splits.items()}

    def best(fold_sets: dict, fold: int) -> float:
        scores = [
            objective(splits, with_shift(meta, favour, over, s), fold_sets, fold) for s in SHIFTS
        ]
        return SHIFTS[int(np.argmax(scores))]  # argmax: first (smallest) of ties

    fold_choice = {fold: best(folds, 1 - fold) for fold in (0, 1)}
    figures = {}
    for name, data in splits.items():
        right = np.zeros(len(data.labels), dtype=bool)
        for fold, shift in fold_choice.items():
            rows = folds[name] == fold
            answers = read_answers(data.outputs[rows], with_shift(meta, favour, over, shift))
            right[rows] = answers.top1 == data.labels[rows]
        figures[name] = float(right.mean())
    return {
        "shift": best(everything, 0),
        "fold_shifts": [fold_choice[0], fold_choice[1]],
        "crossfit_top1": figures,
    }


def pair_table(splits: dict[str, SplitData], meta: ModelMetadata, favour: int, over: int) -> list:
    """Per shift: top-1 per split and the share of favoured-breed photos named as the other."""
    rows = []
    for shift in SHIFTS:
        trial = with_shift(meta, favour, over, shift)
        row = {"shift": shift}
        for name, data in splits.items():
            predicted = read_answers(data.outputs, trial).top1
            row[f"{name}_top1"] = float((predicted == data.labels).mean())
            for cls, key in ((favour, "favoured"), (over, "other")):
                mask = data.labels == cls
                row[f"{name}_{key}_right"] = (
                    float((predicted[mask] == cls).mean()) if mask.any() else None
                )
            mask = data.labels == favour
            row[f"{name}_favoured_as_other"] = (
                float((predicted[mask] == over).mean()) if mask.any() else None
            )
        rows.append(row)
    return rows


def class_index(meta: ModelMetadata, name: str) -> int:
    names = [c.name.lower() for c in meta.classes]
    if name.lower() not in names:
        raise ValueError(f"unknown breed {name!r}; known: {[c.name for c in meta.classes]}")
    return names.index(name.lower())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Choose and store a pairwise deployment prior.")
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--favour", default="Beagle", help="the breed people photograph more")
    parser.add_argument("--over", default="English foxhound", help="the breed it is confused with")
    parser.add_argument("--report", type=Path, default=Path("results/prior.md"))
    parser.add_argument("--write", action="store_true", help="store the prior in the artifact")
    parser.add_argument("--version", default=None, help="new artifact version with --write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        backend = load_backend(args.artifact)
        meta = dataclasses.replace(backend.metadata, prior=ClassPrior())
        favour, over = class_index(meta, args.favour), class_index(meta, args.over)
        if favour == over:
            raise ValueError("--favour and --over name the same breed")
        splits = {}
        for name in SPLITS:
            samples = load_split(None, name)
            outputs = model_outputs(args.artifact, [s.path for s in samples], backend)
            splits[name] = SplitData(outputs, np.array([s.label for s in samples]))
        choice = choose_shift(splits, meta, favour, over)
        rows = pair_table(splits, meta, favour, over)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(args.artifact, meta, favour, over, choice, rows))
        if args.write:
            chosen = with_shift(meta, favour, over, choice["shift"])
            metrics = {**meta.metrics, "prior": {**choice, "report": str(args.report)}}
            version = args.version or meta.version
            del backend  # release the file before replacing it
            rewrite_metadata(
                args.artifact, dataclasses.replace(chosen, metrics=metrics, version=version)
            )
    except Exception as exc:  # CLI: one-line cause, non-zero exit
        print(f"prior failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"shift {choice['shift']:g} (folds {choice['fold_shifts']}); cross-fitted top-1 "
        + ", ".join(f"{s} {v:.1%}" for s, v in choice["crossfit_top1"].items())
        + f"; wrote {args.report}"
        + (f" and the prior into {args.artifact}" if args.write else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
