"""Per-client limits under real gunicorn: a client over its budget gets 429 + Retry-After while
others go on; the client is the address the router appended to X-Forwarded-For, so a spoofed
entry buys nothing; loopback tools are never limited; replicas sharing Redis share a budget;
an unreachable Redis never fails a request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis

from service.http.openapi import OPENAPI_PATH
from tests.support.gunicorn_server import GunicornServer, free_port
from tests.support.photos import jpeg_bytes
from tests.support.redis_server import RedisServer, redis_installed
from tests.support.server import start_gunicorn

PREDICT_BUDGET = 3
FEEDBACK_BUDGET = 2
# Hour windows: a test never straddles one, whatever the machine's speed.
LIMITS = {
    "RATE_LIMIT_PREDICT": f"{PREDICT_BUDGET}/hour",
    "RATE_LIMIT_FEEDBACK": f"{FEEDBACK_BUDGET}/hour",
}
PHOTO = jpeg_bytes(160, 120, seed=7)
needs_redis = pytest.mark.skipif(
    not redis_installed(), reason="redis-server is not installed (Debian package redis-server)"
)
contract = schemathesis.openapi.from_path(OPENAPI_PATH)


def _predict(server: GunicornServer, forwarded_for: str | None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(
        f"{server.base_url}/predict",
        files={"image": ("dog.jpg", PHOTO, "image/jpeg")},
        headers=headers,
        timeout=30,
    )


def _statuses(server: GunicornServer, forwarded_for: str | None, count: int) -> list[int]:
    return [_predict(server, forwarded_for).status_code for _ in range(count)]


def _assert_rate_limited(response: requests.Response, window_s: int = 3600) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= window_s + 1
    contract["/predict"]["POST"].validate_response(response)


@pytest.fixture(scope="module")
def limited() -> Iterator[GunicornServer]:
    """One worker counting in memory (no REDIS_URL), with small budgets."""
    server = start_gunicorn(LIMITS)
    yield server
    server.stop()


def test_a_client_over_its_budget_gets_429_and_others_go_on(limited: GunicornServer) -> None:
    assert _statuses(limited, "198.51.100.1", PREDICT_BUDGET) == [200] * PREDICT_BUDGET
    _assert_rate_limited(_predict(limited, "198.51.100.1"))
    assert _predict(limited, "198.51.100.2").status_code == 200


def test_a_spoofed_forwarded_entry_gets_no_fresh_budget(limited: GunicornServer) -> None:
    """The router appends the address it saw: only the last entry is the client's."""
    client = "198.51.100.3"
    spoofed = [f"10.0.0.{i}, {client}" for i in range(PREDICT_BUDGET)]
    assert [_predict(limited, xff).status_code for xff in spoofed] == [200] * PREDICT_BUDGET
    _assert_rate_limited(_predict(limited, f"203.0.113.250, {client}"))
    _assert_rate_limited(_predict(limited, client))
    # The address a client claims is never counted as a client of its own either.
    assert _predict(limited, f"{client}, 198.51.100.4").status_code == 200


def test_loopback_without_forwarded_for_is_never_limited(limited: GunicornServer) -> None:
    assert _statuses(limited, None, PREDICT_BUDGET + 2) == [200] * (PREDICT_BUDGET + 2)


def test_feedback_is_limited_and_operations_routes_are_not(limited: GunicornServer) -> None:
    """/feedback is counted before it looks at its body (here feedback is off: 404)."""
    headers = {"X-Forwarded-For": "198.51.100.5"}
    url = f"{limited.base_url}/feedback"
    body = {"id": "never-given-0000", "label": "none"}
    answers = [requests.post(url, json=body, headers=headers, timeout=30) for _ in range(3)]
    assert [r.status_code for r in answers] == [404] * FEEDBACK_BUDGET + [429]
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert int(answers[-1].headers["Retry-After"]) > 0
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        statuses = [
            requests.get(f"{limited.base_url}{path}", headers=headers, timeout=30).status_code
            for _ in range(PREDICT_BUDGET + 1)
        ]
        assert statuses == [200] * (PREDICT_BUDGET + 1), path
    assert _predict(limited, "198.51.100.5").status_code == 200  # a budget per route


@needs_redis
def test_replicas_sharing_redis_share_one_budget(redis_server: RedisServer) -> None:
    env = {**LIMITS, "REDIS_URL": redis_server.url}
    first, second = start_gunicorn(env), start_gunicorn(env)
    try:
        client = "198.51.100.6"
        assert _statuses(first, client, PREDICT_BUDGET - 1) == [200] * (PREDICT_BUDGET - 1)
        assert _predict(second, client).status_code == 200
        _assert_rate_limited(_predict(first, client))
        _assert_rate_limited(_predict(second, client))
        assert _predict(second, "198.51.100.7").status_code == 200
    finally:
        first.stop()
        second.stop()
    assert redis_server.client().keys("*breedrecognizer:limits*")  # counted in Redis indeed


def test_an_unreachable_redis_fails_no_request_and_still_limits() -> None:
    """Nothing listens at REDIS_URL: each worker counts in memory instead."""
    server = start_gunicorn({**LIMITS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        client = "198.51.100.8"
        assert _statuses(server, client, PREDICT_BUDGET) == [200] * PREDICT_BUDGET
        _assert_rate_limited(_predict(server, client))
        assert _predict(server, "198.51.100.9").status_code == 200
        assert "falling back to in-memory storage" in server.logs()
    finally:
        server.stop()
