"""The serving code (app.py, gunicorn.conf.py, service/, model/) never imports the training
lab or its heavy libraries: the container installs neither, and a worker that pulled them in
would fail there or carry hundreds of MB it does not use."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import REPO_ROOT

FORBIDDEN = ("training", "timm", "torchvision")
SERVING_PACKAGES = ("service", "model")
SERVING_FILES = ("app.py", "gunicorn.conf.py")


def serving_sources() -> list[Path]:
    files = [REPO_ROOT / name for name in SERVING_FILES]
    for package in SERVING_PACKAGES:
        files += sorted((REPO_ROOT / package).rglob("*.py"))
    return files


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement, also those inside functions."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def is_forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN


def test_no_serving_source_imports_training_code() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in serving_sources()
        for line, module in imported_names(ast.parse(path.read_text(), filename=str(path)))
        if is_forbidden(module)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_scan_sees_imports_inside_functions() -> None:
    tree = ast.parse("def f():\n    from training.engine import x\n    import timm.layers\n")
    assert [m for _, m in imported_names(tree) if is_forbidden(m)] == [
        "training.engine",
        "timm.layers",
    ]


# Builds the app on the shipped model, imports every serving module, and prints which
# forbidden modules ended up loaded.
_PROBE = """
import importlib, json, pkgutil, sys
import app
app.create_app()
for package in {packages!r}:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def test_a_running_app_has_no_training_module_loaded() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "TELEGRAM_"))}
    probe = _PROBE.format(packages=SERVING_PACKAGES, forbidden=FORBIDDEN)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env={**env, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"serving code loaded {loaded}"
