"""Photos made on the fly with PIL, so the service tests need no data files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def textured(width: int = 320, height: int = 240, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random pattern (more photo-like than flat colour, deterministic by seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return img.convert(mode) if mode != "RGB" else img


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(textured(width, height, seed), "JPEG", quality=90)


def png_bytes(width: int = 320, height: int = 240, seed: int = 0, mode: str = "RGB") -> bytes:
    return encode(textured(width, height, seed, mode), "PNG")
