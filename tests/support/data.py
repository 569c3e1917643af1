"""Where the shared data set lives: the lab's data root (``training.lab.paths``)."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from pathlib import Path

from training.lab.paths import data_root


def data_dir() -> Path:
    return data_root()


def imagewoof_dir() -> Path | None:
    root = data_dir() / "imagewoof"
    return root if (root / "index.csv").is_file() else None


def stratified_val_sample(root: Path, n: int, seed: int = 0) -> list[tuple[Path, str]]:
    """``n`` val images, equally many per breed, chosen with a fixed seed: (path, wnid)."""
    by_wnid: dict[str, list[Path]] = defaultdict(list)
    with (root / "index.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "val":
                by_wnid[row["wnid"]].append(root / row["path"])
    rng = random.Random(seed)
    per_class = n // len(by_wnid)
    sample = []
    for wnid in sorted(by_wnid):
        paths = sorted(by_wnid[wnid])
        sample += [(p, wnid) for p in rng.sample(paths, per_class)]
    return sample
