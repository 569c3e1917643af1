"""Variants of the shipped artifact for tests: same weights, edited metadata."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from model.defaults import SHIPPED_MODEL
from model.metadata import METADATA_KEY, ModelMetadata


def rewrite_metadata(dst: Path, src: Path = SHIPPED_MODEL, **changes: Any) -> Path:
    """Save the TorchScript ``src`` at ``dst`` with ``dataclasses.replace(metadata, **changes)``."""
    import torch

    extra = {METADATA_KEY: ""}
    module = torch.jit.load(str(src), map_location="cpu", _extra_files=extra)
    meta = dataclasses.replace(ModelMetadata.from_json(extra[METADATA_KEY]), **changes)
    torch.jit.save(module, str(dst), _extra_files={METADATA_KEY: meta.to_json()})
    return dst


@functools.cache
def shipped_metadata() -> ModelMetadata:
    """The shipped artifact's own metadata: what the service must report, whichever model ships."""
    from model.backends import load_backend

    return load_backend(SHIPPED_MODEL, threads=1).metadata
