"""Timeouts for many waiters at once: one heap and one task instead of a cancel scope each.

A trio cancel scope costs about 5 µs to enter and leave (more on a loaded
machine, where it was a fifth of what peer RPC added to a round trip), and
a call needs one only for its timeout. Here a timeout is an entry in a heap:
adding and cancelling one costs a fraction of a microsecond, and one task,
sleeping until the earliest deadline, runs the callbacks of those that
expire.

Cancelled entries stay in the heap until they reach its top; when they
outnumber the live ones, the heap is rebuilt, so its size stays within twice
the live entries (plus a constant) however many calls come and go.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["Deadlines", "Timeout"]

#: cancelled entries the heap may hold beyond twice the live ones before it is rebuilt
_SLACK = 64

#: one entry: [deadline, sequence (ties), callback or None once cancelled or run]
Timeout = list[Any]


class Deadlines:
    """Callbacks run at their deadlines (trio time) unless cancelled first; :meth:`run` serves them."""

    __slots__ = ("_heap", "_live", "_scope", "_sequence")

    def __init__(self) -> None:
        self._heap: list[Timeout] = []
        self._live = 0
        self._scope: trio.CancelScope | None = None
        self._sequence = itertools.count()

    @property
    def running(self) -> bool:
        """True while :meth:`run` serves the deadlines (only then do callbacks run)."""
        return self._scope is not None

    def __len__(self) -> int:
        """Deadlines added and neither cancelled nor run yet."""
        return self._live

    def add(self, deadline: float, callback: Callable[[], None]) -> Timeout:
        """Run ``callback()`` at ``deadline`` unless :meth:`cancel` gets the returned entry first."""
        entry: Timeout = [deadline, next(self._sequence), callback]
        heapq.heappush(self._heap, entry)
        self._live += 1
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        return entry

    def cancel(self, entry: Timeout) -> None:
        """Forget ``entry`` (nothing happens if it already ran or was cancelled)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._live -= 1
        if len(self._heap) > 2 * self._live + _SLACK:
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)

    def expire(self, now: float) -> None:
        """Run the callbacks whose deadline is at or before ``now``, earliest first."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback = entry[2]
            if callback is not None:
                entry[2] = None
                self._live -= 1
                callback()

    async def run(self) -> None:
        """Serve the deadlines until cancelled (one task: the owner's)."""
        try:
            while True:
                self.expire(trio.current_time())
                with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as scope:
                    self._scope = scope
                    await trio.sleep_forever()
        finally:
            self._scope = None
