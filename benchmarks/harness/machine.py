"""What a figure was measured on: CPU, cores, memory, versions and commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("onnxruntime", "torch", "numpy", "pillow", "flask", "gunicorn", "locust")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's guess where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "commit": commit(),
        "versions": {p: version(p) for p in PACKAGES},
    }
