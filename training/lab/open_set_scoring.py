"""The figures behind the three verdicts: scorers measured on the calibration sets, the two
thresholds set by rules fixed in advance, and the verdict shares of the rule chosen.

The rules (written before any run, and never fed by ``unseen`` or ``web``):

- **unknown** ("not one of my breeds"): each scorer's threshold is the lowest that refuses
  ``cats_refused`` (99%) of ``ood/cats``; the scorer kept is the one that refuses the fewest
  genuine held-out breed photos there (tie: AUROC genuine vs cats).
- **sure**: each scorer's threshold is the lowest at which at most ``dogs_sure`` (5%) of
  ``ood/dogs`` (65 other breeds) are sure; the scorer kept is the one that leaves the most
  genuine held-out breed photos sure there (tie: AUROC genuine vs other dogs).

"Genuine held-out breed photos" are Imagewoof photos the network never fit: val for a network
fine-tuned on all of train, else the train photos its run held out (``holdout_every``). Each
OOD figure is also given for the held-out half of the OOD breeds with the threshold set on
the other half (alternate breeds by name), an honest estimate for photos never seen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.metadata import ModelMetadata, OpenSetRule
from model.open_set import VERDICTS, scores_for
from training.lab.answers import read_answers
from training.lab.open_set_data import PhotoSet

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
# What the service promises on photos of these kinds it never saw (checked on the reports).
TARGETS = {
    "unseen_named_right": 0.92,
    "web_named_right": 0.95,
    "genuine_unknown_max": 0.02,
    "cats_unknown": 0.97,
    "dogs_sure_max": 0.08,
}
LABELLED = ("train", "val", "unseen", "web")
REPORTED = ("train", "val", "unseen", "web", "cats", "dogs")


@dataclass(frozen=True)
class Rules:
    """The two calibration rules' parameters, and which photos count as genuine held-out."""

    cats_refused: float = 0.99
    dogs_sure: float = 0.05
    genuine: str = "val"  # "val", or "train" when only held-out train photos are loaded


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


def refusing_threshold(scores: np.ndarray, share: float) -> float:
    """The lowest threshold that refuses (score < threshold) at least ``share`` of these."""
    ordered = np.sort(scores.astype(np.float64))
    k = min(max(1, math.ceil(round(share * len(ordered), 9))), len(ordered))
    return float(np.nextafter(np.float32(ordered[k - 1]), np.float32(np.inf)))


def admitting_threshold(scores: np.ndarray, share: float) -> float:
    """The lowest threshold at which at most ``share`` of these reach it (score ≥ threshold)."""
    ordered = np.sort(scores.astype(np.float64))[::-1]
    k = math.floor(round(share * len(ordered), 9))  # this many may reach it
    if k >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(np.float32(ordered[k]), np.float32(np.inf)))


def split_by_breed(groups: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Alternate OOD breeds (sorted by name) into a selection half and a held-out half."""
    names = sorted(set(groups))
    selection = {n for i, n in enumerate(names) if i % 2 == 0}
    mask = np.array([g in selection for g in groups])
    return mask, ~mask


@dataclass
class Evaluation:
    """One scorer: its two thresholds by the rules and the figures at them."""

    method: str
    params: dict[str, Any]
    threshold: float  # unknown below it
    sure_threshold: float  # sure at or above it
    figures: dict[str, float] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.method}({extra})" if extra else self.method

    @property
    def unknown_key(self) -> tuple[float, float]:
        return (-self.figures["genuine_refused"], self.figures["auroc_genuine_vs_cats"])

    @property
    def sure_key(self) -> tuple[float, float]:
        return (self.figures["genuine_sure"], self.figures["auroc_genuine_vs_dogs"])


def _held_out_half(scores: np.ndarray, groups: tuple[str, ...], threshold_of, test) -> float:
    """Share passing ``test`` on each half of the breeds at the threshold set on the other."""
    sel, held = split_by_breed(groups)
    hits = [test(scores[b], threshold_of(scores[a])).sum() for a, b in ((sel, held), (held, sel))]
    return float(sum(hits) / len(scores))


def evaluate(
    meta: ModelMetadata,
    method: str,
    params: dict[str, Any],
    outputs: dict[str, np.ndarray],
    sets: dict[str, PhotoSet],
    rules: Rules,
) -> Evaluation:
    """Score every set with the runtime's scorer and set both thresholds by the rules."""
    scores = {name: scores_for(method, params, out, meta) for name, out in outputs.items()}
    genuine, cats, dogs = scores[rules.genuine], scores["cats"], scores["dogs"]
    threshold = refusing_threshold(cats, rules.cats_refused)
    sure = admitting_threshold(dogs, rules.dogs_sure)
    figures = {
        "genuine_refused": float((genuine < threshold).mean()),
        "genuine_sure": float((genuine >= sure).mean()),
        "cats_refused": float((cats < threshold).mean()),
        "dogs_sure": float((dogs >= sure).mean()),
        "cats_refused_held_out": _held_out_half(
            cats,
            sets["cats"].groups or (),
            lambda s: refusing_threshold(s, rules.cats_refused),
            lambda s, t: s < t,
        ),
        "dogs_sure_held_out": _held_out_half(
            dogs,
            sets["dogs"].groups or (),
            lambda s: admitting_threshold(s, rules.dogs_sure),
            lambda s, t: s >= t,
        ),
        "auroc_genuine_vs_cats": auroc(genuine, cats),
        "auroc_genuine_vs_dogs": auroc(genuine, dogs),
    }
    return Evaluation(method, dict(params), threshold, sure, figures, scores)


def candidates_for(meta: ModelMetadata, method: str | None) -> list[tuple[str, dict[str, Any]]]:
    chosen = [c for c in CANDIDATES if method in (None, c[0])] or [(method or "", {})]
    if meta.outputs.imagenet is None:
        chosen = [c for c in chosen if c[0] not in NEEDS_IMAGENET]
    if not chosen:
        raise ValueError(f"method {method!r} needs ImageNet logits, which this artifact lacks")
    return chosen


def choose(evaluations: list[Evaluation]) -> tuple[Evaluation, Evaluation]:
    """(the scorer for unknown, the scorer for sure), each by its rule."""
    unknown = max(evaluations, key=lambda e: e.unknown_key)
    sure = max(evaluations, key=lambda e: e.sure_key)
    return unknown, sure


def rule_of(unknown: Evaluation, sure: Evaluation) -> OpenSetRule:
    same = (sure.method, sure.params) == (unknown.method, unknown.params)
    return OpenSetRule(
        method=unknown.method,
        threshold=unknown.threshold,
        params=dict(unknown.params),
        sure_method="" if same else sure.method,
        sure_threshold=sure.sure_threshold,
        sure_params={} if same else dict(sure.params),
    )


def verdict_shares(
    meta: ModelMetadata, outputs: dict[str, np.ndarray], sets: dict[str, PhotoSet]
) -> dict[str, dict[str, float]]:
    """Per set: share of each verdict and, for breed photos, the right breed named (sure or
    unsure): the served answers (``read_answers``) under ``meta``."""
    shares = {}
    for name in REPORTED:
        if name not in outputs:
            continue
        answers = read_answers(outputs[name], meta)
        row = {v: float((answers.verdict == v).mean()) for v in VERDICTS}
        labels = sets[name].labels
        if labels is not None:
            right = answers.top1 == np.asarray(labels)
            row["top1"] = float(right.mean())
            row["named_right"] = float((right & answers.known).mean())
        shares[name] = row
    return shares


def targets_missed(shares: dict[str, dict[str, float]]) -> list[str]:
    """The service's targets this rule misses on the sets present."""
    missed = []
    for name in ("unseen", "web"):
        if name in shares:
            if shares[name]["named_right"] < TARGETS[f"{name}_named_right"]:
                missed.append(f"{name} named right ≥{TARGETS[f'{name}_named_right']:.0%}")
            if shares[name]["unknown"] > TARGETS["genuine_unknown_max"]:
                missed.append(f"{name} unknown ≤{TARGETS['genuine_unknown_max']:.0%}")
    if shares["cats"]["unknown"] < TARGETS["cats_unknown"]:
        missed.append(f"cats unknown ≥{TARGETS['cats_unknown']:.0%}")
    if shares["dogs"]["sure"] > TARGETS["dogs_sure_max"]:
        missed.append(f"other dogs sure ≤{TARGETS['dogs_sure_max']:.0%}")
    return missed


def rules_text(rules: Rules, held_out_every: int = 0) -> str:
    genuine = (
        f"the Imagewoof train photos held out of training (every {held_out_every}th)"
        if rules.genuine == "train"
        else "Imagewoof val, which the fine-tuning never fit"
    )
    return (
        f"unknown below the lowest threshold refusing {rules.cats_refused:.0%} of ood/cats; "
        f"sure at or above the lowest threshold leaving at most {rules.dogs_sure:.0%} of "
        f"ood/dogs sure; each scorer chosen by its share of genuine photos ({genuine}) "
        "refused / sure"
    )


def metrics_entry(
    unknown: Evaluation,
    sure: Evaluation,
    rules: Rules,
    shares: dict[str, dict[str, float]],
    n: dict[str, int],
    held_out_every: int,
) -> dict[str, Any]:
    """What the artifact's metadata says of its rule: how it was set and what it gives."""
    return {
        "method": unknown.label,
        "sure_method": sure.label,
        "threshold_rule": rules_text(rules, held_out_every),
        "photos": n,
        "unknown_figures": {k: round(v, 4) for k, v in unknown.figures.items()},
        "sure_figures": {k: round(v, 4) for k, v in sure.figures.items()},
        "verdicts": {s: {k: round(v, 4) for k, v in row.items()} for s, row in shares.items()},
    }


def with_rule(meta: ModelMetadata, rule: OpenSetRule) -> ModelMetadata:
    return dataclasses.replace(meta, open_set=rule)
