"""The HTTP API under real gunicorn: formats that must work, response shape, health, metrics."""

from __future__ import annotations

import re

import pytest
import requests
from PIL import Image

from model.metadata import IMAGEWOOF_CLASSES
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.artifacts import shipped_metadata
from tests.support.images import png_bytes
from tests.support.photos import encode, jpeg_bytes, textured

WNIDS = {c.wnid for c in IMAGEWOOF_CLASSES}


def _animated_gif() -> bytes:
    frames = [textured(160, 120, seed=s).convert("P") for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated_jpeg() -> bytes:
    img = textured(320, 160).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° CW to display
    return encode(img, "JPEG", exif=exif)


FORMATS = {
    "jpeg": lambda: jpeg_bytes(),
    "png": lambda: png_bytes(),
    "webp": lambda: encode(textured(), "WEBP"),
    "gif_first_frame": _animated_gif,
    "cmyk_jpeg": lambda: encode(textured(mode="CMYK"), "JPEG"),
    "greyscale_png": lambda: png_bytes(mode="L"),
    "greyscale_jpeg": lambda: encode(textured(mode="L"), "JPEG"),
    "rgba_png": lambda: png_bytes(mode="RGBA"),
    "palette_png": lambda: encode(textured().convert("P"), "PNG"),
    "la_png": lambda: png_bytes(mode="LA"),
    "exif_rotated_jpeg": _exif_rotated_jpeg,
    "large_jpeg_4000x3000": lambda: jpeg_bytes(4000, 3000),
    "tiny_but_valid_16x16": lambda: png_bytes(16, 16),
    "bmp": lambda: encode(textured(), "BMP"),
}


def _check_prediction(body: dict, top_k: int = 3) -> None:
    fields = {"id", "breed", "verdict", "known", "known_score", "looks_like", "top_k", "model"}
    assert set(body) == fields
    looks_like = body["looks_like"]
    assert looks_like is None or (
        body["verdict"] != "sure" and looks_like["kind"] in ("dog", "wild", "cat")
    )
    assert isinstance(body["id"], str) and len(body["id"]) >= 16
    assert body["verdict"] in ("sure", "unsure", "unknown")
    assert body["known"] == (body["verdict"] != "unknown")
    assert len(body["top_k"]) == top_k
    confidences = [item["confidence"] for item in body["top_k"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert {item["wnid"] for item in body["top_k"]} <= WNIDS
    assert isinstance(body["known"], bool)
    if body["known"]:
        assert body["breed"] == body["top_k"][0]
    else:
        assert body["breed"] is None
    assert set(body["model"]) == {
        *("name", "version", "architecture", "backend", "precision", "chosen_because")
    }
    assert body["model"]["backend"] == "onnxruntime"  # the default: a shipped ONNX copy


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_predict_accepts_image_formats(base_url: str, name: str) -> None:
    data = FORMATS[name]()
    response = requests.post(f"{base_url}/predict", files={"image": (name, data)}, timeout=30)
    assert response.status_code == 200, response.text
    _check_prediction(response.json())


def test_predict_field_file_and_raw_body(base_url: str) -> None:
    data = jpeg_bytes(seed=3)
    by_image = requests.post(f"{base_url}/predict", files={"image": ("a.jpg", data)}, timeout=30)
    by_file = requests.post(f"{base_url}/predict", files={"file": ("a.jpg", data)}, timeout=30)
    raw = requests.post(
        f"{base_url}/predict", data=data, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    octet = requests.post(
        f"{base_url}/predict",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    answers = [r.json() for r in (by_image, by_file, raw, octet)]
    assert all(r.status_code == 200 for r in (by_image, by_file, raw, octet))
    # Same bytes, same model: the same answer whichever way the photo was sent; each answer
    # has an id of its own.
    assert len({a.pop("id") for a in answers}) == 4
    assert all(a == answers[0] for a in answers)


def test_a_phone_size_upload_gets_the_answer_of_its_raw_body(base_url: str) -> None:
    """Over Werkzeug's 500 KB spooling size, sent as a form and as the raw body."""
    data = encode(textured(4032, 3024, seed=5), "JPEG", quality=95)
    assert len(data) > 500 * 1024
    form = requests.post(f"{base_url}/predict", files={"image": ("p.jpg", data)}, timeout=30)
    raw = requests.post(
        f"{base_url}/predict", data=data, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert form.status_code == raw.status_code == 200, form.text
    answers = [r.json() for r in (form, raw)]
    for answer in answers:
        answer.pop("id")
    assert answers[0] == answers[1]


@pytest.mark.parametrize("top_k", [1, 5, 10])
def test_top_k_parameter(base_url: str, top_k: int) -> None:
    response = requests.post(
        f"{base_url}/predict?top_k={top_k}", files={"image": ("a.jpg", jpeg_bytes())}, timeout=30
    )
    assert response.status_code == 200
    _check_prediction(response.json(), top_k)
    if top_k == 10:
        assert sum(i["confidence"] for i in response.json()["top_k"]) == pytest.approx(1, abs=1e-4)


def test_health_and_readiness(base_url: str) -> None:
    assert requests.get(f"{base_url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{base_url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model"]["name"] == shipped_metadata().name
    served, reason = choose_artifact(ModelSettings(uri=None, precision="auto"))
    precision = "int8" if served.endswith(".int8.onnx") else "fp32"
    suffix = "+int8" if precision == "int8" else ""
    assert ready.json()["model"]["version"] == shipped_metadata().version + suffix
    assert ready.json()["model"]["precision"] == precision
    assert ready.json()["model"]["chosen_because"] == reason


def test_index_page_served(base_url: str) -> None:
    page = requests.get(f"{base_url}/", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert 'name="image"' in page.text
    assert requests.get(f"{base_url}/static/app.js", timeout=5).status_code == 200


def _metric(text: str, metric: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(metric)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_aggregate_all_workers(base_url: str) -> None:
    before = requests.get(f"{base_url}/metrics", timeout=5).text
    count = 12  # with two sync workers, both serve some of these
    for seed in range(count):
        files = {"image": ("a.png", png_bytes(64, 64, seed=seed))}
        assert requests.post(f"{base_url}/predict", files=files, timeout=30).status_code == 200
    requests.get(f"{base_url}/no-such-page", timeout=5)
    after = requests.get(f"{base_url}/metrics", timeout=5)
    assert after.headers["Content-Type"].startswith("text/plain")
    text = after.text
    labels = {"route": "/predict", "method": "POST", "status": "200"}
    name = "breedrecognizer_http_requests_total"
    assert _metric(text, name, **labels) - _metric(before, name, **labels) == count
    assert _metric(text, name, route="unmatched", status="404") >= 1
    hist = "breedrecognizer_http_request_duration_seconds_count"
    assert _metric(text, hist, route="/predict") >= count
    assert _metric(text, "breedrecognizer_inference_duration_seconds_count") >= count
    assert _metric(text, "breedrecognizer_predictions_total") >= count
    info = "breedrecognizer_model_info"
    assert _metric(text, info, name=shipped_metadata().name) == 1
    assert 'backend="onnxruntime"' in text


def test_predict_chunked_raw_body(base_url: str) -> None:
    data = jpeg_bytes(seed=4)
    chunks = (data[i : i + 4096] for i in range(0, len(data), 4096))  # no Content-Length
    response = requests.post(
        f"{base_url}/predict", data=chunks, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200, response.text
    _check_prediction(response.json())
