"""Corrections through POST /feedback under real gunicorn: what is stored (one label per
answer, a private copy of the photo), what is refused, that any worker or replica can take a
correction of another one's answer (folder, Redis, S3), and that the photos kept in Redis stay
within their bytes and never cost an answer."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import ExifTags, Image, ImageCms

from model.metadata import IMAGEWOOF_CLASSES
from service.answer import new_answer_id
from service.feedback.recent import (
    KEY_PREFIX,
    FolderRecentAnswers,
    RecentAnswer,
    RedisRecentAnswers,
)
from service.feedback.service import Feedback
from service.feedback.store import FeedbackRecord, LocalFeedbackStore, S3FeedbackStore, open_store
from tests.support.gunicorn_server import GunicornServer, free_port
from tests.support.photos import jpeg_bytes, textured
from tests.support.redis_server import RedisServer, redis_installed, start_redis
from tests.support.s3 import CREDENTIALS, moto_s3
from tests.support.server import start_gunicorn

BEAGLE = "n02088364"
SAMOYED = "n02111889"
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


def _jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def test_one_record_per_answer_with_its_latest_label_and_no_identity(
    two_workers: GunicornServer, store: Path
) -> None:
    photo = jpeg_bytes(320, 240, seed=21)
    answer = _predict(two_workers.base_url, photo)
    body = {"id": answer["id"], "label": BEAGLE}
    first = _feedback(two_workers.base_url, body)
    assert first.status_code == 201
    assert first.json() == {**body, "stored": True, "replaced": False}
    again = _feedback(two_workers.base_url, body)
    assert again.status_code == 200 and again.json()["stored"] is False

    other = _feedback(two_workers.base_url, {"id": answer["id"], "label": SAMOYED})
    assert other.status_code == 201 and other.json()["replaced"] is True
    repeat = _feedback(two_workers.base_url, {"id": answer["id"], "label": SAMOYED})
    assert repeat.status_code == 200 and repeat.json()["replaced"] is False

    mine = [r for r in open_store(str(store)).records() if r.answer_id == answer["id"]]
    assert [r.label for r in mine] == [SAMOYED]  # eleven clicks are not eleven votes
    assert sorted((store / "records").glob(f"{answer['id']}*")) == [
        store / "records" / f"{answer['id']}.json"
    ]
    raw = json.loads((store / "records" / f"{answer['id']}.json").read_text())
    assert set(raw) == RECORD_FIELDS  # no chat id, name or IP: nothing about the sender
    record = mine[0]
    kept = (store / "photos" / record.photo_sha256).read_bytes()
    assert record.photo_sha256 == hashlib.sha256(kept).hexdigest()
    assert _jpeg_size(kept) == (320, 240)  # the private copy: small photos keep their size
    assert record.answer["verdict"] == answer["verdict"]
    assert record.answer["model"]["version"] == answer["model"]["version"]
    assert record.answer["top_k"] == answer["top_k"]


def _phone_photo() -> bytes:
    """1600x1200 as the sensor saw it (top half red, bottom half blue), which EXIF says to turn
    90° clockwise, with the phone's make, a GPS position, an XMP packet and a colour profile."""
    image = Image.new("RGB", (1600, 1200), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 1600, 600))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (55.0, 45.0, 21.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (37.0, 37.0, 4.0),
    }
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="55,45.35N"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes(), xmp=xmp, icc_profile=icc)
    return out.getvalue()


def test_a_phone_photo_is_stored_upright_small_and_without_metadata(
    two_workers: GunicornServer, store: Path
) -> None:
    photo = _phone_photo()
    with Image.open(io.BytesIO(photo)) as original:  # what there is to strip
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert {"exif", "xmp", "icc_profile"} <= set(original.info)
    answer = _predict(two_workers.base_url, photo)
    assert _feedback(two_workers.base_url, {"id": answer["id"], "label": "none"}).status_code == 201
    (record,) = [r for r in open_store(str(store)).records() if r.answer_id == answer["id"]]
    kept = (store / "photos" / record.photo_sha256).read_bytes()
    with Image.open(io.BytesIO(kept)) as image:
        width, height = image.size  # the model's decode of it: reduced, upright (portrait)
        assert image.format == "JPEG" and height > width and width >= 256 and height <= 1024
        assert len(image.getexif()) == 0
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
        red = image.getpixel((int(width * 0.78), height // 2))
        blue = image.getpixel((int(width * 0.2), height // 2))
    assert red[0] > 200 and red[2] < 50 and blue[2] > 200 and blue[0] < 50  # top turned right
    for trace in (b"PhoneMaker", b"Exif", b"xmpmeta", b"ICC_PROFILE"):
        assert trace in photo and trace not in kept


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


def test_a_label_the_service_cannot_name_is_refused_and_nothing_stored(
    two_workers: GunicornServer, store: Path
) -> None:
    answer = _predict(two_workers.base_url, jpeg_bytes(240, 200, seed=33))
    tench = "n01440764"  # an ImageNet class, but no dog, wild canid or cat
    response = _feedback(two_workers.base_url, {"id": answer["id"], "label": tench})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_label"
    assert not [r for r in open_store(str(store)).records() if r.answer_id == answer["id"]]


@pytest.mark.parametrize("label", ["n02099712", "n02119022", "n02123045"])  # dog, fox, cat
def test_a_correction_may_name_any_breed_canid_or_cat_the_service_names(
    two_workers: GunicornServer, store: Path, label: str
) -> None:
    answer = _predict(two_workers.base_url, jpeg_bytes(240, 200, seed=34))
    response = _feedback(two_workers.base_url, {"id": answer["id"], "label": label})
    assert response.status_code == 201, response.text
    [record] = [r for r in open_store(str(store)).records() if r.answer_id == answer["id"]]
    assert record.label == label


def test_a_correction_confirming_looks_like_counts_as_right() -> None:
    looks = {"wnid": "n02099712", "name": "Labrador retriever", "kind": "dog", "confidence": 0.6}
    answer = {"breed": None, "verdict": "unknown", "looks_like": looks}
    record = FeedbackRecord("a" * 16, "0" * 64, "n02099712", answer, "2024-01-01T00:00:00+00:00")
    assert record.correct
    assert not FeedbackRecord("a" * 16, "0" * 64, "none", answer, record.received_at).correct
    older = {"breed": None, "verdict": "unknown"}  # answers stored before looks_like
    assert FeedbackRecord("a" * 16, "0" * 64, "none", older, record.received_at).correct


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


@needs_redis
def test_redis_keeps_a_bounded_number_of_photos_for_a_while(redis_server: RedisServer) -> None:
    recent = RedisRecentAnswers(redis_server.url, keep_s=120, max_items=3, max_bytes=10_000)
    for i in range(5):
        recent.put(f"r{i}", RecentAnswer(bytes([i]) * 10, {"n": i}))
    assert [recent.get(f"r{i}") is None for i in range(5)] == [True, True, False, False, False]
    assert recent.get("r4") == RecentAnswer(bytes([4]) * 10, {"n": 4})
    ttl = redis_server.client().ttl("breedrecognizer:recent:r4")
    assert 0 < ttl <= 120


def _kept_bytes(server: RedisServer) -> int:
    """Bytes of photo and answer of every entry Redis holds for feedback."""
    client, total = server.client(), 0
    for key in client.scan_iter(f"{KEY_PREFIX}:*"):
        if key.decode() not in (f"{KEY_PREFIX}:index", f"{KEY_PREFIX}:sizes"):
            total += sum(len(v) for v in client.hmget(key, "photo", "answer") if v is not None)
    return total


@needs_redis
def test_redis_keeps_photos_within_their_bytes_beside_other_state(
    redis_server: RedisServer,
) -> None:
    """Many puts of uneven photos: never over the bound, the newest kept, the bot's keys kept."""
    client = redis_server.client()
    client.flushdb()
    client.set("breedrecognizer:telegram:ledger-probe", b"answered")
    bound = 60_000
    recent = RedisRecentAnswers(redis_server.url, keep_s=120, max_items=1000, max_bytes=bound)
    for i in range(80):
        photo = os.urandom(3_000 + (i * 1_237) % 9_000)
        assert recent.put(f"b{i:03d}", RecentAnswer(photo, {"n": i})) is True
        assert _kept_bytes(redis_server) <= bound
        assert recent.get(f"b{i:03d}") == RecentAnswer(photo, {"n": i})
    assert _kept_bytes(redis_server) > bound * 0.8  # evicted as needed, not everything
    assert recent.get("b000") is None
    sizes = {k.decode(): int(v) for k, v in client.hgetall(f"{KEY_PREFIX}:sizes").items()}
    assert sum(sizes.values()) == _kept_bytes(redis_server)  # the accounting is exact
    assert recent.put("huge", RecentAnswer(b"x" * (bound + 1), {})) is False
    assert recent.get("huge") is None and recent.get("b079") is not None
    assert client.get("breedrecognizer:telegram:ledger-probe") == b"answered"


def test_keeping_never_raises_and_never_costs_the_answer(tmp_path: Path) -> None:
    """An unreachable Redis, an unexpected failure in a store: False, no raise."""
    dead = RedisRecentAnswers(
        f"redis://127.0.0.1:{free_port()}/0", keep_s=60, max_items=10, max_bytes=10**6
    )
    feedback = Feedback(LocalFeedbackStore(tmp_path / "store"), dead, [BEAGLE])
    answer = {"id": new_answer_id()}
    photo = textured(200, 150)
    assert feedback.keep(answer, photo) is False

    class Broken:
        def put(self, answer_id: str, entry: RecentAnswer) -> bool:
            raise KeyError("a bug in a store")

        def get(self, answer_id: str) -> RecentAnswer | None:
            return None

    broken = Feedback(LocalFeedbackStore(tmp_path / "store"), Broken(), [BEAGLE])
    assert broken.keep(answer, photo) is False
    folder = FolderRecentAnswers(tmp_path / "recent", keep_s=60, max_items=10, max_bytes=10**6)
    fine = Feedback(LocalFeedbackStore(tmp_path / "store"), folder, [BEAGLE])
    assert fine.keep(answer, photo) is True


@needs_redis
def test_predict_answers_while_the_photo_store_is_full(tmp_path: Path) -> None:
    """Redis at its memory limit refuses every write: answers go on, photos are not kept; once
    it has room again, photos are kept and corrected."""
    redis = start_redis()
    server = start_gunicorn({"FEEDBACK_URI": str(tmp_path / "store"), "REDIS_URL": redis.url})
    try:
        redis.client().config_set("maxmemory", 1)  # below what it uses: every write is OOM
        full = _predict(server.base_url, jpeg_bytes(240, 180, seed=71))
        response = _feedback(server.base_url, {"id": full["id"], "label": BEAGLE})
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_answer"
        assert "photo not kept for feedback" in server.logs()

        redis.client().config_set("maxmemory", 0)
        answer = _predict(server.base_url, jpeg_bytes(240, 180, seed=72))
        assert _feedback(server.base_url, {"id": answer["id"], "label": BEAGLE}).status_code == 201
    finally:
        server.stop()
        redis.stop()


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
        other = IMAGEWOOF_CLASSES[4].wnid
        assert _feedback(server.base_url, {"id": answer["id"], "label": other}).status_code == 201
        assert _feedback(server.base_url, {"id": answer["id"], "label": wnid}).status_code == 201
        assert _feedback(server.base_url, {"id": answer["id"], "label": wnid}).status_code == 200
    finally:
        server.stop()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = S3FeedbackStore(S3_BUCKET, "people")
    records = list(store.records())
    assert [(r.answer_id, r.label) for r in records] == [(answer["id"], wnid)]
    kept = store.photo(records[0].photo_sha256)
    assert hashlib.sha256(kept).hexdigest() == records[0].photo_sha256
    assert _jpeg_size(kept) == (280, 210)
    assert isinstance(records[0], FeedbackRecord) and records[0].received_at
