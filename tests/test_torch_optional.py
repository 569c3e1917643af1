"""Serving without torch: requirements.txt has none, requirements-torchscript.txt adds it.

Where torch is missing, a TorchScript ``MODEL_URI`` stops the service at start with one log
line that says what to install (real gunicorn, torch made unimportable for that process by a
``sitecustomize`` on ``PYTHONPATH``). Where torch is installed, the TorchScript artifact is
served as before.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import requests

from model.backends import ArtifactError, TorchScriptBackend
from model.defaults import SHIPPED_MODEL
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.photos import jpeg_bytes
from tests.support.server import run_gunicorn_until_exit, start_gunicorn

INSTALL_HINT = "TorchScript artifacts need torch: pip install -r requirements-torchscript.txt"
REQUIREMENTS = REPO_ROOT / "requirements.txt"


def without_torch(folder: Path) -> dict[str, str]:
    """Environment for a process where ``import torch`` fails as on the ONNX-only install."""
    (folder / "sitecustomize.py").write_text('import sys\n\nsys.modules["torch"] = None\n')
    path = [str(folder), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(part for part in path if part)}


def test_serving_requirements_hold_no_torch() -> None:
    names = [
        line.split("==")[0].strip().lower()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "onnxruntime" in names
    assert not {"torch", "torchvision", "timm", "onnx"} & set(names), names
    torchscript = (REPO_ROOT / "requirements-torchscript.txt").read_text().splitlines()
    assert "-r requirements.txt" in torchscript and "torch==2.14.1" in torchscript


def test_backend_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ArtifactError, match=re.escape(INSTALL_HINT)):
        TorchScriptBackend(SHIPPED_MODEL, threads=1)


def test_torchscript_uri_without_torch_refuses_to_start(tmp_path: Path) -> None:
    env = {"MODEL_URI": str(SHIPPED_MODEL), **without_torch(tmp_path)}
    code, logs, _ = run_gunicorn_until_exit(env)
    assert code != 0, logs
    refusals = [line for line in logs.splitlines() if "refusing to start" in line]
    assert refusals, logs
    expected = f"cannot load model from {SHIPPED_MODEL}: {INSTALL_HINT}"
    assert all(line.endswith(expected) for line in refusals), refusals
    assert "Traceback" not in logs


def test_torchscript_artifact_is_served_where_torch_is_installed() -> None:
    pytest.importorskip("torch")
    server = start_gunicorn({"MODEL_URI": str(SHIPPED_MODEL)})
    try:
        response = requests.post(
            f"{server.base_url}/predict", files={"image": ("dog.jpg", jpeg_bytes())}, timeout=60
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["backend"] == "torchscript"
        assert len(body["top_k"]) == 3
    finally:
        server.stop()
