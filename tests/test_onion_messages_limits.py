"""The onion-message rate limits (lnpmsg.onion_messages.limits): token buckets with the time given,
a bounded table of peers, and drop counts that log once per reason."""

from __future__ import annotations

import pytest

from lnpmsg.onion_messages.limits import DropCounts, RateLimiter


def test_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow(b"p", 10.0) for _ in range(4)] == [True, True, True, False]
    assert not limiter.allow(b"p", 10.4)  # 0.8 of a token
    assert limiter.allow(b"p", 10.5) and not limiter.allow(b"p", 10.5)
    assert [limiter.allow(b"p", 1000.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst, not beyond
    assert limiter.allow(b"q", 1000.0)  # another peer has its own bucket
    assert limiter.allow(b"p", 999.0) is False  # a clock going back refills nothing


def test_the_table_of_peers_is_bounded_and_forgets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_tracked=3)
    for i in range(10):
        limiter.allow(bytes([i]), 0.0)
    assert len(limiter) == 3
    assert not limiter.allow(bytes([9]), 0.0)  # recent: still empty
    assert limiter.allow(bytes([0]), 0.0)  # forgotten long ago: a full bucket again
    limiter.forget(bytes([0]))
    assert len(limiter) == 2
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_drop_counts() -> None:
    drops = DropCounts()
    assert drops.add("malformed") and not drops.add("malformed") and drops.add("queue full")
    assert drops.take() == {"malformed": 2, "queue full": 1} and drops.take() == {}
    assert drops.add("malformed")  # first again after the summary
    assert drops.total == {"malformed": 3, "queue full": 1}
