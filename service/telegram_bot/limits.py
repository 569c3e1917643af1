"""Telegram's sending limits, kept for the whole bot: about one message a second to a chat
(20 a minute to a group), about 30 a second in all, and the ``retry_after`` of a 429.

``Pacer`` is python-telegram-bot's rate limiter (``ApplicationBuilder().rate_limiter``): every
Bot API call that sends takes one of the bot's slots, then (to a chat) the chat's next free
one, from a ``Slots`` store shared by every worker (SQLite file) and every replica (Redis,
with ``REDIS_URL``), so an album is answered one message a second whichever worker answers
each photo. A 429 moves the chat's next slot past its ``retry_after``: nothing is sent into
the flood window, by any worker. A wait that would not end before the webhook's deadline
(``answer_deadline``) is not waited: the call raises ``RetryAfter`` and Telegram delivers the
update again later. The same store counts each chat's photos per minute (``count``).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dtm
import logging
import math
import time
import warnings
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Protocol

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from service.redis_client import redis_client
from service.telegram_bot.ledger import KEY_PREFIX, LedgerUnavailableError, SqliteFile

log = logging.getLogger(__name__)

# When the answer to the update being handled must be out (time.monotonic()); set by the
# runtime for each update, read by the pacer and the handlers' sends.
answer_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "answer_deadline", default=None
)

# Calls that put a message in a chat: paced per chat and for the bot.
CHAT_MESSAGES = frozenset({"sendMessage", "editMessageText", "editMessageReplyMarkup"})
# Calls paced for the bot only (a chat action is skipped while its chat waits for a slot).
BOT_CALLS = CHAT_MESSAGES | {"answerCallbackQuery", "sendChatAction"}
# Time a send needs once its slot comes: a wait must leave it before the deadline.
SEND_MARGIN_S = 1.0
MAX_FLOOD_RETRIES = 3


class Slots(Protocol):
    def reserve(self, key: str, interval_s: float, max_wait_s: float) -> tuple[float, bool]:
        """Take the next free slot of ``key`` (slots ``interval_s`` apart) unless it is more
        than ``max_wait_s`` away: the seconds until that slot, and whether it was taken."""

    def hold(self, key: str, seconds: float) -> None:
        """No slot of ``key`` for ``seconds`` from now (Telegram's ``retry_after``)."""

    def count(self, key: str, window_s: float) -> int:
        """Add one to ``key``'s count, in a window of ``window_s`` that starts with its first
        count; the new count."""


class RedisSlots:
    """Slots as Redis keys (the next free slot, in Redis's own clock): shared by replicas."""

    _RESERVE = """
    local now = redis.call('TIME')
    now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
    if at - now > tonumber(ARGV[2]) then return {at - now, 0} end
    local next_free = at + tonumber(ARGV[1])
    redis.call('SET', KEYS[1], next_free, 'PX', next_free - now + 1000)
    return {at - now, 1}
    """
    _COUNT = """
    local n = redis.call('INCR', KEYS[1])
    if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
    return n
    """
    _HOLD = """
    local now = redis.call('TIME')
    now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local until_ms = now + tonumber(ARGV[1])
    if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
        redis.call('SET', KEYS[1], until_ms, 'PX', until_ms - now + 1000)
    end
    return 0
    """

    def __init__(self, url: str) -> None:
        self._redis, self._error = redis_client(url)
        self._reserve = self._redis.register_script(self._RESERVE)
        self._hold = self._redis.register_script(self._HOLD)
        self._count = self._redis.register_script(self._COUNT)

    def reserve(self, key: str, interval_s: float, max_wait_s: float) -> tuple[float, bool]:
        args = [round(interval_s * 1000), round(max_wait_s * 1000)]
        wait_ms, taken = self._call(self._reserve, keys=[f"{KEY_PREFIX}:slot:{key}"], args=args)
        return wait_ms / 1000, bool(taken)

    def hold(self, key: str, seconds: float) -> None:
        self._call(self._hold, keys=[f"{KEY_PREFIX}:slot:{key}"], args=[round(seconds * 1000)])

    def count(self, key: str, window_s: float) -> int:
        name = f"{KEY_PREFIX}:count:{key}"
        return int(self._call(self._count, keys=[name], args=[round(window_s * 1000)]))

    def _call(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return call(**kwargs)
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc


class SqliteSlots:
    """The same slots in SQLite: the file the workers of one server share (or memory)."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS slots (key TEXT PRIMARY KEY, next_free REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL, "
        "until REAL NOT NULL)",
    )

    def __init__(self, path: str | None = None) -> None:
        self._file = SqliteFile(path, self.SCHEMA)

    def reserve(self, key: str, interval_s: float, max_wait_s: float) -> tuple[float, bool]:
        now = time.time()
        with self._file.transaction() as db:
            row = db.execute("SELECT next_free FROM slots WHERE key = ?", (key,)).fetchone()
            at = max(now, row[0] if row else 0.0)
            if at - now > max_wait_s:
                return at - now, False
            db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?)", (key, at + interval_s))
            db.execute("DELETE FROM slots WHERE next_free < ?", (now - 60,))
        return at - now, True

    def hold(self, key: str, seconds: float) -> None:
        until = time.time() + seconds
        with self._file.transaction() as db:
            db.execute(
                "INSERT INTO slots VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET next_free = max(next_free, excluded.next_free)",
                (key, until),
            )

    def count(self, key: str, window_s: float) -> int:
        now = time.time()
        with self._file.transaction() as db:
            db.execute("DELETE FROM counts WHERE until <= ?", (now,))
            db.execute(
                "INSERT INTO counts VALUES (?, 1, ?) ON CONFLICT (key) DO UPDATE SET n = n + 1",
                (key, now + window_s),
            )
            return int(db.execute("SELECT n FROM counts WHERE key = ?", (key,)).fetchone()[0])


def open_slots(redis_url: str | None, sqlite_path: str | None) -> Slots:
    return RedisSlots(redis_url) if redis_url else SqliteSlots(sqlite_path)


def retry_after_s(error: RetryAfter) -> float:
    """``retry_after`` in seconds, whichever form (int or timedelta) the library gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def time_left() -> float | None:
    """Seconds until the current update's answer deadline; None outside an update."""
    deadline = answer_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


class Pacer(BaseRateLimiter[None]):
    """Paces the bot's calls with ``Slots``; waits out a 429 when it fits the deadline."""

    def __init__(
        self,
        slots: Slots,
        chat_interval_s: float,
        group_interval_s: float,
        messages_per_s: float,
        default_wait_s: float,
    ) -> None:
        self._slots = slots
        self._chat_interval_s, self._group_interval_s = chat_interval_s, group_interval_s
        self._bot_interval_s = 1.0 / messages_per_s
        self._default_wait_s = default_wait_s  # the longest wait outside an update

    async def initialize(self) -> None:
        """Nothing to set up: the store connects on first use."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if endpoint not in BOT_CALLS:
            return await callback(*args, **kwargs)
        chat_id = data.get("chat_id")
        chat = f"chat:{chat_id}" if chat_id is not None else None
        for flood in range(MAX_FLOOD_RETRIES + 1):
            await self._wait_turn(endpoint, chat)
            try:
                return await callback(*args, **self._within_deadline(kwargs))
            except RetryAfter as exc:
                seconds = retry_after_s(exc)
                await self._store(self._slots.hold, chat or "bot", seconds)
                log.info(
                    "Bot API flood control on %s to chat %s: nothing sent there for %gs",
                    endpoint,
                    chat_id,
                    seconds,
                )
                if flood == MAX_FLOOD_RETRIES or not self._fits(seconds):
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _wait_turn(self, endpoint: str, chat: str | None) -> None:
        """Wait for the bot's next slot, then take the chat's once it is free (a chat action
        only if it is free now); raise RetryAfter when that would not be before the deadline.

        The chat's slot is taken last, right before the call, and only when free (no place
        in a queue): a send delayed after taking it then delays the next one too, so two
        messages never reach a chat closer than its interval.
        """
        bot_interval_s, max_wait_s = self._bot_interval_s, self._max_wait_s()
        await self._sleep_or_refuse(
            await self._store(self._slots.reserve, "bot", bot_interval_s, max_wait_s)
        )
        if chat is None:
            return
        interval_s = 0.0 if endpoint == "sendChatAction" else self._chat_interval(chat)
        while True:
            wait, taken = await self._store(self._slots.reserve, chat, interval_s, 0.0)
            if taken:
                return
            if endpoint == "sendChatAction" or wait > self._max_wait_s():
                raise RetryAfter(max(1, math.ceil(wait)))
            await asyncio.sleep(wait)

    def _chat_interval(self, chat: str) -> float:
        """Groups (negative chat ids) get fewer messages a minute than private chats."""
        return self._group_interval_s if chat.startswith("chat:-") else self._chat_interval_s

    @staticmethod
    async def _sleep_or_refuse(slot: tuple[float, bool]) -> None:
        wait, taken = slot
        if not taken:
            raise RetryAfter(max(1, math.ceil(wait)))
        if wait > 0:
            await asyncio.sleep(wait)

    def _max_wait_s(self) -> float:
        left = time_left()
        return self._default_wait_s if left is None else max(0.0, left - SEND_MARGIN_S)

    def _fits(self, wait_s: float) -> bool:
        return wait_s <= self._max_wait_s()

    @staticmethod
    def _within_deadline(kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's read timeout, cut to what is left before the deadline."""
        left = time_left()
        given = kwargs.get("read_timeout")
        if left is None or "read_timeout" not in kwargs:
            return kwargs
        cut = max(1.0, left)
        if isinstance(given, int | float):
            cut = min(float(given), cut)
        return {**kwargs, "read_timeout": cut}

    @staticmethod
    async def _store(call: Callable[..., Any], *args: Any) -> Any:
        """A store call off the loop; an unreachable store paces nothing (and says so)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, partial(call, *args))
        except LedgerUnavailableError as exc:
            log.warning("Bot API calls not paced: %s", exc)
            return 0.0, True
