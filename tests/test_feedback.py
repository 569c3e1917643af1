"""Corrections through POST /feedback under real gunicorn: what is stored, what is refused, and
that any worker or replica can take a correction of another one's answer (folder, Redis, S3)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from benchmarks.harness.redis_server import RedisServer, redis_installed, start_redis
from benchmarks.harness.server import GunicornServer
from benchmarks.photos import jpeg_bytes
from model.metadata import IMAGEWOOF_CLASSES
from service.feedback.recent import FolderRecentAnswers, RecentAnswer, RedisRecentAnswers
from service.feedback.store import FeedbackRecord, S3FeedbackStore, open_store
from tests.support.s3 import CREDENTIALS, moto_s3
from tests.support.server import start_gunicorn

BEAGLE = "n02088364"
RECORD_FIELDS = {"answer_id", "photo_sha256", "label", "answer", "received_at"}
needs_redis = pytest.mark.skipif(
    not redis_installed(), reason="redis-server is not installed (Debian package redis-server)"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback-store")


@pytest.fixture(scope="module")
def two_workers(store: Path) -> Iterator[GunicornServer]:
    """Two workers: a correction often reaches the worker that did not answer."""
    server = start_gunicorn({"FEEDBACK_URI": str(store), "WEB_CONCURRENCY": "2"})
    yield server
    server.stop()


def _predict(base_url: str, photo: bytes) -> dict:
    response = requests.post(f"{base_url}/predict", files={"image": ("dog.jpg", photo)}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _feedback(base_url: str, body: object, **kwargs) -> requests.Response:
    return requests.post(f"{base_url}/feedback", json=body, timeout=30, **kwargs)


def test_a_correction_is_stored_once_with_the_photo_and_no_identity(
    two_workers: GunicornServer, store: Path
) -> None:
    photo = jpeg_bytes(320, 240, seed=21)
    answer = _predict(two_workers.base_url, photo)
    first = _feedback(two_workers.base_url, {"id": answer["id"], "label": BEAGLE})
    assert first.status_code == 201 and first.json() == {
        "id": answer["id"],
        "label": BEAGLE,
        "stored": True,
    }
    again = _feedback(two_workers.base_url, {"id": answer["id"], "label": BEAGLE})
    assert again.status_code == 200 and again.json()["stored"] is False

    records = list(open_store(str(store)).records())
    mine = [r for r in records if r.answer_id == answer["id"]]
    assert len(mine) == 1
    raw = json.loads((store / "records" / f"{answer['id']}.{BEAGLE}.json").read_text())
    assert set(raw) == RECORD_FIELDS  # no chat id, name or IP: nothing about the sender
    record = mine[0]
    assert record.photo_sha256 == hashlib.sha256(photo).hexdigest()
    assert (store / "photos" / record.photo_sha256).read_bytes() == photo
    assert record.answer["verdict"] == answer["verdict"]
    assert record.answer["model"]["version"] == answer["model"]["version"]
    assert record.answer["top_k"] == answer["top_k"]


def test_any_worker_takes_a_correction_of_any_answer(
    two_workers: GunicornServer, store: Path
) -> None:
    ids = [_predict(two_workers.base_url, jpeg_bytes(200, 160, seed=s))["id"] for s in range(8)]
    statuses = [_feedback(two_workers.base_url, {"id": i, "label": "none"}) for i in ids]
    assert [r.status_code for r in statuses] == [201] * len(ids)
    stored = {r.answer_id for r in open_store(str(store)).records() if r.label == "none"}
    assert set(ids) <= stored


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"label": BEAGLE}, 400, "missing_id"),
        ({"id": 12, "label": BEAGLE}, 400, "missing_id"),
        ({"id": "x"}, 400, "missing_label"),
        ([1, 2], 400, "not_json"),
        ({"id": "never-given-0000", "label": BEAGLE}, 404, "unknown_answer"),
        ({"id": "../../../etc/passwd", "label": BEAGLE}, 404, "unknown_answer"),
    ],
)
def test_bad_feedback_gets_a_json_4xx(
    two_workers: GunicornServer, body: object, status: int, code: str
) -> None:
    response = _feedback(two_workers.base_url, body)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_a_label_outside_the_ten_breeds_is_refused_and_nothing_stored(
    two_workers: GunicornServer, store: Path
) -> None:
    answer = _predict(two_workers.base_url, jpeg_bytes(240, 200, seed=33))
    response = _feedback(two_workers.base_url, {"id": answer["id"], "label": "n02123045"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_label"
    assert not [r for r in open_store(str(store)).records() if r.answer_id == answer["id"]]


def test_a_body_that_is_not_json_or_too_big_is_refused(two_workers: GunicornServer) -> None:
    url = f"{two_workers.base_url}/feedback"
    text = requests.post(url, data=b"id=1&label=none", timeout=30)
    assert text.status_code == 400 and text.json()["error"]["code"] == "not_json"
    big = requests.post(url, json={"id": "x" * 10_000, "label": "none"}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


def test_metrics_count_verdicts_and_feedback(two_workers: GunicornServer) -> None:
    answer = _predict(two_workers.base_url, jpeg_bytes(300, 220, seed=44))
    assert _feedback(two_workers.base_url, {"id": answer["id"], "label": BEAGLE}).ok
    text = requests.get(f"{two_workers.base_url}/metrics", timeout=30).text
    outcome = "right" if (answer["breed"] or {}).get("wnid") == BEAGLE else "wrong"
    assert f'breedrecognizer_feedback_total{{label="{BEAGLE}",outcome="{outcome}"}}' in text
    assert f'breedrecognizer_verdicts_total{{verdict="{answer["verdict"]}"}}' in text


def test_feedback_off_without_a_store(base_url: str) -> None:
    """The suite's default server has no FEEDBACK_URI: answers still have ids."""
    answer = _predict(base_url, jpeg_bytes(200, 200, seed=5))
    assert answer["id"]
    response = _feedback(base_url, {"id": answer["id"], "label": BEAGLE})
    assert response.status_code == 404 and response.json()["error"]["code"] == "feedback_off"


def test_a_photo_is_kept_only_while_fresh_and_within_bounds(tmp_path: Path) -> None:
    recent = FolderRecentAnswers(tmp_path, keep_s=60, max_items=3, max_bytes=10_000)
    for i in range(6):
        recent.put(f"id{i}", RecentAnswer(b"x" * 1000, {"n": i}))
        stamp = time.time() - 6 + i  # one second apart, oldest first
        for suffix in (".photo", ".json"):
            os.utime(tmp_path / f"id{i}{suffix}", (stamp, stamp))
    recent.prune()
    assert sorted(p.name for p in tmp_path.glob("*.photo")) == [
        "id3.photo",
        "id4.photo",
        "id5.photo",
    ]
    assert recent.get("id0") is None and recent.get("id5") == RecentAnswer(b"x" * 1000, {"n": 5})

    old = time.time() - 61
    os.utime(tmp_path / "id5.json", (old, old))
    assert recent.get("id5") is None  # expired: unknown to feedback, even before a sweep

    small = FolderRecentAnswers(tmp_path / "small", keep_s=60, max_items=100, max_bytes=2500)
    for i in range(4):
        small.put(f"b{i}", RecentAnswer(b"y" * 1000, {}))
        stamp = time.time() - 4 + i
        os.utime(tmp_path / "small" / f"b{i}.photo", (stamp, stamp))
    small.prune()
    assert sorted(p.name for p in (tmp_path / "small").glob("*.photo")) == ["b2.photo", "b3.photo"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@needs_redis
def test_redis_keeps_a_bounded_number_of_photos_for_a_while(redis_server: RedisServer) -> None:
    recent = RedisRecentAnswers(redis_server.url, keep_s=120, max_items=3)
    for i in range(5):
        recent.put(f"r{i}", RecentAnswer(bytes([i]) * 10, {"n": i}))
    assert [recent.get(f"r{i}") is None for i in range(5)] == [True, True, False, False, False]
    assert recent.get("r4") == RecentAnswer(bytes([4]) * 10, {"n": 4})
    ttl = redis_server.client().ttl("breedrecognizer:recent:r4")
    assert 0 < ttl <= 120


@needs_redis
def test_replicas_sharing_redis_take_each_others_corrections(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"FEEDBACK_URI": str(tmp_path / "store"), "REDIS_URL": redis_server.url}
    first, second = start_gunicorn(env), start_gunicorn(env)
    try:
        answer = _predict(first.base_url, jpeg_bytes(260, 200, seed=55))
        response = _feedback(second.base_url, {"id": answer["id"], "label": "none"})
        assert response.status_code == 201, response.text
    finally:
        first.stop()
        second.stop()
    assert [r.answer_id for r in open_store(str(tmp_path / "store")).records()] == [answer["id"]]


S3_BUCKET = "breedrecognizer-feedback"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(S3_BUCKET) as endpoint:
        yield endpoint


def test_corrections_go_to_s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}
    server = start_gunicorn({**env, "FEEDBACK_URI": f"s3://{S3_BUCKET}/people/"})
    try:
        photo = jpeg_bytes(280, 210, seed=66)
        answer = _predict(server.base_url, photo)
        wnid = IMAGEWOOF_CLASSES[3].wnid
        assert _feedback(server.base_url, {"id": answer["id"], "label": wnid}).status_code == 201
        assert _feedback(server.base_url, {"id": answer["id"], "label": wnid}).status_code == 200
    finally:
        server.stop()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = S3FeedbackStore(S3_BUCKET, "people")
    records = list(store.records())
    assert [(r.answer_id, r.label) for r in records] == [(answer["id"], wnid)]
    assert store.photo(records[0].photo_sha256) == photo
    assert isinstance(records[0], FeedbackRecord) and records[0].received_at
