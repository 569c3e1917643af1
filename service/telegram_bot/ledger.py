"""Which Telegram updates are answered, and which one replica is answering right now.

The webhook answers an update before it acknowledges it (docs/telegram.md), so an update is
lost only if Telegram stops redelivering it, and that happens only after a 2xx. Redelivery
makes duplicates, though: the same update may reach two replicas at once, or again after it
was answered. The ledger settles both. ``claim`` gives one caller a lease on the update (the
others are told it is busy, and answer 503 so that Telegram tries again later); ``answered``
records it for good (later deliveries are acknowledged without a second reply). A lease that
is never settled (its replica was killed) runs out, and the next delivery takes the update.
A reply made but not delivered now (flood control, the Bot API down) is kept with the update
(``keep_reply``), so the next delivery sends it without a second download or model call.

Two stores, one behaviour: Redis (``REDIS_URL``) for several replicas, or an SQLite file for
the workers of one server (``TELEGRAM_SEEN_DB``; in memory when unset, for one process).
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from service.redis_client import redis_client

# Answered ids are remembered this long; Telegram gives up redelivering after 24 hours.
ANSWERED_TTL_S = 2 * 24 * 3600
KEY_PREFIX = "breedrecognizer:telegram"


class Claim(enum.Enum):
    MINE = "mine"  # this caller holds the lease: answer it, then call answered()
    ANSWERED = "answered"  # answered before: acknowledge, do not reply again
    BUSY = "busy"  # another caller holds a live lease: let Telegram deliver it again


class LedgerUnavailableError(RuntimeError):
    """The shared store cannot be reached: no promise about any update can be made."""


class Ledger(Protocol):
    def claim(self, update_id: int, lease_s: float) -> Claim: ...

    def answered(self, update_id: int) -> None: ...

    def release(self, update_id: int) -> None: ...

    def keep_reply(self, update_id: int, reply: str) -> None:
        """Keep a reply made but not delivered (Telegram said "later"): a redelivery sends it
        without downloading the photo or running the model again."""

    def kept_reply(self, update_id: int) -> str | None: ...

    def check(self) -> None:
        """Raise LedgerUnavailableError if the store cannot be used right now."""


def owner_id() -> str:
    """Who holds a lease: unique per process, so a restarted replica is a new owner."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class RedisLedger:
    """Leases and answered ids as Redis keys with expiry: shared by every replica."""

    def __init__(self, url: str) -> None:
        self._redis, self._error = redis_client(url)
        self._owner = owner_id()

    def _keys(self, update_id: int) -> tuple[str, str]:
        return f"{KEY_PREFIX}:lease:{update_id}", f"{KEY_PREFIX}:answered:{update_id}"

    def _kept_key(self, update_id: int) -> str:
        return f"{KEY_PREFIX}:kept:{update_id}"

    def claim(self, update_id: int, lease_s: float) -> Claim:
        lease, done = self._keys(update_id)
        try:
            if self._redis.exists(done):
                return Claim.ANSWERED
            if not self._redis.set(lease, self._owner, nx=True, px=int(lease_s * 1000)):
                return Claim.BUSY
            if self._redis.exists(done):  # answered between the two calls above
                self._redis.delete(lease)
                return Claim.ANSWERED
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc
        return Claim.MINE

    def answered(self, update_id: int) -> None:
        lease, done = self._keys(update_id)
        try:
            pipeline = self._redis.pipeline().set(done, 1, ex=ANSWERED_TTL_S).delete(lease)
            pipeline.delete(self._kept_key(update_id)).execute()
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc

    def keep_reply(self, update_id: int, reply: str) -> None:
        try:
            self._redis.set(self._kept_key(update_id), reply, ex=ANSWERED_TTL_S)
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc

    def kept_reply(self, update_id: int) -> str | None:
        try:
            kept = self._redis.get(self._kept_key(update_id))
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc
        return kept.decode() if kept is not None else None

    def release(self, update_id: int) -> None:
        lease, _ = self._keys(update_id)
        try:
            if self._redis.get(lease) == self._owner.encode():
                self._redis.delete(lease)
        except self._error:
            pass  # the lease runs out by itself

    def check(self) -> None:
        try:
            self._redis.ping()
        except self._error as exc:
            raise LedgerUnavailableError(f"Redis: {exc}") from exc


class SqliteFile:
    """One SQLite database (a file shared by the workers of one server, or memory) with
    ``BEGIN IMMEDIATE`` transactions: one writer at a time across the workers."""

    def __init__(self, path: str | None, schema: tuple[str, ...]) -> None:
        self.path = path
        self._schema = schema
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LedgerUnavailableError(f"SQLite {self.path or 'memory'}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        """One connection per process (a connection must not cross a fork)."""
        if self._db is None or self._pid != os.getpid():
            db = sqlite3.connect(
                self.path or ":memory:", timeout=5, isolation_level=None, check_same_thread=False
            )
            if self.path:
                db.execute("PRAGMA journal_mode=WAL")
            for statement in self._schema:
                db.execute(statement)
            self._db, self._pid = db, os.getpid()
        return self._db


class SqliteLedger:
    """The same ledger in SQLite: a file shared by the workers of one server, or memory."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS updates (update_id INTEGER PRIMARY KEY, "
        "answered INTEGER NOT NULL, owner TEXT, lease_until REAL NOT NULL, at REAL)",
        "CREATE TABLE IF NOT EXISTS kept_replies (update_id INTEGER PRIMARY KEY, "
        "reply TEXT NOT NULL, until REAL NOT NULL)",
    )

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._file = SqliteFile(path, self.SCHEMA)
        self._owners: dict[int, str] = {}

    @property
    def _owner(self) -> str:
        """Unique per process: a forked worker is a new owner."""
        return self._owners.setdefault(os.getpid(), owner_id())

    def claim(self, update_id: int, lease_s: float) -> Claim:
        now = time.time()
        with self._file.transaction() as db:
            row = db.execute(
                "SELECT answered, lease_until FROM updates WHERE update_id = ?", (update_id,)
            ).fetchone()
            if row and row[0]:
                return Claim.ANSWERED
            if row and row[1] > now:
                return Claim.BUSY
            db.execute(
                "INSERT OR REPLACE INTO updates VALUES (?, 0, ?, ?, ?)",
                (update_id, self._owner, now + lease_s, now),
            )
        return Claim.MINE

    def answered(self, update_id: int) -> None:
        now = time.time()
        with self._file.transaction() as db:
            db.execute(
                "UPDATE updates SET answered = 1, owner = NULL, lease_until = 0, at = ? "
                "WHERE update_id = ?",
                (now, update_id),
            )
            db.execute("DELETE FROM updates WHERE at < ?", (now - ANSWERED_TTL_S,))
            db.execute(
                "DELETE FROM kept_replies WHERE update_id = ? OR until < ?", (update_id, now)
            )

    def release(self, update_id: int) -> None:
        with self._file.transaction() as db:
            db.execute(
                "DELETE FROM updates WHERE update_id = ? AND owner = ? AND answered = 0",
                (update_id, self._owner),
            )

    def keep_reply(self, update_id: int, reply: str) -> None:
        with self._file.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO kept_replies VALUES (?, ?, ?)",
                (update_id, reply, time.time() + ANSWERED_TTL_S),
            )

    def kept_reply(self, update_id: int) -> str | None:
        with self._file.transaction() as db:
            row = db.execute(
                "SELECT reply FROM kept_replies WHERE update_id = ? AND until > ?",
                (update_id, time.time()),
            ).fetchone()
        return row[0] if row else None

    def check(self) -> None:
        with self._file.transaction() as db:
            db.execute("SELECT 1")


def open_ledger(redis_url: str | None, sqlite_path: str | None) -> Ledger:
    return RedisLedger(redis_url) if redis_url else SqliteLedger(sqlite_path)
