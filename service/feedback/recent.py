"""The photo and answer behind each recent answer, kept only until feedback on it is unlikely.

Bounded three ways: an entry lives ``keep_s`` seconds, at most ``max_items`` are kept and at
most ``max_bytes`` of them (the oldest go first). Two stores, one behaviour: a folder shared
by the workers of one server, or Redis (``REDIS_URL``) shared by replicas, so feedback may
reach any worker or replica, not only the one that answered. The photo kept is already the
private copy (service/feedback/photo.py): no raw upload is ever written here.

Redis is small and shared (Heroku Redis mini: 25 MB, with the bot's ledger and the client
limits), so there the byte bound is kept exactly, by one script that adds the entry and evicts
the oldest in the same step: a full store makes room, it never refuses the ledger's writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model.artifact import atomic_write
from service.redis_client import redis_client

KEY_PREFIX = "breedrecognizer:recent"
PRUNE_EVERY = 16  # puts between two sweeps of the folder: its bound is exceeded by this at most


class RecentUnavailableError(RuntimeError):
    """The shared store cannot be reached."""


@dataclass(frozen=True)
class RecentAnswer:
    photo: bytes
    answer: dict[str, Any]


class RecentAnswers(Protocol):
    def put(self, answer_id: str, entry: RecentAnswer) -> bool:
        """Keep the entry; False when it alone is over the byte bound (not kept)."""

    def get(self, answer_id: str) -> RecentAnswer | None:
        """The entry, or None when it is unknown or expired."""


class FolderRecentAnswers:
    """``<id>.photo`` + ``<id>.json`` in a folder; the file time says when it was answered."""

    def __init__(self, root: Path, keep_s: float, max_items: int, max_bytes: int) -> None:
        self.root, self.keep_s = root, keep_s
        self.max_items, self.max_bytes = max_items, max_bytes
        self._puts = 0
        root.mkdir(parents=True, exist_ok=True)

    def put(self, answer_id: str, entry: RecentAnswer) -> bool:
        if len(entry.photo) > self.max_bytes:
            return False
        try:
            with atomic_write(self.root / f"{answer_id}.photo") as tmp:
                tmp.write_bytes(entry.photo)
            # The answer last: an entry is visible (get) only once both files exist.
            with atomic_write(self.root / f"{answer_id}.json") as tmp:
                tmp.write_text(json.dumps(entry.answer), encoding="utf-8")
        except OSError as exc:
            raise RecentUnavailableError(f"{self.root}: {exc}") from exc
        self._puts += 1
        if self._puts % PRUNE_EVERY == 1:
            self.prune()
        return True

    def get(self, answer_id: str) -> RecentAnswer | None:
        answer_path = self.root / f"{answer_id}.json"
        try:
            if time.time() - answer_path.stat().st_mtime > self.keep_s:
                return None
            answer = json.loads(answer_path.read_text(encoding="utf-8"))
            photo = (self.root / f"{answer_id}.photo").read_bytes()
        except (OSError, ValueError):
            return None  # unknown, expired and swept, or swept while being read
        return RecentAnswer(photo, answer)

    def prune(self) -> None:
        """Remove expired entries, then the oldest beyond the count and size bounds."""
        entries = []
        for path in self.root.glob("*.photo"):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed by another worker meanwhile
            entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort(reverse=True)  # newest first
        now, kept, size = time.time(), 0, 0
        for mtime, nbytes, path in entries:
            kept, size = kept + 1, size + nbytes
            if now - mtime > self.keep_s or kept > self.max_items or size > self.max_bytes:
                for stale in (path.with_suffix(".json"), path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale)


# KEYS: the entry's hash, the index (ids by time), the sizes (id -> bytes).
# ARGV: id, photo, answer, now, keep_s, max_items, max_bytes, entry key prefix.
# Adds the entry, drops what expired, then pops the oldest until both bounds hold. Returns 1,
# or 0 (nothing written) for an entry over the byte bound by itself. The entry's HSET is the
# first write on purpose: Redis checks its memory limit at a script's first write only, so a
# full Redis refuses the whole script (the caller logs it) instead of growing past its limit.
_PUT_SCRIPT = """
local entry, index, sizes = KEYS[1], KEYS[2], KEYS[3]
local id, photo, answer = ARGV[1], ARGV[2], ARGV[3]
local now, keep_s = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_items, max_bytes, prefix = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local size = string.len(photo) + string.len(answer)
if size > max_bytes then return 0 end
redis.call('HSET', entry, 'photo', photo, 'answer', answer)
redis.call('EXPIRE', entry, math.max(1, math.floor(keep_s)))
redis.call('ZADD', index, now, id)
redis.call('HSET', sizes, id, size)
for _, old in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - keep_s)) do
  redis.call('HDEL', sizes, old)
  redis.call('DEL', prefix .. old)
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now - keep_s)
local total = 0
for _, value in ipairs(redis.call('HVALS', sizes)) do total = total + tonumber(value) end
local count = redis.call('ZCARD', index)
while total > max_bytes or count > max_items do
  local oldest = redis.call('ZPOPMIN', index)
  if #oldest == 0 then break end
  total = total - tonumber(redis.call('HGET', sizes, oldest[1]) or '0')
  redis.call('HDEL', sizes, oldest[1])
  redis.call('DEL', prefix .. oldest[1])
  count = count - 1
end
-- The index and sizes go too once nothing has been kept for keep_s.
redis.call('EXPIRE', index, math.max(1, math.ceil(keep_s)))
redis.call('EXPIRE', sizes, math.max(1, math.ceil(keep_s)))
return 1
"""


class RedisRecentAnswers:
    """A hash per entry with an expiry; a sorted set of ids by time and a hash of their sizes
    bound the count and the bytes (photo + answer) across every worker and replica."""

    def __init__(self, url: str, keep_s: float, max_items: int, max_bytes: int) -> None:
        self._redis, self._error = redis_client(url)
        self.keep_s, self.max_items, self.max_bytes = keep_s, max_items, max_bytes
        self._put = self._redis.register_script(_PUT_SCRIPT)

    def put(self, answer_id: str, entry: RecentAnswer) -> bool:
        keys = [f"{KEY_PREFIX}:{answer_id}", f"{KEY_PREFIX}:index", f"{KEY_PREFIX}:sizes"]
        args = [answer_id, entry.photo, json.dumps(entry.answer), time.time(), self.keep_s]
        args += [self.max_items, self.max_bytes, f"{KEY_PREFIX}:"]
        try:
            return bool(self._put(keys=keys, args=args))
        except self._error as exc:
            raise RecentUnavailableError(f"Redis: {exc}") from exc

    def get(self, answer_id: str) -> RecentAnswer | None:
        try:
            found = self._redis.hgetall(f"{KEY_PREFIX}:{answer_id}")
        except self._error as exc:
            raise RecentUnavailableError(f"Redis: {exc}") from exc
        if b"photo" not in found or b"answer" not in found:
            return None
        return RecentAnswer(found[b"photo"], json.loads(found[b"answer"]))
