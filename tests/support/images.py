"""Photos made on the fly with PIL, so the service tests need no data files."""

from __future__ import annotations

from benchmarks.photos import encode, textured


def png_bytes(width: int = 320, height: int = 240, seed: int = 0, mode: str = "RGB") -> bytes:
    return encode(textured(width, height, seed, mode), "PNG")
