"""Uploads a hostile or careless client sends, made on the spot, and the phone photos that must
still be answered: the set behind ``benchmarks.hostile_memory`` and tests/test_hostile_inputs.py.

Hostile: tiny files with huge dimensions in every format the service reads (a flat colour
compresses to almost nothing), alpha, 16-bit and float pixels, progressive JPEG, many frames,
and a pixel flood over the pixel limit. Phone: what people really send, at full size: a 12 MP
JPEG (baseline with EXIF rotation, and progressive), a 12 MP HEIC, a 12 MP 16-bit greyscale PNG
from an editor, and a 2,500 × 5,500 screenshot with alpha.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.support.photos import textured

PHONE_SIZE = (4032, 3024)
SCREENSHOT_SIZE = (2500, 5500)


@dataclass(frozen=True)
class Upload:
    """One upload: a file name with its format's suffix, its bytes and its media type."""

    name: str
    data: bytes
    content_type: str

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        """As the multipart field ``image`` of POST /predict."""
        return {"image": (self.name, self.data, self.content_type)}


def _encode(img: Image.Image | list[Image.Image], fmt: str, **params: object) -> bytes:
    frames = img if isinstance(img, list) else [img]
    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:])
    buffer = io.BytesIO()
    if fmt == "HEIF":
        from pillow_heif import from_pillow  # tests and benchmarks only: an encoder

        from_pillow(frames[0]).save(buffer, format="HEIF", **params)
    else:
        frames[0].save(buffer, fmt, **params)
    return buffer.getvalue()


def _flat(mode: str, size: tuple[int, int], colour: object) -> Image.Image:
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.new(mode, size, colour)  # type: ignore[arg-type]
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@functools.cache
def hostile_uploads() -> tuple[Upload, ...]:
    """Small files that would take hundreds of MB if decoded naively (made once, ~10 s)."""
    huge = (8000, 5000)  # 40 MP: at the pixel limit
    frames = [_flat("P", (4000, 3000), i) for i in range(12)]
    return (
        Upload(
            "rgba-40mp.png", _encode(_flat("RGBA", huge, (9, 200, 30, 128)), "PNG"), "image/png"
        ),
        Upload(
            "16000x2500.webp",
            _encode(_flat("RGB", (16000, 2500), (1, 2, 3)), "WEBP", lossless=True),
            "image/webp",
        ),
        Upload(
            "float-40mp.tif",
            _encode(_flat("F", huge, 0.5), "TIFF", compression="tiff_adobe_deflate"),
            "image/tiff",
        ),
        Upload("16bit-20mp.png", _encode(_flat("I;16", (5477, 3652), 300), "PNG"), "image/png"),
        Upload(
            "progressive-39mp.jpg",
            _encode(
                _flat("RGB", (7680, 5120), (120, 60, 30)),
                "JPEG",
                progressive=True,
                subsampling=0,
                quality=90,
            ),
            "image/jpeg",
        ),
        Upload(
            "baseline-40mp.jpg", _encode(_flat("RGB", huge, (90, 90, 90)), "JPEG"), "image/jpeg"
        ),
        Upload("heic-40mp.heic", _encode(_flat("RGB", huge, (50, 60, 70)), "HEIF"), "image/heic"),
        Upload("12-frames.gif", _encode(frames, "GIF"), "image/gif"),
        Upload("12-frames.png", _encode([f.convert("RGBA") for f in frames], "PNG"), "image/png"),
        Upload(
            "12-pages.tif",
            _encode([f.convert("RGB") for f in frames], "TIFF", compression="tiff_adobe_deflate"),
            "image/tiff",
        ),
        Upload("flood-100mp.png", _encode(_flat("1", (10000, 10000), 1), "PNG"), "image/png"),
    )


def phone_uploads(photo: Image.Image | None = None) -> tuple[Upload, ...]:
    """``photo`` (a generated texture by default) at the sizes and in the formats of phones."""
    base = (photo or textured(504, 378, seed=3)).convert("RGB")
    phone = base.resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    portrait = phone.transpose(Image.Transpose.ROTATE_90)  # stored turned, EXIF turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    grey16 = (np.asarray(phone.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    screenshot = Image.new("RGBA", SCREENSHOT_SIZE, (255, 255, 255, 0))
    screenshot.paste(phone.resize((2500, 1875)), (0, 1800))
    return (
        Upload("phone.jpg", _encode(portrait, "JPEG", quality=90, exif=exif), "image/jpeg"),
        Upload(
            "phone-progressive.jpg",
            _encode(phone, "JPEG", quality=90, progressive=True),
            "image/jpeg",
        ),
        Upload("phone.heic", _encode(phone, "HEIF", quality=80), "image/heic"),
        Upload("editor-16bit.png", _encode(Image.fromarray(grey16), "PNG"), "image/png"),
        Upload("screenshot.png", _encode(screenshot, "PNG", compress_level=1), "image/png"),
    )
