"""A peer's tasks and events, in virtual time over the in-memory transport.

An idle peer holds its reading task only: the writer runs while there is
something to send and the next message starts another, in order; one
message sent after a read of one message leaves from the sending task. Closing
flushes what is queued (a writer is started for it) or, with nothing queued,
stops the peer at once. The ``closed`` and ``ready`` events are made when
first asked for, so they must tell the truth however late that is."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.node import Node
from lnpmsg.node.peer import Peer, PeerClosedError
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running, running_tasks
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.virtual import memory_node, record_events
from lnpmsg.transports.base import ConnectionClosed
from lnpmsg.wire import DEFAULT_REGISTRY, Error, Init, Ping, Pong

CUSTOM = 32769
PING_INTERVAL = 60.0
PONG_TIMEOUT = 30.0


def _custom(n: int) -> bytes:
    return CUSTOM.to_bytes(2, "big") + n.to_bytes(4, "big")


async def _connected(network: MemoryNetwork, node: Node) -> tuple[RawPeer, Peer]:
    """A raw peer with init done both ways, and the node's Peer for it."""
    with record_events(node) as events:
        raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
        assert DEFAULT_REGISTRY.decode(await raw.exchange_init(Init())).TYPE == Init.TYPE
        await events.wait_for(PeerConnected)
    return raw, node.peers[raw.key.node_id]


async def test_an_idle_peer_runs_no_writer_and_each_message_starts_one_in_order(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        raw, peer = await _connected(network, node)
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks("PeerWriting._write_loop") == 0  # init is out: the writer ended with an empty outbox

        for n in range(3):
            peer.send_nowait(_custom(n))
        assert running_tasks("PeerWriting._write_loop") == 1  # one writer for the three, not one each
        assert [await raw.receive() for _ in range(3)] == [_custom(n) for n in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks("PeerWriting._write_loop") == 0

        # after the writer ended, the next message starts another and nothing is lost
        await peer.send(_custom(3))
        assert await raw.receive() == _custom(3)

        # the keepalive: each ping is written by a writer that then ends
        pings = 0
        with trio.move_on_after(5 * PING_INTERVAL + 1):
            while True:
                message = DEFAULT_REGISTRY.decode(await raw.receive())
                assert isinstance(message, Ping)
                pings += 1
                await raw.send(Pong(ignored=bytes(message.num_pong_bytes)))
        await trio.testing.wait_all_tasks_blocked()
        assert pings == 5 and running_tasks("PeerWriting._write_loop") == 0
        assert node.peers.get(raw.key.node_id) is peer and peer.ping_rtt is not None
        await raw.aclose()


async def test_a_reply_to_a_read_leaves_without_a_writer_and_a_burst_still_coalesces(autojump_clock: trio.testing.MockClock) -> None:
    """One message per read goes to the connection from the sending task (as a pong does);
    more before the next read go to one writer task, in order after it."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    writers_seen: list[int] = []

    def answer(peer: Peer, message: object) -> None:
        count = 1 if not writers_seen else 3
        for n in range(count):
            peer.send_nowait(_custom(100 + n))
            writers_seen.append(running_tasks("PeerWriting._write_loop"))

    node.add_handler(CUSTOM, answer)
    async with running(node):
        raw, peer = await _connected(network, node)
        await trio.testing.wait_all_tasks_blocked()
        await raw.send(_custom(1))
        assert await raw.receive() == _custom(100)
        assert writers_seen == [0]  # written at once: no writer task for one reply
        await trio.testing.wait_all_tasks_blocked()

        await raw.send(_custom(2))  # this time three replies: the first at once, the others to a writer
        assert [await raw.receive() for _ in range(3)] == [_custom(100 + n) for n in range(3)]
        assert writers_seen == [0, 0, 1, 1]
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks("PeerWriting._write_loop") == 0
        sent = peer.counters.messages_out
        peer.send_nowait(_custom(7))  # no read since the last direct write: the writer's path
        assert running_tasks("PeerWriting._write_loop") == 1
        assert await raw.receive() == _custom(7) and peer.counters.messages_out == sent + 1
        await raw.aclose()


async def test_closing_an_idle_peer_stops_it_at_once(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        raw, peer = await _connected(network, node)
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        peer.close("nothing to say")
        assert running_tasks("PeerWriting._write_loop") == 0  # nothing queued: no writer is started to flush nothing
        assert await raw.receive_until_closed() == []
        await peer.closed.wait()
        assert trio.current_time() == began and peer.close_reason == "nothing to say"


async def test_closing_with_an_error_flushes_it_first(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        raw, peer = await _connected(network, node)
        await trio.testing.wait_all_tasks_blocked()
        peer.send_nowait(_custom(7))
        peer.close("going away", send_error=True)
        received = await raw.receive_until_closed()
        assert received[0] == _custom(7)
        (error,) = [DEFAULT_REGISTRY.decode(m) for m in received[1:]]
        assert isinstance(error, Error) and b"going away" in error.data
        await peer.closed.wait()


async def test_the_events_asked_for_late_are_already_set(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        with record_events(node) as events:
            raw, peer = await _connected(network, node)  # inbound: the node waits on neither event
            await trio.sleep(10)
            assert peer.ready.is_set() and peer.ready is peer.ready
            closed = peer.closed
            assert not closed.is_set()
            await raw.aclose()
            await events.wait_for(PeerDisconnected)
        await trio.testing.wait_all_tasks_blocked()
        assert closed.is_set() and peer.closed is closed

        # a peer whose events nobody asked for until after it closed
        with record_events(node) as events:
            raw, peer = await _connected(network, node)
            await raw.aclose()
            await events.wait_for(PeerDisconnected)
        await trio.testing.wait_all_tasks_blocked()
        assert peer.closed.is_set() and peer.ready.is_set()


async def test_an_init_the_peer_never_reads_is_given_up_at_the_init_timeout(autojump_clock: trio.testing.MockClock) -> None:
    # Pipes of 40 bytes: the acts pass in pieces, but our init (~80 bytes on the wire) only
    # in part while the peer reads nothing, so the first write (from the peer's own task) waits.
    network = MemoryNetwork(buffer_size=40)
    node = memory_node(network, init_timeout=10.0)
    async with running(node):
        began = trio.current_time()
        raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
        with trio.fail_after(60):
            while True:  # nothing is read; an empty send now and then tells when the node hung up
                try:
                    await raw.conn.send_frames([b""])
                except ConnectionClosed:
                    break
                await trio.sleep(0.5)
        assert 10.0 <= trio.current_time() - began <= 11.0, trio.current_time() - began
        assert node.peers == {}
        await raw.aclose()


async def test_a_send_when_the_peers_tasks_have_ended_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    """The node's stop cancels a peer's tasks; when the last one ends, its nursery is closed, and
    other tasks (an app answering a query) may still send before the peer's run() resumes to
    close it. They get PeerClosedError, as a moment later, not trio's RuntimeError."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        raw, peer = await _connected(network, node)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as ended:
            pass  # closed to new arrivals, like run()'s nursery at that moment
        real, peer._nursery = peer._nursery, ended
        peer._direct_write = False  # as when its read loop has ended: no send leaves directly
        try:
            with pytest.raises(PeerClosedError, match="closing"):
                await peer.send(_custom(1))
            with pytest.raises(PeerClosedError, match="closing"):
                peer.send_nowait(_custom(2))
            assert peer.queued_bytes == 0  # nothing queued that nobody will write
        finally:
            peer._nursery = real
        await peer.send(_custom(3))  # the peer's own nursery: sent as usual
        assert await raw.receive() == _custom(3)
        await raw.aclose()


async def test_a_handler_may_keep_the_reading_task_and_hand_the_reading_on(autojump_clock: trio.testing.MockClock) -> None:
    # Peer.hold_reading: a handler of a read of one message may await in the reading
    # task; nothing more is read until it ends or calls resume_reading, after which
    # another task reads on while it goes on waiting. A read of several is never held.
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    seen: list[object] = []
    gate = trio.Event()
    scopes: list[trio.CancelScope] = []

    async def handler(peer: Peer, message) -> None:  # type: ignore[no-untyped-def]
        n = int.from_bytes(message.payload, "big")
        scope = peer.hold_reading()
        held = scope is not None
        seen.append((n, held))
        if n == 6 and scope is not None:
            scopes.append(scope)
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                seen.append("6 cancelled")
                raise
        elif n in (0, 2) and held:
            await trio.sleep(1)  # kept: the next message waits in the socket
            seen.append(f"{n} slept")
            if n == 0:
                peer.resume_reading()  # from here another task reads on
                await gate.wait()
                seen.append("0 through the gate")
        elif n == 1:
            gate.set()

    node.add_handler(CUSTOM, handler)
    async with running(node):
        raw, peer = await _connected(network, node)
        await raw.send(_custom(9))  # the first ask: no, but the reading task enters its scope
        await trio.sleep(0.1)
        assert seen == [(9, False)]
        seen.clear()
        await raw.send(_custom(0))
        await trio.sleep(0.1)
        await raw.send(_custom(1))  # read only once 0 hands the reading on
        await trio.sleep(0.5)
        assert seen == [(0, True)]
        await trio.sleep(1)
        assert seen == [(0, True), "0 slept", (1, True), "0 through the gate"]
        assert running_tasks("PeerReading._read_loop") == 1  # the reading went on in a task of its own
        # a handler that ends while it keeps the reading task: that task reads on
        seen.clear()
        await raw.send(_custom(2))
        await trio.sleep(0.1)
        await raw.send(_custom(3))
        await trio.sleep(0.5)
        assert seen == [(2, True)]
        await trio.sleep(1)
        assert seen == [(2, True), "2 slept", (3, True)]
        assert running_tasks("PeerReading._read_loop") == 1
        # a read of several messages: none is held
        seen.clear()
        await raw.send_raw(raw.encrypt(_custom(4)) + raw.encrypt(_custom(5)))
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [(4, False), (5, False)]
        # the scope it gets cancels the handler alone: the task reads on, nothing lost
        seen.clear()
        await raw.send(_custom(6))
        await trio.sleep(1)
        scopes[0].cancel()
        await trio.sleep(0.1)
        await raw.send(_custom(7))
        await trio.sleep(0.1)
        assert seen == [(6, True), "6 cancelled", (7, True)]
        assert running_tasks("PeerReading._read_loop") == 1
        assert peer.is_ready


async def test_a_peer_ends_only_after_its_other_tasks(autojump_clock: trio.testing.MockClock) -> None:
    """The peer's tasks besides its reading one run in the node's nursery, yet belong to the
    peer: its end cancels them, and run() (so ``closed``) ends only once they have ended."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(node):
        raw, peer = await _connected(network, node)
        release = trio.Event()
        steps: list[str] = []

        async def task() -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                steps.append("cancelled")
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await release.wait()
                steps.append("ended")

        assert peer._start_task(task)
        await raw.aclose()  # the peer's reading ends it
        await trio.sleep(10)
        assert steps == ["cancelled"] and not peer.closed.is_set()
        release.set()
        await peer.closed.wait()
        assert steps == ["cancelled", "ended"]
        assert not peer._start_task(task)  # nothing starts once the peer is over


async def test_a_peers_task_that_fails_ends_the_peer_and_its_run_raises_it(autojump_clock: trio.testing.MockClock) -> None:
    """A bug in a task of the peer's is not lost in the node's nursery: as with a nursery of
    the peer's own, the peer stops and its run() raises the error (here out of the node)."""
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    closed: list[bool] = []
    with pytest.raises(BaseExceptionGroup) as raised:
        async with running(node):
            raw, peer = await _connected(network, node)

            async def failing() -> None:
                raise RuntimeError("a bug in a peer's task")

            assert peer._start_task(failing)
            try:
                await trio.sleep_forever()
            finally:
                closed.append(peer.closed.is_set())
    matched, _rest = raised.value.split(RuntimeError)
    assert matched is not None and "a bug in a peer's task" in repr(matched)
    assert closed == [True]
