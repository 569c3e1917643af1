"""Rewrite the metadata inside an artifact in place, leaving the weights untouched.

Used to store a calibrated open-set rule (``python -m training.release.open_set --write``). The new
file is written next to the old one, checked (metadata reads back, outputs on a fixed
random batch are bit-identical to the old artifact's) and only then moved over it.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from model.artifact import atomic_write, set_onnx_metadata
from model.backends import ArtifactError, load_backend
from model.metadata import METADATA_KEY, ModelMetadata

log = logging.getLogger(__name__)


def _rewrite_torchscript(src: Path, dst: Path, metadata: ModelMetadata) -> None:
    import torch

    # Keep any other extra files the artifact carries.
    with zipfile.ZipFile(src) as zf:
        names = [n.split("/extra/", 1)[1] for n in zf.namelist() if "/extra/" in n]
    extra = dict.fromkeys(names, "")
    module = torch.jit.load(str(src), map_location="cpu", _extra_files=extra)
    extra[METADATA_KEY] = metadata.to_json()
    torch.jit.save(module, str(dst), _extra_files=extra)


def _rewrite_onnx(src: Path, dst: Path, metadata: ModelMetadata) -> None:
    import onnx

    proto = onnx.load(str(src))
    set_onnx_metadata(proto, metadata)
    onnx.save(proto, str(dst))


def _probe(path: Path) -> tuple[ModelMetadata, np.ndarray]:
    backend = load_backend(path, threads=1)
    size = backend.metadata.preprocessing.input_size
    batch = np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)
    return backend.metadata, backend.run(batch)


def rewrite_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Replace the artifact's metadata; raise ArtifactError if anything else would change."""
    path = Path(path)
    old_meta, before = _probe(path)
    if metadata.preprocessing != old_meta.preprocessing or metadata.outputs != old_meta.outputs:
        raise ArtifactError("refusing to change preprocessing or output layout of a trained model")
    # atomic_write keeps the file name: TorchScript names its archive folder after the file.
    with atomic_write(path) as tmp:
        if path.suffix == ".onnx":
            _rewrite_onnx(path, tmp, metadata)
        else:
            _rewrite_torchscript(path, tmp, metadata)
        new_meta, after = _probe(tmp)
        if new_meta != metadata:
            raise ArtifactError("metadata did not read back as written")
        if not np.array_equal(before, after):
            diff = float(np.abs(before - after).max())
            raise ArtifactError(f"outputs changed after rewriting metadata (max |diff| {diff:.2e})")
    log.info("rewrote metadata of %s (outputs verified identical)", path)
