"""Writes the payments app cannot skip, on a disk that may be full (the trio shell).

What the payments app writes either must be on disk before it acts (an
invoice paid before its preimage leaves, a forward before its outgoing HTLC,
a preimage a forward learned before it settles upstream) or records what
already happened (a part's or a payment's end). Neither may be skipped, and
neither can be given up: so a write that fails (:class:`PaymentsStoreWriteFailed`:
a full disk) is logged as an error and tried again, with back-off, until it
lands. Nothing that depends on it happens meanwhile (the caller waits), so
nothing is sent that the store does not hold; once there is space again the
work goes on where it stopped. Stopping the node cancels the wait: a restart
replays from what the store and the channels hold.

A write with a deadline (the invoice paid, which its HTLCs cannot wait for
past their own) is given up once ``give_up`` says why: it raises
:class:`RecordAbandoned`, and the caller undoes what waited for it (fails
the HTLCs back). A write that landed is never given up on.

Control calls refuse instead (``invoice``, ``pay``: nothing has happened
yet, and the caller is told why).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from lnpmsg.payments.store import PaymentsStoreWriteFailed

__all__ = ["GIVE_UP_POLL", "RETRY_MAX_DELAY", "RETRY_MIN_DELAY", "RecordAbandoned", "record"]

log = logging.getLogger("lnpmsg.payments.app")

#: seconds before the first retry of a write that failed, doubled after each failure up to the maximum
RETRY_MIN_DELAY = 0.5
RETRY_MAX_DELAY = 15.0
#: seconds between looks at ``give_up`` while waiting to write again
GIVE_UP_POLL = 1.0

T = TypeVar("T")


class RecordAbandoned(Exception):
    """A write that kept failing was given up: its deadline passed (``why``); nothing of it is on disk."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what} was not written: {why}")
        self.why = why


async def record(write: Callable[[], T], what: str, give_up: Callable[[], Awaitable[str | None]] | None = None) -> T:
    """Run the blocking store call ``write`` in a worker thread until it succeeds (see the module docs).

    ``what`` names the record in the error log (``"the invoice paid"``). ``give_up``, if given, is
    asked after each failure and while waiting to write again: once it returns a reason the write
    is not tried again and :class:`RecordAbandoned` is raised."""
    delay = RETRY_MIN_DELAY
    failures = 0
    while True:
        try:
            result = await trio.to_thread.run_sync(write)
        except PaymentsStoreWriteFailed as exc:
            failures += 1
            log.error("payments: %s could not be written: %s; nothing that depends on it is sent, written again in %g s "
                      "(free some space)", what, exc, delay)  # fmt: skip
            await _wait(delay, what, give_up)
            delay = min(delay * 2, RETRY_MAX_DELAY)
            continue
        if failures:
            log.warning("payments: %s written after %d failed attempt(s)", what, failures)
        return result


async def _wait(delay: float, what: str, give_up: Callable[[], Awaitable[str | None]] | None) -> None:
    """Sleep ``delay`` seconds; with ``give_up``, ask it now and every :data:`GIVE_UP_POLL` seconds meanwhile."""
    if give_up is None:
        await trio.sleep(delay)
        return
    until = trio.current_time() + delay
    while True:
        why = await give_up()
        if why is not None:
            raise RecordAbandoned(what, why)
        left = until - trio.current_time()
        if left <= 0:
            return
        await trio.sleep(min(left, GIVE_UP_POLL))
