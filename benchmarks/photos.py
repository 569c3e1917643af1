"""Photos for load tests and benchmarks: Imagewoof val when present, else generated JPEGs.

Kept apart from locustfile.py so the benchmark can use them without importing locust
(which monkey-patches the standard library with gevent).
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BREED_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def load_val_photos(limit: int, seed: int = 0) -> list[bytes]:
    """Up to ``limit`` Imagewoof val photos, a fixed random sample across the breeds."""
    index = data_dir() / "imagewoof" / "index.csv"
    if not index.is_file():
        return []
    with index.open(newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh) if row["split"] == "val"]
    random.Random(seed).shuffle(paths)
    return [(index.parent / p).read_bytes() for p in paths[:limit]]


def generated_photos(count: int, seed: int = 0) -> list[bytes]:
    """Smooth random colour fields saved as JPEG (about the size of the val photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((300, 224), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        photos.append(buf.getvalue())
    return photos
