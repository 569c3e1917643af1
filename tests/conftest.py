"""Fixtures shared by the whole suite; the code they build on lives in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from model.source import SHIPPED_MODEL
from tests.support.server import GunicornServer, start_gunicorn


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
