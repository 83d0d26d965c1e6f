"""Writes the gossip store did not take (a full disk), kept in order until it takes them.

Gossip is not the node's own state: every message is signed by others and
can be fetched again from peers. So a store that cannot write stops nothing.
Mature nodes agree: LDK keeps its ``NetworkGraph`` in memory and only logs a
failed persist of it ("check your disk and permissions"), the next persist
writing the whole graph again; Core Lightning's gossipd logs a failed
``gossip_store`` append as broken and goes on with the message in memory.

Here the graph (and the routing graph) took the messages before the store
is asked to: they were published and relayed as accepted gossip, which is
right (they are valid gossip the node now routes with; our disk does not
make them less so). The writer keeps each write the store refused here, in
order (a removal after the inserts before it), and tries them again every
``store_retry_interval`` seconds: once the disk has room, the store catches
up with the graph. Writes queued while the store fails wait behind them.

Bounded: past ``limit`` messages waiting, newer gossip is not kept for the
store (counted in ``dropped``; removals are always kept, they are small and
a store that missed one would bring a closed channel back at the next
start). The graph still has what was dropped; a restart loads the graph
from the store, and the start's query sync asks peers for it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from lnpmsg.gossip.decision import ChannelRemoved, Decision

__all__ = ["StoreBacklog"]

#: one held write: decisions then removals, as the store applies them in one transaction
Write = tuple[list[Decision], list[ChannelRemoved]]


class StoreBacklog:
    """The writes waiting for a store that failed, in order; at most ``limit`` decisions."""

    def __init__(self, limit: int, batch_limit: int) -> None:
        self.limit = limit
        #: decisions per held write at most (a held write is one transaction when retried)
        self.batch_limit = batch_limit
        self.writes: deque[Write] = deque()
        #: decisions held now
        self.messages = 0
        #: decisions not held since the store began failing (over ``limit``)
        self.dropped = 0
        #: the store's error while it fails (None: it writes)
        self.error: str | None = None
        #: when (trio time) the store began failing, and when to try the held writes again
        self.failing_since: float | None = None
        self.retry_at: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.writes)

    @property
    def failing(self) -> bool:
        return self.error is not None

    def fail(self, error: str, now: float, retry_interval: float) -> bool:
        """The store refused a write at ``now``; returns whether it was writing until now."""
        first = self.error is None
        self.error = error
        if first:
            self.failing_since = now
        self.retry_at = now + retry_interval
        return first

    def hold(self, decisions: Sequence[Decision], removals: Sequence[ChannelRemoved]) -> int:
        """Keep a write for later (behind what is held); returns how many decisions did not fit."""
        room = max(0, self.limit - self.messages)
        kept = list(decisions[:room])
        dropped = len(decisions) - len(kept)
        self.dropped += dropped
        if not kept and not removals:
            return dropped
        last = self.writes[-1] if self.writes else None
        if last is not None and not last[1] and len(last[0]) + len(kept) <= self.batch_limit:
            # Join the last write: it has no removals, so the order inserts-then-deletes holds.
            last[0].extend(kept)
            last[1].extend(removals)
        else:
            self.writes.append((kept, list(removals)))
        self.messages += len(kept)
        return dropped

    def first(self) -> Write:
        return self.writes[0]

    def written(self) -> None:
        """The first held write is in the store now."""
        decisions, _ = self.writes.popleft()
        self.messages -= len(decisions)

    def recovered(self) -> tuple[float, int]:
        """Everything held is written: the store writes again. Returns since when it failed and how many were dropped."""
        since, dropped = self.failing_since or 0.0, self.dropped
        self.error = None
        self.failing_since = None
        self.dropped = 0
        return since, dropped
