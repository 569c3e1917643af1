"""Hostile uploads against real gunicorn (two workers, the bot on): every one is a JSON 4xx or
an answer, no worker is lost, and health checks never wait behind the model.

The uploads are made in tests/support/hostile_inputs.py: tiny files with huge dimensions in
every format the service reads, alpha, 16-bit, float, progressive, many frames, a pixel flood;
and phone-size photos, which must still be answered, with the answers a full decode gives.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from model.backends import load_backend
from model.decode_budget import DecodeLimits
from model.defaults import FP32_MODEL
from model.predictor import Predictor
from model.preprocessing import decode_image, preprocess_image
from tests.support.data import imagewoof_dir, stratified_val_sample
from tests.support.fake_telegram import SECRET, FakeTelegram
from tests.support.gunicorn_server import GunicornServer
from tests.support.hostile_inputs import Upload, hostile_uploads, phone_uploads
from tests.support.server import start_gunicorn

# What each hostile upload must get: the decode budget's refusal, the pixel limit's, or an
# answer (cheap to decode despite its size).
EXPECTED = {
    "rgba-40mp.png": (422, "too_many_pixels"),
    "16000x2500.webp": (422, "too_many_pixels"),
    "float-40mp.tif": (422, "too_many_pixels"),
    "16bit-20mp.png": (200, None),
    "progressive-39mp.jpg": (422, "too_many_pixels"),
    "baseline-40mp.jpg": (200, None),
    "heic-40mp.heic": (422, "too_many_pixels"),
    "12-frames.gif": (200, None),
    "12-frames.png": (200, None),
    "12-pages.tif": (200, None),
    "flood-100mp.png": (413, "image_too_large"),
}


@pytest.fixture(scope="module")
def hostile_server(fake: FakeTelegram) -> Iterator[GunicornServer]:
    """Two workers as deployed, the bot on (its client library loaded, as in production)."""
    env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "WEB_CONCURRENCY": "2"}
    running = start_gunicorn(env)
    yield running
    running.stop()


def post(server: GunicornServer, upload: Upload) -> requests.Response:
    return requests.post(f"{server.base_url}/predict", files=upload.files(), timeout=120)


def test_every_hostile_upload_is_refused_with_json_or_answered(
    hostile_server: GunicornServer,
) -> None:
    uploads = hostile_uploads()
    assert {u.name for u in uploads} == set(EXPECTED)
    workers = {p.pid for p in hostile_server.worker_processes()}
    with ThreadPoolExecutor(2) as pool:  # both workers busy with them at once
        responses = list(pool.map(lambda u: post(hostile_server, u), [*uploads, *uploads]))
    for upload, response in zip([*uploads, *uploads], responses, strict=True):
        status, code = EXPECTED[upload.name]
        assert response.status_code == status, (upload.name, response.text)
        body = response.json()
        if code is None:
            assert body["verdict"] in ("sure", "unsure", "unknown"), upload.name
        else:
            assert body["error"]["code"] == code, upload.name
    refused = next(r for u, r in zip(uploads, responses, strict=False) if u.name.endswith(".webp"))
    assert "the limit is 128 MB" in refused.json()["error"]["message"]
    assert {p.pid for p in hostile_server.worker_processes()} == workers  # none lost


def test_phone_photos_are_answered(hostile_server: GunicornServer) -> None:
    for upload in phone_uploads():
        response = post(hostile_server, upload)
        assert response.status_code == 200, (upload.name, response.text)
        assert response.json()["top_k"], upload.name


def test_health_answers_while_the_model_is_queued(hostile_server: GunicornServer) -> None:
    """With many large photos queued for the model, /healthz and /readyz still answer before
    the queue is through: they never wait behind inference."""
    screenshot = next(u for u in phone_uploads() if u.name == "screenshot.png")
    finished = 0
    first_done = threading.Event()
    lock = threading.Lock()

    def predict() -> None:
        nonlocal finished
        assert post(hostile_server, screenshot).status_code == 200
        with lock:
            finished += 1
        first_done.set()

    queued = 16
    with ThreadPoolExecutor(queued) as pool:
        futures = [pool.submit(predict) for _ in range(queued)]
        assert first_done.wait(120)  # the queue is running: about queued - 2 still wait
        for path in ("/healthz", "/readyz"):
            response = requests.get(f"{hostile_server.base_url}{path}", timeout=30)
            assert response.status_code == 200
            with lock:
                assert finished < queued, f"{path} answered only after the whole queue"
        for future in futures:
            future.result()


def test_readyz_says_what_is_down_without_its_error_text(fake: FakeTelegram) -> None:
    """An unreachable Redis: /readyz names the part that is down, not the client's error."""
    env = {
        **fake.env(),
        "TELEGRAM_SECRET_TOKEN": SECRET,
        "REDIS_URL": "redis://127.0.0.1:9/0",  # nothing listens on the discard port
    }
    server = start_gunicorn(env)
    try:
        response = requests.get(f"{server.base_url}/readyz", timeout=30)
    finally:
        server.stop()
    assert response.status_code == 200  # /predict works without the bot's store
    telegram = response.json()["telegram"]
    assert telegram == {"store": "redis", "reachable": False}
    assert "127.0.0.1" not in response.text and "Error" not in response.text


@pytest.mark.skipif(imagewoof_dir() is None, reason="needs the Imagewoof photos (../shared/data)")
def test_phone_size_photos_get_the_answers_of_a_full_decode() -> None:
    """Real photos blown up to phone sizes in the formats that are now reduced while they
    become RGB (alpha screenshots, 16-bit) get the breed and verdict a full decode gives."""
    root = imagewoof_dir()
    assert root is not None
    predictor = Predictor(load_backend(FP32_MODEL, threads=1))
    spec = predictor.metadata.preprocessing
    unlimited = DecodeLimits(max_pixels=2**40, budget_bytes=2**40)
    disagreements, compared = [], 0
    for path, _ in stratified_val_sample(root, 20, seed=1):
        photo = Image.open(path).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
        grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        for name, upload in (
            ("rgba", Upload("p.png", _png(photo.convert("RGBA")), "image/png")),
            ("16-bit", Upload("g.png", _png(Image.fromarray(grey16)), "image/png")),
        ):
            served = predictor.predict_bytes(upload.data)
            full = decode_image(upload.data, min_side_hint=None, limits=unlimited)
            reference = predictor.predict_batch(preprocess_image(full, spec)[None])[0]
            compared += 1
            same = (served.verdict, served.top_k[0].wnid) == (
                reference.verdict,
                reference.top_k[0].wnid,
            )
            if not same:
                disagreements.append((path.name, name, served, reference))
    assert compared == 40
    assert not disagreements, disagreements


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
