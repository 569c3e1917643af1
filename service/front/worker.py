"""``FrontWorker``: gunicorn's gevent worker without monkey-patching, draining on SIGTERM.

Only the listening sockets become gevent sockets: connections are served by greenlets that
read and buffer request bodies (``Front``), while the Flask app, the model and the Telegram
bot's asyncio loop keep running in ordinary OS threads with the unpatched standard library.
That keeps the bot's own event loop and thread pools exactly as they are under a sync worker.

The heartbeat to the master (``timeout``) also watches the app thread: when one request has
held it for longer than ``timeout`` the heartbeat stops and the master replaces the worker,
as it would kill a stuck sync worker.

On SIGTERM (what Heroku and ``docker stop`` send) the worker drains instead of stopping:
new requests get 503 + Retry-After and requests in flight finish (Telegram's webhook calls
among them: each is acknowledged only once answered), within ``graceful_timeout`` less a
margin, after which the master would kill it.
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

from service.front.balance import ConnectionBoard
from service.front.wsgi import Front
from service.settings import load_settings

log = logging.getLogger("breedrecognizer.front")

# Seconds kept in hand before the master's SIGKILL at graceful_timeout.
DRAIN_MARGIN_S = 1.5
POLL_S = 0.05
# How soon a worker that left a waiting connection to a less busy one looks again.
RECHECK_S = 0.002


class BalancedServer(StreamServer):
    """Accepts only while no other worker holds fewer connections (service/front/balance.py).

    The count goes up as a connection is accepted and down when its handler ends; a worker
    that holds more than another leaves pending connections to it, looking again every
    ``RECHECK_S`` while any are pending (no timer runs while none are).
    """

    def __init__(self, listener, handle, board: ConnectionBoard, slot: int, **kwargs) -> None:
        self.board, self.slot = board, slot

        def counted(*args) -> None:
            try:
                handle(*args)
            finally:
                board.add(slot, -1)

        super().__init__(listener, handle=counted, **kwargs)

    def _do_read(self) -> None:
        if self.board.may_accept(self.slot):
            super()._do_read()
            return
        self.stop_accepting()
        self._timer = self.loop.timer(RECHECK_S)
        self._timer.start(self._start_accepting_if_started)

    def do_handle(self, *args) -> None:
        self.board.add(self.slot, 1)  # now, not when the handler's greenlet first runs
        try:
            super().do_handle(*args)
        except BaseException:
            self.board.add(self.slot, -1)  # the handler will not run
            raise


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
        settings = load_settings()
        self.front = Front(self.wsgi, settings.front, settings.telegram.concurrent_updates)
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
        handle = partial(self.handle, listener)
        spawn = Pool(self.worker_connections)
        # Set by gunicorn.conf.py's pre_fork where several workers share the socket.
        board = getattr(self, "connection_board", None)
        slot = getattr(self, "board_slot", None)
        if board is not None and slot is not None:
            server = BalancedServer(listener, handle, board, slot, spawn=spawn, **ssl_args)
        else:
            server = StreamServer(listener, handle=handle, spawn=spawn, **ssl_args)
        if self.cfg.workers > 1:
            server.max_accept = 1  # leave the next connection to another idle worker
        server.start()
        return server

    def _heartbeat(self) -> None:
        while True:
            self.notify()
            gevent.sleep(1.0)

    def _drain(self) -> None:
        """Keep answering (503 to newcomers) while the requests in flight finish."""
        started = time.monotonic()
        deadline = started + max(0.0, self.cfg.graceful_timeout - DRAIN_MARGIN_S)
        self.front.draining = True
        requests = self.front.in_flight
        log.info("draining: %d requests in flight, up to %.1f s", requests, deadline - started)
        while self.front.in_flight and time.monotonic() < deadline:
            gevent.sleep(POLL_S)
        unfinished = self.front.in_flight
        log.info(
            "drained in %.2f s: %d requests%s",
            time.monotonic() - started,
            requests - unfinished,
            f"; {unfinished} requests unfinished at the deadline" if unfinished else "",
        )
