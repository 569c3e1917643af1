"""The photo and answer behind each recent answer, kept only until feedback on it is unlikely.

Bounded three ways: an entry lives ``keep_s`` seconds, at most ``max_items`` are kept and, on
disk, at most ``max_bytes`` (the oldest go first). Two stores, one behaviour: a folder shared
by the workers of one server, or Redis (``REDIS_URL``) shared by replicas, so feedback may
reach any worker or replica, not only the one that answered.
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
    def put(self, answer_id: str, entry: RecentAnswer) -> None: ...

    def get(self, answer_id: str) -> RecentAnswer | None:
        """The entry, or None when it is unknown or expired."""


class FolderRecentAnswers:
    """``<id>.photo`` + ``<id>.json`` in a folder; the file time says when it was answered."""

    def __init__(self, root: Path, keep_s: float, max_items: int, max_bytes: int) -> None:
        self.root, self.keep_s = root, keep_s
        self.max_items, self.max_bytes = max_items, max_bytes
        self._puts = 0
        root.mkdir(parents=True, exist_ok=True)

    def put(self, answer_id: str, entry: RecentAnswer) -> None:
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


class RedisRecentAnswers:
    """A hash per entry with an expiry, and a sorted set of ids by time to bound the count."""

    def __init__(self, url: str, keep_s: float, max_items: int) -> None:
        self._redis, self._error = redis_client(url)
        self.keep_s, self.max_items = keep_s, max_items

    def put(self, answer_id: str, entry: RecentAnswer) -> None:
        key, index = f"{KEY_PREFIX}:{answer_id}", f"{KEY_PREFIX}:index"
        try:
            pipe = self._redis.pipeline()
            pipe.hset(key, mapping={"photo": entry.photo, "answer": json.dumps(entry.answer)})
            pipe.expire(key, max(1, int(self.keep_s)))
            pipe.zadd(index, {answer_id: time.time()})
            pipe.execute()
            overflow = self._redis.zcard(index) - self.max_items
            if overflow > 0:
                oldest = self._redis.zpopmin(index, overflow)
                self._redis.delete(*(f"{KEY_PREFIX}:{i.decode()}" for i, _ in oldest))
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
