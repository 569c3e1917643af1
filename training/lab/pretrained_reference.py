"""An architecture with its ImageNet weights, before any fine-tuning, run like an artifact:
what its ImageNet head could name with no breed training at all.

The shipped network keeps the original ImageNet head (frozen, with a distillation term on it
while fine-tuning), so its ``looks_like`` can be no better than the pretrained network's best
class outside the ten. Comparing the two says whether a miss is fine-tuning's or the
backbone's own; the lab's other architectures say whether a bigger network would know more.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from model.metadata import ModelMetadata
from training.lab.network import build_breed_model
from training.lab.weights import (
    LOCAL_WEIGHT_PACKAGES,
    WeightsUnavailableError,
    default_preprocessing,
    local_weight_file,
)


class PretrainedReference:
    """A backend (``run`` on preprocessed batches) over the untrained breed model of ``arch``
    with that model's own preprocessing: breed rows are the ImageNet head's own ten, in the
    artifact's output layout."""

    name = "pretrained"

    def __init__(self, meta: ModelMetadata, arch: str | None = None) -> None:
        arch = arch or meta.architecture
        weights = local_weight_file(arch)
        if weights is None or not weights.is_file():
            raise WeightsUnavailableError(f"no local ImageNet weights for {arch}")
        self.weights: Path = weights
        spec = meta.preprocessing if arch == meta.architecture else default_preprocessing(arch)
        self.metadata = dataclasses.replace(meta, architecture=arch, preprocessing=spec)
        self.module = build_breed_model(arch, str(weights)).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()


def reference_archs(meta: ModelMetadata) -> list[str]:
    """The artifact's architecture first, then every other one the lab has local weights for."""
    others = [a for a in LOCAL_WEIGHT_PACKAGES if a != meta.architecture]
    return [meta.architecture, *others]
