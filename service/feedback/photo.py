"""The copy of a photo that is kept for feedback: upright, small, and carrying nothing but pixels.

A phone photo's metadata says where and when it was taken and on which device (EXIF, GPS,
XMP, maker notes, the colour profile's device description). None of it is needed to learn a
breed, so none of it is kept: the photo as the model decoded it (upright RGB; a large JPEG at
the reduced scale the model reads, at least its resize side on the shorter side) is shrunk to
``FEEDBACK_PHOTO_SIDE`` on its longest side and written as a fresh JPEG with no metadata.
The pixels are the ones the model saw (the decoder ignores colour profiles too), and the copy
is a small share of a phone photo's bytes, which is what lets Redis keep an hour of them
(``FEEDBACK_KEEP_REDIS_MB``).

It is made from the photo the model decoded (``Predictor.decode``), once per kept photo when
the answer is given (``Feedback.keep``): no second decode, and the raw bytes never reach a
store, not even the recent one.
"""

from __future__ import annotations

import io

from PIL import Image

JPEG_QUALITY = 90  # no visible loss at training size; ~4x smaller than 100


def private_copy(image: Image.Image, max_side: int) -> bytes:
    """A JPEG of the decoded (upright RGB) photo, at most ``max_side`` px on its longest side,
    with no metadata."""
    width, height = image.size
    scale = max_side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Bilinear after a box reduction: antialiased, and fast on a 12 MP photo.
        copy = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        copy = image.copy()
    copy.info = {}  # nothing of the original (EXIF, XMP, ICC profile, comments) goes along
    out = io.BytesIO()
    copy.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
