"""The node's keepalive schedule: one task runs every peer's session timers.

Each :class:`~lnpmsg.node.session.PeerSession` says when it next needs time
(``get_timer``: a ping to send, the init or pong deadline). Instead of each
peer's reading task waiting on its socket under that deadline (and being
cancelled and re-armed at every ping), the node keeps one schedule: a
peer's reading task just waits for bytes, and this task wakes when the
earliest deadline of any peer is due and fires every peer due by then in
one pass.

Deadlines are kept in buckets of ``resolution`` seconds (a coarse time
wheel): a bucket fires at its end, so a timer fires at most one tick late
and every peer due within one tick costs the node one wake-up, not one
each (10,000 peers pinged once a minute: 167 timers a second, 4 wake-ups a
second at the default tick). Moving a peer between buckets (a pong came,
an app pinged) is two dict operations; a heap holds the ticks that have a
bucket. A bucket that empties stays until its tick passes, so peers that
come and go within a tick (an accepting node's churn) reuse it.

Keepalive pings go out on the timer whether or not the peer sent us
anything lately. BOLT 1 does not require pings, so skipping them would be
allowed, but: an idle peer (what this schedule is for) sends nothing, so
there is nothing to save there; traffic from a peer proves it sends, while
only its pong proves it still reads what we send, in order; lnd and Core
Lightning ping on a timer too; and ``ping_rtt`` stays current.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Protocol

import trio

__all__ = ["KEEPALIVE_TICK", "PASS_SLICE", "KeepaliveSchedule", "Timed", "tick_for"]

log = logging.getLogger(__name__)

#: the schedule's resolution (seconds): timers fire up to this late, and those due
#: within one tick fire together
KEEPALIVE_TICK = 0.25
#: a schedule's tick is at most this share of its shortest timer, so short test
#: intervals (a ping every 0.1 s) keep their rhythm
_TICKS_PER_TIMER = 4
#: peers fired between two schedule points of a pass: thousands of peers that
#: connected together (a restart) share their ticks, and other tasks (a
#: handshake, a payment) should not wait for all of their pings
PASS_SLICE = 512


def tick_for(*intervals: float) -> float:
    """The tick for timers of these lengths: :data:`KEEPALIVE_TICK`, finer for short ones."""
    return min([KEEPALIVE_TICK, *(interval / _TICKS_PER_TIMER for interval in intervals if interval > 0)])


class Timed(Protocol):
    """What the schedule runs: a peer whose session has timers."""

    def keepalive_due(self, now: float) -> float | None:
        """Fire the timers due at ``now``; return the next deadline (None: none)."""


class KeepaliveSchedule:
    """Deadlines of many peers, fired by one task (:meth:`run`, in the node's nursery).

    :meth:`set` (re)places a peer's deadline; when it is due, the task calls
    the peer's ``keepalive_due(now)`` and schedules the deadline it returns.
    """

    __slots__ = ("_buckets", "_sleep", "_tick_of", "_ticks", "fired", "passes", "resolution")

    def __init__(self, resolution: float = KEEPALIVE_TICK) -> None:
        if not resolution > 0:
            raise ValueError(f"the keepalive tick must be positive, not {resolution!r}")
        self.resolution = resolution
        #: each scheduled peer's tick (its deadline rounded up to the tick's end)
        self._tick_of: dict[Timed, int] = {}
        #: tick -> the peers due in it (a dict as an ordered set; an emptied one stays until
        #: its tick passes, as every bucket's tick is in the heap)
        self._buckets: dict[int, dict[Timed, None]] = {}
        #: a heap of the buckets' ticks, one entry each (the task pops a tick with its bucket)
        self._ticks: list[int] = []
        #: the task's wait while it sleeps: an earlier deadline moves it
        self._sleep: trio.CancelScope | None = None
        #: wake-ups that fired at least one peer, and the peers fired (for tests and benchmarks)
        self.passes = 0
        self.fired = 0

    def __len__(self) -> int:
        """Peers with a deadline in the schedule."""
        return len(self._tick_of)

    def deadline_of(self, timed: Timed) -> float | None:
        """When ``timed`` fires next (the end of its tick), or None."""
        tick = self._tick_of.get(timed)
        return None if tick is None else tick * self.resolution

    def _tick(self, deadline: float) -> int:
        tick = math.ceil(deadline / self.resolution)
        if tick * self.resolution < deadline:
            tick += 1  # rounding: a bucket must never fire before its deadlines
        return tick

    def set(self, timed: Timed, deadline: float | None) -> None:
        """Fire ``timed`` at ``deadline`` (or within one tick after it); None takes it out."""
        tick = None if deadline is None or deadline == math.inf else self._tick(deadline)
        tick_of = self._tick_of
        old = tick_of.get(timed)
        if old == tick:
            return
        buckets = self._buckets
        if old is not None:
            # A bucket that empties stays until its tick passes (the task drops it then):
            # under churn (a peer that comes and goes within a tick, each one a bucket
            # of its own) the next deadline in that tick reuses it and its heap entry.
            del buckets[old][timed]
        if tick is None:
            del tick_of[timed]
            return
        tick_of[timed] = tick
        bucket = buckets.get(tick)
        if bucket is None:
            buckets[tick] = {timed: None}
            self._push(tick)
        else:
            bucket[timed] = None

    def _push(self, tick: int) -> None:
        """A new bucket's tick into the heap (and the task's wait shortened if it is earlier)."""
        ticks = self._ticks
        buckets = self._buckets
        if len(buckets) > 2 * len(self._tick_of) + 64:
            # Emptied buckets outnumber the live ones only while their ticks do not pass
            # (the task is not running, or far-off deadlines come and go): drop them.
            for empty in [t for t, bucket in buckets.items() if not bucket]:
                del buckets[empty]
            ticks[:] = buckets
            heapq.heapify(ticks)
        else:
            heapq.heappush(ticks, tick)
        sleep = self._sleep
        if sleep is not None and tick * self.resolution < sleep.deadline:
            sleep.deadline = tick * self.resolution

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire deadlines as they come due, until cancelled."""
        task_status.started()
        resolution = self.resolution
        ticks = self._ticks
        buckets = self._buckets
        while True:
            with trio.CancelScope(deadline=ticks[0] * resolution if ticks else math.inf) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            due: list[dict[Timed, None]] = []
            while ticks and ticks[0] * resolution <= now:
                bucket = buckets.pop(heapq.heappop(ticks), None)
                if bucket:
                    due.append(bucket)
            if not due:
                continue
            self.passes += 1
            tick_of = self._tick_of
            for bucket in due:
                for timed in bucket:
                    del tick_of[timed]
            in_slice = 0
            for bucket in due:
                self.fired += len(bucket)
                for timed in bucket:
                    if in_slice == PASS_SLICE:
                        # Firing a peer again is harmless (its session acts only on what
                        # is due), so a peer moved or closed meanwhile may still be fired.
                        in_slice = 0
                        await trio.lowlevel.checkpoint()
                    in_slice += 1
                    try:
                        following = timed.keepalive_due(now)
                    except Exception:
                        # One peer's failure must not stop every other peer's keepalive.
                        log.exception("keepalive of %r failed; it is no longer scheduled", timed)
                        continue
                    if following is not None:
                        self.set(timed, following)
