"""What decoding a photo will cost in memory, read from its header before any pixel is decoded.

A container of 512 MB holds the master, every worker's model and every photo being decoded at
once. Each process decodes one photo at a time (``model.preprocessing.decode_image`` holds a
lock), and a decode that costs more than ``LARGE_DECODE_BYTES`` also waits for the machine's
one large-decode slot (``large_decode_slot``: a file lock, so every worker of a container
shares it and a killed holder frees it). The container's peak therefore stays under its idle
memory + workers × ``LARGE_DECODE_BYTES`` + one ``budget``, while ordinary photos (JPEGs are
decoded at reduced scale) never wait for each other.
``decode_cost`` is a bound on the bytes one decode allocates, from what the header says: the
raster the decoder fills (Pillow stores most modes at 4 bytes a pixel), the decoder's own
copy where its library keeps one (libwebp, libheif, libavif), the coefficients a progressive
JPEG keeps for the whole image whatever the output scale, and the small RGB image decoding
ends with when the decoded one is not RGB or not upright (``reduction_factor``).
``python -m benchmarks.decode_memory`` measures the real peak of each kind of photo beside
this estimate.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from model.defaults import DEFAULT_DECODE_BUDGET_BYTES, DEFAULT_MAX_PIXELS
from model.memory import trim_freed_memory

# Formats people send: phone cameras (JPEG, with its multi-picture MPO kind, HEIC/HEIF, AVIF),
# screenshots and editors (PNG, WebP, TIFF, BMP) and GIFs. Anything else (PSD, EPS, DDS, ...)
# is not a photo upload.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
# Bytes per pixel that a format's library holds beside Pillow's raster while decoding
# (measured by benchmarks.decode_memory): libwebp's animation decoder keeps RGBA canvases and
# hands Pillow a copy; libavif keeps YUV planes and an RGB buffer; libheif an RGB(A) buffer.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 12, "AVIF": 5}
# Pillow's bytes per pixel by mode; every other mode is stored at 4.
_PILLOW_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Large images that need a copy (to become RGB, or upright) are reduced (box filter) first,
# down to at least this many times the side the model's resize wants: Pillow documents a
# reducing gap of 3 as indistinguishable from resampling the full image. An upright RGB image
# is used as decoded: the model's resize reads it without a copy.
REDUCING_GAP = 3
# Rows converted at a time when an image becomes RGB: bounded in bytes, not in rows.
STRIP_BYTES = 4 * 2**20
# Copies of a strip alive at once while it becomes RGB (crop, RGBA, background, composite).
STRIP_COPIES = 5
MB = 2**20
# Decodes above this take the machine's one large-decode slot (a 4-megapixel PNG or more).
LARGE_DECODE_BYTES = 16 * MB
LARGE_DECODE_LOCK = Path(tempfile.gettempdir()) / "breedrecognizer-large-decode.lock"


@dataclass(frozen=True)
class DecodeLimits:
    """What one photo may cost: pixels (a bomb's tell) and bytes of memory while decoding."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES


DEFAULT_LIMITS = DecodeLimits()


def reduction_factor(size: tuple[int, int], min_side_hint: int | None) -> int:
    """How much a decoded image is reduced: keeps the shorter side >= gap × the hint."""
    if not min_side_hint:
        return 1
    return max(1, min(size) // (min_side_hint * REDUCING_GAP))


def strip_rows(width: int, factor: int) -> int:
    """Rows per strip: a multiple of the factor (strips reduce exactly like the whole)."""
    return max(1, STRIP_BYTES // (max(1, width) * 4 * factor)) * factor


def progressive_coefficients(img: Image.Image, full_size: tuple[int, int]) -> int:
    """Bytes libjpeg keeps for a progressive JPEG: 2 per coefficient of every component."""
    if not img.info.get("progressive"):
        return 0
    width, height = full_size
    layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    share = sum(h * v for _, h, v, _ in layers) / (h_max * v_max)
    return int(width * height * share * 2)


def decode_cost(img: Image.Image, full_size: tuple[int, int], factor: int) -> int:
    """Bytes decoding ``img`` (opened, not loaded; drafted if a JPEG) will allocate at most."""
    width, height = img.size
    per_pixel = _PILLOW_BYTES_PER_PIXEL.get(img.mode, 4)
    if img.format == "HEIF":
        per_pixel += len(img.getbands())
    per_pixel += _DECODER_BYTES_PER_PIXEL.get(img.format or "", 0)
    source = width * height * per_pixel
    result = math.ceil(width / factor) * math.ceil(height / factor) * 4
    # RGB is used as decoded; other modes become RGB reduced, a strip at a time.
    converted = 0 if img.mode == "RGB" else result + STRIP_COPIES * STRIP_BYTES
    upright = result  # turning it upright (EXIF orientation) copies the reduced image
    return source + progressive_coefficients(img, full_size) + converted + upright


def over_budget_message(
    img: Image.Image, full_size: tuple[int, int], cost: int, limits: DecodeLimits
) -> str:
    width, height = full_size
    return (
        f"decoding this {width}x{height} {img.format} image ({img.mode}) would take about "
        f"{cost / MB:.0f} MB; the limit is {limits.budget_bytes / MB:.0f} MB per photo: send a "
        "smaller photo (any 12-megapixel phone photo fits)"
    )


@contextlib.contextmanager
def large_decode_slot(cost: int) -> Iterator[None]:
    """Hold the machine's one large-decode slot while a decode of ``cost`` bytes runs."""
    if cost < LARGE_DECODE_BYTES:
        yield
        return
    with open(LARGE_DECODE_LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when the holder dies
        try:
            yield
        finally:
            trim_freed_memory()  # the decoder's buffers and strips are freed by now
