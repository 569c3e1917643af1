"""Calls per second of several processes started together: the deployed processes × threads
shape, measured without HTTP."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any


def parallel_rate(
    worker: Callable[..., None], worker_args: tuple[Any, ...], processes: int, seconds: float
) -> float:
    """Start ``processes`` spawned copies of ``worker(*worker_args, barrier, queue)``.

    Each waits at the barrier, works for ``seconds`` and puts how many items it did on the
    queue; the result is all of them together per second.
    """
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(*worker_args, barrier, queue)) for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    counts = [queue.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(counts) / seconds
