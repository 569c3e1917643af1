"""Photos made on the fly with PIL, so the service tests need no data files."""

from __future__ import annotations

import io

from PIL import Image

from tests.support.photos import encode, textured


def png_bytes(width: int = 320, height: int = 240, seed: int = 0, mode: str = "RGB") -> bytes:
    return encode(textured(width, height, seed, mode), "PNG")


def heic_bytes(img: Image.Image, **params: object) -> bytes:
    """HEIC bytes from pillow-heif's encoder (test-only). It is not registered as a PIL
    plugin, so the service's decode-only pi-heif stays the one that reads them."""
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, **params)
    return buf.getvalue()
