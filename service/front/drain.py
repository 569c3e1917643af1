"""Work a worker must finish before it exits on SIGTERM, beyond the HTTP requests in flight.

The Telegram bot acknowledges an update (200) before answering it, and Telegram never sends
an acknowledged update again, so a worker that exits with updates queued loses them. Such
components register here; the worker calls ``start_draining`` (refuse new work) and, once no
request is left in the app, ``finish_draining`` (finish what was accepted).
"""

from __future__ import annotations

import time
import weakref
from typing import Protocol


class Drainable(Protocol):
    name: str

    def start_draining(self) -> None:
        """Refuse new work from now on (the caller answers 503 + Retry-After)."""

    def finish_draining(self, timeout_s: float) -> int:
        """Finish all accepted work within ``timeout_s``; return how many items that was."""


_registered: weakref.WeakSet[Drainable] = weakref.WeakSet()


def register(component: Drainable) -> None:
    _registered.add(component)


def start_draining() -> None:
    for component in list(_registered):
        component.start_draining()


def finish_draining(timeout_s: float) -> dict[str, int]:
    """Drain every registered component within ``timeout_s`` in all; counts by name."""
    deadline = time.monotonic() + timeout_s
    return {
        component.name: component.finish_draining(max(0.0, deadline - time.monotonic()))
        for component in list(_registered)
    }
