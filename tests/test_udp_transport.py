"""UDP transport: lnp/1 over QUIC (aioquic's core driven from trio), on 127.0.0.1 only."""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from aioquic.quic.events import StreamDataReceived
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.testing.lossy_udp import LossyUdpRelay
from lnpmsg.transports.base import Connection, ConnectionClosed, TransportError
from lnpmsg.transports.udp import UdpConnection, UdpListener, UdpTransport
from lnpmsg.transports.udp_quic import (
    MAX_PTO_BACKOFF,
    STREAM_ID,
    LnpQuicConnection,
    classify_datagram,
    client_configuration,
    self_signed_certificate,
    server_configuration,
)

#: largest BOLT-8 frame: 2-byte length + 16-byte MAC, a 65535-byte body + 16-byte MAC
MAX_FRAME = 65535 + 34

#: random bytes that frames are cut from, so that test data costs no generation time
POOL = random.Random(0).randbytes(1 << 20)

#: how long any single test step may take before the test fails (a hang guard, not a speed check)
STEP = 30


def frames(seed: int, count: int, max_size: int = MAX_FRAME) -> Iterator[bytes]:
    """``count`` frames of random sizes; each starts with its index, so order errors show."""
    rng = random.Random(seed)
    for index in range(count):
        size = rng.randint(1, max_size)
        start = rng.randrange(len(POOL) - size)
        head = index.to_bytes(4, "big")[:size]
        yield head + POOL[start + len(head) : start + size]


class StreamChecker:
    """Compares received bytes, chunk by chunk, with the frames the peer sent."""

    def __init__(self, seed: int, count: int, max_size: int = MAX_FRAME) -> None:
        self._expected = frames(seed, count, max_size)
        self._pending = bytearray()
        self.total = sum(len(f) for f in frames(seed, count, max_size))
        self.received = 0

    def feed(self, data: bytes) -> None:
        while len(self._pending) < len(data):
            frame = next(self._expected, None)
            assert frame is not None, "received more bytes than were sent"
            self._pending += frame
        assert self._pending[: len(data)] == data, f"stream differs after {self.received} bytes"
        del self._pending[: len(data)]
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.received == self.total


async def exchange(conn: UdpConnection, send_seed: int, receive_seed: int, count: int, max_size: int = MAX_FRAME) -> None:
    """Send our frames and check the peer's, at the same time, until both are done."""

    async def send() -> None:
        batch: list[bytes] = []
        for frame in frames(send_seed, count, max_size):
            batch.append(frame)
            if len(batch) == 16:
                await conn.send_frames(batch)
                batch = []
        if batch:
            await conn.send_frames(batch)

    checker = StreamChecker(receive_seed, count, max_size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while not checker.complete:
            data = await conn.receive_some()
            assert data, f"stream ended after {checker.received} of {checker.total} bytes"
            checker.feed(data)


@asynccontextmanager
async def serving(
    transport: UdpTransport, handler: Callable[[Any], Awaitable[None]]
) -> AsyncIterator[UdpListener]:
    listener = await transport.listen("127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, handler)
        try:
            yield listener
        finally:
            await listener.aclose()
            nursery.cancel_scope.cancel()


async def echo(conn: Connection) -> None:
    while data := await conn.receive_some():
        await conn.send_frames([data])


async def test_round_trip() -> None:
    transport = UdpTransport()
    assert transport.kind == "udp"
    async with serving(transport, echo) as listener:
        host, port = listener.local_address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with trio.fail_after(STEP):
            conn = await transport.dial(listener.local_address)
            assert conn.kind == "udp" and conn.remote_address == listener.local_address
            await conn.send_frames([b"hello ", b"lnp", b"/1"])
            got = b""
            while len(got) < len(b"hello lnp/1"):
                got += await conn.receive_some()
            assert got == b"hello lnp/1"
            await conn.aclose()
        assert listener.stats["accepted"] == 1
        assert listener.stats["garbage"] == listener.stats["unroutable"] == 0


async def test_dial_nobody_fails_cleanly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # a port that stays silent
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(TransportError, match="handshake"):
            await UdpTransport(handshake_timeout=0.5).dial(target)
    with pytest.raises(TransportError):
        await UdpTransport().dial("127.0.0.1")  # no port


async def test_10000_frames_both_ways_loopback() -> None:
    count = 10_000
    server_done = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        await exchange(conn, send_seed=2, receive_seed=1, count=count)
        server_done.set()

    transport = UdpTransport()
    async with serving(transport, handler) as listener:
        with trio.fail_after(120):
            conn = await transport.dial(listener.local_address)
            await exchange(conn, send_seed=1, receive_seed=2, count=count)
            await server_done.wait()
            await conn.aclose()


@pytest.mark.parametrize("loss", [0.05, 0.20])
async def test_lossy_reordering_path_delivers_in_order(loss: float) -> None:
    count = 2_000
    max_size = 4096  # QUIC at 20 % loss crawls; the point is order and integrity, not bulk
    server_done = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        await exchange(conn, send_seed=4, receive_seed=3, count=count, max_size=max_size)
        server_done.set()

    transport = UdpTransport()
    async with (
        serving(transport, handler) as listener,
        LossyUdpRelay(listener.local_address, loss=loss, reorder=loss, seed=7) as relay,
    ):
        with trio.fail_after(STEP):
            conn = await transport.dial(relay.address)
            await exchange(conn, send_seed=3, receive_seed=4, count=count, max_size=max_size)
            await server_done.wait()
            await conn.aclose()
        assert relay.stats["dropped"] > 0 and relay.stats["delayed"] > 0


async def test_connection_migration_keeps_the_connection() -> None:
    count = 600
    server_conns: list[UdpConnection] = []
    halfway = trio.Event()
    migrated = trio.Event()
    server_done = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        server_conns.append(conn)
        checker = StreamChecker(5, count)
        while not checker.complete:
            data = await conn.receive_some()
            assert data
            checker.feed(data)
            if checker.received > checker.total // 2:
                halfway.set()
        await conn.send_frames([b"all received"])
        server_done.set()
        assert await conn.receive_some() == b""

    transport = UdpTransport()
    async with (
        serving(transport, handler) as listener,
        LossyUdpRelay(listener.local_address, loss=0.02, reorder=0.02, seed=11) as relay,
    ):

        async def migrate_midway() -> None:
            await halfway.wait()
            await relay.change_source_port()
            migrated.set()

        with trio.fail_after(STEP):
            conn = await transport.dial(relay.address)
            old_port = relay.source_port
            async with trio.open_nursery() as nursery:
                nursery.start_soon(migrate_midway)
                for frame in frames(5, count):
                    await conn.send_frames([frame])
            await migrated.wait()
            await server_done.wait()
            assert await conn.receive_some() == b"all received"
            new_port = relay.source_port
            assert new_port != old_port
            # Still the one connection, and the listener now talks to the new port.
            assert len(server_conns) == 1 and listener.stats["accepted"] == 1
            assert server_conns[0].remote_address == f"127.0.0.1:{new_port}"
            assert listener.connection_count == 1
            await conn.aclose()


@pytest.mark.parametrize("closer", ["dialer", "listener"])
async def test_close_from_either_side_gives_eof(closer: str) -> None:
    server_saw: list[bytes] = []
    server_conn: list[UdpConnection] = []
    accepted = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        server_conn.append(conn)
        server_saw.append(await conn.receive_some())
        accepted.set()
        if closer == "listener":
            await conn.send_frames([b"last words"])
            await conn.aclose()
            with pytest.raises(ConnectionClosed):
                await conn.send_frames([b"too late"])
            with pytest.raises(ConnectionClosed):
                await conn.receive_some()
        else:
            server_saw.append(await conn.receive_some())
            server_saw.append(await conn.receive_some())

    transport = UdpTransport()
    async with serving(transport, handler) as listener:
        with trio.fail_after(STEP):
            conn = await transport.dial(listener.local_address)
            await conn.send_frames([b"hi"])
            await accepted.wait()
            if closer == "dialer":
                await conn.send_frames([b"bye"])
                await conn.aclose()
                await conn.aclose()  # idempotent
                with pytest.raises(ConnectionClosed):
                    await conn.send_frames([b"too late"])
                while len(server_saw) < 3:
                    await trio.sleep(0.01)
                assert server_saw == [b"hi", b"bye", b""]
            else:
                got = b""
                while data := await conn.receive_some():
                    got += data
                assert got == b"last words"
                assert await conn.receive_some() == b""
                # Once the listener's side is gone entirely, sending fails too.
                while not conn.is_closed:
                    await trio.sleep(0.01)
                with pytest.raises(ConnectionClosed):
                    await conn.send_frames([b"anyone?"])
                await conn.aclose()


async def test_listener_close_ends_its_connections() -> None:
    transport = UdpTransport()
    listener = await transport.listen("127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, echo)
        with trio.fail_after(STEP):
            conn = await transport.dial(listener.local_address)
            await conn.send_frames([b"ping"])
            assert await conn.receive_some() == b"ping"
            await listener.aclose()
            assert await conn.receive_some() == b""
            await conn.aclose()


async def test_reader_that_stops_reading_blocks_the_sender() -> None:
    window = send_limit = 256 * 1024
    transport = UdpTransport(receive_window=window, send_buffer_limit=send_limit)
    total = 8 * 1024 * 1024
    chunk = POOL[: 64 * 1024]
    reading = trio.Event()
    server_conn: list[UdpConnection] = []
    received = bytearray()
    receiver_done = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        server_conn.append(conn)
        await reading.wait()
        while len(received) < total:
            data = await conn.receive_some()
            assert data
            received.extend(data)
        receiver_done.set()

    taken = 0
    sender_done = trio.Event()

    async with serving(transport, handler) as listener:
        conn = await transport.dial(listener.local_address)

        async def sender() -> None:
            nonlocal taken
            while taken < total:
                await conn.send_frames([chunk])
                taken += len(chunk)
            sender_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            with trio.move_on_after(1.5):  # generous: unblocked, 8 MiB go through in far less
                await sender_done.wait()
            assert not sender_done.is_set(), "send_frames kept taking data nobody reads"
            # What the sender took is bounded by the peer's window plus our send buffer.
            assert 0 < taken <= window + send_limit + len(chunk)
            assert server_conn[0].buffered_bytes <= window
            assert conn._core.unacked_bytes() <= send_limit + len(chunk)
            reading.set()
            with trio.fail_after(STEP):
                await sender_done.wait()
                await receiver_done.wait()
        assert bytes(received) == chunk * (total // len(chunk))
        await conn.aclose()


async def test_garbage_datagrams_are_counted_and_harmless() -> None:
    transport = UdpTransport()
    server_conns: list[UdpConnection] = []

    async def handler(conn: UdpConnection) -> None:
        server_conns.append(conn)
        await echo(conn)

    async with serving(transport, handler) as listener:
        with trio.fail_after(STEP):
            conn = await transport.dial(listener.local_address)
            await conn.send_frames([b"before"])
            assert await conn.receive_some() == b"before"

            rng = random.Random(3)
            target = ("127.0.0.1", listener.port)
            routed_cid = next(iter(server_conns[0]._cids))
            not_quic = [b"", b"\x00", rng.randbytes(5), bytes([0x00]) + rng.randbytes(300)]  # fixed bit clear
            unknown_cid = [bytes([0x40]) + rng.randbytes(8) + rng.randbytes(100) for _ in range(5)]
            fake_initial = (
                bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([8]) + rng.randbytes(8) + bytes([8]) + rng.randbytes(8)
                + b"\x00" + (0x4000 | 1300).to_bytes(2, "big") + rng.randbytes(1300)
            )
            forged_for_conn = [bytes([0x40]) + routed_cid + rng.randbytes(200) for _ in range(5)]
            before = dict(listener.stats)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                for datagram in not_quic + unknown_cid + [fake_initial] * 3 + forged_for_conn:
                    await attacker.sendto(datagram, target)
                while listener.stats["datagrams"] < before["datagrams"] + 17:
                    await trio.sleep(0.01)
            assert listener.stats["garbage"] - before["garbage"] == len(not_quic) + 3
            assert listener.stats["unroutable"] - before["unroutable"] == len(unknown_cid)
            assert listener.connection_count == 1  # the fake Initials opened nothing

            await conn.send_frames([b"after"])
            assert await conn.receive_some() == b"after"
            await conn.aclose()


async def test_listener_bounds_connections_and_handshakes() -> None:
    server = UdpTransport(max_connections=2, handshake_timeout=0.5)
    client = UdpTransport(handshake_timeout=1.0)
    async with serving(server, echo) as listener:
        with trio.fail_after(STEP):
            first = await client.dial(listener.local_address)
            await first.send_frames([b"1"])
            assert await first.receive_some() == b"1"
            # Handshakes, but never opens the stream: the listener gives up on it.
            silent = await client.dial(listener.local_address)
            assert await silent.receive_some() == b""
            assert listener.stats["handshake_timeouts"] == 1
            second = await client.dial(listener.local_address)
            await second.send_frames([b"2"])
            assert await second.receive_some() == b"2"
            with pytest.raises(TransportError):
                await client.dial(listener.local_address)  # full
            assert listener.stats["refused"] > 0
            assert listener.connection_count == 2
            for conn in (first, second, silent):
                await conn.aclose()


async def test_idle_timeout_closes_a_silent_connection() -> None:
    transport = UdpTransport(idle_timeout=0.5, keepalive=False)
    server_eof = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        assert await conn.receive_some() == b"hi"
        assert await conn.receive_some() == b""  # nobody says anything: the timeout ends it
        server_eof.set()

    async with serving(transport, handler) as listener:
        with trio.fail_after(STEP):
            conn = await transport.dial(listener.local_address)
            await conn.send_frames([b"hi"])
            assert await conn.receive_some() == b""
            assert conn.is_closed
            with pytest.raises(ConnectionClosed):
                await conn.send_frames([b"hello?"])
            await server_eof.wait()
            await conn.aclose()


async def test_keepalive_holds_a_quiet_peer_and_idle_timeout_drops_a_vanished_one() -> None:
    idle = 1.0
    transport = UdpTransport(idle_timeout=idle)
    server_eof = trio.Event()

    async def handler(conn: UdpConnection) -> None:
        await echo(conn)
        server_eof.set()

    async with (
        serving(transport, handler) as listener,
        LossyUdpRelay(listener.local_address, loss=0.0, reorder=0.0) as relay,
    ):
        with trio.fail_after(STEP):
            conn = await transport.dial(relay.address)
            await trio.sleep(2.5 * idle)  # quiet, but both ends alive: keepalives hold it
            assert not conn.is_closed
            await conn.send_frames([b"still there?"])
            assert await conn.receive_some() == b"still there?"
            relay.loss = 1.0  # the peer vanishes
            assert await conn.receive_some() == b""
            await server_eof.wait()
            await conn.aclose()


# -- the QUIC core, without sockets --------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_classify_datagram_never_raises(data: bytes) -> None:
    header = classify_datagram(data)
    if header is not None:
        assert isinstance(header.destination_cid, bytes)
        assert not header.opens_connection or len(data) >= 1200


def test_receive_credit_follows_the_reader() -> None:
    """Stock aioquic doubles its window whatever the reader does; ours must not."""
    import datetime

    window = 64 * 1024
    certificate, key = self_signed_certificate(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    client = LnpQuicConnection(configuration=client_configuration(idle_timeout=60, receive_window=window))
    server: LnpQuicConnection | None = None
    client_addr, server_addr = ("127.0.0.1", 1), ("127.0.0.1", 2)
    now = 1000.0
    client.connect(server_addr, now)
    client.open_stream()
    delivered = 0

    def pump() -> None:
        nonlocal server, delivered
        for _ in range(200):
            moved = False
            for data, _addr in client.datagrams_to_send(now):
                if server is None:
                    header = classify_datagram(data)
                    assert header is not None and header.opens_connection
                    server = LnpQuicConnection(
                        configuration=server_configuration(
                            certificate=certificate, private_key=key, idle_timeout=60, receive_window=window
                        ),
                        original_destination_connection_id=header.destination_cid,
                    )
                server.receive_datagram(data, client_addr, now)
                moved = True
            if server is not None:
                for data, _addr in server.datagrams_to_send(now):
                    client.receive_datagram(data, server_addr, now)
                    moved = True
                while (event := server.next_event()) is not None:
                    if isinstance(event, StreamDataReceived):
                        assert event.stream_id == STREAM_ID
                        delivered += len(event.data)
            if not moved:
                return

    client.send_stream_data(STREAM_ID, POOL[: 10 * window])
    for _ in range(50):
        pump()
        now += 0.05
    assert delivered <= window  # nothing read: the peer stays within one window
    assert client.unacked_bytes() >= 9 * window  # the rest waits at the sender
    assert server is not None
    server.consume(delivered)  # the application reads it all
    for _ in range(50):
        pump()
        now += 0.05
    assert window < delivered <= 2 * window


def test_probe_timeout_stops_doubling_after_lost_probes() -> None:
    """A run of lost probes must cost a bounded number of PTOs each, not 2**n.

    aioquic sends one probe per PTO expiry and doubles the PTO every time
    without end, so on a 20 % lossy path a run of 8 or 9 unlucky probes once
    stopped a connection for 10-20 s. Time is simulated: all values are exact.
    """
    import datetime

    certificate, key = self_signed_certificate(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    client = LnpQuicConnection(configuration=client_configuration(idle_timeout=60))
    server: LnpQuicConnection | None = None
    client_addr, server_addr = ("127.0.0.1", 1), ("127.0.0.1", 2)
    now = 1000.0
    client.connect(server_addr, now)
    client.open_stream()
    client.send_stream_data(STREAM_ID, b"act one")
    for _ in range(100):  # handshake and first bytes, 10 ms per hop, until all is acknowledged
        now += 0.01
        for data, _addr in client.datagrams_to_send(now):
            if server is None:
                header = classify_datagram(data)
                assert header is not None
                server = LnpQuicConnection(
                    configuration=server_configuration(certificate=certificate, private_key=key, idle_timeout=60),
                    original_destination_connection_id=header.destination_cid,
                )
            server.receive_datagram(data, client_addr, now)
        assert server is not None
        now += 0.01
        for data, _addr in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)
        while server.next_event() is not None:
            pass
    assert client.send_finished() is False and client.unacked_bytes() == 0

    # The path dies: the next data and every probe after it are lost.
    client.send_stream_data(STREAM_ID, POOL[:500])  # one packet: no pacing timer in between
    assert len(client.datagrams_to_send(now)) == 1
    probes_at = []
    for _ in range(MAX_PTO_BACKOFF + 4):
        timer = client.get_timer()
        assert timer is not None
        client.handle_timer(timer)
        assert client.datagrams_to_send(timer), "a PTO expiry must send a probe"
        probes_at.append(timer)
    assert not client.is_closing
    gaps = [later - earlier for earlier, later in itertools.pairwise(probes_at)]
    # still an exponential backoff at first (RFC 9002 section 6.2.1) ...
    for shorter, longer in itertools.pairwise(gaps[:MAX_PTO_BACKOFF]):
        assert longer == pytest.approx(2 * shorter)
    # ... but it ends: later probes keep coming at the longest interval
    assert gaps[MAX_PTO_BACKOFF - 1 :] == pytest.approx([gaps[MAX_PTO_BACKOFF - 1]] * (len(gaps) - MAX_PTO_BACKOFF + 1))


async def test_a_flood_of_initials_that_never_continue_leaves_room_for_a_real_peer() -> None:
    """300 Initials (never followed up) from 30 loopback sources: above the threshold the
    listener answers with QUIC Retry and keeps no state, so a real dialer still gets in."""
    from lnpmsg.testing.attacks import attacker_sources, quic_initial_flood, quic_initials
    from lnpmsg.transports.udp import MAX_PENDING_HANDSHAKES, RETRY_THRESHOLD

    server = UdpTransport(handshake_timeout=60)
    client = UdpTransport(handshake_timeout=30)
    initials = quic_initials(300)
    async with serving(server, echo) as listener:
        host, port = listener.local_address.rsplit(":", 1)
        await quic_initial_flood(host, int(port), attacker_sources(3, 10), initials, per_second=2000)
        with trio.fail_after(STEP):
            while listener.stats["retry"] < 300 - RETRY_THRESHOLD:
                await trio.sleep(0.01)
        assert listener.connection_count <= RETRY_THRESHOLD < MAX_PENDING_HANDSHAKES
        with trio.fail_after(30):
            conn = await client.dial(listener.local_address)  # follows the Retry with its token
            await conn.send_frames([b"real"])
            assert await conn.receive_some() == b"real"
        assert listener.stats["accepted"] >= 1
        await conn.aclose()


def test_retry_tokens_are_bound_to_address_connection_id_and_time() -> None:
    from lnpmsg.transports.udp_retry import RetryTokens

    tokens = RetryTokens(lifetime=10)
    token = tokens.create(("10.0.0.1", 4000), b"odcid-01", b"retry-id", now=100)
    assert tokens.validate(("10.0.0.1", 4000), token, b"retry-id", now=105) == b"odcid-01"
    for address, cid, now in ((("10.0.0.2", 4000), b"retry-id", 105), (("10.0.0.1", 4000), b"other-id", 105), (("10.0.0.1", 4000), b"retry-id", 111)):
        with pytest.raises(ValueError):
            tokens.validate(address, token, cid, now)
    with pytest.raises(ValueError):
        tokens.validate(("10.0.0.1", 4000), token[:-1] + bytes([token[-1] ^ 1]), b"retry-id", 105)
    with pytest.raises(ValueError):
        RetryTokens().validate(("10.0.0.1", 4000), token, b"retry-id", 105)  # another listener's key
