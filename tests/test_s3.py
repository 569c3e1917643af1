"""Loading the model from S3 (moto's real HTTP server) and refusing to start on a bad artifact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests

from model.defaults import SHIPPED_MODEL
from model.predictor import Predictor
from tests.support.gunicorn_server import free_port
from tests.support.photos import jpeg_bytes
from tests.support.s3 import CREDENTIALS, client, moto_s3
from tests.support.server import run_gunicorn_until_exit, start_gunicorn

BUCKET = "breedrecognizer-models"
REFUSAL = "refusing to start: cannot load model"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        s3 = client(endpoint)
        s3.upload_file(str(SHIPPED_MODEL), BUCKET, "models/lite0.pt")
        s3.put_object(Bucket=BUCKET, Key="models/corrupt.pt", Body=b"PK\x03\x04 not a model" * 100)
        yield endpoint


def _env(endpoint: str, uri: str, **extra: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "MODEL_URI": uri, **CREDENTIALS, **extra}


def _refusal_lines(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if REFUSAL in line]


def test_serves_model_from_s3_with_checksum(s3_endpoint: str) -> None:
    sha = hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest()
    env = _env(s3_endpoint, f"s3://{BUCKET}/models/lite0.pt", MODEL_SHA256=sha)
    photo = jpeg_bytes(seed=7)
    server = start_gunicorn(env)
    try:
        from_s3 = requests.post(
            f"{server.base_url}/predict", files={"image": ("a.jpg", photo)}, timeout=30
        )
    finally:
        server.stop()
    assert from_s3.status_code == 200
    body = from_s3.json()
    assert body["model"]["backend"] == "torchscript"
    # The same artifact read from disk gives the same answer.
    from_disk = Predictor.from_uri(str(SHIPPED_MODEL), threads=1).predict_bytes(photo).to_dict()
    assert {key: body[key] for key in from_disk} == from_disk
    assert f"model s3://{BUCKET}/models/lite0.pt downloaded to" in server.logs()


@pytest.mark.parametrize(
    ("key", "extra", "cause"),
    [
        ("models/lite0.pt", {"MODEL_SHA256": "0" * 64}, "MODEL_SHA256 mismatch"),
        ("models/corrupt.pt", {}, "cannot load TorchScript artifact"),
        ("models/missing.pt", {}, "cannot fetch s3://"),
    ],
    ids=["wrong_sha256", "corrupt_artifact", "missing_key"],
)
def test_refuses_to_start_on_bad_artifact(
    s3_endpoint: str, key: str, extra: dict[str, str], cause: str
) -> None:
    code, logs, _ = run_gunicorn_until_exit(_env(s3_endpoint, f"s3://{BUCKET}/{key}", **extra))
    assert code != 0, logs
    lines = _refusal_lines(logs)
    assert lines, logs
    assert all(cause in line for line in lines), lines
    assert "Traceback" not in logs


def test_unreachable_s3_fails_fast(s3_endpoint: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, logs, seconds = run_gunicorn_until_exit(
        _env(closed, f"s3://{BUCKET}/models/lite0.pt"), timeout=120
    )
    assert code != 0, logs
    lines = _refusal_lines(logs)
    assert lines and all("Could not connect to the endpoint URL" in line for line in lines), logs
    assert seconds < 90  # bounded: connect timeout × attempts, not a hang


def test_missing_local_file_refuses_to_start(tmp_path) -> None:
    code, logs, _ = run_gunicorn_until_exit({"MODEL_URI": str(tmp_path / "nope.pt")})
    assert code != 0
    assert any("model artifact not found" in line for line in _refusal_lines(logs)), logs
