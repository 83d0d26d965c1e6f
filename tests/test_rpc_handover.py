"""rpc.handover.run_until_waiting: a coroutine run as ``await`` runs it, telling
when it may wait for longer than one scheduler pass (virtual time only)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lnpmsg.rpc.handover import run_until_waiting


async def _drive(coro):  # type: ignore[no-untyped-def]
    released: list[int] = []
    result = await run_until_waiting(coro, lambda _: released.append(1), None)
    return result, len(released)


async def test_an_end_before_any_wait_or_after_one_checkpoint_releases_nothing():
    async def at_once() -> int:
        return 1

    async def one_checkpoint() -> int:
        await trio.sleep(0)
        return 2

    assert await _drive(at_once()) == (1, 0)
    assert await _drive(one_checkpoint()) == (2, 0)


async def test_a_real_wait_releases_at_once_and_only_once(autojump_clock: trio.testing.MockClock) -> None:
    released: list[float] = []

    async def waits() -> str:
        await trio.sleep(1)
        await trio.sleep(1)
        return "done"

    def release(_: None) -> None:
        released.append(trio.current_time())

    start = trio.current_time()
    assert await run_until_waiting(waits(), release, None) == "done"
    assert released == [start]  # before the first sleep, not after


async def test_a_second_checkpoint_releases():
    steps: list[str] = []

    async def spins() -> None:
        for i in range(5):
            steps.append(f"step {i}")
            await trio.lowlevel.checkpoint()

    def release(_: None) -> None:
        steps.append("released")

    await run_until_waiting(spins(), release, None)
    assert steps == ["step 0", "step 1", "released", "step 2", "step 3", "step 4"]


async def test_errors_and_cancellation_pass_through_as_with_await(autojump_clock: trio.testing.MockClock) -> None:
    async def raises_after_waiting() -> None:
        await trio.sleep(0.5)
        raise KeyError("late")

    with pytest.raises(KeyError, match="late"):
        await _drive(raises_after_waiting())

    cleaned: list[str] = []

    async def hangs() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append("finally")

    with trio.move_on_after(1) as scope:
        await _drive(hangs())
    assert scope.cancelled_caught and cleaned == ["finally"]


async def test_a_wait_woken_by_another_task_gets_its_value():
    async def receives(channel: trio.MemoryReceiveChannel[int]) -> int:
        return await channel.receive() * 2

    send, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 21)
        assert await _drive(receives(receive)) == (42, 1)


async def test_closing_the_driver_closes_the_coroutine():
    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await trio.sleep(1)
        finally:
            cleaned.append("closed")

    driver = run_until_waiting(waits(), lambda _: None, None)
    driver.send(None)  # to its first wait, outside trio's scheduler
    driver.close()
    assert cleaned == ["closed"]
