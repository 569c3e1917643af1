"""How sure an answer is, driven entirely by the artifact's ``OpenSetRule``: the verdict.

Two scores are computed per photo (higher = more like one of the known breeds): below the
rule's ``threshold`` the photo is ``unknown`` ("not one of my breeds"); otherwise it is
``sure`` when its sure score reaches ``sure_threshold`` and ``unsure`` below it. The scorers,
their parameters and both thresholds were chosen and measured by the lab
(``python -m training.release.open_set``) and travel inside the artifact, so the service
applies exactly what was measured. Every scorer is a few numpy operations on the output row
(≤ 1010 logits): no measurable cost per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from model.metadata import ModelMetadata

# (raw outputs, metadata, softmax of the breed logits at temperature 1, scorer parameters)
# -> one score per row
Scorer = Callable[[np.ndarray, ModelMetadata, np.ndarray, dict[str, Any]], np.ndarray]
VERDICTS = ("sure", "unsure", "unknown")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]


def _temperature(params: dict[str, Any]) -> float:
    value = float(params.get("temperature", 1.0))
    if value <= 0:
        raise ValueError(f"open-set temperature must be > 0, got {value}")
    return value


def _breed_logits(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    start, end = meta.outputs.breed
    return outputs[:, start:end]


def _imagenet_parts(outputs: np.ndarray, meta: ModelMetadata) -> tuple[np.ndarray, list[int]]:
    """The ImageNet-1k logits and the column of each known breed in them."""
    if meta.outputs.imagenet is None:
        raise ValueError("this open-set method needs ImageNet logits in the model output")
    indices = [c.imagenet_index for c in meta.classes]
    if any(i is None for i in indices):
        raise ValueError("this open-set method needs an ImageNet index for every class")
    start, end = meta.outputs.imagenet
    return outputs[:, start:end], indices  # type: ignore[return-value]


def _always_known(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    return np.ones(outputs.shape[0], dtype=np.float32)


def _max_softmax(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """Baseline (Hendrycks & Gimpel): top breed probability of the 10-way head."""
    t = _temperature(params)
    probs = breed_probs if t == 1.0 else softmax(_breed_logits(outputs, meta) / t)
    return probs.max(axis=-1)


def _max_logit(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    return _breed_logits(outputs, meta).max(axis=-1)


def _energy(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """Negative free energy of the 10-way head (Liu et al. 2020): T·logsumexp(l/T)."""
    t = _temperature(params)
    return t * logsumexp(_breed_logits(outputs, meta) / t)


def _imagenet_breed_mass(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """Share of ImageNet-1k probability on the ten breeds: cats and other dogs go elsewhere."""
    logits, indices = _imagenet_parts(outputs, meta)
    return softmax(logits / _temperature(params))[:, indices].sum(axis=-1)


def _imagenet_breed_margin(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """Best breed logit minus best other ImageNet logit (> 0: a breed is the top class)."""
    logits, indices = _imagenet_parts(outputs, meta)
    others = np.delete(logits, indices, axis=1)
    return logits[:, indices].max(axis=-1) - others.max(axis=-1)


def _breed_mass_x_softmax(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """P(one of the ten | ImageNet head) × P(top breed | breed head): both must agree."""
    return _imagenet_breed_mass(outputs, meta, breed_probs, params) * _max_softmax(
        outputs, meta, breed_probs, params
    )


SCORERS: dict[str, Scorer] = {
    "none": _always_known,
    "max_softmax": _max_softmax,
    "max_logit": _max_logit,
    "energy": _energy,
    "imagenet_breed_mass": _imagenet_breed_mass,
    "imagenet_breed_margin": _imagenet_breed_margin,
    "breed_mass_x_softmax": _breed_mass_x_softmax,
}


def scores_for(
    method: str,
    params: dict[str, Any],
    outputs: np.ndarray,
    meta: ModelMetadata,
    breed_probs: np.ndarray | None = None,
) -> np.ndarray:
    """Per-row score of one scorer for a batch of raw model outputs.

    ``breed_probs`` is the softmax of the breed logits when the caller has it already (the
    predictor does), so a request computes it once.
    """
    if method not in SCORERS:
        raise ValueError(f"unknown open-set method {method!r}; known: {sorted(SCORERS)}")
    outputs = outputs.astype(np.float32, copy=False)
    if breed_probs is None:
        breed_probs = softmax(_breed_logits(outputs, meta))
    return SCORERS[method](outputs, meta, breed_probs, params).astype(np.float32, copy=False)


def known_scores(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray | None = None
) -> np.ndarray:
    """The "one of my breeds at all" score of the artifact's rule (``unknown`` below it)."""
    rule = meta.open_set
    return scores_for(rule.method, rule.params, outputs, meta, breed_probs)


def sure_scores(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray | None = None
) -> np.ndarray:
    """The "sure of this breed" score of the artifact's rule (``sure`` at or above it)."""
    rule = meta.open_set
    return scores_for(rule.sure_scorer, rule.sure_scorer_params, outputs, meta, breed_probs)


def is_known(scores: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    return scores >= meta.open_set.threshold


def verdicts(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(known score, verdict) per row. Without a sure threshold every known answer is sure."""
    known = known_scores(outputs, meta, breed_probs)
    verdict = np.where(is_known(known, meta), "sure", "unknown").astype(object)
    rule = meta.open_set
    if rule.sure_threshold is not None:
        sure = sure_scores(outputs, meta, breed_probs) >= rule.sure_threshold
        verdict[(verdict == "sure") & ~sure] = "unsure"
    return known, verdict
