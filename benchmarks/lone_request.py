"""Should a lone request run the model on every core? Measured on the served fp32 artifact.

    .venv/bin/python -m benchmarks.lone_request        # ~1 min under the CPU lock

Each gunicorn worker runs the model with ``cores ÷ workers`` intra-op threads (one here), so a
request that arrives alone leaves the other cores idle. Giving every worker all cores would
lower that request's latency, but under load the workers' thread pools then share the cores.
Both sides are measured in one run, on the artifact ``MODEL_PRECISION=auto`` serves here:

1. batch-1 latency of one process, 1 thread against all cores, taking turns in rounds;
2. photos/s of the deployed shape (``--processes`` processes started together), each process
   with 1 thread against all cores: the saturated service.

The rule is written in the report before the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench import load_photos, throughput
from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from model.backends import OnnxBackend
from model.preprocessing import preprocess_bytes
from service.loading import choose_artifact
from service.settings import ModelSettings
from training.reports.markdown import table
from training.timing import time_calls

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "lone_request"
# Within one run, the 2-process figure moves by about this much from try to try here.
THROUGHPUT_TOLERANCE = 0.02

RULE = (
    "A lone request gets every core only if, in the same run, its median batch-1 latency is "
    "lower with all cores AND the deployed processes, each with all cores, still compute at "
    f"least {1 - THROUGHPUT_TOLERANCE:.2f}x the photos/s they compute with one thread each "
    "(the service at saturation). Otherwise workers keep cores / workers threads."
)


def all_cores_pay(lone_ms: dict[int, float], saturated: dict[int, float], cores: int) -> bool:
    """The rule: faster alone on every core, and no throughput lost at saturation."""
    faster = lone_ms[cores] < lone_ms[1]
    return faster and saturated[cores] >= (1 - THROUGHPUT_TOLERANCE) * saturated[1]


def preprocessed(artifact: Path, photos: list[bytes]) -> np.ndarray:
    """The photos as the service feeds them to the model."""
    spec = OnnxBackend(artifact, threads=1).metadata.preprocessing
    return np.stack([preprocess_bytes(data, spec) for data in photos])


def rss_mb() -> float:
    """This process's resident memory."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def latency(artifact: Path, rows: np.ndarray, threads: list[int], calls: int, rounds: int):
    """Median ms per batch-1 call for each thread count, the counts taking turns per round;
    and the memory one more session (the last count's) adds to a process that has one."""
    backends = {n: OnnxBackend(artifact, threads=n) for n in threads[:-1]}
    for backend in backends.values():
        backend.run(rows[:1])  # its buffers are allocated on the first run
    before = rss_mb()
    backends[threads[-1]] = OnnxBackend(artifact, threads=threads[-1])
    backends[threads[-1]].run(rows[:1])
    second_session_mb = round(rss_mb() - before, 1)
    times: dict[int, list[float]] = {n: [] for n in threads}
    for _ in range(rounds):
        for n, backend in backends.items():
            batches = iter(rows[i % len(rows)][None] for i in range(calls // rounds + 3))
            call = lambda run=backend.run, batches=batches: run(next(batches))  # noqa: E731
            times[n] += time_calls(call, repeats=calls // rounds, warmup=3)
    return {n: round(statistics.median(ts) * 1000, 2) for n, ts in times.items()}, second_session_mb


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifact = args.model
    cores = len(os.sched_getaffinity(0))
    threads = sorted({1, cores})
    photos = load_photos(64)
    rows = preprocessed(artifact, photos)
    lone, second_session_mb = latency(artifact, rows, threads, args.calls, args.rounds)
    saturated = {
        n: round(throughput(artifact, args.processes, n, args.seconds, photos, batch=1), 1)
        for n in threads
    }
    kept = all_cores_pay(lone, saturated, cores)
    return {
        "machine": machine_info(),
        "artifact": artifact.name,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "model")},
        "rows": [
            {"threads": n, "lone_median_ms": lone[n], "saturated_photos_per_s": saturated[n]}
            for n in threads
        ],
        "second_session_mb": second_session_mb,
        "all_cores_for_a_lone_request": kept,
    }


def render(result: dict[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    rows = result["rows"]
    base = rows[0]
    lines = [
        "# A lone request on every core?",
        "",
        f"Rule (fixed before measuring): {RULE}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; CPU flags: "
        f"{' '.join(machine['cpu_flags'])}. {machine['date']}, commit {machine['commit']}. "
        f"Artifact `{result['artifact']}` (ONNX Runtime, as served). Latency: one process, "
        f"batch 1, {settings['calls']} calls per thread count in {settings['rounds']} "
        f"interleaved rounds. Saturated: {settings['processes']} processes started together, "
        f"{settings['seconds']} s each.",
        "",
        table(
            [
                "model threads per process",
                "lone request, median ms",
                "saturated photos/s",
                "saturated ÷ 1 thread",
            ],
            [
                (
                    r["threads"],
                    r["lone_median_ms"],
                    r["saturated_photos_per_s"],
                    f"{r['saturated_photos_per_s'] / base['saturated_photos_per_s']:.3f}",
                )
                for r in rows
            ],
        ),
        "",
        f"A second session (all cores) next to the first adds {result['second_session_mb']} MB "
        "to the process: what two sessions per worker, picked by load, would cost.",
        "",
        "**Kept:** a lone request runs on every core."
        if result["all_cores_for_a_lone_request"]
        else "**Not kept:** workers keep cores ÷ workers model threads.",
        "",
        "Command: `.venv/bin/python -m benchmarks.lone_request` (under the CPU lock).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lone_request", description=__doc__)
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(choose_artifact(ModelSettings(uri=None, precision="auto"))[0]),
        help="artifact (default: the one MODEL_PRECISION=auto serves here)",
    )
    parser.add_argument("--calls", type=int, default=400, help="timed calls per thread count")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="the deployed workers")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=OUT, help="path without suffix")
    args = parser.parse_args(argv)
    with cpu_lock():
        result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    page = args.out.with_suffix(".md")
    page.write_text(render(result))
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
