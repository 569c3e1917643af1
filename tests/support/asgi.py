"""A synchronous client for the ASGI front in this process (httpx's ASGITransport), with
its event loop in a thread of its own, as uvicorn would run it: the bot lives on that loop
for the client's whole life, and the app's lifespan starts and stops with the client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx


class AsgiClient:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lifespan: asyncio.Queue[dict[str, Any]] | None = None
        self.lifespan_done: asyncio.Queue[dict[str, Any]] | None = None
        self._call(self._start())
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def _call(self, coroutine: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        self.lifespan, self.lifespan_done = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.lifespan_task = asyncio.ensure_future(
            self.app(scope, self.lifespan.get, self.lifespan_done.put)
        )
        await self.lifespan.put({"type": "lifespan.startup"})
        assert (await self.lifespan_done.get())["type"] == "lifespan.startup.complete"

    async def _stop(self) -> None:
        await self.client.aclose()
        await self.lifespan.put({"type": "lifespan.shutdown"})
        assert (await self.lifespan_done.get())["type"] == "lifespan.shutdown.complete"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._call(self.client.request(method, path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def close(self) -> None:
        """Stop the app (its lifespan's shutdown) and the loop; a second close does nothing."""
        if self.loop.is_closed():
            return
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
