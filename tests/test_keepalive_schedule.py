"""The node-wide keepalive schedule (lnpmsg.node.keepalive), in virtual time.

One task fires every peer's session timers: pings go out on each peer's own
schedule, a missing pong still closes just that peer at its deadline, an
idle peer's reading task waits in one receive that no timer cancels, and
peers due in the same tick are pinged in one pass of the one task. The
schedule alone is checked with plain objects first."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.keepalive import KEEPALIVE_TICK, PASS_SLICE, KeepaliveSchedule, tick_for
from lnpmsg.node.node import Node
from lnpmsg.node.peer import Peer
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running, running_tasks
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.virtual import memory_node, record_events
from lnpmsg.wire import DEFAULT_REGISTRY, Init, Ping, Pong, WarningMessage

PING_INTERVAL = 60.0
PONG_TIMEOUT = 30.0


class _Timer:
    """A stand-in for a peer: records when it fired and asks for the next deadlines in turn."""

    def __init__(self, *following: float | None) -> None:
        self.fired: list[float] = []
        self._following = list(following)

    def keepalive_due(self, now: float) -> float | None:
        self.fired.append(now)
        return self._following.pop(0) if self._following else None


async def _answering_peer(network: MemoryNetwork, node: Node, pings: list[float], nursery: trio.Nursery) -> tuple[RawPeer, Peer]:
    """A raw peer with init done that answers every ping (noting when each came); and the node's Peer."""
    with record_events(node) as events:
        raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
        await raw.exchange_init(Init())
        await events.wait_for(lambda e: isinstance(e, PeerConnected) and e.node_id == raw.key.node_id)

    async def answer() -> None:
        while True:
            message = DEFAULT_REGISTRY.decode(await raw.receive())
            if isinstance(message, Ping):
                pings.append(trio.current_time())
                await raw.send(Pong(ignored=bytes(message.num_pong_bytes)))

    nursery.start_soon(answer)
    return raw, node.peers[raw.key.node_id]


# ----------------------------------------------------------------- the schedule alone


def test_the_tick_is_finer_for_short_timers() -> None:
    assert tick_for(60.0, 30.0, 30.0) == KEEPALIVE_TICK
    assert tick_for(0.1, 10.0) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="positive"):
        KeepaliveSchedule(0)


async def test_deadlines_fire_in_order_never_early_and_within_a_tick(autojump_clock: trio.testing.MockClock) -> None:
    schedule = KeepaliveSchedule(0.25)
    start = trio.current_time()
    late = _Timer()
    chained = _Timer(start + 7.1, None)  # fires again at +7.1, then leaves
    moved = _Timer()
    gone = _Timer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule.run)
        schedule.set(late, start + 5.0)
        schedule.set(chained, start + 3.01)
        schedule.set(moved, start + 100.0)
        schedule.set(gone, start + 4.0)
        assert len(schedule) == 4
        schedule.set(moved, start + 1.0)  # earlier than the task's current wait
        schedule.set(gone, None)
        assert len(schedule) == 3 and schedule.deadline_of(gone) is None
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    for timer, deadlines in ((moved, [1.0]), (chained, [3.01, 7.1]), (late, [5.0])):
        assert len(timer.fired) == len(deadlines)
        for fired, deadline in zip(timer.fired, deadlines, strict=True):
            assert deadline <= fired - start <= deadline + 0.25
    assert gone.fired == [] and len(schedule) == 0


async def test_a_tick_fires_every_timer_due_in_it_in_one_pass(autojump_clock: trio.testing.MockClock) -> None:
    schedule = KeepaliveSchedule(1.0)
    start = math.floor(trio.current_time()) + 10
    timers = [_Timer() for _ in range(500)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule.run)
        for n, timer in enumerate(timers):
            schedule.set(timer, start + 0.1 + n * 0.0015)  # 500 deadlines spread over 0.75 s
        await trio.sleep(start + 5 - trio.current_time())
        nursery.cancel_scope.cancel()
    assert schedule.passes == 1 and schedule.fired == 500
    assert {timer.fired[0] for timer in timers} == {start + 1.0}


async def test_a_long_pass_lets_other_tasks_run(autojump_clock: trio.testing.MockClock) -> None:
    """Thousands of peers due in one tick are fired in slices, with schedule points between."""
    schedule = KeepaliveSchedule(1.0)
    other_ran = False
    seen: list[bool] = []

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    class Starter(_Timer):
        def keepalive_due(self, now: float) -> float | None:
            nursery.start_soon(other)
            return super().keepalive_due(now)

    class Observer(_Timer):
        def keepalive_due(self, now: float) -> float | None:
            seen.append(other_ran)
            return super().keepalive_due(now)

    assert PASS_SLICE < 1100
    timers = [Starter(), *(_Timer() for _ in range(1100)), Observer()]
    start = math.floor(trio.current_time()) + 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule.run)
        for timer in timers:
            schedule.set(timer, start + 0.5)
        await trio.sleep(start + 2 - trio.current_time())
        nursery.cancel_scope.cancel()
    assert all(timer.fired == [start + 1.0] for timer in timers)
    assert seen == [True] and schedule.passes == 1


def test_churn_does_not_grow_the_heap() -> None:
    schedule = KeepaliveSchedule(0.25)
    timer = _Timer()
    for n in range(10_000):
        schedule.set(timer, 100.0 + (n % 2) * 50)  # a bucket emptied and made again each time
    assert len(schedule._ticks) <= 2 * len(schedule._buckets) + 65


def test_a_bucket_emptied_by_churn_is_reused_with_its_heap_entry() -> None:
    # A peer that comes and goes within a tick (an accepting node's churn): the next
    # deadline in that tick takes the same bucket, and the heap gets no new entry.
    schedule = KeepaliveSchedule(0.25)
    timers = [_Timer() for _ in range(100)]
    for timer in timers:
        schedule.set(timer, 100.1)
        schedule.set(timer, None)
    assert len(schedule) == 0 and len(schedule._buckets) == 1 and schedule._ticks == [math.ceil(100.1 / 0.25)]


def test_emptied_buckets_whose_ticks_do_not_pass_stay_bounded() -> None:
    # No task pops their ticks: every new bucket looks for emptied ones past a bound.
    schedule = KeepaliveSchedule(0.25)
    timer, kept = _Timer(), _Timer()
    schedule.set(kept, 5.0)
    for n in range(10_000):
        schedule.set(timer, 100.0 + n)  # a tick of its own each time: the last bucket empties
    schedule.set(timer, None)
    assert len(schedule._buckets) <= 2 * len(schedule) + 65
    assert sorted(schedule._ticks) == sorted(schedule._buckets) and schedule.deadline_of(kept) == 5.0


async def test_an_emptied_bucket_fires_nothing_and_goes_when_its_tick_passes(autojump_clock: trio.testing.MockClock) -> None:
    schedule = KeepaliveSchedule(0.25)
    start = trio.current_time()
    gone, stays = _Timer(), _Timer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule.run)
        schedule.set(gone, start + 1.0)
        schedule.set(gone, None)
        schedule.set(stays, start + 2.0)
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert gone.fired == [] and len(stays.fired) == 1
    assert schedule._buckets == {} and schedule._ticks == [] and schedule.passes == 1


async def test_long_churn_without_the_task_stays_bounded_and_then_fires_every_live_deadline_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An accepting node's churn while the task does not run (it is busy elsewhere): peers
    # come with a deadline, some move it (an init, then the first ping) or leave. Emptied
    # buckets stay bounded, every bucket's tick is in the heap once, and when the task
    # runs it fires exactly the peers still there, each once, within a tick of its deadline.
    import random

    rng = random.Random(7)
    HORIZON = 10_000.0  # deadlines in 40,000 ticks: far more than peers, so most buckets hold one
    schedule = KeepaliveSchedule(0.25)
    start = trio.current_time()
    live: dict[_Timer, float] = {}

    def set_checked(timer: _Timer, deadline: float) -> None:
        before = len(schedule._buckets)
        schedule.set(timer, deadline)
        live[timer] = deadline
        if len(schedule._buckets) > before:  # a new bucket: emptied ones past the bound went
            assert len(schedule._buckets) <= 2 * len(schedule) + 64

    for n in range(20_000):
        timer = _Timer()
        set_checked(timer, start + rng.uniform(1.0, HORIZON))
        if rng.random() < 0.5:
            set_checked(timer, start + rng.uniform(1.0, HORIZON))  # moved: its old bucket may empty
        if rng.random() < 0.9:
            gone = rng.choice(list(live)) if n % 100 == 0 else timer
            schedule.set(gone, None)
            del live[gone]
    assert len(schedule) == len(live)
    assert sorted(schedule._ticks) == sorted(schedule._buckets) and len(set(schedule._ticks)) == len(schedule._ticks)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule.run)
        await trio.sleep(HORIZON + 1)
        nursery.cancel_scope.cancel()
    for timer, deadline in live.items():
        assert len(timer.fired) == 1 and deadline <= timer.fired[0] <= deadline + 0.25
    assert schedule._buckets == {} and schedule._ticks == [] and len(schedule) == 0


# ----------------------------------------------------------------- peers on a node


async def test_each_peer_is_pinged_on_its_own_schedule(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    tick = node.keepalive.resolution
    async with running(node), trio.open_nursery() as nursery:
        pings: list[list[float]] = []
        ready: list[float] = []
        for _ in range(3):
            pings.append([])
            await _answering_peer(network, node, pings[-1], nursery)
            ready.append(trio.current_time())
            await trio.sleep(17.3)  # each peer's minute starts elsewhere
        await trio.sleep(4 * PING_INTERVAL - trio.current_time() + ready[0])
        assert running_tasks("KeepaliveSchedule.run") == 1  # one task for every peer's timers
        nursery.cancel_scope.cancel()
    for began, times in zip(ready, pings, strict=True):
        assert len(times) >= 3
        for n, at in enumerate(times, 1):
            # the n-th ping a minute after the one before (pongs come back at once here)
            assert began + n * PING_INTERVAL <= at <= began + n * (PING_INTERVAL + tick) + 0.001


async def test_only_the_peer_that_stops_answering_is_dropped_at_its_pong_deadline(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    tick = node.keepalive.resolution
    async with running(node), trio.open_nursery() as nursery:
        with record_events(node) as events:
            pings: list[float] = []
            _, answering = await _answering_peer(network, node, pings, nursery)
            await trio.sleep(5)
            silent = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
            await silent.exchange_init(Init())  # and then never reads again
            await events.wait_for(lambda e: isinstance(e, PeerConnected) and e.node_id == silent.key.node_id)
            ready = trio.current_time()
            gone = await events.wait_for(PeerDisconnected)
            assert gone.node_id == silent.key.node_id and "did not answer ping" in gone.reason
            assert ready + PING_INTERVAL + PONG_TIMEOUT <= trio.current_time() <= ready + PING_INTERVAL + PONG_TIMEOUT + 2 * tick
            await trio.sleep(3 * PING_INTERVAL)
            assert answering.is_ready and node.peers.get(answering.node_id) is answering
            assert len(events.of(PeerDisconnected)) == 1 and len(pings) >= 4
        assert silent.key.node_id not in node.peers
        assert answering not in node.keepalive._tick_of or node.keepalive.deadline_of(answering) is not None
        nursery.cancel_scope.cancel()
    await silent.aclose()


async def test_an_idle_peer_waits_in_one_receive_that_the_keepalive_never_cancels(autojump_clock: trio.testing.MockClock) -> None:
    """Keepalive pings leave from the schedule's task; the reading task wakes for the pongs alone."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node), trio.open_nursery() as nursery:
        pings: list[float] = []
        _, peer = await _answering_peer(network, node, pings, nursery)
        await trio.testing.wait_all_tasks_blocked()
        receives = cancelled = 0
        reader: list[trio.lowlevel.Task] = []
        original = peer.conn.receive_some

        async def counting_receive(max_bytes: int = 65536) -> bytes:
            nonlocal receives, cancelled
            receives += 1
            reader.append(trio.lowlevel.current_task())
            try:
                return await original(max_bytes)
            except trio.Cancelled:
                cancelled += 1
                raise

        # The reader's receive under way ends with the first pong; every later one is counted.
        peer.conn.receive_some = counting_receive  # type: ignore[method-assign]
        steps = 0

        class Steps(trio.abc.Instrument):
            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                nonlocal steps
                if reader and task is reader[0]:
                    steps += 1

        await trio.sleep(PING_INTERVAL + 1)  # the first pong: from now on the reader is counted
        assert len(pings) == 1 and receives == 1
        instrument = Steps()
        trio.lowlevel.add_instrument(instrument)
        try:
            await trio.sleep(10 * PING_INTERVAL)
        finally:
            trio.lowlevel.remove_instrument(instrument)
        assert len(pings) == 11
        # one receive per pong (the last still waiting), none of them cut short by a timer
        assert cancelled == 0 and receives == 11
        # the reading task ran only to take each pong (its receive's own schedule points)
        assert steps <= 2 * 10
        nursery.cancel_scope.cancel()


async def test_many_peers_are_pinged_by_one_task_in_one_pass(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    count = 60
    async with running(node), trio.open_nursery() as nursery:
        pings: list[list[float]] = [[] for _ in range(count)]
        for times in pings:
            await _answering_peer(network, node, times, nursery)  # all within one virtual instant
        assert len(node.keepalive) == count
        passes, fired = node.keepalive.passes, node.keepalive.fired
        await trio.sleep(PING_INTERVAL + 1)
        assert node.keepalive.passes - passes == 1 and node.keepalive.fired - fired == count
        assert all(len(times) == 1 for times in pings) and len({times[0] for times in pings}) == 1
        assert running_tasks("KeepaliveSchedule.run") == 1
        nursery.cancel_scope.cancel()


async def test_a_peer_that_sends_no_init_is_dropped_at_the_init_deadline(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT, init_timeout=20.0)
    tick = node.keepalive.resolution
    async with running(node):
        with caplog.at_level("INFO", logger="lnpmsg.node"):
            raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
            began = trio.current_time()
            received = await raw.receive_until_closed(timeout=60)
            assert began + 20.0 <= trio.current_time() <= began + 20.0 + 2 * tick
            # our init, then the warning that says why
            assert [DEFAULT_REGISTRY.decode(m).TYPE for m in received] == [Init.TYPE, WarningMessage.TYPE]
            assert b"no init in time" in DEFAULT_REGISTRY.decode(received[1]).data
            await trio.testing.wait_all_tasks_blocked()
        assert len(node.keepalive) == 0 and not node.peers
        # the node was told (its log line for the session's close)
        assert any("no init in time" in record.getMessage() for record in caplog.records)
        await raw.aclose()


async def test_a_ping_the_socket_takes_in_part_is_finished_by_a_writer(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node), trio.open_nursery() as nursery:
        pings: list[float] = []
        _, peer = await _answering_peer(network, node, pings, nursery)
        original = peer.conn.send_nowait
        offered: list[int] = []

        def takes_half(data: bytes) -> int:
            offered.append(len(data))
            return original(data[: len(data) // 2])

        peer.conn.send_nowait = takes_half  # type: ignore[method-assign]
        await trio.sleep(3 * PING_INTERVAL + 1)
        # each ping left half at once, half through a writer, and arrived whole: answered every time
        assert len(offered) == 3 and len(pings) == 3 and peer.is_ready
        assert peer.counters.bytes_out >= sum(offered)
        nursery.cancel_scope.cancel()


async def test_a_reply_queued_behind_a_pong_leaves_after_it(autojump_clock: trio.testing.MockClock) -> None:
    """The peer pings us and sends a message in the same write; the handler's reply follows our pong."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    custom = 32769

    async def echo(peer: Peer, message: object) -> None:
        await peer.send(custom.to_bytes(2, "big") + b"reply")

    node.add_handler(custom, echo)
    async with running(node):
        with record_events(node) as events:
            raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
            await raw.exchange_init(Init())
            await events.wait_for(PeerConnected)
        await raw.send_raw(raw.encrypt(Ping(num_pong_bytes=3).encode()) + raw.encrypt(custom.to_bytes(2, "big") + b"ask"))
        pong, reply = DEFAULT_REGISTRY.decode(await raw.receive()), await raw.receive()
        assert isinstance(pong, Pong) and pong.ignored == bytes(3)
        assert reply == custom.to_bytes(2, "big") + b"reply"
        await raw.aclose()
