"""The in-memory transport (lnpmsg.testing.memory): its fault knobs, its
addresses, its listener, and the connection checks failing a broken
connection. Node-level and connection-level conformance over it run with
every other medium in tests/test_conformance.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from lnpmsg.node.events import PeerDisconnected
from lnpmsg.testing.conformance import ConformanceFailure
from lnpmsg.testing.connections import CONNECTION_CHECKS, as_pair, check_connection
from lnpmsg.testing.memory import (
    LISTEN_BACKLOG,
    MemoryConnection,
    MemoryNetwork,
    MemoryTransport,
    memory_connection_pair,
)
from lnpmsg.testing.virtual import memory_node, node_pair, record_events
from lnpmsg.transports.address import PeerAddress, format_peer_address, parse_listen_address, parse_peer_address
from lnpmsg.transports.base import ConnectionClosed, TransportError

NODE = "02" + "ab" * 32


async def test_a_pair_passes_the_connection_checks() -> None:
    await check_connection(lambda: as_pair(memory_connection_pair()))


async def test_a_small_buffer_holds_the_sender_back_until_the_receiver_reads(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_connection_pair(buffer_size=100)
    sent = trio.Event()

    async def send() -> None:
        await a.send_frames([bytes(250)])
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set() and a.bytes_in_flight == 100
        got = b""
        while len(got) < 250:
            got += await b.receive_some(1000)
        await sent.wait()


async def test_hang_delivers_nothing_until_resumed_and_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_connection_pair()
    a.hang()
    await a.send_frames([b"held"])
    with trio.move_on_after(3600) as waiting:
        await b.receive_some()
    assert waiting.cancelled_caught  # an hour of virtual time, nothing arrived
    b.resume()
    assert await b.receive_some() == b"held"


async def test_drop_loses_what_is_in_flight_and_fails_both_ends() -> None:
    a, b = memory_connection_pair()
    await a.send_frames([b"lost"])
    a.drop("cable cut")
    for operation in (b.receive_some, lambda: a.send_frames([b"x"]), a.receive_some, lambda: b.send_frames([b"x"])):
        with pytest.raises(ConnectionClosed, match="cable cut"):
            await operation()


async def test_a_drop_wakes_a_waiting_receiver() -> None:
    a, b = memory_connection_pair()
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(ConnectionClosed, match="connection reset"):
                await b.receive_some()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        a.drop()


async def test_sending_to_a_closed_end_fails() -> None:
    a, b = memory_connection_pair()
    await b.aclose()
    with pytest.raises(ConnectionClosed, match="closed by the other end"):
        await a.send_frames([b"x"])


async def test_two_tasks_may_not_receive_at_once() -> None:
    a, b = memory_connection_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some()
        await a.send_frames([b"x"])


async def test_dial_and_listen_by_name() -> None:
    network = MemoryNetwork()
    transport = network.transport()
    with pytest.raises(TransportError, match="nothing listens on mem://nobody"):
        await transport.dial("nobody")
    listener = await transport.listen("")
    named = await transport.listen("alice")
    assert listener.local_address == "mem-1" and named.local_address == "alice"
    assert network.names == ["alice", "mem-1"]
    with pytest.raises(TransportError, match="already listened on"):
        await transport.listen("alice")
    with pytest.raises(TransportError, match="bad memory listener name"):
        await transport.listen("no spaces")
    got: list[bytes] = []

    async def handler(conn: object) -> None:
        assert isinstance(conn, MemoryConnection)
        got.append(await conn.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(named.serve, handler)
        conn = await MemoryTransport(network).dial("alice")
        await conn.send_frames([b"hi"])
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"hi"] and named.accepted == 1
        assert conn.remote_address == "alice" and conn.other.remote_address.startswith("alice-client-")
        await named.aclose()
        await listener.aclose()
    assert network.names == []
    with pytest.raises(TransportError, match="nothing listens"):
        await transport.dial("alice")


async def test_a_full_backlog_refuses_and_closing_refuses_the_waiting() -> None:
    network = MemoryNetwork()
    listener = await network.transport().listen("busy")  # never served
    waiting = [await network.transport().dial("busy") for _ in range(LISTEN_BACKLOG)]
    with pytest.raises(TransportError, match="connections waiting"):
        await network.transport().dial("busy")
    await listener.aclose()
    assert await waiting[0].receive_some() == b""  # closed by the listener, not left hanging


async def test_hung_dials_wait_until_resumed(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    await network.transport().listen("slow")
    network.hang_dials("slow")
    with trio.move_on_after(600) as waiting:
        await network.transport().dial("slow")
    assert waiting.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.transport().dial, "slow")
        await trio.testing.wait_all_tasks_blocked()
        network.resume_dials("slow")
    assert len(network.connections) == 1


def test_memory_addresses_round_trip() -> None:
    address = parse_peer_address(f"mem://{NODE}@alice")
    assert address == PeerAddress("mem", "alice", bytes.fromhex(NODE))
    assert format_peer_address(address) == f"mem://{NODE}@alice"
    assert parse_listen_address("mem://") == PeerAddress("mem", "")
    with pytest.raises(ValueError, match="needs a listener name"):
        parse_peer_address(f"mem://{NODE}@")


async def test_a_dropped_link_disconnects_both_nodes(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with node_pair(network=network) as (a, b):
        with record_events(a) as a_events, record_events(b) as b_events:
            dialed, _accepted = network.connections[-1]
            dialed.drop()
            assert "reset" in (await a_events.wait_for(PeerDisconnected)).reason
            await b_events.wait_for(PeerDisconnected)
        assert not a.peers and not b.peers


async def test_a_hung_link_is_found_out_by_the_keepalive_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with node_pair(network=network, ping_interval=60.0, pong_timeout=30.0) as (a, _b):
        with record_events(a) as events:
            began = trio.current_time()
            network.connections[-1][0].hang()
            dropped = await events.wait_for(PeerDisconnected)
        # a ping goes out within a minute and its pong never comes: 30 s later the peer is dropped
        assert "pong" in dropped.reason or "ping" in dropped.reason
        assert 30.0 <= trio.current_time() - began <= 60.0 + 30.0 + 1.0


async def test_a_node_reached_by_name_in_memory() -> None:
    network = MemoryNetwork()
    a = memory_node(network)
    b = memory_node(network, listen=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert a.addresses == [f"mem://{a.node_id.hex()}@mem-1"]
        peer = await b.connect(a.addresses[0])
        assert peer.transport_kind == "mem" and peer.is_ready
        a.stop()
        b.stop()


# ------------------------------------------- the checks fail broken connections


class _OverReads(MemoryConnection):
    """A broken connection: ``receive_some(n)`` may return n + 1 bytes."""

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return await super().receive_some(max_bytes + 1)


class _Reorders(MemoryConnection):
    """A broken connection: a batch's frames go out in reverse order."""

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await super().send_frames(list(reversed(frames)))


def _broken_pair(cls: type[MemoryConnection]) -> tuple[MemoryConnection, MemoryConnection]:
    a, b = memory_connection_pair()
    for conn in (a, b):
        conn.__class__ = cls
    return a, b


@pytest.mark.parametrize(
    ("cls", "check", "complaint"),
    [
        (_OverReads, "receive_bound", "receive_some"),
        (_Reorders, "round_trip", "out of order"),
    ],
)
async def test_the_connection_checks_catch_a_broken_connection(cls: type[MemoryConnection], check: str, complaint: str) -> None:
    with pytest.raises(ConformanceFailure, match=complaint):
        await CONNECTION_CHECKS[check](lambda: as_pair(_broken_pair(cls)))


def test_the_kit_exports_its_names_from_the_package() -> None:
    import lnpmsg.testing

    for name in lnpmsg.testing.__all__:
        assert getattr(lnpmsg.testing, name).__name__ == name
    assert set(lnpmsg.testing.__all__) <= set(dir(lnpmsg.testing))


async def test_the_network_forgets_connections_closed_at_both_ends() -> None:
    network = MemoryNetwork()
    listener = await network.transport().listen("x")
    first = await network.transport().dial("x")
    await first.aclose()
    await first.other.aclose()
    second = await network.transport().dial("x")
    assert network.connections == [(second, second.other)]
    await listener.aclose()
