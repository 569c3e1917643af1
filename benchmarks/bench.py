"""The benchmark behind ``make bench``: the int8 and fp32 ONNX copies vs a naive first version.

    .venv/bin/python -m benchmarks.bench            # ~6 min; results/bench/SUMMARY.md

One run, one machine, under the shared CPU lock (benchmarks/harness/cpu_lock.py):

1. our service under gunicorn exactly as deployed (gunicorn.conf.py) on the static-int8
   ONNX copy: cold start, then locust (a subprocess, headless, no wait time) at 1, 2, 4,
   8 users for a fixed time each; worker RSS and server CPU per request; a /healthz-only
   load (the HTTP stack alone) on the copy ``MODEL_PRECISION=auto`` serves on this CPU;
2. the same service on the fp32 ONNX copy;
3. in-process profile of one request's stages (decode, resize, normalise, model, read-out);
4. model-only throughput: the deployed number of processes × threads running each artifact
   back to back (no HTTP, no decode), at 1, 2, 4 and 8 photos per call — the batch-1 figures
   are the ceilings the service is compared with — and the whole request path without HTTP
   on the int8 artifact;
5. the TorchScript artifact (one load level) and the naive baseline
   (benchmarks/naive_app.py) at the same load levels.

Ratios measured within one run are the comparison that counts: absolute numbers on these
shared machines are noisy. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from benchmarks.harness.parallel import parallel_rate
from benchmarks.summary import BATCHES, model_only_label, write_summary
from model.defaults import FP32_MODEL, INT8_MODEL, SHIPPED_MODEL
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.gunicorn_server import GunicornServer, gunicorn_command, start_gunicorn

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
READY_MARKERS = {
    "ours-int8": "ready: serving",
    "ours-fp32": "ready: serving",
    "ours-torchscript": "ready: serving",
    "naive": "naive app ready",
}


# ---------------------------------------------------------------- servers


@dataclass
class Startup:
    """How a started server came up: what its log says about its workers."""

    all_ready_s: float  # process start -> every worker logged its ready line
    workers: int
    threads: str
    worker_class: str


def wait_for_workers(server: GunicornServer, workers: int, ready_marker: str) -> Startup:
    """Wait until ``workers`` workers logged ``ready_marker`` (the second worker may come up a
    little after the first one answers), then read the worker settings from the log."""
    all_ready_s = float("nan")
    deadline = server.started_at + START_TIMEOUT_S
    while time.perf_counter() < deadline:
        if server.logs().count(ready_marker) >= workers:
            all_ready_s = time.perf_counter() - server.started_at
            break
        time.sleep(0.02)
    text = server.logs()
    match = re.search(r"workers=(\d+), MODEL_THREADS=(\d+)", text)
    worker = re.search(r"Using worker: (\S+)", text)
    startup = Startup(
        all_ready_s,
        int(match.group(1)) if match else workers,
        match.group(2) if match else "torch default",
        worker.group(1) if worker else "?",
    )
    log.info(
        "%s ready: first /readyz 200 after %.2f s, all %d workers after %.2f s",
        server.name,
        server.cold_start_s,
        startup.workers,
        startup.all_ready_s,
    )
    return startup


def start_server(
    name: str, command: list[str], env: dict[str, str], workers: int, ready_marker: str
) -> tuple[GunicornServer, Startup]:
    """Start a gunicorn, ready (cold start = process start -> first /readyz 200) and described."""
    server = start_gunicorn(env, name=name, command=command, timeout=START_TIMEOUT_S)
    return server, wait_for_workers(server, workers, ready_marker)


def naive_command() -> list[str]:
    # gunicorn defaults (sync workers; WEB_CONCURRENCY from the env, as on Heroku), not ours.
    config = str(ROOT / "benchmarks" / "naive_gunicorn_conf.py")
    return [sys.executable, "-m", "gunicorn", "--config", config, "benchmarks.naive_app:app"]


# ---------------------------------------------------------------- load


@dataclass
class Sampler:
    """Samples worker RSS and CPU while locust runs."""

    server: GunicornServer
    locust: psutil.Process
    rss_mb: dict[int, float] = field(default_factory=dict)
    locust_cpu_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            for proc in self.server.worker_processes():
                try:
                    rss = proc.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
                self.rss_mb[proc.pid] = max(self.rss_mb.get(proc.pid, 0.0), rss)
            try:
                times = self.locust.cpu_times()
                self.locust_cpu_s = times.user + times.system
            except psutil.NoSuchProcess:
                pass
            self._stop.wait(0.25)


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class MissingStatsError(RuntimeError):
    """locust ended without its stats file for the route (the level is not measured)."""


def run_locust(
    server: GunicornServer, users: int, seconds: int, workdir: Path, route: str = "/predict"
) -> dict[str, Any]:
    """One headless locust run; returns the ``route`` row plus RSS and CPU figures.

    ``route="/healthz"`` runs a /healthz-only load: the cost of the HTTP stack alone.
    """
    prefix = workdir / f"{server.name}-u{users}{route.replace('/', '-')}"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "locustfile.py"),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds}s",
        "--host",
        server.base_url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    workers = server.worker_processes()
    server_cpu_before = _cpu_seconds([psutil.Process(server.process.pid), *workers])
    system_before = psutil.cpu_times()
    wall_started = time.perf_counter()
    env = dict(os.environ)
    if route == "/healthz":
        env.update(LOCUST_PREDICT_WEIGHT="0", LOCUST_HEALTHZ_WEIGHT="1")
    locust = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    sampler = Sampler(server, psutil.Process(locust.pid))
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    _, stderr = locust.communicate(timeout=seconds + 90)
    sampler._stop.set()
    thread.join()
    wall = time.perf_counter() - wall_started
    server_cpu = _cpu_seconds([psutil.Process(server.process.pid), *workers]) - server_cpu_before
    system_after = psutil.cpu_times()
    busy = sum(system_after) - sum(system_before)
    idle = (system_after.idle - system_before.idle) / busy if busy else float("nan")
    stats = _read_stats(Path(f"{prefix}_stats.csv"), route)
    if stats is None:
        raise MissingStatsError(
            f"locust wrote no stats for {server.name} u{users}:\n{stderr[-2000:]}"
        )
    requests = int(stats["Request Count"])
    return {
        "service": server.name if route == "/predict" else f"{server.name} {route} only",
        "users": users,
        "seconds": seconds,
        "requests": requests,
        "failures": int(stats["Failure Count"]),
        "rps": round(float(stats["Requests/s"]), 1),
        "p50_ms": _ms(stats["50%"]),
        "p95_ms": _ms(stats["95%"]),
        "p99_ms": _ms(stats["99%"]),
        "avg_ms": round(float(stats["Average Response Time"]), 1),
        "worker_rss_max_mb": round(max(sampler.rss_mb.values(), default=float("nan")), 1),
        "server_cpu_ms_per_req": round(1000 * server_cpu / requests, 2) if requests else None,
        "locust_cpu_share": round(sampler.locust_cpu_s / wall / psutil.cpu_count(), 3),
        "machine_idle_share": round(idle, 3),
    }


def _ms(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def _read_stats(path: Path, route: str) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    return rows.get(route)


# ---------------------------------------------------------------- in-process


def load_photos(limit: int = 200) -> list[bytes]:
    from tests.support.photos import generated_photos, load_val_photos

    return load_val_photos(limit) or generated_photos(50)


def _timed_chain(steps: list[Callable[[Any], Any]], value: Any) -> list[float]:
    """One photo through every step in turn: milliseconds per step."""
    times = []
    for step in steps:
        started = time.perf_counter()
        value = step(value)
        times.append(1000 * (time.perf_counter() - started))
    return times


def profile_stages(
    model_path: Path, photos: list[bytes], threads: int, label: str
) -> list[dict[str, Any]]:
    """Median time of each step of one /predict, in this process, batch of one.

    Each photo (every one, twice over) goes through all steps before the next one starts,
    as in a request: each step reads what the previous one just wrote, warm in the cache.
    """
    from model.predictor import Predictor
    from model.preprocessing import decode_image, normalise, resize_and_crop

    predictor = Predictor.from_uri(str(model_path), threads=threads)
    predictor.warmup(5)
    spec = predictor.metadata.preprocessing
    steps: list[tuple[str, Callable[[Any], Any]]] = [
        ("decode", lambda data: decode_image(data, min_side_hint=spec.resize_size)),
        ("resize_crop", lambda img: resize_and_crop(img, spec)),
        ("normalise", lambda small: normalise(small, spec)[None]),
        ("model", predictor.backend.run),
        ("read_out", predictor.interpret),
    ]
    chains = [_timed_chain([step for _, step in steps], data) for data in photos * 2]
    rows = []
    for (stage, _), ms in zip(steps, zip(*chains, strict=True), strict=True):
        rows.append(
            {
                "artifact": label,
                "stage": stage,
                "median_ms": round(statistics.median(ms), 3),
                "mean_ms": round(statistics.mean(ms), 3),
            }
        )
    rows.append(
        {
            "artifact": label,
            "stage": "total",
            "median_ms": round(sum(r["median_ms"] for r in rows), 3),
            "mean_ms": round(sum(r["mean_ms"] for r in rows), 3),
        }
    )
    return rows


def _throughput_worker(
    model_path: str,
    threads: int,
    seconds: float,
    batch: int,
    photos: list[bytes],
    barrier,
    queue,
) -> None:
    import numpy as np

    from model.predictor import Predictor

    predictor = Predictor.from_uri(model_path, threads=threads)
    predictor.warmup(5)
    rows = [predictor.preprocess(p) for p in photos[:48]]
    batches = [np.stack(rows[i : i + max(batch, 1)]) for i in range(0, 48, max(batch, 1))]
    barrier.wait()
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if batch == 0:  # the whole request path without HTTP: bytes in, answer out
            predictor.predict_bytes(photos[count % len(photos)])
            count += 1
        else:
            predictor.backend.run(batches[count // batch % len(batches)])
            count += batch
    queue.put(count)


def throughput(
    model_path: Path, processes: int, threads: int, seconds: float, photos: list[bytes], batch: int
) -> float:
    """Images/s of ``processes`` processes × ``threads`` threads, started together.

    ``batch`` images per model call; 0 means decode + preprocess + model + read-out per photo.
    """
    args = (str(model_path), threads, seconds, batch, photos)
    return parallel_rate(_throughput_worker, args, processes, seconds)


# ---------------------------------------------------------------- artifacts


# ---------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def serve(
    args: argparse.Namespace,
    result: dict[str, Any],
    workdir: Path,
    run: tuple[str, list[str], dict[str, str]],
    levels: list[int],
    seconds: int,
) -> Startup:
    """One service ``run`` = (name, command, env): its start-up row, then its load levels."""
    name, command, env = run
    server, startup = start_server(name, command, env, args.workers, READY_MARKERS[name])
    try:
        time.sleep(1)  # let the last worker finish its warm-up before measuring idle RSS
        idle_rss = [p.memory_info().rss / 2**20 for p in server.worker_processes()]
        result["startup"].append(
            {
                "service": name,
                "cold_start_s": round(server.cold_start_s, 2),
                "all_workers_ready_s": round(startup.all_ready_s, 2),
                "workers": startup.workers,
                "worker_class": startup.worker_class,
                "threads_per_worker": startup.threads,
                "idle_worker_rss_mb": round(max(idle_rss, default=float("nan")), 1),
            }
        )
        run_locust(server, 2, 3, workdir)  # warm connections, caches and allocators
        loads = [(users, seconds, "/predict") for users in levels]
        if name == result["served"]["service"] and args.http_floor_seconds:
            loads.append((max(levels), args.http_floor_seconds, "/healthz"))
        for users, load_seconds, route in loads:
            try:
                row = run_locust(server, users, load_seconds, workdir, route)
            except MissingStatsError as exc:  # seen with the naive baseline's 2 s answers
                log.warning("%s; running the level once more", str(exc).splitlines()[0])
                row = run_locust(server, users, load_seconds, workdir, route)
            log.info("%s", row)
            result["load"].append(row)
    finally:
        server.stop()
    return startup


def in_process(
    args: argparse.Namespace, result: dict[str, Any], photos: list[bytes], ours: Startup
) -> None:
    """The stages of one request and the model-only throughputs, with the deployed threads."""
    int8_path, fp32_path = args.int8, args.fp32
    threads = int(ours.threads) if ours.threads.isdigit() else 1
    log.info("profiling stages and model-only throughput")
    result["stages"] = [
        *profile_stages(int8_path, photos[:100], threads, "int8"),
        *profile_stages(fp32_path, photos[:100], threads, "fp32"),
    ]
    result["model_only"] = []
    runs = [
        (model_only_label(precision, batch), path, batch)
        for batch in BATCHES
        for precision, path in (("fp32", fp32_path), ("int8", int8_path))
    ]
    runs.append(("int8: decode + preprocess + model + read-out", int8_path, 0))
    for what, path, batch in runs:
        rate = throughput(path, ours.workers, threads, args.model_seconds, photos, batch)
        result["model_only"].append(
            {"what": what, "processes": ours.workers, "threads": threads, "per_s": round(rate, 1)}
        )
        log.info("%s: %.1f images/s", what, rate)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.int8.is_file():
        raise RuntimeError(
            f"int8 artifact {args.int8} not found (python -m training.release.quantize)"
        )
    photos = load_photos()
    workdir = Path(tempfile.mkdtemp(prefix="breedrec-bench-"))
    result: dict[str, Any] = {"machine": machine_info(), "load": [], "startup": []}
    result["served"] = served_here()
    result["settings"] = {
        "levels": args.levels,
        "seconds": args.seconds,
        "naive_levels": args.naive_levels,
        "photos": len(photos),
        "upload": os.environ.get("LOCUST_UPLOAD", "multipart"),
        "artifacts": {"int8": _relative(args.int8), "fp32": _relative(args.fp32)},
        "command": " ".join(["python -m benchmarks.bench", *sys.argv[1:]]),
    }
    base_env = {"WEB_CONCURRENCY": str(args.workers)}

    def ours(name: str, model: Path) -> tuple[str, list[str], dict[str, str]]:
        return name, gunicorn_command(), {**base_env, "MODEL_URI": str(model)}

    int8 = serve(args, result, workdir, ours("ours-int8", args.int8), args.levels, args.seconds)
    serve(args, result, workdir, ours("ours-fp32", args.fp32), args.levels, args.seconds)
    in_process(args, result, photos, int8)
    if args.torchscript_levels:
        torchscript = ours("ours-torchscript", SHIPPED_MODEL)
        serve(args, result, workdir, torchscript, args.torchscript_levels, args.naive_seconds)
    if args.naive_levels:
        naive = ("naive", naive_command(), base_env)
        serve(args, result, workdir, naive, args.naive_levels, args.naive_seconds)
    return result


def served_here() -> dict[str, str]:
    """What the service serves on this CPU without MODEL_URI (``MODEL_PRECISION=auto``)."""
    artifact, reason = choose_artifact(ModelSettings(uri=None, precision="auto"))
    precision = "int8" if artifact.endswith(".int8.onnx") else "fp32"
    return {
        "service": f"ours-{precision}",
        "precision": precision,
        "reason": reason,
        "artifact": _relative(Path(artifact)),
    }


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--int8", type=Path, default=INT8_MODEL, help="int8 ONNX artifact")
    parser.add_argument("--fp32", type=Path, default=FP32_MODEL, help="fp32 ONNX artifact")
    parser.add_argument("--levels", type=_levels, default=[1, 2, 4, 8], help="users, e.g. 1,2,4,8")
    parser.add_argument("--seconds", type=int, default=20, help="per load level")
    parser.add_argument("--naive-levels", type=_levels, default=[1, 2, 4, 8])
    parser.add_argument("--torchscript-levels", type=_levels, default=[8])
    parser.add_argument("--naive-seconds", type=int, default=12)
    parser.add_argument("--model-seconds", type=float, default=8.0)
    parser.add_argument(
        "--http-floor-seconds", type=int, default=10, help="/healthz-only load (0: skip)"
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--no-lock", action="store_true", help="do not take the shared CPU lock")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        with cpu_lock(not args.no_lock):
            started = time.perf_counter()
            result = run(args)
            result["bench_seconds"] = round(time.perf_counter() - started)
    except Exception as exc:  # one-line cause, non-zero exit
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = write_summary(result, args.out)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
