"""``make soak``: the service at saturation for 5 minutes, with slow clients and Telegram traffic.

    .venv/bin/python -m benchmarks.soak [--duration 300] [--model model/....onnx]

Runs the service exactly as deployed (gunicorn.conf.py, 2 workers x 1 model thread on 2
cores) against, all at once and for the whole duration:

* ``--users`` clients posting real photos (Imagewoof val, else generated) back to back to
  ``POST /predict`` on kept-alive connections: the saturating load;
* ``--trickles`` uploads sending one byte every 3 s (replaced whenever the server cuts one
  off), plus one client posting a photo every second (tests/support/slow_clients.py);
* a Telegram user sending ``--telegram-rps`` photo updates per second through ``/telegram``,
  answered via the fake Bot API (tests/support/fake_telegram.py) in this process.

Prints and writes results/bench/soak.json and results/bench/soak.md: rps, errors, p50/p99
latencies, worker RSS at the start and the end, worker restarts. Holds the shared CPU lock
(benchmarks/harness/cpu_lock.py) for the whole run. Traffic goes to 127.0.0.1 only.

``--slow-clients LABEL [--checkout PATH]`` runs only the slow-client scenario for 40 s (64
uploads trickling one byte every 3 s, one photo a second beside them) against the code of a
checkout, e.g. the commit before this front, and records it under LABEL in
results/bench/soak_slow_clients.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests

from benchmarks.harness.cpu_lock import cpu_lock
from model.defaults import FP32_MODEL
from model.precision import cpu_model
from tests.support.fake_telegram import FakeTelegram, Updates
from tests.support.gunicorn_server import GunicornServer, start_gunicorn
from tests.support.latency import nearest_rank
from tests.support.photos import generated_photos, load_val_photos
from tests.support.slow_clients import SlowClientReport, measure_slow_clients
from training.reports.markdown import table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = FP32_MODEL
RESULTS = ROOT / "results" / "bench"
SECRET = "soak-secret_0123456789"


@dataclass
class Latencies:
    """Outcomes of one kind of request: status counts and latencies of the 200s."""

    seconds: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, status: int | None, seconds: float) -> None:
        key = str(status) if status is not None else "connection_error"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if status == 200:
            self.seconds.append(seconds)

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def errors(self) -> int:
        return sum(n for key, n in self.statuses.items() if key != "200")

    def percentile_ms(self, q: float) -> float:
        return 1000 * nearest_rank(self.seconds, q)


def saturate(base_url: str, photos: list[bytes], stop_at: float, out: Latencies, seed: int):
    """One client posting photos back to back on one kept-alive connection."""
    session = requests.Session()
    headers = {"Content-Type": "image/jpeg"}
    i = seed
    while time.monotonic() < stop_at:
        photo = photos[i % len(photos)]
        i += 7
        started = time.monotonic()
        try:
            status: int | None = session.post(
                f"{base_url}/predict", data=photo, headers=headers, timeout=30
            ).status_code
        except requests.RequestException:
            status = None
            session = requests.Session()
        out.add(status, time.monotonic() - started)


@dataclass
class TelegramTraffic:
    posted: Latencies = field(default_factory=Latencies)  # the webhook calls themselves
    sent: dict[int, float] = field(default_factory=dict)  # chat id -> when its update was posted


def telegram_user(
    base_url: str, fake: FakeTelegram, photos: list[bytes], rate: float, stop_at: float, out
) -> None:
    """Photo updates at ``rate`` per second, one chat each (so replies are easy to match)."""
    file_ids = [fake.add_file(photo) for photo in photos[:50]]
    next_at, n = time.monotonic(), 0
    while next_at < stop_at:
        time.sleep(max(0.0, next_at - time.monotonic()))
        chat = 500_000 + n
        update = Updates(chat_id=chat).photo(file_ids[n % len(file_ids)])
        started = time.monotonic()
        try:
            status: int | None = requests.post(
                f"{base_url}/telegram",
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                timeout=30,
            ).status_code
        except requests.RequestException:
            status = None
        out.posted.add(status, time.monotonic() - started)
        if status == 200:
            out.sent[chat] = started
        n += 1
        next_at += 1 / rate


def worker_rss_mb(server: GunicornServer) -> dict[int, float]:
    master = psutil.Process(server.process.pid)
    return {p.pid: round(p.memory_info().rss / 2**20, 1) for p in master.children()}


@dataclass
class Soak:
    """What one soak saw: the load generators' outcomes and the workers' memory."""

    saturation: Latencies = field(default_factory=Latencies)
    telegram: TelegramTraffic = field(default_factory=TelegramTraffic)
    slow: dict[str, SlowClientReport] = field(default_factory=dict)
    rss_samples: list[dict[int, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    reply_s: list[float] = field(default_factory=list)
    unanswered: list[int] = field(default_factory=list)


def drive_load(
    server: GunicornServer, fake: FakeTelegram, photos: list[bytes], args: argparse.Namespace
) -> Soak:
    """All the load at once for ``args.duration``, worker RSS sampled every 30 s."""
    soak = Soak(rss_samples=[worker_rss_mb(server)])
    started = time.monotonic()
    stop_at = started + args.duration
    threads = [
        threading.Thread(
            target=saturate, args=(server.base_url, photos, stop_at, soak.saturation, i)
        )
        for i in range(args.users)
    ]
    if args.telegram_rps > 0:
        telegram = (server.base_url, fake, photos, args.telegram_rps, stop_at, soak.telegram)
        threads.append(threading.Thread(target=telegram_user, args=telegram))

    def slow_clients() -> None:
        soak.slow["report"] = measure_slow_clients(
            server.base_url, photo=photos[1], connections=args.trickles, duration_s=args.duration
        )

    threads.append(threading.Thread(target=slow_clients))
    for thread in threads:
        thread.start()
    while (now := time.monotonic()) < stop_at:
        time.sleep(min(30.0, stop_at - now))
        soak.rss_samples.append(worker_rss_mb(server))
    for thread in threads:
        thread.join()
    soak.elapsed_s = time.monotonic() - started
    soak.rss_samples.append(worker_rss_mb(server))
    return soak


def wait_for_replies(fake: FakeTelegram, soak: Soak, timeout: float = 30.0) -> None:
    """Every acknowledged update must get its answer (the last ones may still be on the way)."""
    deadline = time.monotonic() + timeout
    while True:
        answered = {c.params["chat_id"]: c.at for c in fake.calls("sendMessage")}
        if all(chat in answered for chat in soak.telegram.sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    soak.reply_s = [answered[c] - t for c, t in soak.telegram.sent.items() if c in answered]
    soak.unanswered = [c for c in soak.telegram.sent if c not in answered]


def run(args: argparse.Namespace) -> dict[str, Any]:
    photos = load_val_photos(200) or generated_photos(200)
    photo_source = "Imagewoof val (200)" if len(photos) == 200 else "generated JPEGs (200)"
    with FakeTelegram() as fake:
        env = {
            **fake.env(),
            "TELEGRAM_SECRET_TOKEN": SECRET,
            "MODEL_URI": str(args.model),
            "WEB_CONCURRENCY": "2",
            "MODEL_THREADS": "1",
            "ACCESS_LOG": "",
            "LOG_LEVEL": "warning",
        }
        server = start_gunicorn(env, name="soak", cwd=args.checkout)
        try:
            # Warm-up: both workers answer, the bot is started in each.
            for _ in range(20):
                requests.post(f"{server.base_url}/predict", data=photos[0], timeout=30)
            soak = drive_load(server, fake, photos, args)
            wait_for_replies(fake, soak)
        finally:
            server.stop()
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make soak  (" + " ".join([sys.executable, "-m", "benchmarks.soak"]) + ")",
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs",
        "cpu_model": cpu_model(),
        "model": _shown(args.model),
        "checkout": _shown(args.checkout.resolve()) or ".",
        "photos": photo_source,
        "duration_s": round(soak.elapsed_s, 1),
        "load": {
            "saturating_users": args.users,
            "trickling_uploads": args.trickles,
            "telegram_updates_per_s": args.telegram_rps,
        },
        **figures(soak, server.logs()),
    }


def figures(soak: Soak, logs: str) -> dict[str, Any]:
    """The predict, slow-client, Telegram and worker blocks of the soak's result."""
    saturation, telegram, report = soak.saturation, soak.telegram, soak.slow["report"]
    rss_start, rss_end = soak.rss_samples[0], soak.rss_samples[-1]
    reply = Latencies(seconds=soak.reply_s)
    return {
        "predict": {
            "requests_ok": saturation.ok,
            "rps": round(saturation.ok / soak.elapsed_s, 1),
            "errors": saturation.errors,
            "statuses": saturation.statuses,
            "p50_ms": round(saturation.percentile_ms(50), 1),
            "p99_ms": round(saturation.percentile_ms(99), 1),
            "max_ms": round(saturation.percentile_ms(100), 1),
        },
        "normal_client": {
            "requests": len(report.normal),
            "errors": sum(1 for s, _ in report.normal if s != 200),
            "p50_ms": round(1000 * report.percentile(50), 1),
            "p99_ms": round(1000 * report.percentile(99), 1),
            "max_ms": round(1000 * report.percentile(100), 1),
        },
        "slow_clients": {
            "uploads": len(report.trickles),
            "cut_off": sum(1 for t in report.trickles if t.ended != "open"),
            "answered_408": sum(1 for t in report.trickles if t.status == 408),
            "still_open_at_end": sum(1 for t in report.trickles if t.ended == "open"),
        },
        "telegram": {
            "updates_posted": sum(telegram.posted.statuses.values()),
            "webhook_errors": telegram.posted.errors,
            "webhook_statuses": telegram.posted.statuses,
            "webhook_p99_ms": round(telegram.posted.percentile_ms(99), 1),
            "acknowledged": len(telegram.sent),
            "answered": len(soak.reply_s),
            "unanswered": len(soak.unanswered),
            "reply_p50_ms": round(reply.percentile_ms(50), 1),
            "reply_p99_ms": round(reply.percentile_ms(99), 1),
        },
        "workers": {
            "rss_mb_start": sorted(rss_start.values()),
            "rss_mb_end": sorted(rss_end.values()),
            "rss_mb_samples": [sorted(s.values()) for s in soak.rss_samples[:-1]],
            "restarts": len(set(rss_end) - set(rss_start)),  # workers replaced during the run
            "same_pids_at_end": set(rss_end) == set(rss_start),
            "worker_timeouts_logged": logs.count("WORKER TIMEOUT"),
        },
    }


def slow_clients_only(args: argparse.Namespace) -> dict[str, Any]:
    """The slow-client scenario alone, against the code of ``args.checkout``."""
    photos = load_val_photos(2) or generated_photos(2)
    env = {"MODEL_URI": str(args.model), "WEB_CONCURRENCY": "2", "MODEL_THREADS": "1"}
    server = start_gunicorn(env, name="soak-slow-clients", cwd=args.checkout)
    try:
        report = measure_slow_clients(server.base_url, photo=photos[1], duration_s=args.duration)
    finally:
        server.stop()
    logs = server.logs()
    commit = subprocess.run(
        ["git", "-C", str(args.checkout), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    ok = [t for s, t in report.normal if s == 200]
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit[:90],
        "worker_class": _worker_class(logs),
        "model": _shown(args.model),
        "duration_s": args.duration,
        "summary": report.summary(),
        "normal_requests": len(report.normal),
        "normal_200_within_2s": sum(1 for t in ok if t <= 2.0),
        "normal_200_slower": sum(1 for t in ok if t > 2.0),
        "normal_failed": sum(1 for s, _ in report.normal if s != 200),
        "normal_p50_s": round(report.percentile(50), 3),
        "normal_max_s": round(report.percentile(100), 3),
        "trickles_started": len(report.trickles),
        "trickles_answered_408": sum(1 for t in report.trickles if t.status == 408),
        "trickles_still_open": sum(1 for t in report.trickles if t.ended == "open"),
        "worker_timeouts": logs.count("WORKER TIMEOUT"),
    }


def _worker_class(logs: str) -> str:
    found = re.search(r"Using worker: (\S+)", logs)
    return found.group(1) if found else "?"


SLOW_CLIENT_COLUMNS = [
    "label",
    "commit",
    "worker",
    "normal answered 200 within 2 s",
    "200 but slower",
    "failed",
    "p50 / max",
    "trickles answered 408",
    "worker timeouts",
]


def slow_clients_markdown(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            label,
            f"`{r['commit']}`",
            r["worker_class"],
            f"{r['normal_200_within_2s']}/{r['normal_requests']}",
            r["normal_200_slower"],
            r["normal_failed"],
            f"{r['normal_p50_s']} s / {r['normal_max_s']} s",
            f"{r['trickles_answered_408']}/{r['trickles_started']}",
            r["worker_timeouts"],
        )
        for label, r in results.items()
    ]
    return f"""# Slow clients: before and after the front

Generated by `python -m benchmarks.soak --slow-clients LABEL --checkout PATH` (one row per
label; raw figures in [soak_slow_clients.json](soak_slow_clients.json)). Each run: 2 workers x 1
model thread, model `{next(iter(results.values()))["model"]}`, 40 s of 64 uploads trickling one
byte every 3 s (each replaced when cut off) while one client posts a photo every second
(open loop, 10 s client timeout), on {cpu_model()}, 2 cores, under the CPU lock.

{table(SLOW_CLIENT_COLUMNS, rows)}
"""


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _figure_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    p, n, s, t, w = (
        result[k] for k in ("predict", "normal_client", "slow_clients", "telegram", "workers")
    )
    same = w["same_pids_at_end"]
    pids = "the same at the start and the end" if same else "replaced during the run"
    return [
        (
            "`/predict` at saturation",
            f"{p['rps']} rps ({p['requests_ok']} answered), {p['errors']} errors, "
            f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms",
        ),
        (
            "one photo a second beside it",
            f"{n['requests']} requests, {n['errors']} errors, p50 {n['p50_ms']} ms, "
            f"p99 {n['p99_ms']} ms, max {n['max_ms']} ms",
        ),
        (
            "trickling uploads",
            f"{s['uploads']} started, {s['cut_off']} cut off by the server "
            f"({s['answered_408']} with a 408), {s['still_open_at_end']} still open at the end",
        ),
        (
            "Telegram updates",
            f"{t['updates_posted']} posted, {t['webhook_errors']} webhook errors, "
            f"{t['acknowledged']} acknowledged, {t['answered']} answered, "
            f"{t['unanswered']} unanswered; reply p50 {t['reply_p50_ms']} ms, "
            f"p99 {t['reply_p99_ms']} ms",
        ),
        (
            "worker RSS (MB)",
            f"start {w['rss_mb_start']}, after 30 s {w['rss_mb_samples'][1]}, "
            f"end {w['rss_mb_end']}",
        ),
        (
            "worker processes",
            f"{pids} (timeouts logged: {w['worker_timeouts_logged']})",
        ),
    ]


def markdown(result: dict[str, Any]) -> str:
    load = result["load"]
    title = f"{result['duration_s']:.0f} s at saturation with slow clients and Telegram traffic"
    return f"""# Soak: {title}

Generated by `{result["command"]}` on {result["when"]}; {result["cpu_model"]},
{result["machine"]}; model `{result["model"]}`; photos: {result["photos"]}. Raw figures:
[soak.json](soak.json).

Load, all at once: {load["saturating_users"]} clients posting photos back to back,
{load["trickling_uploads"]} uploads trickling one byte every 3 s (each replaced when cut off)
plus one client posting a photo every second, and {load["telegram_updates_per_s"]} Telegram
photo updates per second through `/telegram` (answered via the fake Bot API). The load
generators run in this process on the same 2 cores as the server, so the rps is lower than
`make bench` measures with locust; compare it with runs of this script only.

{table(["what", "figure"], _figure_rows(result))}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, help="seconds (default 300; 40 slow-clients)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="artifact to serve")
    parser.add_argument("--users", type=int, default=8, help="saturating clients (default 8)")
    parser.add_argument("--trickles", type=int, default=32, help="trickling uploads (32)")
    parser.add_argument("--telegram-rps", type=float, default=2.0, help="updates/s (2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where soak.json/.md go")
    parser.add_argument(
        "--checkout",
        type=Path,
        default=ROOT,
        help="serve the code of this checkout instead (for before/after comparisons)",
    )
    parser.add_argument("--slow-clients", metavar="LABEL", help="the slow-client scenario only")
    parser.add_argument("--render", action="store_true", help="rewrite soak.md from soak.json")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads((args.out / "soak.json").read_text())
        (args.out / "soak.md").write_text(markdown(result))
        return 0
    args.duration = args.duration or (40.0 if args.slow_clients else 300.0)
    if not args.model.is_file():
        print(f"error: no model artifact at {args.model} (make run builds it)", file=sys.stderr)
        return 1
    args.model = args.model.resolve()
    with cpu_lock():
        result = slow_clients_only(args) if args.slow_clients else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.slow_clients:
        path = args.out / "soak_slow_clients.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[args.slow_clients] = result
        path.write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "soak_slow_clients.md").write_text(slow_clients_markdown(results))
        print(result["summary"])
        return 0
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "soak.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
