"""Photos for load tests, benchmarks and tests: Imagewoof val when present, else generated.

Kept apart from locustfile.py so the benchmark can use them without importing locust.
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def textured(width: int = 320, height: int = 240, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random pattern (more photo-like than flat colour, deterministic by seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return img.convert(mode) if mode != "RGB" else img


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(textured(width, height, seed), "JPEG", quality=90)


def generated_photos(count: int, seed: int = 0) -> list[bytes]:
    """``count`` generated JPEGs the size of the val photos (300 x 224), seeds from ``seed``."""
    return [encode(textured(300, 224, seed + i), "JPEG", quality=80) for i in range(count)]
