"""The "not one of my breeds" decision, driven entirely by the artifact's ``OpenSetRule``.

A score is computed per photo (higher = more like one of the known breeds) and compared
with the rule's threshold. The method and threshold were chosen and measured by the lab
(``training/open_set.py``), and travel inside the artifact, so the service applies exactly
what was measured.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.metadata import ModelMetadata


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _always_known(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    return np.ones(outputs.shape[0], dtype=np.float32)


def _max_softmax(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    start, end = meta.outputs.breed
    return softmax(outputs[:, start:end]).max(axis=-1)


def _imagenet_breed_mass(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Share of ImageNet-1k probability on the ten breeds: cats and other dogs go elsewhere."""
    if meta.outputs.imagenet is None:
        raise ValueError("imagenet_breed_mass needs ImageNet logits in the model output")
    start, end = meta.outputs.imagenet
    probs = softmax(outputs[:, start:end])
    indices = [c.imagenet_index for c in meta.classes]
    return probs[:, indices].sum(axis=-1)


SCORERS: dict[str, Callable[[np.ndarray, ModelMetadata], np.ndarray]] = {
    "none": _always_known,
    "max_softmax": _max_softmax,
    "imagenet_breed_mass": _imagenet_breed_mass,
}


def known_scores(outputs: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Per-row "known breed" score for a batch of raw model outputs."""
    method = meta.open_set.method
    if method not in SCORERS:
        raise ValueError(f"unknown open-set method {method!r}; known: {sorted(SCORERS)}")
    return SCORERS[method](outputs, meta)


def is_known(scores: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    return scores >= meta.open_set.threshold
