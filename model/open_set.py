"""The "not one of my breeds" decision, driven entirely by the artifact's ``OpenSetRule``.

A score is computed per photo (higher = more like one of the known breeds) and compared
with the rule's threshold. The method, its parameters and the threshold were chosen and
measured by the lab (``python -m training.release.open_set``) and travel inside the artifact, so
the service applies exactly what was measured. Every scorer is a few numpy operations on
the output row (≤ 1010 logits): no measurable cost per request.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.metadata import ModelMetadata

# (raw outputs, metadata, softmax of the breed logits at temperature 1) -> one score per row
Scorer = Callable[[np.ndarray, ModelMetadata, np.ndarray], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]


def _temperature(meta: ModelMetadata) -> float:
    value = float(meta.open_set.params.get("temperature", 1.0))
    if value <= 0:
        raise ValueError(f"open-set temperature must be > 0, got {value}")
    return value


def _breed_logits(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    start, end = meta.outputs.breed
    return outputs[:, start:end]


def _imagenet_parts(outputs: np.ndarray, meta: ModelMetadata) -> tuple[np.ndarray, list[int]]:
    """The ImageNet-1k logits and the column of each known breed in them."""
    if meta.outputs.imagenet is None:
        raise ValueError(f"{meta.open_set.method} needs ImageNet logits in the model output")
    indices = [c.imagenet_index for c in meta.classes]
    if any(i is None for i in indices):
        raise ValueError(f"{meta.open_set.method} needs an ImageNet index for every class")
    start, end = meta.outputs.imagenet
    return outputs[:, start:end], indices  # type: ignore[return-value]


def _always_known(outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray) -> np.ndarray:
    return np.ones(outputs.shape[0], dtype=np.float32)


def _max_softmax(outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray) -> np.ndarray:
    """Baseline (Hendrycks & Gimpel): top breed probability of the 10-way head."""
    t = _temperature(meta)
    probs = breed_probs if t == 1.0 else softmax(_breed_logits(outputs, meta) / t)
    return probs.max(axis=-1)


def _max_logit(outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray) -> np.ndarray:
    return _breed_logits(outputs, meta).max(axis=-1)


def _energy(outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray) -> np.ndarray:
    """Negative free energy of the 10-way head (Liu et al. 2020): T·logsumexp(l/T)."""
    t = _temperature(meta)
    return t * logsumexp(_breed_logits(outputs, meta) / t)


def _imagenet_breed_mass(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray
) -> np.ndarray:
    """Share of ImageNet-1k probability on the ten breeds: cats and other dogs go elsewhere."""
    logits, indices = _imagenet_parts(outputs, meta)
    return softmax(logits / _temperature(meta))[:, indices].sum(axis=-1)


def _imagenet_breed_margin(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray
) -> np.ndarray:
    """Best breed logit minus best other ImageNet logit (> 0: a breed is the top class)."""
    logits, indices = _imagenet_parts(outputs, meta)
    others = np.delete(logits, indices, axis=1)
    return logits[:, indices].max(axis=-1) - others.max(axis=-1)


def _breed_mass_x_softmax(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray
) -> np.ndarray:
    """P(one of the ten | ImageNet head) × P(top breed | breed head): both must agree."""
    return _imagenet_breed_mass(outputs, meta, breed_probs) * _max_softmax(
        outputs, meta, breed_probs
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


def known_scores(
    outputs: np.ndarray, meta: ModelMetadata, breed_probs: np.ndarray | None = None
) -> np.ndarray:
    """Per-row "known breed" score for a batch of raw model outputs.

    ``breed_probs`` is the softmax of the breed logits when the caller has it already (the
    predictor does), so a request computes it once.
    """
    method = meta.open_set.method
    if method not in SCORERS:
        raise ValueError(f"unknown open-set method {method!r}; known: {sorted(SCORERS)}")
    outputs = outputs.astype(np.float32, copy=False)
    if breed_probs is None:
        breed_probs = softmax(_breed_logits(outputs, meta))
    return SCORERS[method](outputs, meta, breed_probs).astype(np.float32, copy=False)


def is_known(scores: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    return scores >= meta.open_set.threshold
