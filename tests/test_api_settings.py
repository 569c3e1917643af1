"""Settings from the environment, gunicorn.conf.py's sizing, and refusing bad configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.settings import SettingsError, load_settings, reference
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.server import run_gunicorn_until_exit
from tests.support.settings import settings_from, use_env


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, {})
    assert settings.model.uri is None  # the shipped ONNX copy chosen for the CPU
    assert settings.model.precision == "auto"
    assert settings.model.sha256 is None
    assert settings.model.threads is None
    assert settings.api.max_upload_bytes == 10 * 1024 * 1024
    assert settings.api.top_k == 3
    assert settings.api.log_level == "INFO"
    assert settings.telegram.disabled_reason == "TELEGRAM_TOKEN is not set"


def test_values_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_URI": "s3://b/k.pt",
        "MODEL_SHA256": "ab" * 32,
        "MODEL_THREADS": "3",
        "MAX_UPLOAD_MB": "2.5",
        "MAX_IMAGE_PIXELS": "1000000",
        "TOP_K": "5",
        "LOG_LEVEL": "debug",
        "TELEGRAM_TOKEN": "1:token",
        "BODY_MEMORY_MB": "4",
        "WEB_CONCURRENCY": "3",
    }
    settings = settings_from(monkeypatch, env)
    assert settings.model.uri == "s3://b/k.pt"
    assert settings.model.threads == 3
    assert settings.api.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert settings.api.max_image_pixels == 1_000_000
    assert settings.api.top_k == 5
    assert settings.api.log_level == "DEBUG"
    assert settings.telegram.token == "1:token"
    assert settings.front.body_memory_bytes == 4 * 2**20
    assert settings.server.web_concurrency == 3


@pytest.mark.parametrize(
    "env",
    [
        {"TOP_K": "11"},
        {"TOP_K": "x"},
        {"MAX_UPLOAD_MB": "0"},
        {"MODEL_THREADS": "-1"},
        {"APP_QUEUE_SIZE": "none"},
        {"PORT": "http"},
    ],
    ids=["top_k_big", "top_k_text", "upload_zero", "threads_negative", "queue_text", "port"],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    use_env(monkeypatch, env)
    with pytest.raises(SettingsError, match=next(iter(env))):
        load_settings()


def test_bad_bot_setting_keeps_the_bot_off_not_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(monkeypatch, {"TELEGRAM_MAX_FILE_MB": "lots"})
    assert settings.telegram_error == "TELEGRAM_MAX_FILE_MB must be a number, got 'lots'"


def test_settings_reference_is_current() -> None:
    """docs/settings.md is generated from the tree: regenerate with python -m service.settings."""
    assert (REPO_ROOT / "docs" / "settings.md").read_text(encoding="utf-8") == reference()


def test_service_refuses_to_start_on_bad_setting() -> None:
    code, logs, _ = run_gunicorn_until_exit({"MAX_UPLOAD_MB": "lots"})
    assert code != 0
    assert "refusing to start: bad configuration: MAX_UPLOAD_MB must be a number" in logs


def _gunicorn_conf(env: dict[str, str]) -> dict[str, str]:
    """Evaluate gunicorn.conf.py in a clean process; return the settings it derived."""
    code = (
        "import json, runpy; from service.settings import server_settings; "
        "c = runpy.run_path('gunicorn.conf.py'); c['on_exit'](None); "
        "print(json.dumps({'bind': c['bind'], 'workers': c['workers'], 'timeout': c['timeout'], "
        "'threads': str(server_settings().model_threads()), 'preload': c['preload_app']}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("MODEL_THREADS", "WEB_CONCURRENCY")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_gunicorn_conf_sizes_workers_and_threads() -> None:
    cores = len(os.sched_getaffinity(0))
    conf = _gunicorn_conf({"PORT": "9123"})
    assert conf["bind"] == "0.0.0.0:9123"
    assert conf["workers"] == 2
    assert int(conf["threads"]) == max(1, cores // 2)
    assert conf["timeout"] < 30  # below Heroku's router timeout
    assert conf["preload"] is False  # the model loads after the fork
    assert _gunicorn_conf({"WEB_CONCURRENCY": "1", "MODEL_THREADS": ""})["threads"] == str(cores)
    assert _gunicorn_conf({"MODEL_THREADS": "7"})["threads"] == "7"


def test_top_k_and_pixel_limit_configure_the_served_predictor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TOP_K and MAX_IMAGE_PIXELS reach the answers without being passed per call."""
    from service.factory import create_app
    from tests.support.photos import jpeg_bytes

    env = {"TOP_K": "5", "MAX_IMAGE_PIXELS": "100000", "MODEL_THREADS": "1"}
    client = create_app(settings=settings_from(monkeypatch, env)).test_client()
    small = client.post("/predict", data=jpeg_bytes(320, 240), content_type="image/jpeg")
    assert small.status_code == 200 and len(small.get_json()["top_k"]) == 5
    assert list(small.get_json()) == [
        "id",
        "breed",
        "verdict",
        "known",
        "known_score",
        "looks_like",
        "top_k",
        "model",
    ]
    big = client.post("/predict", data=jpeg_bytes(400, 300), content_type="image/jpeg")
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "image_too_large"
