"""The copy of a photo that is kept for feedback: upright, small, and carrying nothing but pixels.

A phone photo's metadata says where and when it was taken and on which device (EXIF, GPS,
XMP, maker notes, the colour profile's device description). None of it is needed to learn a
breed, so none of it is kept: the photo is decoded as the service decodes it (orientation
applied, RGB), shrunk to ``FEEDBACK_PHOTO_SIDE`` on its longest side and written as a fresh
JPEG with no metadata at all. The pixels are the ones the model saw (the decoder ignores
colour profiles too), and the copy is a tenth of a phone photo's bytes, which is what lets
Redis keep an hour of them (``FEEDBACK_KEEP_REDIS_MB``).

This runs once per kept photo, when the answer is given (``Feedback.keep``), so the raw bytes
never reach a store, not even the recent one (docs/feedback.md has its measured cost).
"""

from __future__ import annotations

import io

from PIL import Image

from model.decode_budget import DEFAULT_LIMITS, DecodeLimits
from model.preprocessing import decode_image

JPEG_QUALITY = 90  # no visible loss at training size; ~4x smaller than 100


def private_copy(data: bytes, max_side: int, limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """An upright JPEG of the photo, at most ``max_side`` px on its longest side, no metadata.

    Decoded within ``limits``, the same as the model's decode of it. Raises
    ``ImageDecodeError`` for bytes the service cannot decode.
    """
    # The shorter side is decoded at least this large (JPEG: DCT scaling), so the longest
    # side still reaches max_side after the decode, whatever the aspect ratio.
    image = decode_image(data, min_side_hint=max_side, limits=limits)
    if max(image.size) > max_side:
        # Bilinear: antialiased too, and under half of LANCZOS' time on a phone photo.
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    image.info = {}  # nothing from the original (EXIF, XMP, ICC profile, comments) goes along
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
