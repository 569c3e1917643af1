"""A thread of the worker that runs the Flask app: one hand-over each way per request.

By the time the app runs, the front holds the whole request body (service/front/body.py),
and every answer of the app is a few complete bytes (JSON, the page, a small static file).
So a request crosses to the lane's thread once, as a PEP 3333 environ whose ``wsgi.input`` is
the body already read, and its answer comes back once, complete. A general WSGI-in-ASGI
adapter such as a2wsgi streams each body read and each answer part across threads instead:
five round trips between the event loop and the thread per request, which cost more CPU than
decoding the photo.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Lane:
    """One thread running ``app``; requests wait their turn in the executor's queue."""

    def __init__(self, app: WsgiApp, name: str) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.busy_since: float | None = None  # when the thread took its current request

    def busy_s(self) -> float:
        """How long the thread has been on its current request (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    async def __call__(self, scope: Scope, body: IO[bytes], send: Send) -> None:
        environ = wsgi_environ(scope, body)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.executor, self._answer, environ)
        start = {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        await send(start)
        await send({"type": "http.response.body", "body": answer.body})

    def _answer(self, environ: dict[str, Any]) -> Answer:
        self.busy_since = time.monotonic()
        try:
            return self._run_app(environ)
        finally:
            self.busy_since = None

    def _run_app(self, environ: dict[str, Any]) -> Answer:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started[:] = [(status, headers)]
            return _no_write

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # Flask's teardown runs here
        status, headers = started[0]
        return Answer(
            int(status.split(" ", 1)[0]),
            [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            body,
        )


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the app answers by returning its body, not through write()")


def wsgi_environ(scope: Scope, body: IO[bytes]) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI HTTP request whose body is ``body`` (read to its end)."""
    server = scope.get("server") or ("localhost", 80)
    root, path = scope.get("root_path", ""), scope["path"]
    if root and path.startswith(root):  # ASGI's path includes the root path, WSGI's does not
        path = path[len(root) :]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
