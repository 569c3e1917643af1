"""Where the lab reads data and writes caches and runs (each overridable by one env var).

- data:  ``$BREED_DATA_DIR``, default ``<repo>/../shared/data`` (``imagewoof/``, ``ood/``)
- cache: ``$BREED_CACHE_DIR``, default ``<repo>/cache`` (feature maps, model outputs)
- runs:  ``$BREED_RUNS_DIR``, default ``<repo>/runs`` (checkpoints, artifacts, metrics)

Caches and runs stay inside the repository by default (git-ignored), never in a temp folder.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else default


def data_root() -> Path:
    return _env_path("BREED_DATA_DIR", REPO_ROOT.parent / "shared" / "data")


def cache_root() -> Path:
    return _env_path("BREED_CACHE_DIR", REPO_ROOT / "cache")


def runs_root() -> Path:
    return _env_path("BREED_RUNS_DIR", REPO_ROOT / "runs")


def run_dir(name: str) -> Path:
    return runs_root() / name
