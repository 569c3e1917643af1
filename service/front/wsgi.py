"""``Front``: the WSGI layer between gunicorn's greenlets and the Flask app's one thread.

Each request's greenlet reads the whole body first (``read_body``), then queues the request
for the worker's app thread, a real OS thread (gevent's ThreadPool) where the Flask app, the
model and every blocking library call run without ever stopping the event loop. The response
is collected there and written back by the greenlet. One app thread per worker keeps the
model's CPU use at ``workers x MODEL_THREADS = cores``; the queue before it is bounded.

Telegram's webhook calls (``POST /telegram``) wait for the bot's answer to the user, which is
mostly network time, so they run in threads of their own (as many as the bot handles updates
at once) and never hold the model's app thread. Health checks and metrics (``/healthz``,
``/readyz``, ``/metrics``) never touch the model either: they have a thread of their own, so
the platform's checks answer at once however long the queue for the model is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from gevent.threadpool import ThreadPool
from prometheus_client import Counter

from service.front.body import (
    BodyIncompleteError,
    BodyTimeoutError,
    BodyTooLargeError,
    MemoryBudget,
    read_body,
)
from service.http.errors import error_payload
from service.settings import FrontSettings

log = logging.getLogger("breedrecognizer.front")

WSGIApp = Callable[[MutableMapping[str, Any], Callable[..., Any]], Iterable[bytes]]
WEBHOOK_PATH = "/telegram"
# Cheap GET routes that must answer while the model is busy (the platform's health checks).
LIGHT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

REFUSED = Counter(
    "breedrecognizer_front_refused",
    "Requests the front answered itself, by reason (body_timeout, too_large, busy, draining)",
    ["reason"],
)
# Retry-After for 503s: a busy worker frees up in moments; a draining one is replaced soon.
BUSY_RETRY_AFTER_S = 1
DRAINING_RETRY_AFTER_S = 5


@dataclass
class _Collected:
    """What the app answered, gathered in the app thread and written out by the greenlet."""

    status: str = "500 Internal Server Error"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)


class Front:
    """Wraps the Flask app: buffered bodies, a bounded queue, one app thread, drain state."""

    def __init__(self, app: WSGIApp, config: FrontSettings, webhook_threads: int = 1) -> None:
        self.app = app
        self.config = config
        self.budget = MemoryBudget(config.body_memory_bytes)
        self.pool = ThreadPool(1)
        self.webhook_pool = ThreadPool(webhook_threads)
        self.light_pool = ThreadPool(1)
        flask_config = getattr(app, "config", {})
        self.limit_bytes: int | None = flask_config.get("MAX_CONTENT_LENGTH")
        self.in_flight = 0  # requests that arrived before the drain and are not answered yet
        self.in_app = 0  # of those, the ones queued for or running in the app thread
        self.draining = False
        self.app_busy_since: float | None = None  # when the app thread took its current request

    def __call__(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.draining:
            return self._answer(environ, start_response, late=True)
        self.in_flight += 1
        try:
            return self._answer(environ, start_response, late=False)
        finally:
            self.in_flight -= 1

    def _answer(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any], late: bool
    ) -> Iterable[bytes]:
        """Read the body, then refuse (late for the drain, queue full) or run the app."""
        try:
            body = read_body(environ, self.limit_bytes, self.config, self.budget)
        except BodyTimeoutError as exc:
            return self._refuse(start_response, environ, 408, "body_timeout", str(exc))
        except BodyTooLargeError:
            limit_mb = (self.limit_bytes or 0) / 2**20
            message = f"the upload is too large; the limit is {limit_mb:g} MB"
            return self._refuse(
                start_response, environ, 413, "too_large", message, code="payload_too_large"
            )
        except BodyIncompleteError:
            log.info("%s %s: client left before sending the whole body", *_request(environ))
            return self._refuse(start_response, environ, 400, "incomplete", "incomplete body")
        try:
            # The body is read even when refusing: closing a socket with unread data resets
            # the connection, and the client would never see the answer.
            if late:
                return self._refuse(
                    start_response, environ, 503, "draining", "this server is restarting; retry",
                    retry_after=DRAINING_RETRY_AFTER_S,
                )  # fmt: skip
            environ["wsgi.input"] = body.rewind()
            environ["CONTENT_LENGTH"] = str(body.size)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ.pop("wsgi.input_terminated", None)
            path = environ.get("PATH_INFO")
            if path == WEBHOOK_PATH:
                collected = self.webhook_pool.spawn(self._call_app, environ).get()
            elif path in LIGHT_PATHS and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
                collected = self.light_pool.spawn(self._call_app, environ).get()
            elif self.in_app >= self.config.app_queue_size:
                return self._refuse(
                    start_response, environ, 503, "busy", "the server is busy; retry",
                    retry_after=BUSY_RETRY_AFTER_S,
                )  # fmt: skip
            else:
                self.in_app += 1
                try:
                    collected = self.pool.spawn(self._run_app, environ).get()
                finally:
                    self.in_app -= 1
        finally:
            body.close()
        start_response(collected.status, collected.headers)
        return collected.body

    def _run_app(self, environ: MutableMapping[str, Any]) -> _Collected:
        """In the app thread: call the app, noting how long it has been busy."""
        self.app_busy_since = time.monotonic()
        try:
            return self._call_app(environ)
        finally:
            self.app_busy_since = None

    def _call_app(self, environ: MutableMapping[str, Any]) -> _Collected:
        """Call the app and read its whole (small) response."""
        collected = _Collected()

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            collected.status, collected.headers = status, headers
            return collected.body.append

        result = self.app(environ, start_response)
        try:
            collected.body.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return collected

    def app_stuck_s(self) -> float:
        """How long the app thread has been on its current request (0 when idle)."""
        since = self.app_busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _refuse(
        self,
        start_response: Callable[..., Any],
        environ: MutableMapping[str, Any],
        status: int,
        reason: str,
        message: str,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> list[bytes]:
        """Answer without the app: the API's JSON error shape, logged and counted."""
        REFUSED.labels(reason).inc()
        level = logging.INFO if reason == "draining" else logging.WARNING
        method, path, peer = _request(environ)
        log.log(level, "%s %s from %s -> %d %s: %s", method, path, peer, status, reason, message)
        code = code or {408: "request_timeout", 503: "unavailable"}.get(status, "bad_request")
        payload = json.dumps(error_payload(code, message)).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [payload]


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    503: "Service Unavailable",
}


def _request(environ: MutableMapping[str, Any]) -> tuple[str, str, str]:
    return (
        environ.get("REQUEST_METHOD", "?"),
        environ.get("PATH_INFO", "?"),
        environ.get("REMOTE_ADDR", "?"),
    )
