"""Dialing a peer again with back-off: the one loop of everything that keeps a peer connected.

The node keeps its configured peers (``--connect``) connected, and the
channel app its channel peers; both wait, dial, and on a failure wait
twice as long (from :data:`RECONNECT_MIN_DELAY` up to
:data:`RECONNECT_MAX_DELAY`), each wait stretched or shrunk at random so
that two nodes that dial each other do not collide forever. :class:`Backoff`
is those delays (no clock, no I/O); :func:`redial` is the loop, given what
to dial and whether the peer is still wanted.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["RECONNECT_MAX_DELAY", "RECONNECT_MIN_DELAY", "Backoff", "redial"]

#: seconds before the first dial after a drop, doubled after each failed dial up to the max
RECONNECT_MIN_DELAY = 1.0
RECONNECT_MAX_DELAY = 300.0

T = TypeVar("T")


class Backoff:
    """Waits between dials: ``min_delay`` doubled after each failure up to ``max_delay``, each
    scaled by ``jitter()`` (default: between 0.8 and 1.2)."""

    def __init__(self, min_delay: float = RECONNECT_MIN_DELAY, max_delay: float = RECONNECT_MAX_DELAY,
                 jitter: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.jitter = jitter or (lambda: random.uniform(0.8, 1.2))
        #: the next wait before jitter
        self.delay = min_delay

    def wait(self) -> float:
        """The wait before the next dial (the one after it doubles, up to the max)."""
        wait = self.delay * self.jitter()
        self.delay = min(self.delay * 2, self.max_delay)
        return wait

    def reset(self) -> None:
        """The peer was reached: the next drop starts from the shortest wait again."""
        self.delay = self.min_delay


async def redial(
    dial: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    wanted: Callable[[], bool],
    errors: tuple[type[Exception], ...],
    what: str,
    logger: logging.Logger,
    wait_first: bool = True,
) -> T | None:
    """Dial until a dial succeeds (its result) or the peer is no longer ``wanted()`` (None), waiting
    ``backoff`` before each dial (but the first if not ``wait_first``). A dial that raises one of
    ``errors`` is logged (``what`` names the peer) and tried again; anything else propagates."""
    first = True
    while True:
        if wait_first or not first:
            await trio.sleep(backoff.wait())
        first = False
        if not wanted():
            return None
        try:
            return await dial()
        except errors as exc:
            logger.info("%s is unreachable (%s); next try in about %.0f s", what, exc, backoff.delay)
