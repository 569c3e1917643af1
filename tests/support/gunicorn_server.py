"""Start the real service under gunicorn on a free 127.0.0.1 port, and stop it.

    server = start_gunicorn({"MODEL_URI": ...})   # returns once /readyz answers 200
    requests.post(f"{server.base_url}/predict", ...)
    server.stop(); print(server.logs())

The environment of the server is this process's environment without the service's own
settings (``SERVICE_SETTINGS``: a developer's shell may hold them, and they would change what
is measured or tested), plus ``HOST``/``PORT`` for the free port and ``PYTHONUNBUFFERED`` (so
the log file shows each line as it is written), plus the caller's ``env``, which wins. So
every setting the server runs with is either the service's default or stated by the caller.

The bind address is also given on the command line, so that any gunicorn config (ours or the
naive baseline's) listens there. Output goes to a log file that outlives the server.

The benchmarks start servers here; the tests through ``tests.support.server``, which adds
the suite's defaults.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from service.settings import GROUPS, env_name

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TARGET = "app:create_app()"
# Every variable of the service's settings tree (docs/settings.md).
SERVICE_SETTINGS = frozenset(
    env_name(group, field) for group in GROUPS.values() for field in group.model_fields
)
READY_POLL_S = 0.01  # fine enough to measure a cold start


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command() -> list[str]:
    """The service as deployed: our gunicorn config and app factory."""
    return [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", APP_TARGET]


def server_env(env: Mapping[str, str] | None, port: int) -> dict[str, str]:
    """The server's environment (see the module docstring for the policy)."""
    merged = {k: v for k, v in os.environ.items() if k not in SERVICE_SETTINGS}
    merged.update(HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    merged.update(env or {})
    return merged


@dataclass
class GunicornServer:
    """A gunicorn master started by ``spawn_gunicorn``, its URL and its log."""

    name: str
    base_url: str
    process: subprocess.Popen
    log_path: Path
    started_at: float  # time.perf_counter() when the process was started
    cold_start_s: float = float("nan")  # process start -> first /readyz 200

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_processes(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

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


def spawn_gunicorn(
    env: Mapping[str, str] | None = None,
    *,
    name: str = "gunicorn",
    cwd: Path = REPO_ROOT,
    command: list[str] | None = None,
) -> GunicornServer:
    """Start gunicorn (``command``, default ``gunicorn_command()``) and return at once."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - outlives the server
        prefix=f"breedrec-{name}-", suffix=".log", delete=False
    )
    started_at = time.perf_counter()
    process = subprocess.Popen(
        [*(command or gunicorn_command()), "--bind", f"127.0.0.1:{port}"],
        cwd=cwd,
        env=server_env(env, port),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop() can kill workers too
    )
    log_file.close()
    base_url = f"http://127.0.0.1:{port}"
    return GunicornServer(name, base_url, process, Path(log_file.name), started_at)


def readyz_status(port: int) -> int:
    """The status of GET /readyz, 0 when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def wait_ready(server: GunicornServer, timeout: float = 180.0) -> GunicornServer:
    """Poll /readyz until it answers 200 (sets ``cold_start_s``); raise with the log if not."""
    deadline = server.started_at + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode} before ready:\n"
                f"{server.logs()[-3000:]}"
            )
        if readyz_status(server.port) == 200:
            server.cold_start_s = time.perf_counter() - server.started_at
            return server
        time.sleep(READY_POLL_S)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s:\n{server.logs()[-3000:]}")


def start_gunicorn(
    env: Mapping[str, str] | None = None,
    *,
    name: str = "gunicorn",
    cwd: Path = REPO_ROOT,
    command: list[str] | None = None,
    timeout: float = 180.0,
) -> GunicornServer:
    """``spawn_gunicorn`` and ``wait_ready``: a server that answers."""
    server = spawn_gunicorn(env, name=name, cwd=cwd, command=command)
    return wait_ready(server, timeout)
