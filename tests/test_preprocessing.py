"""The one preprocessing definition: decoding odd inputs upright in RGB, resize/crop, normalise."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from model.decode_budget import (
    LARGE_DECODE_LOCK,
    REDUCING_GAP,
    DecodeLimits,
    decode_cost,
    strip_rows,
)
from model.metadata import InputQuantization, Preprocessing
from model.preprocessing import (
    ImageDecodeError,
    decode_image,
    normalise,
    preprocess_bytes,
    quantize_input,
    resize_and_crop,
)
from tests.support.images import heic_bytes
from tests.support.photos import encode, jpeg_bytes, textured

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


def test_a_model_taking_uint8_input_gets_the_normalised_photo_quantized() -> None:
    """The quantized lookup table gives what quantizing the float rows gives, every level."""
    levels = (np.arange(256 * 3) % 256).astype(np.uint8)  # every level in every channel
    img = Image.fromarray(levels.reshape(16, 16, 3))
    quantization = InputQuantization(scale=0.0078393, zero_point=128)
    spec = Preprocessing(16, 16, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    quantized = dataclasses.replace(spec, input_quantization=quantization)
    out = normalise(img, quantized)
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, quantize_input(normalise(img, spec), quantization))
    assert out.min() == 0 and out.max() == 255  # ImageNet's mean/std overflow this scale


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
        decode_image(data, limits=DecodeLimits(max_pixels=1_000_000))
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
        decode_image(data, limits=DecodeLimits(max_pixels=1_000_000))
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(("keep", "code"), [(0.5, "corrupt_image"), (0.002, "not_an_image")])
def test_truncated_heic_has_stable_codes(keep: float, code: str) -> None:
    data = heic_bytes(textured(320, 240), quality=90)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: max(16, int(len(data) * keep))])
    assert info.value.code == code


def _rgba_photo(size: tuple[int, int]) -> Image.Image:
    """A textured photo with a transparent border: compositing and reduction both matter."""
    img = textured(*size, seed=5).convert("RGBA")
    alpha = Image.new("L", size, 0)
    alpha.paste(255, (size[0] // 8, size[1] // 8, size[0] * 7 // 8, size[1] * 7 // 8))
    img.putalpha(alpha)
    return img


def test_over_budget_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL.PngImagePlugin import PngImageFile

    data = encode(Image.new("RGBA", (1000, 1000), (1, 2, 3, 4)), "PNG")

    def no_decode(self: PngImageFile) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(PngImageFile, "load", no_decode)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, limits=DecodeLimits(budget_bytes=2 * 2**20))
    assert info.value.code == "too_many_pixels"
    assert "1000x1000 PNG" in info.value.message and "the limit is 2 MB" in info.value.message


def test_the_cost_follows_what_the_decoder_allocates() -> None:
    """Progressive JPEGs keep every coefficient; libwebp holds canvases beside Pillow's."""
    photo = textured(2000, 1500)
    cost = {}
    for name, data in {
        "baseline": encode(photo, "JPEG"),
        "progressive": encode(photo, "JPEG", progressive=True, subsampling=0),
        "png": encode(photo, "PNG"),
        "webp": encode(photo, "WEBP"),
    }.items():
        with Image.open(io.BytesIO(data)) as img:
            cost[name] = decode_cost(img, img.size, 1)
    pixels = 2000 * 1500
    assert cost["progressive"] - cost["baseline"] == 3 * 2 * pixels  # 3 full components
    assert cost["png"] >= 4 * pixels  # Pillow's RGB raster
    assert cost["webp"] >= cost["png"] + 12 * pixels


def test_only_photo_formats_are_opened() -> None:
    for fmt in ("PPM", "TGA", "ICO"):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(encode(textured(64, 64), fmt))
        assert info.value.code == "not_an_image", fmt


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_strip_conversion_equals_converting_the_whole(mode: str) -> None:
    """Converted and reduced a strip at a time, as if composited whole and then reduced."""
    size = (1800, 1300)  # several strips at factor 2
    img = _rgba_photo(size)
    if mode == "P":
        img = img.convert("RGB").convert("P")
    elif mode == "LA":
        img = img.convert("LA")
    assert strip_rows(size[0], 2) < size[1]
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", size, (255, 255, 255, 255))
    expected = Image.alpha_composite(white, rgba).convert("RGB").reduce(2)
    decoded = decode_image(encode(img, "PNG"), min_side_hint=size[1] // (2 * REDUCING_GAP))
    assert decoded.size == expected.size
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))


def test_16_bit_strips_share_the_whole_image_scale() -> None:
    arr = np.linspace(1000, 60000, 1500 * 1300, dtype=np.uint16).reshape(1300, 1500)
    assert strip_rows(1500, 1) < 1300
    decoded = decode_image(encode(Image.fromarray(arr), "PNG"))
    low, high = float(arr.min()), float(arr.max())
    expected = ((arr.astype(np.float32) - low) / (high - low) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(decoded)[:, :, 0], expected)


def test_large_images_are_reduced_and_turned_upright() -> None:
    stored = textured(3000, 2000).convert("RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(stored, "PNG", exif=exif), min_side_hint=256)
    factor = 2000 // (256 * REDUCING_GAP)
    assert factor == 2
    assert decoded.size == (1000, 1500)  # reduced, then turned to portrait
    assert decoded.mode == "RGB"


def test_a_large_decode_waits_for_the_machines_slot() -> None:
    """Another process holding the large-decode slot holds back a large decode, not a small."""
    large = encode(textured(3000, 2000), "PNG")  # ~24 MB raster: over LARGE_DECODE_BYTES
    small = jpeg_bytes(320, 240)
    done = threading.Event()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOT, str(LARGE_DECODE_LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        decode_image(small)  # small decodes never wait
        worker = threading.Thread(target=lambda: (decode_image(large), done.set()))
        worker.start()
        assert not done.wait(0.5)  # bounded: the slot is held, so the decode waits
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert done.wait(30)
        worker.join()
    finally:
        holder.kill()
        holder.wait()


HOLD_SLOT = """
import fcntl, sys
with open(sys.argv[1], "a+b") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()
"""
