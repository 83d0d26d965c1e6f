"""The deadline heap behind peer RPC call timeouts, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from lnpmsg.rpc.deadlines import Deadlines


async def test_callbacks_run_at_their_deadlines_in_order_and_cancelled_ones_never(autojump_clock: trio.testing.MockClock) -> None:
    deadlines = Deadlines()
    ran: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        await trio.sleep(0)
        start = trio.current_time()

        def note(name: str):
            return lambda: ran.append((name, trio.current_time() - start))

        deadlines.add(start + 5, note("five"))
        cancelled = deadlines.add(start + 2, note("never"))
        deadlines.add(start + 1, note("one"))  # earlier than what the task sleeps for: it wakes sooner
        deadlines.cancel(cancelled)
        deadlines.cancel(cancelled)  # twice is harmless
        assert len(deadlines) == 2
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert ran == [("one", 1.0), ("five", 5.0)]
    assert len(deadlines) == 0
    assert not deadlines.running


def test_cancelled_entries_do_not_pile_up() -> None:
    deadlines = Deadlines()
    live = deadlines.add(1.0, lambda: None)
    for i in range(10_000):
        deadlines.cancel(deadlines.add(100.0 + i, lambda: None))
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 2 * 1 + 64 + 1
    ran = []
    deadlines.cancel(live)
    deadlines.add(2.0, lambda: ran.append(2.0))
    deadlines.expire(1.5)
    assert ran == []
    deadlines.expire(2.0)
    assert ran == [2.0]
