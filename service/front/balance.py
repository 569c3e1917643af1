"""Spread connections over the workers by how many each holds.

Every worker accepts on the same listening socket and the kernel hands a new connection to
whichever waiting worker it wakes, often the same one. A keep-alive connection then stays
where it landed, so with a few persistent clients one worker can queue requests while the
other idles. ``ConnectionBoard`` is a few integers in memory shared by the workers of one
server (made by gunicorn.conf.py in the master, inherited through the fork): each worker
writes how many connections it holds, and accepts only while no other live worker holds
fewer. Standard library only: the gunicorn master imports it.
"""

from __future__ import annotations

from multiprocessing.sharedctypes import RawArray

FREE = -1  # a slot no live worker holds


class ConnectionBoard:
    """Connections held per worker slot; each slot is written by one worker only."""

    def __init__(self, slots: int) -> None:
        self._held = RawArray("i", [FREE] * slots)

    @property
    def slots(self) -> int:
        return len(self._held)

    def claim(self, taken: set[int]) -> int | None:
        """A free slot for a worker about to start (in the master), or None when none is."""
        for slot in range(self.slots):
            if slot not in taken:
                self._held[slot] = 0
                return slot
        return None

    def release(self, slot: int) -> None:
        """The worker of ``slot`` is gone (in the master): its connections count no more."""
        self._held[slot] = FREE

    def add(self, slot: int, change: int) -> None:
        self._held[slot] += change

    def held(self, slot: int) -> int:
        return self._held[slot]

    def may_accept(self, slot: int) -> bool:
        """True unless another live worker holds fewer connections than ``slot``'s worker."""
        mine = self._held[slot]
        return all(n == FREE or n >= mine for i, n in enumerate(self._held) if i != slot)
