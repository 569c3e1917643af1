"""The lab's one checkpoint format, written atomically so an interrupted save breaks nothing.

A run's ``checkpoint.ckpt`` holds: ``model`` (the whole BreedClassifier's state dict),
``extra`` (other trained modules, e.g. a projection head), ``optimizer``, ``scheduler``,
``step``, ``train_wall_s``, ``stopped_early`` and ``config`` (the experiment as a dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary name, then rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
