"""The front's settings, read from environment variables (documented in docs/front.md).

Read by gunicorn.conf.py in the master and by the worker class after the fork, so this module
imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from service.env import env_positive


class FrontConfigError(ValueError):
    """A front setting holds a value the server cannot use."""


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    return env_positive(env, name, default, error=FrontConfigError)


@dataclass(frozen=True)
class FrontConfig:
    """Deadlines and bounds that keep one worker safe from slow or greedy clients."""

    # A client that sends no body byte for this long is answered 408 and cut off.
    body_idle_timeout_s: float = 10.0
    # The whole body must have arrived this long after the headers, or 408.
    body_timeout_s: float = 30.0
    # Request bodies a worker holds in memory at once; beyond it they wait on disk.
    body_memory_bytes: int = 32 * 1024 * 1024
    # Complete requests waiting for the worker's app thread; beyond it, 503 + Retry-After.
    queue_size: int = 64
    # Seconds a SIGTERMed worker has to finish its work (Heroku kills at 30 s).
    graceful_timeout_s: float = 25.0
    # Simultaneous connections per worker (each a greenlet and a file descriptor).
    worker_connections: int = 500

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FrontConfig:
        env = os.environ if env is None else env
        return cls(
            body_idle_timeout_s=_positive(env, "BODY_IDLE_TIMEOUT_S", cls.body_idle_timeout_s),
            body_timeout_s=_positive(env, "BODY_TIMEOUT_S", cls.body_timeout_s),
            body_memory_bytes=int(
                _positive(env, "BODY_MEMORY_MB", cls.body_memory_bytes / 2**20) * 2**20
            ),
            queue_size=int(_positive(env, "APP_QUEUE_SIZE", cls.queue_size)),
            graceful_timeout_s=_positive(env, "GRACEFUL_TIMEOUT", cls.graceful_timeout_s),
            worker_connections=int(_positive(env, "WORKER_CONNECTIONS", cls.worker_connections)),
        )
