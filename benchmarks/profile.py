"""Where a worker's CPU goes at saturation: py-spy on the deployed service under locust load.

    .venv/bin/python -m benchmarks.profile [--users 4] [--seconds 20]   # ~1 min, CPU lock

Starts the service as deployed (gunicorn.conf.py, two workers, the ONNX copy chosen for this
CPU unless ``--model`` names one), loads it
with locust at ``--users`` (no wait time) and samples both workers with py-spy meanwhile:
one as collapsed stacks (turned into the top-20 table ``results/bench/profile_top20.md``:
self and inclusive share of the worker's busy samples per function), the other as a flame
graph (``results/bench/profile_flame.svg``). Idle time (waiting for a request) is not sampled.
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench import ROOT, run_locust, start_server
from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.gunicorn_server import GunicornServer, gunicorn_command
from training.reports.markdown import table

log = logging.getLogger("profile")


def py_spy(pid: int, seconds: int, fmt: str, out: Path, rate: int) -> subprocess.Popen:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [binary, "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", str(rate), "--format", fmt, "--output", str(out), "--nonblocking"]
    command += ["--threads"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _frame(raw: str) -> str:
    """``func (path/to/file.py:12)`` → ``func (file.py)``: one row per function, not per line."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif str(ROOT) in path:
        path = path.split(str(ROOT) + "/", 1)[1]
    return f"{name} ({path})" if path else name


# A worker's threads, by the name py-spy reports (``--threads``).
THREADS = {
    "MainThread": "event loop: HTTP, bodies, the front, the bot",
    "app_0": "app thread: Flask, decode, model, answer",
    "light_0": "light thread: health checks, metrics",
}


def thread_table(collapsed: Path) -> list[dict[str, object]]:
    """Share of busy samples per thread of the worker (py-spy ``--threads`` stacks)."""
    per_thread: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            name = stack.split(";", 1)[0].rpartition(": ")[2]
            per_thread[THREADS.get(name, name)] += int(count)
    total = sum(per_thread.values()) or 1
    return [
        {"thread": name, "share_%": round(100 * samples / total, 1)}
        for name, samples in per_thread.most_common()
    ]


def top_table(collapsed: Path, limit: int = 20) -> tuple[list[dict[str, object]], int]:
    """Self and inclusive share of samples per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first names the thread
        if not frames:  # a thread with no Python frame on its stack
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    rows = [
        {
            "function": name,
            "self_%": round(100 * own[name] / total, 1),
            "inclusive_%": round(100 * inclusive[name] / total, 1),
        }
        for name, _ in own.most_common(limit)
    ]
    return rows, total


def sample_workers(
    server: GunicornServer, args: argparse.Namespace, workdir: Path
) -> dict[str, object] | None:
    """Load the server with locust while py-spy samples both workers; the locust row, or None."""
    run_locust(server, 2, 3, workdir)  # warm-up
    workers = server.worker_processes()
    if len(workers) < 2:
        print("profile: the service has fewer than two workers", file=sys.stderr)
        return None
    spies = [
        py_spy(workers[0].pid, args.seconds, "raw", workdir / "worker.txt", args.rate),
        py_spy(workers[1].pid, args.seconds, "flamegraph", workdir / "flame.svg", args.rate),
    ]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = run_locust(server, args.users, args.seconds, workdir)
    for spy in spies:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            print(f"profile: py-spy failed: {err.strip()[-300:]}", file=sys.stderr)
            return None
    return {**load, "started": started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(choose_artifact(ModelSettings(uri=None, precision="auto"))[0]),
        help="artifact to serve (default: the one MODEL_PRECISION=auto picks here)",
    )
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--no-lock", action="store_true", help="do not take the CPU lock")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="breedrec-profile-"))
    with cpu_lock(not args.no_lock):
        env = {"WEB_CONCURRENCY": "2", "MODEL_URI": str(args.model)}
        server, startup = start_server("ours", gunicorn_command(), env, 2, "ready: serving")
        try:
            load = sample_workers(server, args, workdir)
        finally:
            server.stop()
    if load is None:
        return 1
    started = load.pop("started")
    rows, total = top_table(workdir / "worker.txt")
    machine = machine_info()
    lines = [
        "# Where a worker's CPU goes at saturation (py-spy)",
        "",
        f"Written by `python -m benchmarks.profile {' '.join(sys.argv[1:])}` on {started}, "
        f"commit {machine['commit']}; {machine['cpu']}, {machine['cores']} cores.",
        f"Service as deployed: {startup.workers} `{startup.worker_class}` workers × "
        f"{startup.threads} model thread, `{args.model.name}`; locust {args.users} users, "
        f"{args.seconds} s: {load['rps']} rps, p50 {load['p50_ms']} ms, "
        f"{load['server_cpu_ms_per_req']} ms server CPU per request, {load['failures']} failures.",
        f"{total} busy samples of one worker at {args.rate}/s (idle waits not sampled; a "
        "thread waiting for the GIL counts as busy); the other worker's flame graph: "
        "[profile_flame.svg](profile_flame.svg).",
        "",
        table(
            ["thread", "share of busy samples %"],
            [(r["thread"], r["share_%"]) for r in thread_table(workdir / "worker.txt")],
        ),
        "",
        table(
            ["function", "self %", "inclusive %"],
            [(f"`{r['function']}`", r["self_%"], r["inclusive_%"]) for r in rows],
        ),
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_top20.md").write_text("\n".join(lines))
    shutil.copyfile(workdir / "flame.svg", args.out / "profile_flame.svg")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
