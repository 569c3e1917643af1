"""The lab reads every answer the way the service gives it: through ``Predictor.interpret``.

Softmax, the artifact's prior and its open-set rule are applied by the runtime's own code on
output rows the lab already has (cached), so a figure the lab reports is a figure of the
served answer, never of a re-implementation of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.looks_like import LooksLike
from model.metadata import ModelMetadata
from model.predictor import Predictor


class _Computed:
    """Stands where a backend would: the outputs are already computed, only metadata is read."""

    name = "precomputed"

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("answers are read from outputs already computed")


@dataclass(frozen=True)
class Answers:
    """The service's answers for a batch of photos, as arrays indexed like ``meta.classes``."""

    ranked: np.ndarray  # (n, classes) breed indices, best first
    probs: np.ndarray  # (n, classes) confidence of each breed, as the answer states it
    verdict: np.ndarray  # (n,) "sure", "unsure" or "unknown" (model/open_set.py)
    looks_like: tuple[LooksLike | None, ...] = ()  # per photo (model/looks_like.py)

    @property
    def known(self) -> np.ndarray:
        """True where the answer names a breed (sure or unsure)."""
        return self.verdict != "unknown"

    @property
    def top1(self) -> np.ndarray:
        """The breed the answer names first (also for photos the verdict refuses)."""
        return self.ranked[:, 0]


def read_answers(outputs: np.ndarray, meta: ModelMetadata) -> Answers:
    """What the service answers for these raw output rows under ``meta`` (its prior, its rule)."""
    classes = len(meta.classes)
    predictor = Predictor(_Computed(meta), top_k=classes)
    index = {c.wnid: i for i, c in enumerate(meta.classes)}
    ranked = np.zeros((len(outputs), classes), dtype=np.int64)
    probs = np.zeros((len(outputs), classes), dtype=np.float64)
    verdict = np.full(len(outputs), "unknown", dtype=object)
    others: list[LooksLike | None] = []
    for row, prediction in enumerate(predictor.interpret(outputs) if len(outputs) else []):
        ranked[row] = [index[b.wnid] for b in prediction.top_k]
        probs[row, ranked[row]] = [b.confidence for b in prediction.top_k]
        verdict[row] = prediction.verdict
        others.append(prediction.looks_like)
    return Answers(ranked, probs, verdict, tuple(others))
