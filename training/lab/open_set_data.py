"""The photo sets of the open-set calibration: Imagewoof train (threshold), Imagewoof val
(in-distribution report) and the cats / other-dog-breeds photos of ``ood/``. Their model
outputs come from ``training.lab.evaluate.model_outputs``, cached per
``training.lab.cache.weights_fingerprint``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.lab.holdout import is_held_out


@dataclass(frozen=True)
class PhotoSet:
    """One evaluation set: photo paths, and for in-distribution sets their class index."""

    name: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    groups: tuple[str, ...] | None = None  # OOD breed of each photo


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path} (set BREED_DATA_DIR to the data folder)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def load_sets(
    root: Path, wnids: list[str], max_train: int = 0, held_out_every: int = 0
) -> dict[str, PhotoSet]:
    """The sets, in index order. ``max_train`` > 0 keeps an evenly spaced subset of train;
    ``held_out_every`` k keeps only the train photos a run held out of training (every k-th,
    as ``training.lab.holdout``). ``unseen`` and ``web`` come too, to report their refusals."""
    index = {w: i for i, w in enumerate(wnids)}
    woof = _read_csv(root / "imagewoof" / "index.csv")
    sets: dict[str, PhotoSet] = {}
    for split in ("train", "val", "unseen", "web"):
        rows = [r for r in woof if r["split"] == split and r["wnid"] in index]
        if split in ("unseen", "web") and not rows:
            continue  # a data folder without the test splits: reported without them
        if split == "train" and held_out_every:
            rows = [r for i, r in enumerate(rows) if is_held_out(i, held_out_every)]
        if split == "train" and 0 < max_train < len(rows):
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_train).astype(int)]
        sets[split] = PhotoSet(
            split,
            tuple(root / "imagewoof" / r["path"] for r in rows),
            labels=tuple(index[r["wnid"]] for r in rows),
        )
    ood = _read_csv(root / "ood" / "index.csv")
    for kind, name in (("cat", "cats"), ("dog", "dogs")):
        rows = [r for r in ood if r["kind"] == kind]
        sets[name] = PhotoSet(
            name,
            tuple(root / "ood" / r["path"] for r in rows),
            groups=tuple(r["breed"] for r in rows),
        )
    return sets
