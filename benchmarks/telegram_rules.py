"""The bot under the Bot API's real rules: what the user gets when Telegram misbehaves.

    .venv/bin/python -m benchmarks.telegram_rules
        # ~1.5 min under the CPU lock; results/bench/telegram_rules.md (+ .json)

One server as ``make run`` starts it (two workers, default settings, answers recorded in the
SQLite file its workers share), the shipped model, a fake Bot API that misbehaves on purpose
for one chat per case, one photo update per case (ten for the album), each delivered again
every second until a webhook call gets a 2xx (six calls at most), as Telegram does:

- the first sendMessage answered 429 with ``retry_after`` 3 s;
- the user blocked the bot: every sendMessage answered 403;
- one transient 502 on the answer;
- the answer's sendMessage takes 12 s (and is delivered);
- an album of 10 photos, delivered at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.cpu_lock import cpu_lock
from benchmarks.harness.machine import machine_info, write_report
from service.telegram_bot.texts import TEXTS
from tests.support.delivery import deliveries_until_acknowledged
from tests.support.fake_telegram import BLOCKED, Call, FakeTelegram, Updates
from tests.support.gunicorn_server import GunicornServer, start_gunicorn
from tests.support.photos import generated_photos, load_val_photos
from training.reports.markdown import table

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "results" / "bench" / "telegram_rules"
SECRET = "bench-secret_0123456789"
REDELIVERY_PAUSE_S = 1.0
SLOW_SEND_S = 12.0
GIVE_UP_AFTER = 6  # deliveries of one update, at most (Telegram's own limit is about a day)
ALBUM = 10
# What the bot says when it answers a photo (any verdict), and when it apologises.
ANSWER_MARKS = ("Top guesses", "nearest ones would be")
APOLOGIES = tuple(TEXTS["en"][key] for key in ("failed", "download_failed"))


@dataclass
class Case:
    name: str
    deliveries: list[list[int]]  # the webhook statuses, per update
    answers: int  # messages that answer a photo
    apologies: int
    duplicates: int  # updates answered more than once
    sends_in_flood_window: int
    downloads: int
    acknowledged_s: float  # from the first delivery to the last update's 2xx
    max_per_second: int  # most messages to the chat within any one second


def run_case(
    server: GunicornServer,
    fake: FakeTelegram,
    name: str,
    photos: list[bytes],
    chat_id: int,
    misbehave: Callable[[FakeTelegram], None],
    settle_s: float = 1.0,
) -> Case:
    """Deliver the photos (at once) until acknowledged; then wait ``settle_s`` more, for a
    late duplicate, apology or slow send to land, and count what the chat got."""
    updates = Updates(chat_id=chat_id)
    batch = [updates.photo(fake.add_file(photo), media_group_id=f"g{chat_id}") for photo in photos]
    misbehave(fake)
    started = time.monotonic()
    with ThreadPoolExecutor(len(batch)) as pool:
        deliveries = list(
            pool.map(
                lambda u: deliveries_until_acknowledged(
                    [server], u, SECRET, 120, REDELIVERY_PAUSE_S, give_up_after=GIVE_UP_AFTER
                ),
                batch,
            )
        )
    acknowledged_s = time.monotonic() - started
    time.sleep(settle_s)
    sent = [c for c in fake.calls("sendMessage") if c.params["chat_id"] == chat_id and not c.error]
    answers = [c for c in sent if any(mark in c.params["text"] for mark in ANSWER_MARKS)]
    quoted = [c.params.get("reply_parameters", {}).get("message_id") for c in sent]
    file_ids = {u["message"]["photo"][-1]["file_id"] for u in batch}
    return Case(
        name=name,
        deliveries=deliveries,
        answers=len(answers),
        apologies=sum(c.params["text"] in APOLOGIES for c in sent),
        duplicates=sum(quoted.count(u["message"]["message_id"]) > 1 for u in batch),
        sends_in_flood_window=sum(
            c.params.get("chat_id") == chat_id for c in fake.flood_violations
        ),
        downloads=sum(c.params["file_id"] in file_ids for c in fake.calls("getFile")),
        acknowledged_s=acknowledged_s,
        max_per_second=most_within_a_second(sent),
    )


def most_within_a_second(sent: list[Call]) -> int:
    times = sorted(c.at for c in sent)
    return max((sum(t <= u < t + 1.0 for u in times) for t in times), default=0)


def run() -> dict[str, Any]:
    photos = load_val_photos(ALBUM + 4)
    source = "Imagewoof val photos"
    if len(photos) < ALBUM + 4:
        photos, source = generated_photos(ALBUM + 4), "generated 300x224 JPEGs"
    cases = [
        ("first sendMessage answered 429, retry after 3 s", 8101,
         lambda f: f.fail("sendMessage", chat_id=8101, status=429, retry_after=3)),
        ("user blocked the bot (403 forever)", 8102,
         lambda f: f.fail("sendMessage", None, chat_id=8102, status=403, description=BLOCKED)),
        ("one transient 502 on the answer", 8103,
         lambda f: f.fail("sendMessage", chat_id=8103, status=502)),
        ("the answer's send takes 12 s (delivered)", 8104,
         lambda f: f.slow("sendMessage", SLOW_SEND_S, chat_id=8104)),
    ]  # fmt: skip
    results = []
    with FakeTelegram() as fake:
        env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": SECRET, "WEB_CONCURRENCY": "2"}
        server = start_gunicorn(env)
        try:
            for n, (name, chat, misbehave) in enumerate(cases):
                settle_s = SLOW_SEND_S + 1 if chat == 8104 else 1.0  # the slow send lands
                one = photos[n : n + 1]
                results.append(run_case(server, fake, name, one, chat, misbehave, settle_s))
            album = photos[4 : 4 + ALBUM]
            results.append(
                run_case(server, fake, f"an album of {ALBUM} photos", album, 8105, lambda f: None)
            )
        finally:
            server.stop()
    return {
        "machine": machine_info(),
        "photos": source,
        "cases": [asdict(case) for case in results],
    }


def webhook_answers(deliveries: list[list[int]]) -> str:
    """``503 200`` for one update; for several, how many calls and how many were not 2xx."""
    if len(deliveries) == 1:
        return " ".join(map(str, deliveries[0]))
    calls = [status for statuses in deliveries for status in statuses]
    refused = sum(not 200 <= status < 300 for status in calls)
    return f"{len(deliveries)} updates, {len(calls)} calls, {refused} non-2xx"


def write(result: dict[str, Any], out: Path) -> str:
    machine = result["machine"]
    header = ["Case", "Webhook answers", "Answers", "Apologies", "Duplicates"]
    header += [
        "Calls inside retry_after",
        "Downloads",
        "Acknowledged after",
        "Most msgs in 1 s",
    ]
    rows = []
    for case in result["cases"]:
        rows.append(
            [
                case["name"],
                webhook_answers(case["deliveries"]),
                case["answers"],
                case["apologies"],
                case["duplicates"],
                case["sends_in_flood_window"],
                case["downloads"],
                f"{case['acknowledged_s']:.1f} s",
                case["max_per_second"],
            ]
        )
    text = "\n".join(
        [
            "# The bot under Telegram's rules (generated by `python -m benchmarks.telegram_rules`)",
            "",
            f"{machine['date']} on {machine['cpu']}, {machine['cores']} cores, commit "
            f"{machine['commit']}; {result['photos']}; one server as `make run` starts it "
            "(two workers, default settings), a fake Bot API misbehaving for one chat per case. "
            f"Each update is delivered again every {REDELIVERY_PAUSE_S:g} s until a webhook call "
            "gets a 2xx; webhook answers are the statuses of those calls.",
            "",
            table(header, rows, align=["l"] + ["r"] * (len(header) - 1)),
        ]
    )
    write_report(out, text, result)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.telegram_rules", description=__doc__
    )
    parser.add_argument("--out", type=Path, default=OUT, help="path without suffix")
    args = parser.parse_args(argv)
    with cpu_lock():
        print(write(run(), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
