"""What the whole server holds while people and hostile clients send photos.

    .venv/bin/python -m benchmarks.hostile_memory   # ~2 min under the CPU lock
        # -> results/bench/hostile_memory.md (+ .json)

The service as ``make run`` serves it (master + 2 workers, the ONNX copy chosen for this CPU)
with the Telegram bot on (a local fake Bot API). Memory is what the platform counts: the PSS
of every process of the server added up (master and workers), sampled every 50 ms by a thread
of this process (``/proc/<pid>/smaps_rollup`` through psutil). Cases, in order:

1. 8 clients sending real photos (Imagewoof val, else generated JPEGs) for 15 s, both workers
   saturated, while a ninth plays the platform's health check (/healthz and /readyz, timed);
2. each hostile upload (tests/support/hostile_inputs.py) sent by 2 clients at once;
3. each phone photo sent by 2 clients at once, and the bot answering a 12 MP HEIC meanwhile;
4. everything the service accepts that is large, from 4 clients at once, with the bot.

Idle memory is the median of 1 s of samples after a warm-up and again after the last case.
Every answer must be JSON: 200, or a 4xx with an error code; a 5xx or a worker replaced
(its pid gone) is counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info
from tests.support.fake_telegram import FakeTelegram, bot_photo
from tests.support.gunicorn_server import GunicornServer, start_gunicorn
from tests.support.hostile_inputs import Upload, hostile_uploads, phone_uploads
from tests.support.photos import generated_photos, load_val_photos
from training.reports.markdown import table

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "results" / "bench" / "hostile_memory"
SAMPLE_S = 0.05
HEALTH_EVERY_S = 0.1  # how often the platform's health check is played during the load
SECRET = "bench-secret_0123456789"
CONTAINER_MB = 512
MB = 2**20


class PssSampler:
    """Sums the PSS of a server's processes every ``SAMPLE_S`` in a thread; keeps the peak."""

    def __init__(self, server: GunicornServer) -> None:
        self.server = server
        self.samples: list[tuple[float, float]] = []  # (time, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def total_mb(self) -> float:
        processes = [psutil.Process(self.server.process.pid), *self.server.worker_processes()]
        total = 0
        for process in processes:
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                continue
        return total / MB

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> float:
        mb = self.total_mb()
        self.samples.append((time.monotonic(), mb))
        return mb

    def peak_since(self, start: float) -> float:
        """The highest sample since ``start``, one taken now included (a case may be quicker
        than the sampling period)."""
        now = self.sample()
        return max([now, *(mb for at, mb in self.samples if at >= start)])

    def idle_mb(self, seconds: float = 1.0) -> float:
        """The median of the samples over the next ``seconds`` (nothing is being sent)."""
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            self._stop.wait(SAMPLE_S)
        return statistics.median(mb for at, mb in self.samples if at >= start)


@dataclass
class Case:
    name: str
    file_bytes: str
    peak_mb: float = float("nan")
    statuses: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # answers that are neither 200 nor JSON 4xx


def post(server: GunicornServer, upload: Upload, case: Case) -> None:
    response = requests.post(f"{server.base_url}/predict", files=upload.files(), timeout=120)
    case.statuses[response.status_code] += 1
    try:
        body = response.json()
    except ValueError:
        case.bad.append(f"{upload.name}: {response.status_code} not JSON")
        return
    if response.status_code == 200:
        return
    code = body.get("error", {}).get("code")
    case.codes[code] += 1
    if response.status_code >= 500 or not code:
        case.bad.append(f"{upload.name}: {response.status_code} {code}")


def send_all(server: GunicornServer, uploads: Iterable[Upload], clients: int, case: Case) -> None:
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(post, server, upload, case) for upload in uploads]:
            future.result()


def health_latencies(server: GunicornServer, deadline: float) -> dict[str, list[float]]:
    """Milliseconds of GET /healthz and /readyz, one pair every 100 ms until ``deadline``."""
    latencies: dict[str, list[float]] = {"/healthz": [], "/readyz": []}
    with requests.Session() as session:
        while time.monotonic() < deadline:
            for path, times in latencies.items():
                started = time.perf_counter()
                response = session.get(f"{server.base_url}{path}", timeout=30)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    times[-1] = float("inf")
            time.sleep(HEALTH_EVERY_S)
    return latencies


def size_label(uploads: Iterable[Upload]) -> str:
    sizes = [len(u.data) for u in uploads]
    low, high = min(sizes), max(sizes)
    fmt = lambda n: f"{n / 1024:,.0f} KB" if n < MB else f"{n / MB:.1f} MB"  # noqa: E731
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def measure(seconds_real: float) -> dict[str, Any]:
    real = load_val_photos(64)
    photos = real or generated_photos(64)
    source = "Imagewoof val photos" if real else "generated JPEGs"
    hostile, phone = hostile_uploads(), phone_uploads()
    heic = next(u for u in phone if u.name.endswith(".heic"))
    cases: list[Case] = []
    with FakeTelegram() as fake:
        env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "WEB_CONCURRENCY": "2"}
        server = start_gunicorn(env, name="hostile")
        try:
            pids = {p.pid for p in server.worker_processes()}
            with PssSampler(server) as sampler:
                send_all(server, [Upload("warm.jpg", photos[0], "image/jpeg")] * 4, 2, Case("", ""))
                idle_before = sampler.idle_mb()

                case = Case(f"8 clients, {source}, {seconds_real:.0f} s", "–")
                start, deadline = time.monotonic(), time.monotonic() + seconds_real

                def client(i: int) -> None:
                    n = i
                    while time.monotonic() < deadline:
                        data = photos[n % len(photos)]
                        post(server, Upload("photo.jpg", data, "image/jpeg"), case)
                        n += 8

                with ThreadPoolExecutor(9) as pool:
                    health = pool.submit(health_latencies, server, deadline)
                    list(pool.map(client, range(8)))
                    health_ms = health.result()
                case.peak_mb = sampler.peak_since(start)
                cases.append(case)

                for upload in hostile:
                    case = Case(f"{upload.name}, 2 at once", size_label([upload]))
                    start = time.monotonic()
                    send_all(server, [upload, upload], 2, case)
                    case.peak_mb = sampler.peak_since(start)
                    cases.append(case)

                for n, upload in enumerate(phone):
                    name = f"{upload.name}, 2 at once + the bot (12 MP HEIC)"
                    case = Case(name, size_label([upload]))
                    start = time.monotonic()
                    with ThreadPoolExecutor(1) as bot:
                        replied = bot.submit(
                            bot_photo, server.base_url, fake, heic.data, 100 + n, SECRET
                        )
                        send_all(server, [upload, upload], 2, case)
                        case.statuses[f"bot {replied.result()}"] += 1
                    case.peak_mb = sampler.peak_since(start)
                    cases.append(case)

                accepted = [u for u in (*hostile, *phone) if cases_accept(cases, u)]
                case = Case("all accepted large uploads, 4 clients + the bot", size_label(accepted))
                start = time.monotonic()
                with ThreadPoolExecutor(2) as bot:
                    replies = [
                        bot.submit(bot_photo, server.base_url, fake, heic.data, 200 + i, SECRET)
                        for i in range(2)
                    ]
                    send_all(server, accepted * 2, 4, case)
                    for reply in replies:
                        case.statuses[f"bot {reply.result()}"] += 1
                case.peak_mb = sampler.peak_since(start)
                cases.append(case)

                idle_after = sampler.idle_mb()
                peak = max(mb for _, mb in sampler.samples)
                sample_count = len(sampler.samples)
            lost = len(pids - {p.pid for p in server.worker_processes()})
            bot_answers = len(fake.calls("sendMessage"))
        finally:
            server.stop()
    return {
        "machine": machine_info(),
        "sampling": f"PSS of master + workers summed, every {SAMPLE_S * 1000:.0f} ms "
        f"({sample_count} samples)",
        "idle_before_mb": round(idle_before, 1),
        "idle_after_mb": round(idle_after, 1),
        "peak_mb": round(peak, 1),
        "workers_lost": lost,
        "health_ms": {
            path: {
                "count": len(times),
                "p50": round(statistics.median(times), 1),
                "max": round(max(times), 1),
            }
            for path, times in health_ms.items()
        },
        "bot_answers": bot_answers,
        "cases": [
            {
                "case": c.name,
                "file": c.file_bytes,
                "peak_mb": round(c.peak_mb, 1),
                "statuses": {str(k): v for k, v in sorted(c.statuses.items(), key=str)},
                "codes": dict(c.codes),
                "bad": c.bad,
            }
            for c in cases
        ],
    }


def cases_accept(cases: list[Case], upload: Upload) -> bool:
    """Whether the service answered this upload with a breed in its own case (2 × 200)."""
    for case in cases:
        if case.name.startswith(f"{upload.name}, "):
            return case.statuses.get(200, 0) == 2
    return False


def write(result: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    machine = result["machine"]
    bad = sum(len(c["bad"]) for c in result["cases"])
    rows = [
        (
            c["case"],
            c["file"],
            f"{c['peak_mb']:,.0f}",
            ", ".join(f"{k}×{v}" for k, v in c["statuses"].items()),
            ", ".join(f"{k}" for k in c["codes"]) or "–",
        )
        for c in result["cases"]
    ]
    ratio = result["idle_after_mb"] / result["idle_before_mb"]
    lines = [
        "# Memory of the whole server under hostile uploads",
        "",
        "Generated by `python -m benchmarks.hostile_memory`; do not edit by hand. "
        f"{machine['date']}, {machine['cpu']}, {machine['cores']} cores, commit "
        f"{machine['commit']}.",
        "",
        f"`make run`'s server (master + 2 workers) with the bot on. Memory: {result['sampling']}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| idle before | {result['idle_before_mb']:.0f} MB |",
        f"| peak, all cases | **{result['peak_mb']:.0f} MB** (container: {CONTAINER_MB} MB) |",
        f"| idle after | {result['idle_after_mb']:.0f} MB ({ratio:.2f}× before) |",
        f"| workers lost | {result['workers_lost']} |",
        *(
            f"| `GET {path}` during the 8 clients: p50 / max ({h['count']} calls) | "
            f"{h['p50']:.1f} / {h['max']:.1f} ms |"
            for path, h in result["health_ms"].items()
        ),
        f"| answers neither 200 nor JSON 4xx | {bad} |",
        f"| bot answers sent | {result['bot_answers']} |",
        "",
        table(
            ["what was sent", "file size", "peak MB", "statuses", "error codes"],
            rows,
            ["l", "r", "r", "l", "l"],
        ),
        "",
    ]
    OUT.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile_memory")
    parser.add_argument("--seconds", type=float, default=15.0, help="of the real-photo case")
    parser.add_argument("--no-lock", action="store_true", help="the caller holds the CPU lock")
    args = parser.parse_args(argv)
    hostile_uploads()  # made before the lock is taken and the server started
    if args.no_lock:
        result = measure(args.seconds)
    else:
        with cpu_lock():
            result = measure(args.seconds)
    write(result)
    print(OUT.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
