"""Restarts and redeliveries: real gunicorn (2 workers), the fake Bot API over HTTP, SIGTERM.

Telegram never sends an update again once it got a 200 for it, so the 200 comes only after
the answer, and a SIGTERMed worker finishes the webhook calls in flight; an update Telegram
does send again (after a timeout or a 503) is answered once. The ``fake`` and ``bot_server``
fixtures come from tests/conftest.py. Hard kills and several replicas: test_telegram_delivery.py.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.fake_telegram import Call, FakeTelegram, Updates
from tests.support.fake_telegram import post_update as post
from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes

IN_FLIGHT = 30
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
    """Telegram sends the same update again (e.g. after a timeout): whichever worker gets it.

    Copies that arrive while one worker is answering get 503 (Telegram tries them again);
    copies that arrive after the answer get 200 and no second reply.
    """
    update = Updates(chat_id=3001).photo(fake.add_file(jpeg_bytes(seed=31), delay_s=0.5))
    with ThreadPoolExecutor(4) as pool:  # the copies reach both workers while it is answered
        statuses = list(pool.map(lambda _: post(bot_server, update).status_code, range(4)))
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 503}, statuses
    assert len(replies_to(fake, 3001)) == 1
    # Every later delivery, one by one, is acknowledged without a second reply.
    before = len(re.findall(r"delivered again; already answered", bot_server.logs()))
    for _ in range(3):
        assert post(bot_server, update).status_code == 200
    wait_for_log(bot_server, r"delivered again; already answered", before + 3)
    assert len(replies_to(fake, 3001)) == 1


def test_sigterm_answers_every_update_in_flight_first(
    bot_server: GunicornServer, fake: FakeTelegram
) -> None:
    """Last on purpose (it stops the server): 30 photo updates being answered, a /predict
    upload in flight. Each webhook call is acknowledged only once answered, so the drain
    finishes the calls in flight and acknowledges no new one."""
    chats = range(3100, 3100 + IN_FLIGHT)
    updates = [
        Updates(chat_id=chat).photo(fake.add_file(jpeg_bytes(seed=chat), delay_s=DOWNLOAD_S))
        for chat in chats
    ]
    pool = ThreadPoolExecutor(IN_FLIGHT)
    calls = [pool.submit(post, bot_server, update) for update in updates]
    fake.wait_for("sendMessage", 1, where=lambda c: c.params.get("chat_id") in chats)
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
    assert answered_at_sigterm < IN_FLIGHT  # the drain has work to do
    bot_server.process.send_signal(signal.SIGTERM)
    wait_for_log(bot_server, r"Shutting down", 2, timeout=10)

    # Updates arriving now are not acknowledged (the workers no longer accept connections, or
    # answer 503), so that Telegram delivers them again to the next server.
    late = Updates(chat_id=3200).text("/help")
    try:
        refused = post(bot_server, late)
    except requests.ConnectionError:
        pass
    else:
        assert refused.status_code == 503
    # The upload that was in flight is finished and answered.
    upload.sendall(photo[500:])
    response = b""
    while chunk := upload.recv(65536):
        response += chunk
    upload.close()
    assert response.startswith(b"HTTP/1.1 200 "), response[:300]
    assert b'"top_k"' in response

    # Every call in flight was answered with its breed, then acknowledged.
    assert [call.result().status_code for call in calls] == [200] * IN_FLIGHT
    pool.shutdown()
    assert bot_server.process.wait(30) == 0
    for chat in chats:
        [reply] = replies_to(fake, chat)
        assert reply.params["text"].startswith("My best guess: "), reply.params["text"]
    assert replies_to(fake, 3200) == []
    logs = bot_server.logs()
    assert "timeout graceful shutdown exceeded" not in logs
    for bad in ("cannot schedule new futures", "Traceback", "model failed", "WORKER TIMEOUT"):
        assert bad not in logs
