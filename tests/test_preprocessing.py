"""The one preprocessing definition: decoding odd inputs upright in RGB, resize/crop, normalise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import encode, jpeg_bytes, textured
from model.metadata import Preprocessing
from model.preprocessing import (
    ImageDecodeError,
    decode_image,
    normalise,
    preprocess_bytes,
    resize_and_crop,
)
from tests.support.images import heic_bytes

SPEC = Preprocessing(input_size=224, resize_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (100, 200), (0, 0, 255))  # stored portrait...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...shown rotated 90°, i.e. landscape
    img = decode_image(encode(stored, "JPEG", exif=exif))
    assert img.size == (200, 100)


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = decode_image(encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG"))
    assert img.mode == "RGB"
    r, g, b = img.getpixel((32, 32))
    assert r > 200 and g < 60 and b < 60  # cyan-free, full magenta+yellow = red


def test_transparency_is_composited_on_white() -> None:
    img = decode_image(encode(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 255, 255)


def test_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour).convert("P") for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, _, b = decode_image(data).getpixel((16, 16))
    assert r > 200 and b < 60


def test_greyscale_16_bit_png() -> None:
    arr = np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)
    img = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((63, 63)) == (255, 255, 255)


def test_jpeg_draft_decode_is_close_to_full_decode() -> None:
    """DCT-scaled decoding of big JPEGs must not change what the model sees by much."""
    data = jpeg_bytes(2400, 1800, seed=5)
    fast = preprocess_bytes(data, SPEC)
    full = normalise(resize_and_crop(decode_image(data), SPEC), SPEC)
    assert fast.shape == full.shape == (3, 224, 224)
    assert np.abs(fast - full).mean() < 0.02  # in normalised units (range 2)


def test_normalise_matches_definition() -> None:
    img = textured(224, 224)
    out = normalise(img, SPEC)
    expected = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-6)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


def test_resize_and_crop_takes_the_centre() -> None:
    img = Image.new("RGB", (512, 256), (0, 0, 0))
    img.paste((255, 255, 255), (128, 0, 384, 256))  # white centre square
    out = np.asarray(resize_and_crop(img, SPEC))
    assert out.shape == (224, 224, 3)
    assert out.min() > 250  # the crop lies inside the white centre


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"hello world", "not_an_image"),
        (jpeg_bytes()[:400], "corrupt_image"),
        (encode(Image.new("RGB", (4, 4)), "PNG"), "image_too_small"),
    ],
    ids=["empty", "text", "truncated", "tiny"],
)
def test_decode_errors_have_stable_codes(data: bytes, code: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert info.value.code == code


def test_pixel_limit() -> None:
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"


def test_heic_is_decoded_to_rgb() -> None:
    img = decode_image(heic_bytes(textured(64, 48), quality=90))
    assert img.mode == "RGB" and img.size == (64, 48)


def test_heic_rotation_is_applied_once() -> None:
    """libheif turns the photo by its rotation box; the EXIF copy must not turn it again."""
    stored = Image.new("RGB", (100, 200), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    assert decode_image(heic_bytes(stored, exif=exif.tobytes())).size == (200, 100)


def test_heic_transparency_is_composited_on_white() -> None:
    img = decode_image(heic_bytes(Image.new("RGBA", (32, 32), (0, 0, 0, 0))))
    assert img.mode == "RGB"
    assert min(img.getpixel((5, 5))) > 250


def test_heic_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from pi_heif.as_plugin import HeifImageFile

    data = heic_bytes(Image.new("L", (1200, 1000)), quality=50)

    def no_decode(self: HeifImageFile) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(HeifImageFile, "load", no_decode)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(("keep", "code"), [(0.5, "corrupt_image"), (0.002, "not_an_image")])
def test_truncated_heic_has_stable_codes(keep: float, code: str) -> None:
    data = heic_bytes(textured(320, 240), quality=90)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: max(16, int(len(data) * keep))])
    assert info.value.code == code
