"""``FrontWorker``: uvicorn under gunicorn, configured the way uvicorn-worker documents
(a subclass with its own ``CONFIG_KWARGS``).

gunicorn's master keeps the workers alive and replaces a dead or stuck one; uvicorn runs the
event loop of each (``service.front.asgi.Front``). On SIGTERM (what Heroku and ``docker
stop`` send) uvicorn stops accepting, closes idle connections and lets the requests in flight
finish (Telegram's webhook calls among them: each is acknowledged only once answered), within
``graceful_timeout`` less a margin, before the master's SIGKILL. Client addresses come from
the Flask app's ``ProxyFix`` (one hop: Heroku's router), not from uvicorn.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

log = logging.getLogger("breedrecognizer.front")

# Seconds kept in hand before the master's SIGKILL at graceful_timeout.
DRAIN_MARGIN_S = 1.5


class FrontWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "lifespan": "on",
        "proxy_headers": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = max(0.0, self.cfg.graceful_timeout - DRAIN_MARGIN_S)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.stuck_logged = False

    async def callback_notify(self) -> None:
        """Heartbeat, unless the app thread is stuck: then the master replaces this worker,
        as it would a stuck sync worker."""
        stuck = self.wsgi.app_stuck_s()
        if stuck > self.cfg.timeout:
            if not self.stuck_logged:
                log.critical("app thread stuck for %.0f s: the master will replace me", stuck)
                self.stuck_logged = True
            return
        self.notify()
