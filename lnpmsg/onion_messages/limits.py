"""Rate limits for onion messages (sans-IO: time comes in as ``now``).

Onion messages cost the relaying node an ECDH or three and a peer's
bandwidth, and earn it nothing, so BOLT 4 lets a node drop them at will.
:class:`RateLimiter` keeps one token bucket per peer: ``rate`` messages a
second on average, bursts of ``burst``. The table of buckets is bounded
(:data:`MAX_TRACKED`, the least recently used goes first) so many short-lived
peers cannot grow it. :class:`DropCounts` tallies what was dropped and why,
so the app logs counts, never a line per message of a flood.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

__all__ = ["MAX_TRACKED", "DropCounts", "RateLimiter"]

#: peers whose buckets are remembered at once (a forgotten one starts again with a full bucket)
MAX_TRACKED = 4096


class RateLimiter:
    """Token buckets keyed by peer (node id)."""

    def __init__(self, rate: float, burst: float, *, max_tracked: int = MAX_TRACKED) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be positive and burst at least 1, got {rate} and {burst}")
        self.rate = rate
        self.burst = float(burst)
        self.max_tracked = max_tracked
        #: key -> (tokens, time of the last refill)
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def allow(self, key: bytes, now: float) -> bool:
        """Take a token for ``key`` if it has one (True), else False: the message is to be dropped."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, max(now, last))
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return allowed

    def forget(self, key: bytes) -> None:
        """Drop ``key``'s bucket (the peer left)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)


class DropCounts:
    """Dropped messages by reason, since the last :meth:`take` (and in total)."""

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    def add(self, reason: str) -> bool:
        """Count one drop; True when it is the first of its reason since the last :meth:`take`
        (the caller logs that one at debug level and leaves the rest to the summary)."""
        first = reason not in self._pending
        self._pending[reason] += 1
        self.total[reason] += 1
        return first

    def take(self) -> dict[str, int]:
        """The counts since the last call, and start again."""
        out = dict(self._pending)
        self._pending.clear()
        return out
