"""The benchmark behind ``make bench``: the served int8 artifact vs fp32 vs a naive first version.

    .venv/bin/python -m benchmarks.bench            # ~6 min; results/bench/SUMMARY.md

One run, one machine, under the shared CPU lock (/tmp/breedrec-cpu.lock):

1. our service under gunicorn exactly as deployed (gunicorn.conf.py) on the static-int8
   ONNX artifact: cold start, then locust (a subprocess, headless, no wait time) at 1, 2, 4,
   8 users for a fixed time each; worker RSS and server CPU per request; a /healthz-only
   load (the HTTP stack alone);
2. the same service on the fp32 ONNX artifact (derived from the shipped TorchScript one);
3. in-process profile of one request's stages (decode, resize, normalise, model, read-out);
4. model-only throughput: the deployed number of processes × threads running each artifact
   back to back (no HTTP, no decode) — the fp32 figure is the ceiling the service is
   compared with — and the whole request path without HTTP on the int8 artifact;
5. the TorchScript artifact (one load level) and the naive baseline
   (benchmarks/naive_app.py) at the same load levels.

Ratios measured within one run are the comparison that counts: absolute numbers on these
shared machines are noisy. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import http.client
import json
import logging
import multiprocessing as mp
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.summary import FP32_MODEL_ONLY, INT8_MODEL_ONLY, SERVED, write_summary

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PT = ROOT / "model" / "efficientnet_lite0_imagewoof.pt"
DEFAULT_ONNX = SHIPPED_PT.with_suffix(".onnx")
DEFAULT_INT8 = SHIPPED_PT.with_suffix(".int8.onnx")
LOCK_PATH = os.environ.get("BENCH_LOCK", "/tmp/breedrec-cpu.lock")
# Settings of the developer's shell that would change what the benchmarked servers do.
SCRUBBED = (
    "MODEL_URI",
    "MODEL_SHA256",
    "MODEL_THREADS",
    "OMP_NUM_THREADS",
    "WEB_CONCURRENCY",
    "PORT",
    "HOST",
    "PROMETHEUS_MULTIPROC_DIR",
)


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    base_url: str
    log_path: Path
    cold_start_s: float = float("nan")
    all_ready_s: float = float("nan")
    workers: int = 0
    threads: str = ""
    worker_class: str = ""

    def worker_processes(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def start_server(
    name: str, command: list[str], env: dict[str, str], workers: int, ready_marker: str
) -> Server:
    """Start a gunicorn; cold start = process start → first /readyz 200 (polled every 10 ms).

    ``all_ready_s`` is when every worker has logged ``ready_marker`` (the second worker may
    come up a little after the first one answers).
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    full_env.update(env, PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept until the bench ends
        prefix=f"bench-{name}-", suffix=".log", delete=False
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    server = Server(name, process, f"http://127.0.0.1:{port}", Path(log_file.name))
    deadline = started + 180
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{server.log_path.read_text()[-3000:]}")
        if _status(port, "/readyz") == 200:
            server.cold_start_s = time.perf_counter() - started
            break
        time.sleep(0.01)
    else:
        server.stop()
        raise RuntimeError(f"{name} not ready in 180 s:\n{server.log_path.read_text()[-3000:]}")
    while time.perf_counter() < deadline:
        text = server.log_path.read_text(errors="replace")
        if text.count(ready_marker) >= workers:
            server.all_ready_s = time.perf_counter() - started
            break
        time.sleep(0.02)
    text = server.log_path.read_text(errors="replace")
    match = re.search(r"workers=(\d+), MODEL_THREADS=(\d+)", text)
    server.workers = int(match.group(1)) if match else workers
    server.threads = match.group(2) if match else "torch default"
    worker = re.search(r"Using worker: (\S+)", text)
    server.worker_class = worker.group(1) if worker else "?"
    log.info(
        "%s ready: first /readyz 200 after %.2f s, all %d workers after %.2f s",
        name,
        server.cold_start_s,
        server.workers,
        server.all_ready_s,
    )
    return server


def ours_command() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]


def naive_command() -> list[str]:
    # gunicorn defaults (sync workers; WEB_CONCURRENCY from the env, as on Heroku), not ours.
    config = str(ROOT / "benchmarks" / "naive_gunicorn_conf.py")
    return [sys.executable, "-m", "gunicorn", "--config", config, "benchmarks.naive_app:app"]


# ---------------------------------------------------------------- load


@dataclass
class Sampler:
    """Samples worker RSS and CPU while locust runs."""

    server: Server
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


def run_locust(
    server: Server, users: int, seconds: int, workdir: Path, route: str = "/predict"
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
        raise RuntimeError(f"locust wrote no stats for {server.name} u{users}:\n{stderr[-2000:]}")
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
    from benchmarks.photos import generated_photos, load_val_photos

    return load_val_photos(limit) or generated_photos(50)


def profile_stages(
    model_path: Path, photos: list[bytes], threads: int, label: str
) -> list[dict[str, Any]]:
    """Median time of each step of one /predict, in this process, batch of one."""
    from model.predictor import Predictor
    from model.preprocessing import decode_image, normalise, resize_and_crop

    predictor = Predictor.from_uri(str(model_path), threads=threads)
    predictor.warmup(5)
    spec = predictor.metadata.preprocessing
    times: dict[str, list[float]] = {
        k: [] for k in ("decode", "resize_crop", "normalise", "model", "read_out")
    }
    for data in photos * 2:
        t0 = time.perf_counter()
        img = decode_image(data, min_side_hint=spec.resize_size)
        t1 = time.perf_counter()
        small = resize_and_crop(img, spec)
        t2 = time.perf_counter()
        batch = normalise(small, spec)[None]
        t3 = time.perf_counter()
        outputs = predictor.backend.run(batch)
        t4 = time.perf_counter()
        predictor.interpret(outputs)
        t5 = time.perf_counter()
        for key, a, b in zip(times, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
            times[key].append((b - a) * 1000)
    rows = [
        {
            "artifact": label,
            "stage": k,
            "median_ms": round(statistics.median(v), 3),
            "mean_ms": round(statistics.mean(v), 3),
        }
        for k, v in times.items()
    ]
    rows.append(
        {
            "artifact": label,
            "stage": "total",
            "median_ms": round(sum(r["median_ms"] for r in rows), 3),
            "mean_ms": round(sum(r["mean_ms"] for r in rows), 3),
        }
    )
    return rows


def _r(value: float) -> float:
    return round(value, 3)


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
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    args = (str(model_path), threads, seconds, batch, photos, barrier, queue)
    procs = [ctx.Process(target=_throughput_worker, args=args) for _ in range(processes)]
    for proc in procs:
        proc.start()
    counts = [queue.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(counts) / seconds


# ---------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    packages = ("onnxruntime", "torch", "numpy", "pillow", "flask", "gunicorn", "locust")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "commit": commit,
        "versions": {p: version(p) for p in packages},
    }


def ensure_onnx(path: Path) -> Path:
    """Build the ONNX artifact from the shipped TorchScript one if missing or older."""
    if path.is_file() and path.stat().st_mtime >= SHIPPED_PT.stat().st_mtime:
        return path
    subprocess.run(
        [sys.executable, "-m", "model.convert_onnx", str(SHIPPED_PT), str(path)],
        cwd=ROOT,
        check=True,
    )
    return path


# ---------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    int8_path = args.int8
    if not int8_path.is_file():
        raise RuntimeError(f"int8 artifact {int8_path} not found (python -m model.quantize)")
    fp32_path = ensure_onnx(args.fp32)
    photos = load_photos()
    workdir = Path(tempfile.mkdtemp(prefix="breedrec-bench-"))
    result: dict[str, Any] = {"machine": machine_info(), "load": [], "startup": []}
    result["settings"] = {
        "levels": args.levels,
        "seconds": args.seconds,
        "naive_levels": args.naive_levels,
        "photos": len(photos),
        "upload": os.environ.get("LOCUST_UPLOAD", "multipart"),
        "artifacts": {"int8": _relative(int8_path), "fp32": _relative(fp32_path)},
        "command": " ".join(["python -m benchmarks.bench", *sys.argv[1:]]),
    }

    def serve(name: str, command: list[str], env: dict[str, str], levels: list[int], seconds: int):
        server = start_server(name, command, env, args.workers, args.ready_markers[name])
        try:
            time.sleep(1)  # let the last worker finish its warm-up before measuring idle RSS
            idle_rss = [p.memory_info().rss / 2**20 for p in server.worker_processes()]
            result["startup"].append(
                {
                    "service": name,
                    "cold_start_s": round(server.cold_start_s, 2),
                    "all_workers_ready_s": round(server.all_ready_s, 2),
                    "workers": server.workers,
                    "worker_class": server.worker_class,
                    "threads_per_worker": server.threads,
                    "idle_worker_rss_mb": round(max(idle_rss, default=float("nan")), 1),
                }
            )
            run_locust(server, 2, 3, workdir)  # warm connections, caches and allocators
            for users in levels:
                row = run_locust(server, users, seconds, workdir)
                log.info("%s", row)
                result["load"].append(row)
            if name == SERVED and args.http_floor_seconds:
                row = run_locust(server, max(levels), args.http_floor_seconds, workdir, "/healthz")
                log.info("%s", row)
                result["load"].append(row)
        finally:
            server.stop()
        return server

    base_env = {"WEB_CONCURRENCY": str(args.workers)}
    ours = serve(
        SERVED, ours_command(), {**base_env, "MODEL_URI": str(int8_path)}, args.levels, args.seconds
    )
    serve(
        "ours-fp32",
        ours_command(),
        {**base_env, "MODEL_URI": str(fp32_path)},
        args.levels,
        args.seconds,
    )
    threads = int(ours.threads) if ours.threads.isdigit() else 1

    log.info("profiling stages and model-only throughput")
    result["stages"] = [
        *profile_stages(int8_path, photos[:100], threads, "int8"),
        *profile_stages(fp32_path, photos[:100], threads, "fp32"),
    ]
    result["model_only"] = []
    for what, path, batch in (
        (FP32_MODEL_ONLY, fp32_path, 1),
        (INT8_MODEL_ONLY, int8_path, 1),
        ("int8: decode + preprocess + model + read-out", int8_path, 0),
    ):
        rate = throughput(path, ours.workers, threads, args.model_seconds, photos, batch)
        result["model_only"].append(
            {"what": what, "processes": ours.workers, "threads": threads, "per_s": round(rate, 1)}
        )
        log.info("%s: %.1f images/s", what, rate)

    if args.torchscript_levels:
        serve(
            "ours-torchscript",
            ours_command(),
            {**base_env, "MODEL_URI": str(SHIPPED_PT)},
            args.torchscript_levels,
            args.naive_seconds,
        )
    if args.naive_levels:
        serve("naive", naive_command(), base_env, args.naive_levels, args.naive_seconds)
    return result


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--int8", type=Path, default=DEFAULT_INT8, help="served int8 artifact")
    parser.add_argument(
        "--fp32", type=Path, default=DEFAULT_ONNX, help="fp32 ONNX (built from the .pt if missing)"
    )
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
    args.ready_markers = {
        SERVED: "ready: serving",
        "ours-fp32": "ready: serving",
        "ours-torchscript": "ready: serving",
        "naive": "naive app ready",
    }
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    lock = open(LOCK_PATH, "a")  # noqa: SIM115 - held for the whole run
    if not args.no_lock:
        log.info("waiting for the CPU lock %s", LOCK_PATH)
        fcntl.flock(lock, fcntl.LOCK_EX)
    started = time.perf_counter()
    try:
        result = run(args)
    except Exception as exc:  # one-line cause, non-zero exit
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
    result["bench_seconds"] = round(time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = write_summary(result, args.out)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
