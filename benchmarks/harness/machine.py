"""What a figure was measured on: CPU, cores, memory, versions and commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from model.precision import INT8_DOT_PRODUCT_FLAGS, cpu_flags, cpu_model

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("onnxruntime", "torch", "numpy", "pillow", "flask", "gunicorn", "locust")


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def machine_info() -> dict[str, Any]:
    """The machine block of a benchmark result."""
    import psutil

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        # The vector and int8 dot-product flags that decide which runtime and precision pay.
        "cpu_flags": sorted(
            flag
            for flag in cpu_flags()
            if flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd")
            or flag in INT8_DOT_PRODUCT_FLAGS
        ),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "commit": commit(),
        "versions": {p: version(p) for p in PACKAGES},
    }


def write_report(out: Path, text: str, result: dict[str, Any]) -> None:
    """A benchmark's result beside its page: ``out``.md (``text``) and ``out``.json."""
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
