"""The OpenAPI contract (service/http/openapi.yaml): a valid 3.1 document, served as is at
GET /openapi.json, and kept by the live service under real gunicorn: schemathesis with all
its checks (schemathesis.toml states what the schema cannot), with the bot off as under
``make run`` and on against a fake Bot API."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts as spec_versions
from openapi_spec_validator.versions.shortcuts import get_spec_version
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from service.http.openapi import OPENAPI_PATH, load_openapi
from tests.support.fake_telegram import FakeTelegram
from tests.support.gunicorn_server import REPO_ROOT, GunicornServer, start_gunicorn
from tests.support.images import png_bytes
from tests.support.photos import jpeg_bytes

SECRET = "contract-secret_0123456789"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Generated requests per operation and phase: enough to reach every documented error branch
# of /predict and /telegram, small enough for the suite's time budget on 2 cores.
MAX_EXAMPLES = 60


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The service on the shipped model, with the Telegram bot on a fake Bot API and
    feedback on (a folder store)."""
    store = tmp_path_factory.mktemp("feedback")
    with FakeTelegram() as fake:
        env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "FEEDBACK_URI": str(store)}
        server = start_gunicorn(env)
        yield server
        server.stop()


@pytest.fixture(scope="module")
def plain_server() -> Iterator[GunicornServer]:
    """The service as ``make run`` starts it: no bot."""
    server = start_gunicorn({})
    yield server
    server.stop()


def run_schemathesis(server: GunicornServer, *extra: str) -> subprocess.CompletedProcess:
    """``schemathesis run --checks all`` against the live server, seeded: repeatable."""
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{server.base_url}/openapi.json"),
        *("--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "1", *extra),
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_all_checks_pass_with_the_bot_off(plain_server: GunicornServer) -> None:
    result = run_schemathesis(plain_server)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_all_checks_pass_with_the_bot_on(contract_server: GunicornServer) -> None:
    result = run_schemathesis(contract_server, "--header", f"{SECRET_HEADER}: {SECRET}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# The file itself (the served copy is checked to be identical below), loaded at collection.
schema = schemathesis.openapi.from_path(OPENAPI_PATH)


def test_document_is_valid_openapi_31() -> None:
    document = load_openapi()
    assert get_spec_version(document) == spec_versions.OPENAPIV31
    validate(document)  # raises OpenAPIValidationError with the first problem


def test_served_document_is_the_file(contract_server: GunicornServer) -> None:
    response = requests.get(f"{contract_server.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == load_openapi()


def test_every_route_is_documented(contract_server: GunicornServer) -> None:
    """A route the app serves but the contract omits would escape the generated tests (the
    Flask app's routes, and the webhook the front answers itself)."""
    from service.factory import create_app
    from service.telegram_bot.webhook import WEBHOOK_PATH

    documented = {
        (path, method.upper())
        for path, operations in load_openapi()["paths"].items()
        for method in operations
    }
    app = create_app()
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    } | {(WEBHOOK_PATH, "POST")}
    assert served == documented


@pytest.mark.parametrize(
    ("query", "kwargs", "status", "code"),
    [
        (
            "",
            {"files": {"image": ("dog.jpg", jpeg_bytes(320, 240, seed=3), "image/jpeg")}},
            200,
            None,
        ),
        (
            "?top_k=10",
            {"files": {"file": ("dog.png", png_bytes(64, 48, seed=4), "image/png")}},
            200,
            None,
        ),
        (
            "?top_k=1",
            {"data": jpeg_bytes(200, 150, seed=5), "headers": {"Content-Type": "image/jpeg"}},
            200,
            None,
        ),
        (
            "",
            {"files": {"image": ("tiny.png", png_bytes(4, 4), "image/png")}},
            422,
            "image_too_small",
        ),
        ("", {"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty_image"),
        ("", {"files": {"photo": ("dog.jpg", jpeg_bytes(), "image/jpeg")}}, 400, "missing_image"),
        (
            "",
            {"data": jpeg_bytes()[:600], "headers": {"Content-Type": "image/jpeg"}},
            422,
            "corrupt_image",
        ),
        (
            "",
            {"data": b"plain bytes", "headers": {"Content-Type": "image/jpeg"}},
            422,
            "not_an_image",
        ),
        ("", {"json": {"image": "not a photo"}}, 415, "unsupported_media_type"),
        ("?top_k=11", {"data": b"x", "headers": {"Content-Type": "image/jpeg"}}, 400, "bad_top_k"),
    ],
    ids=[
        "multipart",
        "file-field-top10",
        "raw-body",
        "too-small",
        "empty",
        "other-field",
        "corrupt",
        "not-an-image",
        "json",
        "bad-top-k",
    ],
)
def test_photos_and_errors_match_the_contract(
    contract_server: GunicornServer,
    query: str,
    kwargs: dict,
    status: int,
    code: str | None,
) -> None:
    """Generated bytes are rarely images; these requests reach the 200 and decoder branches."""
    response = requests.post(f"{contract_server.base_url}/predict{query}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    schema["/predict"]["POST"].validate_response(response)
    body = response.json()
    if code is None:
        assert len(body["top_k"]) == (10 if "top_k=10" in query else 1 if "top_k=1" in query else 3)
    else:
        assert body["error"]["code"] == code


def test_the_contract_check_catches_an_undocumented_status(
    contract_server: GunicornServer,
) -> None:
    """The same checks against a contract that forgets 422 must fail on a 422 answer."""
    document = copy.deepcopy(load_openapi())
    del document["paths"]["/predict"]["post"]["responses"]["422"]
    forgetful = schemathesis.openapi.from_dict(document)
    case = forgetful["/predict"]["POST"].Case(
        body=b"plain bytes", media_type="application/octet-stream"
    )
    with pytest.raises((AssertionError, BaseExceptionGroup)) as failure:
        case.call_and_validate(base_url=contract_server.base_url, checks=CHECKS, timeout=30)
    assert "422" in str(failure.value)
