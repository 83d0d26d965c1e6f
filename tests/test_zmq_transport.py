"""ZeroMQ peer transport: ROUTER listener, DEALER dialer, over ipc:// and tcp://."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import pytest
import trio
import trio.testing
import zmq
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.transports.base import Connection, ConnectionClosed, TransportError
from lnpmsg.transports.zmq import (
    CLOSE,
    INITIAL_CREDIT,
    KEEPALIVE,
    MAX_FRAME_SIZE,
    CloseMessage,
    CreditMessage,
    DataMessage,
    KeepaliveMessage,
    UnknownControl,
    ZmqConnection,
    ZmqListener,
    ZmqProtocolError,
    ZmqSettings,
    ZmqTransport,
    coalesce,
    credit_message,
    decode_message,
)
from lnpmsg.io.zmq_trio import TrioSocket
from lnpmsg.noise import MessageDecryptor, MessageEncryptor

Ctx: TypeAlias = "zmq.Context[zmq.Socket[bytes]]"

#: a hang guard, not a speed bound: everything here is local
HANG_GUARD = 20.0
LOGGER = "lnpmsg.transports.zmq"

FAST = ZmqSettings(
    keepalive_interval=0.2,
    idle_timeout=5.0,
    heartbeat_interval=0.5,
    heartbeat_timeout=2.0,
    connect_timeout=5.0,
    close_timeout=3.0,
)

Handler = Callable[[Connection], Awaitable[None]]


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def short_dir() -> Iterator[str]:
    # ipc:// paths are limited to ~100 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="lnpz", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, short_dir: str) -> str:
    return (
        f"ipc://{short_dir}/node.sock"
        if request.param == "ipc"
        else "tcp://127.0.0.1:0"
    )


@pytest.fixture
def transport(ctx: Ctx) -> ZmqTransport:
    return ZmqTransport(ctx, FAST)


@asynccontextmanager
async def serving(
    transport: ZmqTransport, endpoint: str, handler: Handler
) -> AsyncIterator[ZmqListener]:
    listener = await transport.listen(endpoint)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, handler)
        try:
            yield listener
        finally:
            await listener.aclose()


async def read_frames(conn: Connection, frames: list[bytes]) -> bytes:
    """Receive as many bytes as ``frames`` hold (several may come in one receive)."""
    size = sum(map(len, frames))
    stream = bytearray()
    while len(stream) < size:
        data = await conn.receive_some(1 << 20)
        assert data, f"end of stream after {len(stream)} of {size} bytes"
        stream += data
    return bytes(stream)


def raw_dealer(
    ctx: Ctx, endpoint: str, routing_id: bytes | None = None
) -> zmq.Socket[bytes]:
    """A plain pyzmq DEALER that ignores the convention unless told to follow it."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(endpoint)
    return sock


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.01)


# ------------------------------------------------------------------ the wire


@given(st.lists(st.binary(max_size=70), max_size=4))
def test_decode_accepts_or_rejects_with_the_layer_error(parts: list[bytes]) -> None:
    try:
        message = decode_message(parts)
    except ZmqProtocolError:
        return
    assert isinstance(
        message,
        DataMessage | CloseMessage | CreditMessage | KeepaliveMessage | UnknownControl,
    )


@given(st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_credit_round_trip(count: int) -> None:
    assert decode_message(credit_message(count)) == CreditMessage(count)


def test_coalesce_joins_whole_frames_up_to_the_limit() -> None:
    assert coalesce([]) == []
    assert coalesce([b"a", b"", b"bc"]) == [b"abc"]  # empty frames carry nothing
    assert coalesce([b"ab", b"cd", b"e"], limit=4) == [b"abcd", b"e"]
    assert coalesce([b"abc", b"de", b"f"], limit=4) == [b"abc", b"def"]  # never split
    biggest = b"x" * MAX_FRAME_SIZE
    assert coalesce([b"a", biggest, b"b"]) == [b"a", biggest, b"b"]  # it travels alone
    with pytest.raises(TransportError):
        coalesce([b"a", biggest + b"x"])


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=40, max_value=100))
def test_coalesce_keeps_bytes_order_and_bounds(frames: list[bytes], limit: int) -> None:
    messages = coalesce(frames, limit)
    assert b"".join(messages) == b"".join(frames)
    assert all(0 < len(m) <= limit for m in messages)
    # each message is a run of whole frames: its end is a frame boundary
    boundaries = set()
    position = 0
    for frame in frames:
        position += len(frame)
        boundaries.add(position)
    position = 0
    for message in messages:
        position += len(message)
        assert position in boundaries


async def test_a_batch_reaches_a_raw_peer_as_few_whole_messages(ctx: Ctx, endpoint: str) -> None:
    """The wire form: frames of one send_frames call joined, a frame never split."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    peer = TrioSocket(router)
    frames = [bytes([i % 251 + 1]) * 1058 for i in range(200)]  # 200 1 KiB messages, encrypted size
    with trio.fail_after(HANG_GUARD):
        conn = await ZmqTransport(ctx).dial(router.getsockopt_string(zmq.LAST_ENDPOINT))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_frames, frames)
            messages: list[bytes] = []
            while sum(map(len, messages)) < 200 * 1058:
                routing_id, *parts = await peer.recv_multipart()
                message = decode_message(parts)
                if isinstance(message, DataMessage):
                    messages.append(message.frame)
                elif isinstance(message, CreditMessage):
                    pass
        assert b"".join(messages) == b"".join(frames)
        assert all(len(m) % 1058 == 0 and len(m) <= MAX_FRAME_SIZE for m in messages)
        assert len(messages) == 4  # 61 + 61 + 61 + 17 frames
        await peer.send_multipart([routing_id, *CLOSE])
        await conn.aclose()
    peer.close()


async def test_frames_joined_by_the_sender_travel_as_they_are(ctx: Ctx, endpoint: str) -> None:
    """Items of whole frames joined up to ``max_joined_frames`` (what the node's writer
    gives, from ``encrypt_grouped``) are data messages as they are, and decode whole."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    peer = TrioSocket(router)
    key, chaining_key = os.urandom(32), os.urandom(32)
    plaintexts = [bytes([i % 251]) * 1024 for i in range(200)] + [b"\x00\x12", b"x" * 65535, b"y" * 300]
    with trio.fail_after(HANG_GUARD):
        conn = await ZmqTransport(ctx).dial(router.getsockopt_string(zmq.LAST_ENDPOINT))
        assert conn.keeps_frame_boundaries and conn.max_joined_frames == MAX_FRAME_SIZE
        items = MessageEncryptor(key, chaining_key).encrypt_grouped(plaintexts, conn.max_joined_frames)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_frames, items)
            messages: list[bytes] = []
            while len(messages) < len(items):
                routing_id, *parts = await peer.recv_multipart()
                message = decode_message(parts)
                if isinstance(message, DataMessage):
                    messages.append(message.frame)
        assert messages == items
        assert len(messages) == 6  # 61 + 61 + 61 + 18 frames, the 64 KiB one alone, the last one
        decryptor = MessageDecryptor(key, chaining_key)
        assert [m for message in messages for m in decryptor.feed(message)] == plaintexts
        await peer.send_multipart([routing_id, *CLOSE])
        await conn.aclose()
    peer.close()


def test_wire_convention() -> None:
    assert decode_message([b"\x00frame"]) == DataMessage(b"\x00frame")
    assert decode_message(list(CLOSE)) == CloseMessage()
    assert decode_message(list(KEEPALIVE)) == KeepaliveMessage()
    assert decode_message([b"", b"\x7f whatever"]) == UnknownControl(0x7F)
    assert decode_message([b"x" * MAX_FRAME_SIZE]) == DataMessage(b"x" * MAX_FRAME_SIZE)
    for bad in (
        [b"x" * (MAX_FRAME_SIZE + 1)],
        [],
        [b"a", b"b"],
        [b"", b""],
        [b"", b"\x01\x00\x00\x00\x00"],
        [b"", b"\x01\x00"],
        [b"", b"\x02", b""],
    ):
        with pytest.raises(ZmqProtocolError):
            decode_message(bad)
    with pytest.raises(ValueError):
        credit_message(0)
    with pytest.raises(ValueError):
        ZmqSettings(recv_window=INITIAL_CREDIT - 1)
    with pytest.raises(ValueError):
        ZmqSettings(keepalive_interval=5, idle_timeout=5)


# ------------------------------------------------------------------ basics


async def test_dial_listen_round_trip(transport: ZmqTransport, endpoint: str) -> None:
    seen: list[str] = []

    async def echo(conn: Connection) -> None:
        seen.append(conn.remote_address)
        while data := await conn.receive_some(1 << 20):
            await conn.send_frames([b"echo:" + data])

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, echo) as listener:
            assert listener.local_address.startswith(endpoint.split(":0")[0])
            conn = await transport.dial(listener.local_address)
            assert conn.kind == "zmq" and conn.remote_address == listener.local_address
            await conn.send_frames(
                [b"one", b"", b"two"]
            )  # empty frames carry nothing: skipped
            assert await read_frames(conn, [b"echo:onetwo"]) == b"echo:onetwo"  # one message
            await conn.aclose()
            await conn.aclose()  # idempotent
            with pytest.raises(ConnectionClosed):
                await conn.receive_some()
            with pytest.raises(ConnectionClosed):
                await conn.send_frames([b"late"])
    prefix, _, routing_id = seen[0].partition("#")
    assert prefix == listener.local_address and len(bytes.fromhex(routing_id)) == 5


async def test_many_peers_on_one_router(transport: ZmqTransport, endpoint: str) -> None:
    peers = 20
    addresses: set[str] = set()

    async def tag(conn: Connection) -> None:
        addresses.add(conn.remote_address)
        while data := await conn.receive_some(1 << 20):
            await conn.send_frames([data])

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, tag) as listener:
            conns = [await transport.dial(listener.local_address) for _ in range(peers)]

            async def talk(n: int, conn: ZmqConnection) -> None:
                mine = [b"peer%d-msg%d" % (n, i) for i in range(50)]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.send_frames, mine)
                    assert await read_frames(conn, mine) == b"".join(mine)

            async with trio.open_nursery() as nursery:
                for n, conn in enumerate(conns):
                    nursery.start_soon(talk, n, conn)
            assert listener.session_count == peers and len(addresses) == peers
            for conn in conns:
                await conn.aclose()
            await wait_until(lambda: listener.session_count == 0)


def random_frames(rng: random.Random, count: int) -> list[bytes]:
    sizes = [
        rng.choice(
            (rng.randint(1, 200), rng.randint(1, 5000), rng.randint(1, MAX_FRAME_SIZE))
        )
        for _ in range(count)
    ]
    sizes[0] = MAX_FRAME_SIZE
    sizes[-1] = 1
    return [rng.randbytes(size) for size in sizes]


async def test_thousand_random_frames_both_ways(
    transport: ZmqTransport, endpoint: str
) -> None:
    rng = random.Random(5)
    to_listener = random_frames(rng, 1000)
    to_dialer = random_frames(rng, 1000)
    got_by_listener: list[bytes] = []

    async def handler(conn: Connection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_frames, to_dialer)
            # max_bytes bigger than any frame: each receive is exactly one frame
            got_by_listener.append(await read_frames(conn, to_listener))
        assert await conn.receive_some() == b""

    with trio.fail_after(HANG_GUARD * 2):
        async with serving(transport, endpoint, handler) as listener:
            conn = await transport.dial(listener.local_address)
            stream = bytearray()
            expected = b"".join(to_dialer)
            async with trio.open_nursery():
                for batch in range(0, 1000, 7):
                    await conn.send_frames(to_listener[batch : batch + 7])
                while len(stream) < len(expected):
                    # the default max_bytes (65536) splits the biggest frames
                    chunk = await conn.receive_some()
                    assert 0 < len(chunk) <= 65536
                    stream += chunk
            await conn.aclose()
            await wait_until(lambda: listener.session_count == 0)
    assert got_by_listener == [b"".join(to_listener)]
    assert bytes(stream) == expected


# ------------------------------------------------------------------ closing


async def test_dialer_close_delivers_everything_then_eof(
    transport: ZmqTransport, endpoint: str
) -> None:
    frames = [b"%d" % i * (i % 50 + 1) for i in range(300)]
    received: list[bytes] = []
    ended = trio.Event()
    result: list[bytes | type[BaseException]] = []

    async def handler(conn: Connection) -> None:
        received.append(await read_frames(conn, frames))
        result.append(await conn.receive_some())
        try:
            await conn.send_frames([b"too late"])
        except ConnectionClosed:
            result.append(ConnectionClosed)
        ended.set()

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            conn = await transport.dial(listener.local_address)
            await conn.send_frames(frames)
            await conn.aclose()  # right away: the ack, not linger, guarantees delivery
            await ended.wait()
    assert received == [b"".join(frames)]
    assert result == [b"", ConnectionClosed]


async def test_listener_close_reaches_the_dialer(
    transport: ZmqTransport, endpoint: str
) -> None:
    async def handler(conn: Connection) -> None:
        await conn.send_frames([b"bye %d" % i for i in range(50)])
        await conn.aclose()

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            conn = await transport.dial(listener.local_address)
            await conn.send_frames([b"hello"])
            bye = [b"bye %d" % i for i in range(50)]
            assert await read_frames(conn, bye) == b"".join(bye)
            assert await conn.receive_some() == b""
            assert await conn.receive_some() == b""
            with pytest.raises(ConnectionClosed):
                await conn.send_frames([b"anyone?"])
            await conn.aclose()


async def test_aclose_fails_a_pending_receive(
    transport: ZmqTransport, endpoint: str
) -> None:
    async def handler(conn: Connection) -> None:
        await conn.receive_some()

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            conn = await transport.dial(listener.local_address)
            failures: list[BaseException] = []

            async def receive() -> None:
                try:
                    await conn.receive_some()
                except ConnectionClosed as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await conn.aclose()
            assert len(failures) == 1
            assert conn.ended == "closed by peer"  # the listener acknowledged our close


async def test_listener_aclose_ends_every_session(
    transport: ZmqTransport, endpoint: str
) -> None:
    finished: list[bytes] = []

    async def handler(conn: Connection) -> None:
        finished.append(await conn.receive_some())
        finished.append(await conn.receive_some())

    with trio.fail_after(HANG_GUARD):
        listener = await transport.listen(endpoint)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.serve, handler)
            conns = [await transport.dial(listener.local_address) for _ in range(3)]
            for conn in conns:
                await conn.send_frames([b"hi"])
            await wait_until(lambda: listener.session_count == 3)
            await listener.aclose()  # serve returns once the handlers are done
        assert sorted(finished) == [b""] * 3 + [b"hi"] * 3
        for conn in conns:
            assert await conn.receive_some() == b""
            await conn.aclose()
        await listener.aclose()


# ------------------------------------------------------------------ vanished peers


async def test_vanished_dealer_is_detected_and_cleaned_up(
    ctx: Ctx, endpoint: str
) -> None:
    # idle timeout far beyond the hang guard: only the disconnect can end it
    transport = ZmqTransport(
        ctx, ZmqSettings(keepalive_interval=30, idle_timeout=60, connect_timeout=5)
    )
    got: list[bytes] = []

    async def handler(conn: Connection) -> None:
        got.append(await conn.receive_some())
        got.append(await conn.receive_some())

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            dealer = raw_dealer(ctx, listener.local_address)
            dealer.send(b"here")
            await wait_until(lambda: len(got) == 1)
            dealer.close(linger=0)  # abrupt
            await wait_until(lambda: len(got) == 2)
            assert listener.session_count == 0
            assert listener.stats["vanished"] == 1
    assert got == [b"here", b""]


async def test_silent_peer_times_out(ctx: Ctx, endpoint: str) -> None:
    # libzmq answers heartbeats by itself; only our idle timeout sees a peer
    # that stopped sending keepalives.
    transport = ZmqTransport(
        ctx, ZmqSettings(keepalive_interval=0.1, idle_timeout=0.5, connect_timeout=5)
    )
    got: list[bytes] = []

    async def handler(conn: Connection) -> None:
        got.append(await conn.receive_some())
        got.append(await conn.receive_some())

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            dealer = raw_dealer(ctx, listener.local_address)
            dealer.send(b"hello, then silence")
            await wait_until(lambda: len(got) == 2)
            assert listener.stats["idle"] == 1
            # it was told: a close message is waiting for it (after keepalives)
            while (parts := dealer.recv_multipart()) != [b""]:
                assert parts == list(KEEPALIVE)
            dealer.close()
    assert got == [b"hello, then silence", b""]


async def test_vanished_listener_is_detected_by_the_dialer(
    transport: ZmqTransport, ctx: Ctx, endpoint: str
) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    bound = router.getsockopt_string(zmq.LAST_ENDPOINT)
    with trio.fail_after(HANG_GUARD):
        conn = await transport.dial(bound)
        await conn.send_frames([b"knock"])
        while not router.poll(0):
            await trio.sleep(0.01)
        assert router.recv_multipart()[1:] == [b"knock"]
        router.close(linger=0)  # abrupt
        assert await conn.receive_some() == b""
        with pytest.raises(ConnectionClosed):
            await conn.send_frames([b"anyone?"])
        await conn.aclose()


async def test_dial_failures(transport: ZmqTransport, short_dir: str) -> None:
    with trio.fail_after(HANG_GUARD):
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
        probe.close()  # nobody listens there now
        for target in (
            f"tcp://127.0.0.1:{free_port}",
            f"ipc://{short_dir}/nobody.sock",
        ):
            with pytest.raises(TransportError, match="cannot connect"):
                await transport.dial(target)
        for target in ("127.0.0.1:9735", "udp://127.0.0.1:1", "tcp://"):
            with pytest.raises(TransportError, match="bad ZeroMQ endpoint"):
                await transport.dial(target)
            with pytest.raises(TransportError, match="bad ZeroMQ endpoint"):
                await transport.listen(target)
        with pytest.raises(TransportError, match="cannot dial"):
            await transport.dial("tcp://no such host")
        listener = await transport.listen("tcp://127.0.0.1:0")
        with pytest.raises(TransportError, match="cannot listen"):
            await transport.listen(listener.local_address)
        await listener.aclose()


async def test_listen_waits_briefly_for_a_port_that_is_being_released(transport: ZmqTransport) -> None:
    """A restart on the same port succeeds while the old socket lets go, as nginx retries its bind."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]

    async def release_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()  # listen found the port taken and waits to retry
        holder.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_soon)
        listener = await transport.listen(f"tcp://127.0.0.1:{port}")
    assert listener.local_address == f"tcp://127.0.0.1:{port}"
    await listener.aclose()


# ------------------------------------------------------------------ bad peers


async def test_forged_and_duplicate_identities_reach_no_other_session(
    transport: ZmqTransport,
    ctx: Ctx,
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    sessions: dict[str, list[bytes]] = {}
    first_seen = trio.Event()

    async def handler(conn: Connection) -> None:
        frames = sessions.setdefault(conn.remote_address, [])
        first_seen.set()
        while data := await conn.receive_some(1 << 20):
            frames.append(data)

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            victim = await transport.dial(listener.local_address)
            await victim.send_frames([b"victim 1"])
            await first_seen.wait()
            victim_address = next(iter(sessions))
            victim_id = bytes.fromhex(victim_address.partition("#")[2])

            # 1. the victim's routing id, chosen by another dealer: libzmq
            #    ignores the duplicate connection (no ROUTER_HANDOVER)
            duplicate = raw_dealer(ctx, listener.local_address, routing_id=victim_id)
            for i in range(3):
                duplicate.send(b"forged %d" % i)
            # 2. a peer-chosen id of any other shape: refused by the listener
            chosen = raw_dealer(ctx, listener.local_address, routing_id=b"evil-peer")
            for i in range(3):
                chosen.send(b"chosen %d" % i)
            await wait_until(lambda: listener.stats["refused_routing_id"] == 1)
            await wait_until(
                lambda: listener.stats["stale"] == 2
            )  # its other two messages

            await victim.send_frames([b"victim 2"])
            await wait_until(lambda: len(sessions[victim_address]) == 2)
            assert sessions[victim_address] == [b"victim 1", b"victim 2"]
            assert list(sessions) == [victim_address]  # no session for the forgers
            assert "refusing peer-chosen routing id" in caplog.text

            # 3. a dealer that imitates the generated shape just gets a session of its own
            lookalike_id = b"\x00" + os.urandom(4)
            lookalike = raw_dealer(ctx, listener.local_address, routing_id=lookalike_id)
            lookalike.send(b"lookalike")
            await wait_until(lambda: len(sessions) == 2)
            assert sessions[f"{listener.local_address}#{lookalike_id.hex()}"] == [
                b"lookalike"
            ]
            assert sessions[victim_address] == [b"victim 1", b"victim 2"]
            for sock in (duplicate, chosen, lookalike):
                sock.close()
            await victim.aclose()


async def test_oversize_message_drops_the_peer(
    transport: ZmqTransport,
    ctx: Ctx,
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    got: list[list[bytes]] = []
    seen = 0

    async def handler(conn: Connection) -> None:
        nonlocal seen
        frames = [await conn.receive_some(1 << 21)]
        seen += 1
        frames.append(await conn.receive_some(1 << 21))
        got.append(frames)

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            # just over the limit: our check drops it, logs, and tells the peer
            dealer = raw_dealer(ctx, listener.local_address)
            dealer.send(b"fine")
            await wait_until(lambda: seen == 1)  # a dropped peer's queue is discarded
            dealer.send(b"x" * (MAX_FRAME_SIZE + 1))
            dealer.send(b"after the drop")
            await wait_until(lambda: len(got) == 1)
            assert got[0] == [b"fine", b""]
            assert listener.stats["oversize"] == 1
            assert f"exceeds {MAX_FRAME_SIZE}" in caplog.text
            while (parts := dealer.recv_multipart()) != [b""]:
                assert parts == list(KEEPALIVE)
            await wait_until(
                lambda: listener.stats["stale"] >= 1
            )  # "after the drop" went nowhere

            # far over it: libzmq itself cuts the connection before buffering it
            huge = raw_dealer(ctx, listener.local_address)
            huge.send(b"fine too")
            await wait_until(lambda: seen == 2)
            huge.send(b"x" * (1 << 21))
            await wait_until(lambda: len(got) == 2)
            assert got[1] == [b"fine too", b""]
            assert listener.stats["vanished"] == 1
            dealer.close()
            huge.close()
    # our own side refuses to send one too
    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            conn = await transport.dial(listener.local_address)
            with pytest.raises(TransportError, match="exceeds"):
                await conn.send_frames([b"x" * (MAX_FRAME_SIZE + 1)])
            await conn.aclose()


async def test_flooding_peer_is_dropped_not_the_node(
    transport: ZmqTransport,
    ctx: Ctx,
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    flooded = trio.Event()
    results: dict[str, list[bytes]] = {}

    async def handler(conn: Connection) -> None:
        first = await conn.receive_some()
        if first == b"flood":
            await flooded.wait()  # read nothing until the flood is noticed
        frames = results.setdefault(first.decode(), [first])
        while data := await conn.receive_some():
            frames.append(data)

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            good = await transport.dial(listener.local_address)
            await good.send_frames([b"good"])
            flooder = raw_dealer(ctx, listener.local_address)
            flooder.send(b"flood")
            for i in range(INITIAL_CREDIT + 10):  # never waits for credit
                flooder.send(b"more %d" % i)
            await wait_until(lambda: listener.stats["flood"] == 1)
            flooded.set()
            await good.send_frames([b"still here"])
            await good.aclose()
            await wait_until(lambda: len(results) == 2 and listener.session_count == 0)
            flooder.close()
    assert results["flood"] == [b"flood"]  # the queued rest was discarded with the peer
    assert results["good"] == [b"good", b"still here"]
    assert "credit" in caplog.text


async def test_protocol_violation_drops_the_peer(
    transport: ZmqTransport,
    ctx: Ctx,
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    got: list[bytes] = []

    async def handler(conn: Connection) -> None:
        got.append(await conn.receive_some())
        got.append(await conn.receive_some())

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            dealer = raw_dealer(ctx, listener.local_address)
            dealer.send(b"ok")
            await wait_until(
                lambda: len(got) == 1
            )  # a dropped peer's queue is discarded
            dealer.send_multipart([b"two", b"parts"])
            await wait_until(lambda: len(got) == 2)
            assert listener.stats["protocol"] == 1
            dealer.close()
    assert got == [b"ok", b""]
    assert "breaks the convention" in caplog.text


async def test_garbage_from_many_peers_leaves_an_established_peer_alone(
    transport: ZmqTransport, ctx: Ctx, endpoint: str
) -> None:
    rng = random.Random(9)
    good_frames = [rng.randbytes(rng.randint(1, 3000)) for _ in range(200)]
    by_peer: dict[str, list[bytes]] = {}

    async def handler(conn: Connection) -> None:
        frames = by_peer.setdefault(conn.remote_address, [])
        while data := await conn.receive_some(1 << 20):
            frames.append(data)
            if frames[0] == good_frames[0]:
                await conn.send_frames([data])  # echo to the good peer only

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, handler) as listener:
            good = await transport.dial(listener.local_address)
            await good.send_frames(good_frames[:1])
            assert await read_frames(good, good_frames[:1]) == good_frames[0]
            vandals = [raw_dealer(ctx, listener.local_address) for _ in range(8)]
            for _ in range(300):
                vandal = rng.choice(vandals)
                parts = [
                    rng.randbytes(rng.choice((0, 1, 5, 200, MAX_FRAME_SIZE + rng.randint(1, 9))))
                    for _ in range(rng.randint(1, 3))
                ]
                vandal.send_multipart(parts)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good.send_frames, good_frames[1:])
                assert await read_frames(good, good_frames[1:]) == b"".join(good_frames[1:])
            dropped = sum(listener.stats[k] for k in ("protocol", "oversize", "flood"))
            assert dropped > 0
            for vandal in vandals:
                vandal.close()
            await good.aclose()


async def test_peer_that_stops_reading_holds_our_sender_back(ctx: Ctx, endpoint: str) -> None:
    # The peer grants plenty of credit but reads nothing: our sends stop at
    # libzmq's high-water mark (memory stays bounded) instead of piling up,
    # our credit grants wait for the flush task, and all of it flows once the
    # peer reads again. A peer that reads nothing answers no heartbeat either
    # (ours wait behind the data), and it sends nothing while our sender fills
    # its queue: FAST's 2 s heartbeat and 5 s idle limits would cut it on a
    # loaded machine before it reads again, so here both allow as long as the test.
    transport = ZmqTransport(ctx, dataclasses.replace(FAST, heartbeat_timeout=HANG_GUARD, idle_timeout=HANG_GUARD))
    total = 1500
    frame = b"z" * 32_000
    sent = 0
    consumed: list[bytes] = []

    async def handler(conn: Connection) -> None:
        nonlocal sent

        async def read_all() -> None:
            while data := await conn.receive_some(1 << 20):
                consumed.append(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for _ in range(total):
                await conn.send_frames([frame])
                sent += 1

    with trio.fail_after(HANG_GUARD * 2):
        async with serving(transport, endpoint, handler) as listener:
            raw = ctx.socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.setsockopt(zmq.RCVHWM, 1)
            raw.connect(listener.local_address)
            peer = TrioSocket(raw)
            await peer.send_multipart(credit_message(10 * total))
            await peer.send(b"hello")
            while True:  # until our sender is stuck
                before = sent
                await trio.sleep(0.3)
                if sent == before and sent > 0:
                    break
            assert sent < total
            # now the listener must grant credit while the peer's queue is full
            for i in range(INITIAL_CREDIT):
                await peer.send(b"data %d" % i)
            await wait_until(lambda: len(consumed) == INITIAL_CREDIT + 1)
            data_frames = 0
            granted = 0
            while data_frames < total or granted < INITIAL_CREDIT:
                message = decode_message(await peer.recv_multipart())
                if isinstance(message, DataMessage):
                    assert message.frame == frame
                    data_frames += 1
                elif isinstance(message, CreditMessage):
                    granted += message.count
            assert sent == total and granted == INITIAL_CREDIT
            peer.close()


async def test_coalesced_batches_still_wait_for_credit(
    transport: ZmqTransport, endpoint: str
) -> None:
    """Credit counts ZeroMQ messages: a batch bigger than the window waits for the reader."""
    release = trio.Event()
    stream = bytearray()
    frames = [bytes([i % 250 + 1]) * 1058 for i in range(INITIAL_CREDIT * 61 + 500)]

    async def slow_reader(conn: Connection) -> None:
        await release.wait()
        while data := await conn.receive_some(1 << 20):
            stream.extend(data)

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, slow_reader) as listener:
            conn = await transport.dial(listener.local_address)
            done = trio.Event()

            async def send_all() -> None:
                await conn.send_frames(frames)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                await trio.sleep(0.3)  # room to overrun the window, were it not enforced
                assert not done.is_set()  # more than INITIAL_CREDIT messages' worth: it waits
                release.set()
                await done.wait()
            await conn.aclose()
            await wait_until(lambda: listener.session_count == 0)
    assert bytes(stream) == b"".join(frames)


async def test_sender_without_credit_waits(
    transport: ZmqTransport, endpoint: str
) -> None:
    release = trio.Event()
    received: list[bytes] = []

    async def slow_reader(conn: Connection) -> None:
        await release.wait()
        while data := await conn.receive_some(1 << 20):
            received.append(data)

    with trio.fail_after(HANG_GUARD):
        async with serving(transport, endpoint, slow_reader) as listener:
            conn = await transport.dial(listener.local_address)
            sent = 0

            async def send_all(
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                nonlocal sent
                task_status.started()
                for i in range(500):
                    await conn.send_frames([b"%d" % i])
                    sent += 1

            async with trio.open_nursery() as nursery:
                await nursery.start(send_all)
                await wait_until(lambda: sent == INITIAL_CREDIT)
                await trio.sleep(
                    0.3
                )  # room to overrun the window, were it not enforced
                assert sent == INITIAL_CREDIT  # back-pressure: the window, no more
                release.set()
            await conn.aclose()
            await wait_until(lambda: listener.session_count == 0)
    assert received == [b"%d" % i for i in range(500)]
