"""The suite's servers: the gunicorn launcher (gunicorn_server.py) with the test defaults.

Tests run one worker with one model thread and a fresh model cache unless they say otherwise
(``env`` wins), so they neither compete for the cores nor share downloads.
``run_gunicorn_until_exit`` is for services expected to refuse to start.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Mapping

from tests.support.gunicorn_server import GunicornServer, spawn_gunicorn, wait_ready


def with_test_defaults(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test defaults, then ``env``."""
    defaults = {
        "WEB_CONCURRENCY": "1",
        "MODEL_THREADS": "1",
        "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="breedrec-test-cache-"),
    }
    return {**defaults, **(env or {})}


def start_gunicorn(env: Mapping[str, str] | None = None, timeout: float = 180.0) -> GunicornServer:
    """The service with the test defaults, once /readyz answers 200; raises with its log."""
    return wait_ready(spawn_gunicorn(with_test_defaults(env)), timeout)


def run_gunicorn_until_exit(
    env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, str, float]:
    """Run a server that should refuse to start: (exit code, log text, seconds it took)."""
    started = time.monotonic()
    server = spawn_gunicorn(with_test_defaults(env))
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError(
            f"gunicorn still running after {timeout:.0f}s:\n{server.logs()}"
        ) from None
    return server.process.returncode, server.logs(), time.monotonic() - started
