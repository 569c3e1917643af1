"""Playing Telegram's part against live replicas: deliver an update until a call gets a 2xx,
and the hard-kill scenario (photos in flight to one replica, SIGKILL of its process group,
every unacknowledged update delivered again to another). The delivery benchmark measures it,
the tests assert on it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import requests

from tests.support.fake_telegram import HEADER, FakeTelegram, Updates
from tests.support.gunicorn_server import GunicornServer

REDELIVERY_PAUSE_S = 0.2


def deliver(server: GunicornServer, update: dict[str, Any], secret: str) -> int:
    """One webhook call's status; 0 when the connection failed (what a killed replica leaves)."""
    try:
        response = requests.post(
            f"{server.base_url}/telegram", json=update, headers={HEADER: secret}, timeout=60
        )
    except requests.RequestException:
        return 0
    return response.status_code


def deliver_until_acknowledged(
    servers: list[GunicornServer], update: dict[str, Any], secret: str, **options: Any
) -> int:
    """Deliver again, round-robin over ``servers``, until a 2xx; returns the calls it took."""
    return len(deliveries_until_acknowledged(servers, update, secret, **options))


def deliveries_until_acknowledged(
    servers: list[GunicornServer],
    update: dict[str, Any],
    secret: str,
    deadline_s: float = 60.0,
    pause_s: float = REDELIVERY_PAUSE_S,
    give_up_after: int | None = None,
) -> list[int]:
    """The statuses of every call it took to get a 2xx, ``pause_s`` apart (or of the first
    ``give_up_after``, as Telegram gives up on an update in the end)."""
    deadline = time.monotonic() + deadline_s
    statuses = [deliver(servers[0], update, secret)]
    while not 200 <= statuses[-1] < 300:
        if give_up_after is not None and len(statuses) >= give_up_after:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"update {update['update_id']} not acknowledged in {deadline_s} s")
        time.sleep(pause_s)
        statuses.append(deliver(servers[len(statuses) % len(servers)], update, secret))
    return statuses


@dataclass
class KillOutcome:
    photos: int
    acknowledged_before_kill: int
    replies: dict[int, int]  # chat id -> replies it got
    redeliveries: int  # webhook calls made to the surviving replica
    seconds_to_all_acknowledged: float  # from the kill

    @property
    def unanswered(self) -> int:
        return sum(count == 0 for count in self.replies.values())

    @property
    def answered_twice(self) -> int:
        return sum(count > 1 for count in self.replies.values())


def kill_scenario(
    start_replica: Callable[[], GunicornServer],
    fake: FakeTelegram,
    photos: list[bytes],
    secret: str,
    first_chat: int,
    download_s: float,
    download_step_s: float,
) -> KillOutcome:
    """Photos (one chat each) in flight to a replica that is SIGKILLed once it acknowledged
    the first; the rest go to a second replica until acknowledged; then a third replica starts.

    Downloads take ``download_s`` plus ``download_step_s`` more per photo, so the photos are
    being answered at the kill and their answers do not all fall at the same moment.
    """
    victim, survivor = start_replica(), start_replica()
    chats = [first_chat + i for i in range(len(photos))]
    updates = [
        Updates(chat_id=chat).photo(fake.add_file(photo, delay_s=download_s + download_step_s * i))
        for i, (chat, photo) in enumerate(zip(chats, photos, strict=True))
    ]
    with ThreadPoolExecutor(len(updates)) as pool:
        calls = [pool.submit(deliver, victim, update, secret) for update in updates]
        wait(calls, return_when=FIRST_COMPLETED)
        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        statuses = [call.result() for call in calls]
    victim.process.wait(10)
    left = [u for u, status in zip(updates, statuses, strict=True) if not 200 <= status < 300]
    with ThreadPoolExecutor(max(1, len(left))) as pool:
        attempts = list(pool.map(lambda u: deliver_until_acknowledged([survivor], u, secret), left))
    all_acknowledged_s = time.monotonic() - killed_at
    start_replica()  # the killed one comes back
    replies = {
        chat: sum(c.params.get("chat_id") == chat for c in fake.calls("sendMessage"))
        for chat in chats
    }
    return KillOutcome(
        len(photos), len(photos) - len(left), replies, sum(attempts), all_acknowledged_s
    )
