"""The one redial loop (lnpmsg.io.redial): back-off doubling to its max with jitter, a reset after
success, the first dial at once or after a wait, and an end when the peer is no longer wanted.
Virtual time (trio's MockClock): the waits are read off the clock."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from lnpmsg.io.redial import Backoff, redial

log = logging.getLogger("test.redial")


def test_the_waits_double_up_to_the_max_and_reset() -> None:
    backoff = Backoff(1.0, 10.0, jitter=lambda: 1.5)
    assert [backoff.wait() for _ in range(6)] == [1.5, 3.0, 6.0, 12.0, 15.0, 15.0]
    backoff.reset()
    assert backoff.wait() == 1.5 and backoff.delay == 2.0


def test_the_default_jitter_stays_within_a_fifth() -> None:
    waits = [Backoff(10.0, 10.0).wait() for _ in range(200)]
    assert all(8.0 <= w <= 12.0 for w in waits) and len(set(waits)) > 1


class Dialer:
    """Fails ``failures`` times (ConnectionError), then returns "peer"; notes when each dial came."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.at: list[float] = []

    async def __call__(self) -> str:
        self.at.append(trio.current_time())
        if len(self.at) <= self.failures:
            raise ConnectionError(f"refused #{len(self.at)}")
        return "peer"


@pytest.mark.parametrize("wait_first", [True, False])
def test_failed_dials_are_retried_after_longer_waits(wait_first: bool, caplog: pytest.LogCaptureFixture) -> None:
    dial = Dialer(3)

    async def main() -> str | None:
        return await redial(dial, Backoff(1.0, 300.0, jitter=lambda: 1.0), wanted=lambda: True, errors=(ConnectionError,),
                            what="peer X", logger=log, wait_first=wait_first)  # fmt: skip

    caplog.set_level(logging.INFO, logger="test.redial")
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == "peer"
    assert dial.at == ([1.0, 3.0, 7.0, 15.0] if wait_first else [0.0, 1.0, 3.0, 7.0])
    assert "peer X is unreachable (refused #1); next try in about" in caplog.text


def test_a_peer_no_longer_wanted_ends_the_loop_before_the_next_dial() -> None:
    dial = Dialer(100)

    async def main() -> str | None:
        return await redial(dial, Backoff(1.0, 300.0, jitter=lambda: 1.0), wanted=lambda: trio.current_time() < 5.0,
                            errors=(ConnectionError,), what="peer X", logger=log)  # fmt: skip

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) is None
    assert dial.at == [1.0, 3.0]  # the next wait ended at 7.0, when the peer was no longer wanted


def test_an_error_not_listed_propagates() -> None:
    async def dial() -> str:
        raise KeyError("a bug, not an unreachable peer")

    async def main() -> str | None:
        return await redial(dial, Backoff(), wanted=lambda: True, errors=(ConnectionError,), what="peer X", logger=log, wait_first=False)

    with pytest.raises(KeyError):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
