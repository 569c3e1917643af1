"""The one preprocessing definition, shared by the service and the training lab's evaluation.

Bytes in, normalised float32 CHW array out, following the ``Preprocessing`` stored in the
artifact. Decoding faces untrusted uploads, so it is defensive and bounded: only photo formats
are opened, the pixel count and the memory the decode will take (model/decode_budget.py) are
checked from the header before any pixel is decoded, one photo is decoded at a time per
process (and one large one per machine), and no full-size copy is made after the decoder's
own raster: JPEGs are decoded at reduced scale (libjpeg DCT scaling, ``Image.draft``), other
large images are reduced while they become RGB, strip by strip. HEIC/HEIF (the iPhone's
default) opens like any other format through the pi-heif plugin (pillow-heif's decode-only
build), under the same limits.
"""

from __future__ import annotations

import functools
import io
import threading
import warnings

import numpy as np
from pi_heif import register_heif_opener
from PIL import ExifTags, Image, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from model.decode_budget import (
    DECODABLE_FORMATS,
    DEFAULT_LIMITS,
    DecodeLimits,
    decode_cost,
    large_decode_slot,
    over_budget_message,
    reduction_factor,
    strip_rows,
)
from model.metadata import InputQuantization, Preprocessing

# Only the primary picture is ever used: thumbnails, depth maps and auxiliary images are not
# read. libheif applies the file's rotation and mirroring itself and resets the EXIF
# orientation to 1, so the photo is not turned a second time below.
register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

MIN_SIDE = 8
# One decode at a time per process: the memory budget holds per process, whatever threads
# (the HTTP app, the bot) ask at once. A decode takes milliseconds; the model runs outside.
_DECODE_LOCK = threading.Lock()

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# EXIF orientation → the transpose that shows the photo upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_image(
    data: bytes, min_side_hint: int | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Decode untrusted bytes to an upright RGB image, within ``limits``.

    ``min_side_hint`` lets decoding work at reduced scale: the shorter side stays at least
    that large for JPEGs (DCT scaling) and at least ``REDUCING_GAP`` times that for other
    formats, so the later resize sees what a full decode would give. EXIF orientation is
    applied, the first frame of animations is used, transparency is composited on white,
    CMYK/greyscale/palette/16-bit/float images become RGB.
    """
    if not data:
        raise ImageDecodeError("empty_image", "the uploaded file is empty")
    try:
        with _DECODE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
            full_size = width, height = img.size
            if width * height > limits.max_pixels:
                raise ImageDecodeError(
                    "image_too_large",
                    f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
                )
            if min(width, height) < MIN_SIDE:
                raise ImageDecodeError(
                    "image_too_small", f"image is {width}x{height}; each side needs {MIN_SIDE}+ px"
                )
            if isinstance(img, JpegImageFile) and min_side_hint:
                scale = min(width, height) / min_side_hint
                if scale >= 2:
                    img.draft("RGB", (width / scale, height / scale))
            factor = reduction_factor(img.size, min_side_hint)
            cost = decode_cost(img, full_size, factor)
            if cost > limits.budget_bytes:
                raise ImageDecodeError(
                    "too_many_pixels", over_budget_message(img, full_size, cost, limits)
                )
            with large_decode_slot(cost):
                img.seek(0)
                img.load()
                turn = _UPRIGHT.get(img.getexif().get(ExifTags.Base.Orientation, 1))
                rgb = _to_rgb(img, factor if turn or img.mode != "RGB" else 1)
                del img  # the decoder's raster goes before the upright copy is made
                return rgb.transpose(turn) if turn is not None else rgb
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            "image_too_large", f"image refused as a decompression bomb: {exc}"
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "not_an_image", "the file is not an image format we can read"
        ) from None
    # RuntimeError: libheif's errors other than bad input (its own limits, allocation).
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, RuntimeError) as exc:
        raise ImageDecodeError("corrupt_image", f"the image could not be decoded: {exc}") from None


def _to_rgb(img: Image.Image, factor: int) -> Image.Image:
    """RGB, reduced ``factor`` times: a strip at a time, so no full-size copy is ever made
    (RGB itself is returned as it is, or reduced in one call)."""
    if img.mode == "RGB":
        return img if factor == 1 else img.reduce(factor)
    width, height = img.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    extrema = img.getextrema() if img.mode in _HIGH_DEPTH_MODES else None
    rows = strip_rows(width, factor)
    for top in range(0, height, rows):
        strip = _strip_to_rgb(img.crop((0, top, width, min(height, top + rows))), extrema)
        out.paste(strip if factor == 1 else strip.reduce(factor), (0, top // factor))
    return out


def _strip_to_rgb(strip: Image.Image, extrema: object) -> Image.Image:
    """One strip to RGB; ``extrema`` (the whole image's) scales 16-bit and float images."""
    if strip.mode == "P":
        strip = strip.convert("RGBA") if "transparency" in strip.info else strip.convert("RGB")
    if strip.mode in _ALPHA_MODES:
        rgba = strip.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if extrema is not None:
        low, high = extrema  # type: ignore[misc]
        arr = np.asarray(strip, dtype=np.float32)
        span = float(high - low) or 1.0
        strip = Image.fromarray(((arr - low) / span * 255).astype(np.uint8))
    return strip.convert("RGB")


def resize_and_crop(img: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize the shorter side to ``resize_size`` and take the centre ``input_size`` square."""
    width, height = img.size
    side = min(width, height) * spec.input_size / spec.resize_size  # crop side, source pixels
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    # One resample call does crop + resize, so no full-size intermediate copy is made.
    return img.resize(
        (spec.input_size, spec.input_size),
        resample=_RESAMPLE[spec.interpolation],
        box=box,
        reducing_gap=None,
    )


def normalise(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """uint8 HWC RGB → the model's CHW input: float32, scaled to [0,1] then standardised with
    mean/std, or that quantized to uint8 when the model takes it so (``input_quantization``).

    A 256-entry lookup table per channel does scale + shift (+ quantize) in one gather
    straight into the CHW output: about 2.5× faster than float arithmetic on the whole array
    plus a transpose, and the quantized table makes the int8 copy's input quantization free.
    """
    arr = np.asarray(img)
    lut = _normalise_lut(spec.mean, spec.std, spec.input_quantization)
    out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=lut.dtype)
    for channel in range(3):
        np.take(lut[channel], arr[:, :, channel], out=out[channel])
    return out


def quantize_input(rows: np.ndarray, quantization: InputQuantization) -> np.ndarray:
    """Normalised float rows → the uint8 input of a model that takes it quantized, computed
    as ONNX ``QuantizeLinear`` does (float32 division, round half to even, saturate)."""
    scaled = np.rint(rows.astype(np.float32, copy=False) / np.float32(quantization.scale))
    return np.clip(scaled + quantization.zero_point, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _normalise_lut(
    mean: tuple[float, ...], std: tuple[float, ...], quantization: InputQuantization | None
) -> np.ndarray:
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    mean_ = np.asarray(mean, dtype=np.float32)[:, None]
    std_ = np.asarray(std, dtype=np.float32)[:, None]
    lut = ((levels[None, :] - mean_) / std_).astype(np.float32)
    if quantization is not None:
        lut = quantize_input(lut, quantization)
    lut.flags.writeable = False
    return lut


def preprocess_image(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """A decoded RGB image → the model's input row (3×S×S, float32 or quantized uint8)."""
    return normalise(resize_and_crop(img, spec), spec)


def preprocess_bytes(
    data: bytes, spec: Preprocessing, limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Raw upload bytes → the model's input row; raises ImageDecodeError on bad input."""
    img = decode_image(data, min_side_hint=spec.resize_size, limits=limits)
    return preprocess_image(img, spec)
