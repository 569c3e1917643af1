"""``FrontWorker``: gunicorn's gevent worker without monkey-patching, draining on SIGTERM.

Only the listening sockets become gevent sockets: connections are served by greenlets that
read and buffer request bodies (``Front``), while the Flask app, the model and the Telegram
bot's asyncio loop keep running in ordinary OS threads with the unpatched standard library.
That keeps the bot's own event loop and thread pools exactly as they are under a sync worker.

The heartbeat to the master (``timeout``) also watches the app thread: when one request has
held it for longer than ``timeout`` the heartbeat stops and the master replaces the worker,
as it would kill a stuck sync worker.

On SIGTERM (what Heroku and ``docker stop`` send) the worker drains instead of stopping:
new requests get 503 + Retry-After, requests already in the app finish, then every
registered component (the bot) finishes what it accepted; all within ``graceful_timeout``
less a margin, after which the master would kill it.
"""

from __future__ import annotations

import logging
import socket
import time
from functools import partial

import gevent
from gevent import socket as gevent_socket
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import GeventWorker

from service.front import drain
from service.front.wsgi import Front
from service.settings import load_settings

log = logging.getLogger("breedrecognizer.front")

# Seconds kept in hand before the master's SIGKILL at graceful_timeout.
DRAIN_MARGIN_S = 1.5
POLL_S = 0.05


class FrontWorker(GeventWorker):
    front: Front
    _stuck_logged = False

    def patch(self) -> None:
        """Make the listening sockets cooperative; patch nothing else (see module doc)."""
        self.sockets = [
            gevent_socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets
        ]

    def notify(self) -> None:
        """Heartbeat, unless the app thread is stuck: then the master replaces this worker."""
        front = getattr(self, "front", None)
        stuck = front.app_stuck_s() if front is not None else 0.0
        if stuck > self.cfg.timeout:
            if not self._stuck_logged:
                log.critical("app thread stuck for %.0f s: the master will replace me", stuck)
                self._stuck_logged = True
            return
        super().notify()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.front = Front(self.wsgi, load_settings().front)
        self.wsgi = self.front

    def run(self) -> None:
        servers = [self._serve(listener) for listener in self.sockets]
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        heartbeat = gevent.spawn(self._heartbeat)
        try:
            self._drain()
        finally:
            heartbeat.kill()
            for server in servers:  # stop accepting; end idle and still-uploading connections
                server.stop(timeout=1)

    def handle_error(self, req, client, addr, exc: BaseException) -> None:
        """Connections still idle or uploading when the drain ends are closed, not errors."""
        if isinstance(exc, gevent.GreenletExit):
            log.debug("closed a connection from %s at shutdown", addr)
            return
        super().handle_error(req, client, addr, exc)

    def _serve(self, listener: gevent_socket.socket) -> StreamServer:
        listener.setblocking(1)
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        server = StreamServer(
            listener,
            handle=partial(self.handle, listener),
            spawn=Pool(self.worker_connections),
            **ssl_args,
        )
        if self.cfg.workers > 1:
            server.max_accept = 1  # leave the next connection to another idle worker
        server.start()
        return server

    def _heartbeat(self) -> None:
        while True:
            self.notify()
            gevent.sleep(1.0)

    def _drain(self) -> None:
        """Keep answering (503 to newcomers) while accepted requests and bot updates finish."""
        started = time.monotonic()
        deadline = started + max(0.0, self.cfg.graceful_timeout - DRAIN_MARGIN_S)
        self.front.draining = True
        drain.start_draining()
        requests = self.front.in_flight
        log.info("draining: %d requests in flight, up to %.1f s", requests, deadline - started)
        # Components drain in a thread of their own: the app thread may still be busy.
        components = gevent.get_hub().threadpool.spawn(
            drain.finish_draining, deadline - time.monotonic()
        )
        while self.front.in_flight and time.monotonic() < deadline:
            gevent.sleep(POLL_S)
        drained = components.wait(max(0.0, deadline - time.monotonic()) + POLL_S) or {}
        if components.exception is not None:
            log.error("draining failed: %r", components.exception)
        unfinished = self.front.in_flight
        log.info(
            "drained in %.2f s: %d requests%s%s",
            time.monotonic() - started,
            requests - unfinished,
            "".join(f", {count} {name}" for name, count in drained.items()),
            f"; {unfinished} requests unfinished at the deadline" if unfinished else "",
        )
