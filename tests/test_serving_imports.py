"""Imports flow one way. The serving code (app.py, gunicorn.conf.py, service/, model/) never
imports the training lab or its heavy libraries: the container installs neither, and a worker
that pulled them in would fail there or carry hundreds of MB it does not use. The runtime
(model/) carries no build tooling (onnx, the quantizer). Test support (tests/support/) is what the
benchmarks build on: they import it, it never imports them, and nothing else imports tests or
benchmarks. The serving side reads the environment in service/settings.py only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.gunicorn_server import REPO_ROOT

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


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in packages)


def _offenders(
    paths: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    """Imports of ``forbidden`` modules (or their submodules) in ``paths``, but ``allowed``."""
    return [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in paths
        for line, module in imported_names(ast.parse(path.read_text(), filename=str(path)))
        if _within(module, forbidden) and not _within(module, allowed)
    ]


def test_the_runtime_carries_no_build_tooling() -> None:
    runtime = sorted((REPO_ROOT / "model").rglob("*.py"))
    offenders = _offenders(runtime, ("onnx", "onnxruntime.quantization", "service"))
    assert not offenders, "\n".join(offenders)


def test_benchmarks_build_on_test_support_never_the_reverse() -> None:
    def top(path: Path) -> str:
        return path.relative_to(REPO_ROOT).parts[0]

    project = [p for p in sorted(REPO_ROOT.glob("**/*.py")) if top(p) != ".venv"]
    # locustfile.py is the load test: a benchmark that locust needs at the top level.
    benchmarks = [p for p in project if top(p) in ("benchmarks", "locustfile.py")]
    support = [p for p in project if p.is_relative_to(REPO_ROOT / "tests" / "support")]
    others = [p for p in project if top(p) not in ("benchmarks", "locustfile.py", "tests")]
    offenders = (
        _offenders(others, ("benchmarks", "tests"))
        + _offenders(benchmarks, ("tests",), allowed=("tests.support",))
        + _offenders(support, ("benchmarks",))
    )
    assert not offenders, "\n".join(offenders)


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read ``os.environ`` or call ``os.getenv`` (assigning to it passes values on)."""
    written = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in ("getenv", "environ", "environb")
        and id(node) not in written
    ]


def test_the_environment_is_read_in_the_settings_module_only() -> None:
    settings = REPO_ROOT / "service" / "settings.py"
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for path in serving_sources()
        if path != settings
        for line in environment_reads(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert not offenders, "environment read outside service/settings.py: " + ", ".join(offenders)


def test_the_environment_scan_sees_reads_not_writes() -> None:
    tree = ast.parse("import os\na = os.environ.get('X')\nos.environ['Y'] = '1'\nos.getenv('Z')\n")
    assert sorted(environment_reads(tree)) == [2, 4]


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


def _run_app_probe(probe: str, unset: tuple[str, ...]) -> list[str]:
    """Run ``probe`` in a fresh interpreter without the variables starting with ``unset``;
    the JSON list it prints last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env={**env, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_running_app_has_no_training_module_loaded() -> None:
    probe = _PROBE.format(packages=SERVING_PACKAGES, forbidden=FORBIDDEN)
    loaded = _run_app_probe(probe, ("MODEL_", "TELEGRAM_"))
    assert loaded == [], f"serving code loaded {loaded}"


# Builds the app and lists the optional client libraries it loaded.
_OPTIONAL_PROBE = """
import json, sys
import app
app.create_app()
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & {optional!r})))
"""


def test_a_worker_loads_no_client_library_of_a_part_that_is_off() -> None:
    """Without a bot token, S3 or Redis a worker never imports their clients (memory)."""
    optional = {"telegram", "httpx", "boto3", "botocore", "redis"}
    probe = _OPTIONAL_PROBE.format(optional=optional)
    assert _run_app_probe(probe, ("MODEL_", "TELEGRAM_", "FEEDBACK_", "REDIS_")) == []
