"""``Front``: the ASGI app uvicorn runs in each worker, around the Flask app and the bot.

Every request's body is read in full on the event loop first (service/front/body.py), so slow
clients cost a coroutine, never a thread. Then, by path:

* ``POST /telegram`` goes to the bot, which answers on this same event loop;
* health checks and metrics (``/healthz``, ``/readyz``, ``/metrics``) run the Flask app in a
  thread of their own, so the platform's checks answer at once however long the model's
  queue is;
* everything else runs the Flask app in the worker's one app thread, where the model runs
  (``workers x MODEL_THREADS = cores``); the queue before it is bounded (``503`` beyond).

Keep-alive balance: the kernel hands a new connection to whichever worker accepts first, and
a persistent connection stays there. While requests queue for this worker's model, each
answer closes its connection (``Connection: close``): the client's next request opens a new
one, which an idle worker may take. ASGI's lifespan starts nothing and stops the bot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from flask import Flask
from prometheus_client import Counter

from service.front.body import BodyRefusedError, ClientGoneError, MemoryBudget, read_body
from service.front.lane import Lane
from service.http.errors import error_payload
from service.metrics import observe_request
from service.settings import FrontSettings
from service.telegram_bot.webhook import SECRET_HEADER, WEBHOOK_PATH, Reply, handle_update

if TYPE_CHECKING:
    from service.telegram_bot.runtime import BotRuntime

log = logging.getLogger("breedrecognizer.front")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Cheap GET routes that must answer while the model is busy (the platform's health checks).
LIGHT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
BUSY_RETRY_AFTER_S = 1  # a busy worker frees up in moments
NOT_ALLOWED = Reply(
    405,
    error_payload("method_not_allowed", f"{WEBHOOK_PATH} takes POST only"),
    {"Allow": "POST"},
)
REFUSED = Counter(
    "breedrecognizer_front_refused",
    "Requests the front answered itself, by reason (body_timeout, too_large, busy)",
    ["reason"],
)


class Front:
    """The worker's ASGI app: bodies read first, then the bot, the light lane or the model."""

    def __init__(
        self, app: Flask, config: FrontSettings, bot: BotRuntime | None, balance: bool
    ) -> None:
        self.config, self.bot, self.balance = config, bot, balance
        self.limit_bytes: int | None = app.config.get("MAX_CONTENT_LENGTH")
        self.budget = MemoryBudget(config.body_memory_bytes)
        self.model_lane = Lane(app, "app")
        self.light_lane = Lane(app, "light")
        self.in_app = 0  # requests queued for or running in the app thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        try:
            body = await read_body(receive, self.limit_bytes, self.config, self.budget)
        except BodyRefusedError as refused:
            await self._refuse(scope, send, refused)
            return
        except ClientGoneError:
            log.info("%s %s: client left before sending the whole body", *_request(scope))
            return
        try:
            scope = _with_length(scope, body.size)
            path, method = scope["path"], scope["method"]
            if path == WEBHOOK_PATH:
                await self._webhook(scope, method, body.read(), send)
            elif path in LIGHT_PATHS and method in ("GET", "HEAD"):
                await self.light_lane(scope, body.stream(), send)
            elif self.in_app >= self.config.app_queue_size:
                busy = BodyRefusedError(503, "busy", "unavailable", "the server is busy; retry")
                await self._refuse(scope, send, busy, retry_after=BUSY_RETRY_AFTER_S)
            else:
                self.in_app += 1
                try:
                    await self.model_lane(scope, body.stream(), self._balancing(send))
                finally:
                    self.in_app -= 1
        finally:
            body.close()

    def app_stuck_s(self) -> float:
        """How long the app thread has been on its current request (0 when idle)."""
        return self.model_lane.busy_s()

    def _balancing(self, send: Send) -> Send:
        """``send``, closing the connection after the answer while others wait for the model."""
        if not self.balance:
            return send

        async def balanced(message: Message) -> None:
            if message["type"] == "http.response.start" and self.in_app > 1:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        return balanced

    async def _webhook(self, scope: Scope, method: str, body: bytes, send: Send) -> None:
        started = time.perf_counter()
        if method == "POST":
            reply = await handle_update(self.bot, _header(scope, SECRET_HEADER), body)
        else:
            reply = NOT_ALLOWED
        await _send_json(send, reply.status, reply.payload, reply.headers)
        observe_request(WEBHOOK_PATH, method, reply.status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.bot is not None:
                    await self.bot.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _refuse(
        self, scope: Scope, send: Send, refused: BodyRefusedError, retry_after: int | None = None
    ) -> None:
        """Answer without the app: the API's JSON error shape, logged and counted."""
        REFUSED.labels(refused.reason).inc()
        method, path, peer = _request(scope)
        log.warning(
            "%s %s from %s -> %d %s: %s",
            method, path, peer, refused.status, refused.reason, refused.message,
        )  # fmt: skip
        # The body may be unread: the connection cannot carry another request.
        headers = {"Connection": "close"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        await _send_json(
            send, refused.status, error_payload(refused.code, refused.message), headers
        )


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: dict[str, str]
) -> None:
    body = json.dumps(payload).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _with_length(scope: Scope, size: int) -> Scope:
    """The request as the app sees it: its body complete, of a known length (a chunked
    upload's ``Transfer-Encoding`` is no longer true of it)."""
    framing = (b"content-length", b"transfer-encoding")
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in framing]
    return {**scope, "headers": [*headers, (b"content-length", str(size).encode())]}


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _request(scope: Scope) -> tuple[str, str, str]:
    client = scope.get("client") or ("?", 0)
    return scope.get("method", "?"), scope.get("path", "?"), str(client[0])
