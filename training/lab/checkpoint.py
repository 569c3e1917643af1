"""The lab's one checkpoint format, written atomically so an interrupted save breaks nothing.

A run's ``checkpoint.ckpt`` holds: ``model`` (the whole BreedClassifier's state dict),
``extra`` (other trained modules, e.g. a projection head, the weights' EMA), ``optimizer``,
``scheduler``, ``step``, ``train_wall_s``, ``stopped_early`` and ``config`` (the experiment
as a dict). A *slim* checkpoint of a finished run (``python -m training.lab.checkpoint --slim``)
keeps only its final weights in half precision, to carry a run trained on another machine
(e.g. a GPU) back for export and evaluation: ``training.train --resume`` finishes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from model.artifact import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary name, then rename over the old file (``model.artifact``)."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def slim_checkpoint(source: Path, target: Path) -> None:
    """The finished run's final weights (the EMA where there is one) in fp16, nothing else."""
    state = load_checkpoint(source)
    weights = state["extra"].get("ema", state["model"])
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    keep = ("step", "train_wall_s", "stopped_early", "config")
    save_checkpoint(target, {"model": half, "extra": {}, **{k: state[k] for k in keep}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slim a finished run's checkpoint.")
    parser.add_argument("--slim", nargs=2, type=Path, metavar=("SOURCE", "TARGET"), required=True)
    args = parser.parse_args(argv)
    try:
        slim_checkpoint(*args.slim)
    except (OSError, KeyError, RuntimeError) as exc:
        print(f"checkpoint failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
