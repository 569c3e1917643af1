"""Which Telegram updates were already accepted, so a redelivered one is answered only once.

Telegram sends an update again when its webhook call failed or timed out, even if the first
call did reach us. The ids live in SQLite: in a file shared by all workers of one server when
``path`` is given (gunicorn.conf.py sets ``TELEGRAM_SEEN_DB``), else in this process's memory.
Only the newest ``capacity`` ids are kept (update ids only grow), so the store stays small.
"""

from __future__ import annotations

import os
import sqlite3
import threading

DEFAULT_CAPACITY = 10_000
# Old ids are pruned once per this many inserts.
PRUNE_EVERY = 500


class SeenUpdates:
    def __init__(self, path: str | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._inserts = 0

    def first_time(self, update_id: int) -> bool:
        """Record ``update_id``; True if no worker of this server had recorded it before."""
        with self._lock:
            db = self._connection()
            added = db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (update_id,)).rowcount
            self._inserts += 1
            if self._inserts % PRUNE_EVERY == 0:
                db.execute(
                    "DELETE FROM seen WHERE update_id <= "
                    "(SELECT update_id FROM seen ORDER BY update_id DESC LIMIT 1 OFFSET ?)",
                    (self.capacity,),
                )
            return added == 1

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT count(*) FROM seen").fetchone()[0]

    def _connection(self) -> sqlite3.Connection:
        """One connection per process (a connection must not cross a fork)."""
        if self._db is None or self._pid != os.getpid():
            db = sqlite3.connect(
                self.path or ":memory:", timeout=5, isolation_level=None, check_same_thread=False
            )
            if self.path:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a lost id after a crash costs little
            db.execute("CREATE TABLE IF NOT EXISTS seen (update_id INTEGER PRIMARY KEY)")
            self._db, self._pid = db, os.getpid()
        return self._db
