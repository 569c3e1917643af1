"""Fixtures shared by the whole suite; the code they build on lives in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model.defaults import SHIPPED_MODEL
from model.metadata import OpenSetRule
from tests.support.artifacts import rewrite_metadata
from tests.support.fake_telegram import SECRET, FakeTelegram
from tests.support.gunicorn_server import GunicornServer
from tests.support.redis_server import RedisServer, redis_installed, start_redis
from tests.support.server import start_gunicorn


@pytest.fixture(scope="session")
def shipped_model() -> str:
    return str(SHIPPED_MODEL)


@pytest.fixture(scope="session")
def server() -> Iterator[GunicornServer]:
    """The service on the shipped model under real gunicorn, two workers (one per core)."""
    running = start_gunicorn({"WEB_CONCURRENCY": "2", "MODEL_THREADS": "1"})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def base_url(server: GunicornServer) -> str:
    return server.base_url


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    """A fake Bot API for one test module: its calls are that module's alone."""
    with FakeTelegram() as running:
        yield running


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ``bot_server`` stores the corrections its buttons collect (``FEEDBACK_URI``)."""
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def bot_server(
    fake: FakeTelegram, feedback_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """The bot under real gunicorn (two workers) talking to ``fake``, webhook secret ``SECRET``,
    feedback on (buttons under each answer, corrections stored in ``feedback_dir``).

    The tests' photos are generated noise, which the shipped open-set rule rightly refuses;
    the bot tests check the known-breed reply, so it runs the same weights with rule none.
    """
    accepting = rewrite_metadata(
        tmp_path_factory.mktemp("artifact") / "accepting.pt", open_set=OpenSetRule("none")
    )
    env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "WEB_CONCURRENCY": "2"}
    env["MODEL_URI"] = str(accepting)
    env["FEEDBACK_URI"] = str(feedback_dir)
    running = start_gunicorn(env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for one test module; the tests that need it skip without one."""
    if not redis_installed():
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = start_redis()
    yield server
    server.stop()
