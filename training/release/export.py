"""Export a trained network as the service's artifact: TorchScript (+ ONNX), metadata inside.

The exported module takes a float32 N×3×S×S batch (already preprocessed by
``model.preprocessing``) and returns one row per photo: ten breed logits, then the 1000
ImageNet logits the open-set rule reads. Every export is checked against the eager model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.backends import load_backend
from model.metadata import (
    IMAGEWOOF_CLASSES,
    METADATA_KEY,
    ModelMetadata,
    OpenSetRule,
    OutputLayout,
    Preprocessing,
)

log = logging.getLogger(__name__)
TOLERANCE = 1e-3
OUTPUTS = OutputLayout(breed=(0, 10), imagenet=(10, 1010))


def breed_metadata(
    name: str, arch: str, version: str, preprocessing: Preprocessing, **fields: Any
) -> ModelMetadata:
    """Metadata of a BreedClassifier artifact; ``fields``: trained_on, weights_origin, extra."""
    return ModelMetadata(
        name=name,
        architecture=arch,
        version=version,
        classes=IMAGEWOOF_CLASSES,
        preprocessing=preprocessing,
        outputs=OUTPUTS,
        open_set=OpenSetRule(method="none"),
        **fields,
    )


def export_torchscript(module: nn.Module, metadata: ModelMetadata, path: Path) -> Path:
    """Trace + freeze ``module`` and save it with the metadata; verify it reloads equal."""
    module = module.eval()
    size = metadata.preprocessing.input_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(module, example))
        expected = module(example).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={METADATA_KEY: metadata.to_json()})
    got = load_backend(path, threads=1).run(example.numpy())
    err = float(np.abs(got - expected).max())
    if err > TOLERANCE:
        raise RuntimeError(f"exported {path} differs from the eager model by {err:.2e}")
    log.info("exported %s (max |diff| vs eager %.1e)", path, err)
    return path


def export_onnx(module: nn.Module, metadata: ModelMetadata, path: Path) -> Path:
    """ONNX the way the service derives it: TorchScript first, then ``training.release.onnx_export``
    (same metadata, verified), so the lab's ONNX is what ``make run`` would build."""
    from training.release.onnx_export import convert

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        scripted = export_torchscript(module, metadata, Path(tmp) / "model.pt")
        err = convert(scripted, path)
    log.info("exported %s (max |diff| vs TorchScript %.1e)", path, err)
    return path
