"""Start the real service under gunicorn on a free port, for tests that need it over HTTP.

    server = start_gunicorn({"MODEL_URI": ...})   # waits for /readyz
    base_url, process = server                    # it unpacks like a pair
    ... requests.post(f"{base_url}/predict", ...)
    server.stop(); print(server.logs())

``run_gunicorn_until_exit`` is for services expected to refuse to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TARGET = "app:create_app()"

# Variables of the developer's shell that would change what the test server does.
_SCRUBBED = ("MODEL_URI", "MODEL_SHA256", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY", "PORT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", APP_TARGET]


def server_env(env: Mapping[str, str] | None = None, port: int | None = None) -> dict[str, str]:
    """The process environment: this one, minus service settings, plus test defaults and ``env``."""
    merged = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    merged.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port or free_port()),
            "WEB_CONCURRENCY": "1",
            "MODEL_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="breedrec-test-cache-"),
        }
    )
    merged.update(env or {})
    return merged


@dataclass
class GunicornServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def __iter__(self) -> Iterator:
        return iter((self.base_url, self.process))

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the master (graceful), SIGKILL the group if it lingers; returns exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode


def _spawn(env: Mapping[str, str] | None, cwd: Path, command: list[str] | None):
    full_env = server_env(env)
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="breedrec-gunicorn-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        command or gunicorn_command(),
        cwd=cwd,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop() can kill workers too
    )
    log_file.close()
    return process, f"http://127.0.0.1:{full_env['PORT']}", Path(log_file.name)


def start_gunicorn(
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cwd: Path = REPO_ROOT,
    command: list[str] | None = None,
) -> GunicornServer:
    """Start gunicorn and wait until /readyz answers 200; raise with its log if it can't."""
    process, base_url, log_path = _spawn(env, cwd, command)
    server = GunicornServer(base_url, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited with {process.returncode} before ready:\n{server.logs()}"
            )
        try:
            if requests.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"gunicorn not ready after {timeout:.0f}s:\n{server.logs()}")


def run_gunicorn_until_exit(
    env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, str, float]:
    """Run a server that should refuse to start: (exit code, log text, seconds it took)."""
    started = time.monotonic()
    process, _, log_path = _spawn(env, REPO_ROOT, None)
    server = GunicornServer("", process, log_path)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError(
            f"gunicorn still running after {timeout:.0f}s:\n{server.logs()}"
        ) from None
    return process.returncode, server.logs(), time.monotonic() - started
