"""What answering before acknowledging costs and buys: the bot's delivery benchmark.

    .venv/bin/python -m benchmarks.telegram_delivery [--rounds 3] [--photos 20]
        # ~2 min under the CPU lock; results/bench/telegram_delivery.md (+ .json)

1. Cost: sequential photo updates to one replica (the ONNX copy chosen for this CPU, Imagewoof val
   photos when ../shared/data is there, else generated ones), each webhook call timed from
   request to 200. The 200 comes after the reply, so this is also the bot's answer time.
2. What it buys, per round on a fresh Redis: ``photos`` photo updates in flight to one
   replica, SIGKILL of its process group as soon as it acknowledged the first, every call
   that got no 2xx delivered again to a second replica (as Telegram does), the killed one
   restarted; then the replies per chat at the fake Bot API.

Both replicas share one real redis-server and one fake Bot API; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info, write_report
from tests.support.delivery import REDELIVERY_PAUSE_S, KillOutcome, deliver, kill_scenario
from tests.support.fake_telegram import FakeTelegram, Updates
from tests.support.gunicorn_server import GunicornServer, start_gunicorn
from tests.support.latency import nearest_rank
from tests.support.photos import generated_photos, load_val_photos
from tests.support.redis_server import redis_installed, start_redis
from training.reports.markdown import table

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "results" / "bench" / "telegram_delivery"
SECRET = "bench-secret_0123456789"
DOWNLOAD_S = 1.0
DOWNLOAD_STEP_S = 0.15
FIRST_CHAT = 7000


def photos_for(count: int) -> tuple[list[bytes], str]:
    real = load_val_photos(count)
    if len(real) == count:
        return real, "Imagewoof val photos"
    return generated_photos(count), "generated 300x224 JPEGs"


@contextmanager
def replicas(env: dict[str, str]) -> Iterator[Callable[[], GunicornServer]]:
    """Start replicas on demand (one worker, one model thread each); stop them all after."""
    started: list[GunicornServer] = []

    def start() -> GunicornServer:
        started.append(start_gunicorn({**env, "WEB_CONCURRENCY": "1", "MODEL_THREADS": "1"}))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def answer_times(fake: FakeTelegram, env: dict[str, str], photos: list[bytes]) -> list[float]:
    """Seconds from webhook call to 200 for each photo update, one at a time."""
    times = []
    with replicas(env) as start:
        server = start()
        updates = Updates(chat_id=FIRST_CHAT - 1)
        for photo in photos:
            update = updates.photo(fake.add_file(photo))
            started = time.perf_counter()
            status = deliver(server, update, SECRET)
            times.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"webhook call answered {status}")
    return times


def kill_round(fake: FakeTelegram, env: dict[str, str], photos: list[bytes], n: int) -> KillOutcome:
    with replicas(env) as start:
        first_chat = FIRST_CHAT + 1000 * n
        return kill_scenario(start, fake, photos, SECRET, first_chat, DOWNLOAD_S, DOWNLOAD_STEP_S)


def run(args: argparse.Namespace) -> dict[str, Any]:
    photos, source = photos_for(args.photos)
    rounds = []
    with FakeTelegram() as fake:
        redis = start_redis()
        try:
            env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "REDIS_URL": redis.url}
            times = answer_times(fake, env, photos)
            for n in range(args.rounds):
                redis.client().flushall()
                outcome = kill_round(fake, env, photos, n)
                rounds.append({**vars(outcome), "answered_twice": outcome.answered_twice})
                rounds[-1]["unanswered"] = outcome.unanswered
        finally:
            redis.stop()
    return {
        "machine": machine_info(),
        "photos": {"count": len(photos), "source": source},
        "answer_s": {"p50": nearest_rank(times, 50), "p95": nearest_rank(times, 95)},
        "download_s": [DOWNLOAD_S, DOWNLOAD_STEP_S],
        "rounds": rounds,
    }


def write(result: dict[str, Any], out: Path) -> str:
    machine = result["machine"]
    answer = result["answer_s"]
    rows = [
        [
            n + 1,
            r["photos"],
            r["acknowledged_before_kill"],
            r["redeliveries"],
            f"{r['seconds_to_all_acknowledged']:.1f}",
            r["unanswered"],
            r["answered_twice"],
        ]
        for n, r in enumerate(result["rounds"])
    ]
    header = ["Round", "Photos in flight", "Acknowledged before the kill", "Calls to the survivor"]
    header += ["Kill to all acknowledged (s)", "Chats never answered", "Chats answered twice"]
    text = "\n".join(
        [
            "# Telegram delivery (generated by `python -m benchmarks.telegram_delivery`)",
            "",
            f"{machine['date']} on {machine['cpu']}, {machine['cores']} cores, commit "
            f"{machine['commit']}; {result['photos']['count']} {result['photos']['source']}; "
            "replicas of one worker each, one redis-server, a fake Bot API over HTTP.",
            "",
            "## Answering before acknowledging: the webhook call waits for the reply",
            "",
            f"Photo update, webhook call to 200 (one at a time, downloads instant): "
            f"p50 {answer['p50'] * 1000:.0f} ms, p95 {answer['p95'] * 1000:.0f} ms.",
            "",
            "## SIGKILL of a replica's process group with photos in flight",
            "",
            f"Downloads take {result['download_s'][0]:g} s plus {result['download_s'][1]:g} s "
            "per photo; the kill comes as soon as the replica acknowledged its first photo. "
            "Each unacknowledged update is then delivered to the survivor every "
            f"{REDELIVERY_PAUSE_S:g} s until it gets a 2xx (Telegram's own pace is slower): the "
            "survivor answers 503 while the killed replica's lease on the update lasts "
            "(`TELEGRAM_ANSWER_TIMEOUT_S` + 5 s = 25 s by default), then answers it.",
            "",
            table(header, rows, align=["r"] * len(header)),
        ]
    )
    write_report(out, text, result)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.telegram_delivery", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT, help="path without suffix")
    args = parser.parse_args(argv)
    if not redis_installed():
        print("error: redis-server is not installed (Debian package redis-server)", file=sys.stderr)
        return 1
    with cpu_lock():
        print(write(run(args), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
