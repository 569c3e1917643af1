"""The Dockerfile's install and start commands work: replayed in a fresh virtualenv.

Docker itself is not available here, so the test follows the Dockerfile's text: it runs the
``RUN`` lines marked ``# install:`` (pip installs of requirements.txt), copies what the
``COPY`` lines copy into an empty app folder, runs the ``RUN`` lines marked ``# build:``
there (the ONNX conversion) with the image's ``ENV MODEL_URI`` (``/app`` mapped to that
folder), then starts the ``CMD`` (gunicorn) there and asks for a prediction. If a file the
service needs is not copied, or a requirement is missing from requirements.txt, this test
fails the way the image would.

One deliberate difference: the CPU-only torch index (download.pytorch.org/whl/cpu) is not
reachable from this machine, so ``--index-url <that index>`` is dropped and pip takes the
same pinned torch version from the normal index (locally mirrored here, so pip reads it from
local disk; it is the CUDA build, which runs on CPU just the same).

Slow (several minutes: torch and its CUDA wheels are installed into the fresh venv).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.artifacts import shipped_metadata
from tests.support.images import jpeg_bytes
from tests.support.server import REPO_ROOT, start_gunicorn

DOCKERFILE = REPO_ROOT / "Dockerfile"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.slow


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with ``\\`` continuations joined; comments kept (they mark installs)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if current and stripped.startswith("#"):
            continue
        current += (
            stripped.removesuffix("\\").strip() + " " if raw.rstrip().endswith("\\") else stripped
        )
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [line for line in lines if line]


def healthcheck_command(text: str) -> str:
    """The shell command of the Dockerfile's HEALTHCHECK."""
    line = next(line for line in _logical_lines(text) if line.startswith("HEALTHCHECK "))
    return line.split(" CMD ", 1)[1]


def parse_dockerfile(text: str) -> tuple[list[str], list[tuple[list[str], str]], list[str]]:
    """(install commands, COPY (sources, destination) pairs, CMD argv) from a Dockerfile."""
    installs, copies, cmd = [], [], []
    marked = False
    for line in _logical_lines(text):
        if line.startswith("#"):
            marked = line.startswith("# install:")
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "RUN" and marked:
            installs.append(rest)
        elif keyword == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
        elif keyword == "CMD":
            cmd = json.loads(rest)
        marked = False
    return installs, copies, cmd


def build_commands(text: str) -> list[str]:
    """``RUN`` lines marked ``# build:`` (run in the app folder after the copies)."""
    commands, marked = [], False
    for line in _logical_lines(text):
        if line.startswith("#"):
            marked = line.startswith("# build:")
            continue
        if line.startswith("RUN ") and marked:
            commands.append(line.removeprefix("RUN "))
        marked = False
    return commands


def model_uri(text: str, app_dir: Path) -> dict[str, str]:
    """The image's ``ENV MODEL_URI`` (if any), with the WORKDIR /app mapped to ``app_dir``."""
    for line in _logical_lines(text):
        if line.startswith("ENV "):
            for item in shlex.split(line.removeprefix("ENV ")):
                key, _, value = item.partition("=")
                if key == "MODEL_URI":
                    return {key: value.replace("/app/", f"{app_dir}/", 1)}
    return {}


def test_dockerfile_parses_as_expected() -> None:
    installs, copies, cmd = parse_dockerfile(DOCKERFILE.read_text())
    assert len(installs) == 2 and all(c.startswith("pip install") for c in installs)
    assert CPU_INDEX in installs[0]
    assert (["requirements.txt"], "./") in copies
    assert cmd[0] == "gunicorn"
    assert "/readyz" in healthcheck_command(DOCKERFILE.read_text())
    heroku = (REPO_ROOT / "heroku.yml").read_text()
    web = next(line for line in heroku.splitlines() if line.strip().startswith("web: gunicorn"))
    assert shlex.split(web.split("web:", 1)[1]) == cmd  # heroku.yml runs what the image runs


def _copy_into(app_dir: Path, copies: list[tuple[list[str], str]]) -> None:
    for sources, destination in copies:
        for source in sources:
            src = REPO_ROOT / source
            dst = app_dir / destination
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / src.name)


@pytest.fixture
def fresh_venv(tmp_path: Path) -> Iterator[Path]:
    """An empty virtualenv, deleted afterwards (it grows to ~6 GB with torch's CUDA wheels)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.timeout(1500)
def test_dockerfile_install_and_start_in_fresh_venv(tmp_path: Path, fresh_venv: Path) -> None:
    installs, copies, cmd = parse_dockerfile(DOCKERFILE.read_text())
    venv = fresh_venv
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    _copy_into(app_dir, copies)

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_NO_CACHE_DIR"] = "1"
    for command in installs:
        command = command.replace(CPU_INDEX, "")  # unreachable here: see the module docstring
        result = subprocess.run(
            ["bash", "-c", command], cwd=app_dir, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr}"

    # The image holds no training dependencies.
    for package in ("timm", "torchvision"):
        probe = subprocess.run(
            [str(venv / "bin" / "python"), "-c", f"import {package}"], env=env, capture_output=True
        )
        assert probe.returncode != 0, f"{package} must not be installed by the Dockerfile"

    for command in build_commands(DOCKERFILE.read_text()):
        result = subprocess.run(
            ["bash", "-c", command], cwd=app_dir, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr}"

    # The image runs as a non-root user (USER app) over files root wrote: all must be
    # world-readable (this test runs as whoever runs pytest, so check the modes instead).
    unreadable = [
        str(p.relative_to(app_dir)) for p in app_dir.rglob("*") if not p.stat().st_mode & 0o004
    ]
    assert not unreadable, f"not readable by the image's non-root user: {unreadable}"

    argv = [str(venv / "bin" / cmd[0]), *cmd[1:]]
    image_env = {"PATH": env["PATH"], **model_uri(DOCKERFILE.read_text(), app_dir)}
    server = start_gunicorn(image_env, cwd=app_dir, command=argv, timeout=300)
    try:
        response = requests.post(
            f"{server.base_url}/predict", files={"image": ("dog.jpg", jpeg_bytes())}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"]["name"] == shipped_metadata().name
        assert len(response.json()["top_k"]) == 3
        if image_env.get("MODEL_URI", "").endswith(".onnx"):
            assert response.json()["model"]["backend"] == "onnxruntime"
        port = server.base_url.rsplit(":", 1)[1]
        health = subprocess.run(
            ["sh", "-c", healthcheck_command(DOCKERFILE.read_text())],
            env={**env, "PORT": port},
            capture_output=True,
            text=True,
        )
        assert health.returncode == 0, health.stderr
    finally:
        server.stop()
    assert f"from {app_dir / 'model'}" in server.logs()  # the copy's model, not the repo's
