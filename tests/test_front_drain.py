"""Restarts and redeliveries: real gunicorn (2 workers), the fake Bot API over HTTP, SIGTERM.

Telegram never sends an update again once it got a 200 for it, so every acknowledged update
must be answered before the process exits; and an update Telegram does send again (after a
timeout or a 503) must be answered once. The ``fake`` and ``bot_server`` fixtures come from
tests/conftest.py.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.fake_telegram import Call, FakeTelegram, Updates
from tests.support.fake_telegram import post_update as post
from tests.support.images import jpeg_bytes
from tests.support.server import GunicornServer

QUEUED = 30
# Each photo download takes this long, so the 30 updates are still being worked on at SIGTERM.
DOWNLOAD_S = 1.0


def replies_to(fake: FakeTelegram, chat_id: int) -> list[Call]:
    return [c for c in fake.calls("sendMessage") if c.params.get("chat_id") == chat_id]


def wait_for_log(server: GunicornServer, pattern: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, server.logs())) < count:
        assert time.monotonic() < deadline, f"{count} x {pattern!r} not logged:\n{server.logs()}"
        time.sleep(0.05)


def test_a_redelivered_update_is_answered_once(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    """Telegram sends the same update again (e.g. after a timeout): whichever worker gets it."""
    update = Updates(chat_id=3001).photo(fake.add_file(jpeg_bytes(seed=31)))
    before = len(re.findall(r"delivered again; already taken", bot_server.logs()))
    with ThreadPoolExecutor(4) as pool:  # the copies reach both workers
        statuses = list(pool.map(lambda _: post(bot_server, update).status_code, range(4)))
    assert statuses == [200] * 4
    # Three copies were recognised as such (so none of them is queued), one was answered.
    wait_for_log(bot_server, r"delivered again; already taken", before + 3)
    fake.wait_for("sendMessage", 1, where=lambda c: c.params.get("chat_id") == 3001)
    assert len(replies_to(fake, 3001)) == 1
    # Later deliveries too, one by one.
    assert post(bot_server, update).status_code == 200
    wait_for_log(bot_server, r"delivered again; already taken", before + 4)
    assert len(replies_to(fake, 3001)) == 1


def test_sigterm_answers_every_acknowledged_update_first(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    """Last on purpose (it stops the server): 30 queued photos, a /predict upload in flight."""
    chats = range(3100, 3100 + QUEUED)
    updates = [
        Updates(chat_id=chat).photo(fake.add_file(jpeg_bytes(seed=chat), delay_s=DOWNLOAD_S))
        for chat in chats
    ]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda u: post(bot_server, u).status_code, updates))
    assert statuses == [200] * QUEUED
    # A /predict upload that has started, but not finished, when the SIGTERM comes.
    photo = jpeg_bytes(seed=3099)
    host, port = bot_server.base_url.removeprefix("http://").split(":")
    upload = socket.create_connection((host, int(port)), timeout=30)
    upload.sendall(
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n".encode()
        + photo[:500]
    )
    answered_at_sigterm = sum(len(replies_to(fake, chat)) for chat in chats)
    assert answered_at_sigterm < QUEUED  # the drain has work to do
    bot_server.process.send_signal(signal.SIGTERM)
    wait_for_log(bot_server, r"draining: \d+ requests in flight", 2, timeout=10)

    # Updates arriving now are refused with 503, so that Telegram delivers them again later.
    late = Updates(chat_id=3200).text("/help")
    refused = post(bot_server, late)
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    # The upload that was in flight is finished and answered.
    upload.sendall(photo[500:])
    response = b""
    while chunk := upload.recv(65536):
        response += chunk
    upload.close()
    assert response.startswith(b"HTTP/1.1 200 "), response[:300]
    assert b'"top_k"' in response

    assert bot_server.process.wait(30) == 0
    # Every acknowledged update was answered with its breed before the process exited.
    for chat in chats:
        [reply] = replies_to(fake, chat)
        assert reply.params["text"].startswith("My best guess: "), reply.params["text"]
    assert replies_to(fake, 3200) == []
    logs = bot_server.logs()
    drained = [int(n) for n in re.findall(r"telegram bot drained (\d+) queued updates", logs)]
    assert len(drained) == 2 and 0 < sum(drained) <= QUEUED - answered_at_sigterm, logs
    assert "NOT answered" not in logs
    for bad in ("cannot schedule new futures", "Traceback", "model failed", "WORKER TIMEOUT"):
        assert bad not in logs
