"""Reading a request body in full, on a greenlet, before any thread is spent on the request.

Three guards, checked while the bytes arrive rather than after:

* idle deadline: no byte for ``body_idle_timeout_s`` (the socket's own timeout) -> BodyTimeoutError;
* total deadline: the body is not complete ``body_timeout_s`` after the headers -> BodyTimeoutError;
* size: more than the app's upload limit -> BodyTooLargeError (what is left is read and dropped,
  bounded, so the 413 reaches the client instead of a connection reset).

Bodies are held in memory while the worker's ``MemoryBudget`` allows it, else in a temporary
file, so many large uploads at once cannot exhaust the worker's memory.
"""

from __future__ import annotations

import contextlib
import io
import socket
import tempfile
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import gevent

from service.settings import FrontSettings

READ_SIZE = 64 * 1024
# Bytes of an oversized upload read (and dropped) before answering 413. Closing the socket
# with unread data makes the kernel send a reset, and clients then see "connection reset"
# instead of our JSON answer; past this bound we stop reading and accept that.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class BodyTimeoutError(Exception):
    """The client stopped sending, or sends too slowly to finish in time."""


class BodyTooLargeError(Exception):
    """The body is larger than the upload limit."""


class BodyIncompleteError(Exception):
    """The client closed the connection before sending the whole body."""


class MemoryBudget:
    """Bytes of request bodies one worker holds in memory; only its hub thread touches it."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def take(self, size: int) -> bool:
        if self.used_bytes + size > self.limit_bytes:
            return False
        self.used_bytes += size
        return True

    def give_back(self, size: int) -> None:
        self.used_bytes -= size


class BufferedBody:
    """A body being collected: in memory while the budget allows, then in a temporary file."""

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self._held = 0
        self.file: BinaryIO = io.BytesIO()
        self.size = 0
        self.on_disk = False

    def write(self, chunk: bytes) -> None:
        if not self.on_disk and not self._budget.take(len(chunk)):
            spooled = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            spooled.write(self.file.getbuffer())
            self._release()
            self.file, self.on_disk = spooled, True
        elif not self.on_disk:
            self._held += len(chunk)
        self.file.write(chunk)
        self.size += len(chunk)

    def rewind(self) -> BinaryIO:
        self.file.seek(0)
        return self.file

    def _release(self) -> None:
        self._budget.give_back(self._held)
        self._held = 0

    def close(self) -> None:
        self.file.close()
        self._release()


def declared_length(environ: MutableMapping[str, Any]) -> int | None:
    raw = environ.get("CONTENT_LENGTH") or ""
    return int(raw) if raw.strip().isdigit() else None


def read_body(
    environ: MutableMapping[str, Any],
    limit_bytes: int | None,
    config: FrontSettings,
    budget: MemoryBudget,
) -> BufferedBody:
    """Read ``wsgi.input`` to the end under the three guards; the caller closes the result."""
    stream = environ["wsgi.input"]
    declared = declared_length(environ)
    body = BufferedBody(budget)
    try:
        with _deadlines(environ, config):
            if limit_bytes is not None and declared is not None and declared > limit_bytes:
                _discard(stream)
                raise BodyTooLargeError()
            while chunk := stream.read(READ_SIZE):
                body.write(chunk)
                if limit_bytes is not None and body.size > limit_bytes:
                    _discard(stream)
                    raise BodyTooLargeError()
        if declared is not None and body.size < declared:
            raise BodyIncompleteError()
    except BaseException:
        body.close()
        raise
    return body


class _deadlines:  # noqa: N801 - used like a function: ``with _deadlines(...)``
    """Idle deadline on the socket, total deadline on the greenlet; both end in BodyTimeoutError."""

    def __init__(self, environ: MutableMapping[str, Any], config: FrontSettings) -> None:
        self._stream = environ["wsgi.input"]
        self._sock: socket.socket | None = environ.get("gunicorn.socket")
        self._config = config
        self._total = gevent.Timeout(config.body_timeout_s)
        self._previous_timeout: float | None = None

    def __enter__(self) -> None:
        if self._sock is not None:
            self._previous_timeout = self._sock.gettimeout()
            self._sock.settimeout(self._config.body_idle_timeout_s)
        self._total.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb) -> bool:
        self._total.close()
        if self._sock is not None:
            with contextlib.suppress(OSError):  # the client is gone already
                self._sock.settimeout(self._previous_timeout)
        if exc is self._total:
            # Where the next request would start is unknown: never reuse this connection.
            self._stream.failed = True
            raise BodyTimeoutError(
                f"the body did not arrive within {self._config.body_timeout_s:g} s"
            ) from None
        if isinstance(exc, TimeoutError):
            raise BodyTimeoutError(
                f"no body data for {self._config.body_idle_timeout_s:g} s"
            ) from None
        return False


def _discard(stream: Any) -> None:
    """Read and drop the rest of an oversized body (bounded), so our 413 is not reset away."""
    left = DRAIN_LIMIT_BYTES
    while left > 0 and (chunk := stream.read(min(left, READ_SIZE))):
        left -= len(chunk)
