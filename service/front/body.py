"""Reading a request body in full on the event loop, before any thread is spent on it.

A slow or silent client costs a coroutine, never the model's thread. Three guards are checked
while the bytes arrive: no byte for ``body_idle_timeout_s`` or an incomplete body
``body_timeout_s`` after the headers is a ``408``; more than the upload limit is a ``413``
(what is left is read and dropped, bounded, so the client sees the answer rather than a
reset). Bodies stay in memory while the worker's ``MemoryBudget`` allows, else in a temporary
file, so many large uploads at once cannot exhaust the worker's memory.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from service.settings import FrontSettings

Receive = Callable[[], Awaitable[dict[str, Any]]]
# Bytes of an oversized upload read and dropped before answering 413: closing a socket with
# unread data makes the kernel send a reset, and the client would never see the answer.
DRAIN_LIMIT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class BodyRefusedError(Exception):
    """The body cannot be taken; the front answers ``status`` itself."""

    status: int
    reason: str  # the front's refusal counter label
    code: str  # the API's error code
    message: str


class ClientGoneError(Exception):
    """The client closed the connection before sending the whole body."""


class MemoryBudget:
    """Bytes of request bodies one worker holds in memory (only the event loop touches it)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0


class Body:
    """A complete body: in memory while the budget allows, else in a temporary file."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        # max_size 0: it moves to disk only when ``write`` says so (``rollover``).
        self.file = tempfile.SpooledTemporaryFile(max_size=0)  # noqa: SIM115 - closed by close()
        self.size = 0
        self.held = 0  # bytes of the budget this body holds
        self.on_disk = False

    def write(self, chunk: bytes) -> None:
        if not self.on_disk and self.budget.used_bytes + len(chunk) > self.budget.limit_bytes:
            self.file.rollover()
            self.on_disk = True
            self._give_back()
        self.file.write(chunk)
        self.size += len(chunk)
        if not self.on_disk:
            self.held += len(chunk)
            self.budget.used_bytes += len(chunk)

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def stream(self) -> IO[bytes]:
        """The body as a file at its start, for the app to read (WSGI's ``wsgi.input``)."""
        self.file.seek(0)
        return self.file

    def _give_back(self) -> None:
        self.budget.used_bytes -= self.held
        self.held = 0

    def close(self) -> None:
        self.file.close()
        self._give_back()


async def read_body(
    receive: Receive, limit_bytes: int | None, config: FrontSettings, budget: MemoryBudget
) -> Body:
    """The whole body under the three guards; the caller closes it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.body_timeout_s
    body = Body(budget)
    try:
        while True:
            left = deadline - loop.time()
            idle = config.body_idle_timeout_s
            try:
                async with asyncio.timeout(min(idle, max(left, 0.0))):
                    message = await receive()
            except TimeoutError:
                why = (
                    f"no body data for {idle:g} s"
                    if idle < left
                    else f"the body did not arrive within {config.body_timeout_s:g} s"
                )
                raise BodyRefusedError(408, "body_timeout", "request_timeout", why) from None
            if message["type"] == "http.disconnect":
                raise ClientGoneError()
            body.write(message.get("body", b""))
            if limit_bytes is not None and body.size > limit_bytes:
                more = message.get("more_body", False)
                await _drop_rest(receive, more, loop.time() + config.body_idle_timeout_s)
                why = f"the upload is too large; the limit is {limit_bytes / 2**20:g} MB"
                raise BodyRefusedError(413, "too_large", "payload_too_large", why)
            if not message.get("more_body", False):
                return body
    except BaseException:
        body.close()
        raise


async def _drop_rest(receive: Receive, more: bool, until: float) -> None:
    """Read and drop what the client still sends, up to DRAIN_LIMIT_BYTES or ``until``."""
    dropped = 0
    loop = asyncio.get_running_loop()
    while more and dropped < DRAIN_LIMIT_BYTES:
        try:
            async with asyncio.timeout(max(until - loop.time(), 0.0)):
                message = await receive()
        except TimeoutError:
            return
        dropped += len(message.get("body", b""))
        more = message["type"] == "http.request" and message.get("more_body", False)
