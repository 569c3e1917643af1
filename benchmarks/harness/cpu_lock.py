"""The shared CPU lock: heavy jobs on these shared cores run one at a time.

The same lock file serves the benchmarks, the lab's scripts and ``flock`` on the command line
(``flock /tmp/breedrec-cpu.lock <command>``); ``BREED_CPU_LOCK`` names another file.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_LOCK = "/tmp/breedrec-cpu.lock"


def lock_path() -> Path:
    return Path(os.environ.get("BREED_CPU_LOCK") or DEFAULT_LOCK)


@contextmanager
def cpu_lock(enabled: bool = True) -> Iterator[None]:
    """Hold the CPU lock for the ``with`` block, waiting for it first; no-op if not ``enabled``."""
    if not enabled:
        yield
        return
    path = lock_path()
    with path.open("a") as handle:
        print(f"waiting for the CPU lock {path} ...", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
