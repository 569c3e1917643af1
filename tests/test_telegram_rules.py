"""The bot under the Bot API's real rules, against real gunicorn (two workers): flood control
with ``retry_after``, chats that refuse (blocked, gone), 5xx, slow sends, albums, one chat
flooding the bot; and the shared store that paces the sends and counts the photos.

The fake Bot API misbehaves on purpose for one chat per test (``FakeTelegram.fail`` and
``slow``); this module plays Telegram's part by delivering an update again until a webhook
call gets a 2xx.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import pytest

from model.metadata import OpenSetRule
from service.telegram_bot.limits import RedisSlots, Slots, SqliteSlots
from tests.support.artifacts import rewrite_metadata
from tests.support.delivery import deliveries_until_acknowledged
from tests.support.fake_telegram import (
    BLOCKED,
    CHAT_NOT_FOUND,
    SECRET,
    Call,
    FakeTelegram,
    Updates,
    post_update,
)
from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes
from tests.support.redis_server import redis_installed, start_redis
from tests.support.server import start_gunicorn

ANSWER_TIMEOUT_S = 12.0  # room for an album of ten at one message a second
SEND_TIMEOUT_S = 3.0
PHOTOS_PER_MINUTE = 12
ANSWER = "My best guess: "
APOLOGY = "Sorry"


@pytest.fixture(scope="module")
def rules_server(
    fake: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """The bot under gunicorn (two workers sharing the SQLite store), feedback off.

    Generated photos are noise, which the shipped open-set rule rightly refuses; these tests
    check the breed answer, so it runs the same weights with rule none.
    """
    accepting = rewrite_metadata(
        tmp_path_factory.mktemp("artifact") / "accepting.pt", open_set=OpenSetRule("none")
    )
    env = {
        **fake.env(),
        "TELEGRAM_SECRET_TOKEN": SECRET,
        "WEB_CONCURRENCY": "2",
        "MODEL_URI": str(accepting),
        "TELEGRAM_ANSWER_TIMEOUT_S": str(ANSWER_TIMEOUT_S),
        "TELEGRAM_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "TELEGRAM_PHOTOS_PER_MINUTE": str(PHOTOS_PER_MINUTE),
    }
    running = start_gunicorn(env)
    yield running
    running.stop()


def sent_to(fake: FakeTelegram, chat_id: int) -> list[Call]:
    """The messages the chat got (sendMessage calls the Bot API accepted)."""
    return [
        c for c in fake.calls("sendMessage") if c.params["chat_id"] == chat_id and c.error is None
    ]


def refused_to(fake: FakeTelegram, chat_id: int) -> list[Call]:
    return [c for c in fake.calls("sendMessage") if c.params["chat_id"] == chat_id and c.error]


def downloads_of(fake: FakeTelegram, file_id: str) -> int:
    return len([c for c in fake.calls("getFile") if c.params["file_id"] == file_id])


def until_acknowledged(server: GunicornServer, update: dict[str, Any], **kw: Any) -> list[int]:
    return deliveries_until_acknowledged([server], update, SECRET, **kw)


def photo_update(fake: FakeTelegram, chat_id: int, seed: int, **kw: Any) -> dict[str, Any]:
    return Updates(chat_id=chat_id).photo(fake.add_file(jpeg_bytes(seed=seed)), **kw)


def test_flood_control_is_waited_out_then_answered_once(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", chat_id=7001, status=429, retry_after=2)
    update = photo_update(fake, 7001, seed=1)
    assert until_acknowledged(rules_server, update) == [200]
    [flood] = refused_to(fake, 7001)
    [answer] = sent_to(fake, 7001)
    assert answer.params["text"].startswith(ANSWER)
    assert answer.at >= flood.at + 2  # nothing sent inside the window
    assert fake.flood_violations == []


def test_flood_longer_than_the_webhook_waits_is_left_to_redelivery(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    """No apology into the window; the redelivery sends the answer made the first time."""
    retry_after = int(ANSWER_TIMEOUT_S) + 1
    fake.fail("sendMessage", chat_id=7002, status=429, retry_after=retry_after)
    update = photo_update(fake, 7002, seed=2)
    first = post_update(rules_server, update)
    assert first.status_code == 503
    assert first.headers["Retry-After"] == str(retry_after)
    statuses = until_acknowledged(rules_server, update, pause_s=1.0)
    assert statuses[-1] == 200
    [flood] = refused_to(fake, 7002)
    [answer] = sent_to(fake, 7002)
    assert answer.params["text"].startswith(ANSWER)
    assert answer.at >= flood.at + retry_after
    assert fake.flood_violations == []
    file_id = update["message"]["photo"][-1]["file_id"]
    assert downloads_of(fake, file_id) == 1  # the redeliveries sent the answer made


@pytest.mark.parametrize(("chat_id", "status", "description"),
                         [(7011, 403, BLOCKED), (7012, 400, CHAT_NOT_FOUND)])  # fmt: skip
def test_a_chat_that_refuses_is_acknowledged_and_never_tried_again(
    rules_server: GunicornServer, fake: FakeTelegram, chat_id: int, status: int, description: str
) -> None:
    fake.fail("sendMessage", None, chat_id=chat_id, status=status, description=description)
    update = photo_update(fake, chat_id, seed=chat_id)
    assert until_acknowledged(rules_server, update) == [200]
    assert post_update(rules_server, update).status_code == 200  # Telegram's 200 got lost
    assert len(refused_to(fake, chat_id)) == 1  # one try, no apology after it
    assert downloads_of(fake, update["message"]["photo"][-1]["file_id"]) == 1
    assert re.search(rf"update {update['update_id']}: chat {chat_id} refused", rules_server.logs())


def test_a_transient_5xx_is_retried_not_apologised_for(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", chat_id=7021, status=502)
    update = photo_update(fake, 7021, seed=3)
    assert until_acknowledged(rules_server, update) == [200]
    assert len(refused_to(fake, 7021)) == 1
    [answer] = sent_to(fake, 7021)
    assert answer.params["text"].startswith(ANSWER)


def test_a_bot_api_down_longer_than_the_retries_is_delivered_again_without_a_second_inference(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", 3, chat_id=7022, status=500, description="Internal Server Error")
    update = photo_update(fake, 7022, seed=4)
    statuses = until_acknowledged(rules_server, update)
    assert statuses == [503, 200]
    [answer] = sent_to(fake, 7022)
    assert answer.params["text"].startswith(ANSWER)
    assert downloads_of(fake, update["message"]["photo"][-1]["file_id"]) == 1


def test_a_send_that_times_out_is_neither_repeated_nor_apologised_for(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    """The Bot API takes longer than the send's read timeout but delivers the message."""
    fake.slow("sendMessage", SEND_TIMEOUT_S + 2, chat_id=7031)
    update = photo_update(fake, 7031, seed=5)
    started = time.monotonic()
    assert until_acknowledged(rules_server, update) == [200]
    assert time.monotonic() - started < SEND_TIMEOUT_S + 2  # acknowledged at the timeout
    [answer] = fake.wait_for("sendMessage", 1, where=lambda c: c.params["chat_id"] == 7031)
    assert answer.params["text"].startswith(ANSWER)
    # A resend or an apology would follow the timeout at once: none came within a second.
    time.sleep(1.0)
    assert [c.params["text"][: len(ANSWER)] for c in sent_to(fake, 7031)] == [ANSWER]


def test_an_album_of_ten_gets_ten_answers_a_second_apart(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    updates = Updates(chat_id=7041)
    album = [
        updates.photo(fake.add_file(jpeg_bytes(seed=40 + i)), media_group_id="album-7041")
        for i in range(10)
    ]
    with ThreadPoolExecutor(len(album)) as pool:  # Telegram delivers them at once
        outcomes = list(pool.map(lambda u: until_acknowledged(rules_server, u), album))
    assert all(statuses[-1] == 200 for statuses in outcomes)
    answers = sent_to(fake, 7041)
    assert len(answers) == 10 and all(a.params["text"].startswith(ANSWER) for a in answers)
    quoted = sorted(a.params["reply_parameters"]["message_id"] for a in answers)
    assert quoted == sorted(u["message"]["message_id"] for u in album)  # one each
    gaps = [later.at - earlier.at for earlier, later in pairwise(answers)]
    assert min(gaps) >= 0.9, gaps


def test_one_chat_flooding_the_bot_does_not_starve_another(
    rules_server: GunicornServer, fake: FakeTelegram
) -> None:
    flood = [photo_update(fake, 7051, seed=60 + i) for i in range(PHOTOS_PER_MINUTE + 4)]
    other = photo_update(fake, 7052, seed=80, language_code="ru")
    with ThreadPoolExecutor(len(flood)) as pool:
        flooding = [pool.submit(until_acknowledged, rules_server, u) for u in flood]
        fake.wait_for("sendMessage", 1, where=lambda c: c.params["chat_id"] == 7051)
        assert until_acknowledged(rules_server, other) == [200]
        assert all(f.result()[-1] == 200 for f in flooding)
    answers = sent_to(fake, 7051)
    recognised = [a for a in answers if a.params["text"].startswith(ANSWER)]
    over = [a for a in answers if "faster than I can look" in a.params["text"]]
    assert len(recognised) == PHOTOS_PER_MINUTE and len(over) == 1, answers
    assert len(answers) == PHOTOS_PER_MINUTE + 1  # the rest acknowledged quietly
    # Answered while the flood's paced answers still went out, not queued behind them (a
    # wall-clock bound would measure the host, not the order).
    assert sent_to(fake, 7052)[0].at < answers[-1].at


# -- the shared store --------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def slots_pair(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[Slots, Slots]]:
    """Two workers' (or replicas') views of one store."""
    if request.param == "sqlite":
        path = str(tmp_path / "slots.sqlite")
        yield SqliteSlots(path), SqliteSlots(path)
        return
    if not redis_installed():
        pytest.skip("redis-server is not installed")
    server = start_redis()
    try:
        yield RedisSlots(server.url), RedisSlots(server.url)
    finally:
        server.stop()


def test_slots_are_shared_and_kept_apart(slots_pair: tuple[Slots, Slots]) -> None:
    mine, theirs = slots_pair
    assert mine.reserve("chat:1", 1.0, 5.0) == (0.0, True)
    wait, taken = theirs.reserve("chat:1", 1.0, 5.0)
    assert taken and 0.9 <= wait <= 1.0
    wait, taken = mine.reserve("chat:1", 1.0, 5.0)
    assert taken and 1.9 <= wait <= 2.0
    wait, taken = theirs.reserve("chat:1", 1.0, 1.5)  # too far: not taken
    assert not taken and 2.9 <= wait <= 3.0
    assert theirs.reserve("chat:1", 1.0, 3.5)[1]  # the refused one took nothing
    assert mine.reserve("chat:2", 1.0, 0.0) == (0.0, True)  # another chat is free


def test_a_hold_keeps_every_worker_out_of_the_window(slots_pair: tuple[Slots, Slots]) -> None:
    mine, theirs = slots_pair
    mine.hold("chat:3", 3.0)
    wait, taken = theirs.reserve("chat:3", 1.0, 1.0)
    assert not taken and 2.9 <= wait <= 3.0
    mine.hold("chat:3", 1.0)  # a shorter hold never shortens the window
    assert 2.8 <= theirs.reserve("chat:3", 1.0, 5.0)[0] <= 3.0


def test_counts_are_shared_within_a_window(slots_pair: tuple[Slots, Slots]) -> None:
    mine, theirs = slots_pair
    assert [mine.count("photos:1", 0.5), theirs.count("photos:1", 0.5)] == [1, 2]
    assert mine.count("photos:2", 0.5) == 1
    deadline = time.monotonic() + 5
    while theirs.count("photos:1", 0.5) != 1:  # a new window starts after 0.5 s
        assert time.monotonic() < deadline
        time.sleep(0.1)
