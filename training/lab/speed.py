"""How fast an artifact runs on this CPU, model only: the figure the results page and the ship
rule's tie-break compare."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from model.backends import load_backend
from model.preprocessing import quantize_input
from training.timing import time_calls


def measure_speed(
    artifact: Path, threads: int, runs: int = 30, batch: int = 32, batch_runs: int = 3
) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-``batch`` throughput (photos/s) of the artifact."""
    backend = load_backend(artifact, threads)
    size = backend.metadata.preprocessing.input_size
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    many = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    quantization = backend.metadata.preprocessing.input_quantization
    if quantization is not None:  # rows as its preprocessing gives them: the model alone timed
        one, many = quantize_input(one, quantization), quantize_input(many, quantization)
    latencies = time_calls(lambda: backend.run(one), repeats=runs, warmup=3)
    batches = time_calls(lambda: backend.run(many), repeats=batch_runs, warmup=1)
    return {
        "latency_ms": round(statistics.median(latencies) * 1000, 1),
        "throughput_ips": round(batch * batch_runs / sum(batches), 1),
    }
