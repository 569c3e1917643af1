"""Open-set scorers measured on photo sets: thresholds, refusals, AUROC and the selection.

Every scorer runs through the runtime's own code (``model.open_set``); thresholds are set by a
rule fixed in advance (a quantile of TRAIN scores, or of val scores cross-fitted), and the
scorer is chosen on one half of the OOD breeds only (the other half is reported as held out).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.metadata import ModelMetadata, OpenSetRule
from model.open_set import known_scores
from training.lab.answers import read_answers
from training.release.open_set_data import PhotoSet

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
