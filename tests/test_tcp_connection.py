"""TcpConnection and TcpListener on real loopback sockets: the Connection contract.

The TCP connection drives a non-blocking socket with trio's I/O waits
directly, so the parts trio's SocketStream used to cover are checked here:
partial sends, closing from another task, cancellation, accept bursts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from lnpmsg.transports import tcp
from lnpmsg.transports.base import Connection, ConnectionClosed
from lnpmsg.transports.tcp import TcpConnection, TcpTransport


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[Connection, Connection]]:
    """A dialed and an accepted connection over loopback; everything is closed afterwards."""
    transport = TcpTransport()
    listener = await transport.listen("127.0.0.1:0")
    accepted, arrivals = trio.open_memory_channel[Connection](1)

    async def handler(conn: Connection) -> None:
        await accepted.send(conn)
        await trio.sleep_forever()  # the test owns the connection; serve closes it at the end

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, handler)
        dialed = await transport.dial(listener.local_address)
        try:
            yield dialed, await arrivals.receive()
        finally:
            await dialed.aclose()
            await listener.aclose()
            nursery.cancel_scope.cancel()


async def _receive_exactly(conn: Connection, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await conn.receive_some(1 << 20)
        assert chunk, f"end of stream after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def test_a_send_larger_than_the_socket_buffers_waits_and_arrives_whole() -> None:
    payload = os.urandom(16 * 1024 * 1024)  # far beyond what loopback buffers hold at once
    async with _pair() as (dialed, accepted), trio.open_nursery() as nursery:
        received: list[bytes] = []
        done = trio.Event()

        async def slow_reader() -> None:
            # Every other task waits: the sender has filled the buffers and waits for room first.
            await trio.testing.wait_all_tasks_blocked()
            received.append(await _receive_exactly(accepted, len(payload)))
            done.set()

        nursery.start_soon(slow_reader)
        # A bytearray, as the peer's writer hands over: sent from a memoryview as it drains.
        await dialed.send_frames([bytearray(payload)])
        with trio.fail_after(30):
            await done.wait()
        assert received[0] == payload


async def test_frames_are_joined_in_order() -> None:
    async with _pair() as (dialed, accepted):
        frames = [os.urandom(n) for n in (1, 18, 1040, 65569, 3)]
        await dialed.send_frames(frames)
        assert await _receive_exactly(accepted, sum(map(len, frames))) == b"".join(frames)


async def test_close_from_another_task_ends_a_waiting_receive_and_send() -> None:
    async with _pair() as (dialed, accepted), trio.open_nursery() as nursery:
        outcomes: dict[str, BaseException | None] = {}

        async def receive() -> None:
            try:
                await dialed.receive_some()
                outcomes["receive"] = None
            except ConnectionClosed as exc:
                outcomes["receive"] = exc

        async def send() -> None:
            try:
                await dialed.send_frames([bytes(32 * 1024 * 1024)])  # nobody reads: it waits
                outcomes["send"] = None
            except ConnectionClosed as exc:
                outcomes["send"] = exc

        # One task receives and one sends on the same connection (as a peer's
        # reader and writer do); a third closes it under them.
        nursery.start_soon(receive)
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()  # both wait on the socket now
        assert not outcomes
        await dialed.aclose()
        await trio.testing.wait_all_tasks_blocked()  # both woke up and finished
        assert isinstance(outcomes["receive"], ConnectionClosed)
        assert isinstance(outcomes["send"], ConnectionClosed)
        assert "connection closed" in str(outcomes["receive"]) and "connection closed" in str(outcomes["send"])
        with pytest.raises(ConnectionClosed, match="connection closed"):
            await dialed.receive_some()
        await dialed.aclose()  # idempotent
        nursery.cancel_scope.cancel()


async def test_a_cancelled_receive_loses_no_data() -> None:
    async with _pair() as (dialed, accepted):
        with trio.move_on_after(0.05) as scope:
            await accepted.receive_some()
        assert scope.cancelled_caught
        await dialed.send_frames([b"after the timeout"])
        assert await _receive_exactly(accepted, 17) == b"after the timeout"


async def test_the_end_of_stream_reads_as_empty() -> None:
    async with _pair() as (dialed, accepted):
        await dialed.send_frames([b"last words"])
        await dialed.aclose()
        assert await _receive_exactly(accepted, 10) == b"last words"
        assert await accepted.receive_some() == b""


async def test_a_burst_of_connections_is_accepted_and_served(monkeypatch: pytest.MonkeyPatch) -> None:
    # More connections at once than the accept loop takes before letting other tasks run.
    monkeypatch.setattr(tcp, "_ACCEPT_BURST", 4)
    transport = TcpTransport()
    listener = await transport.listen("127.0.0.1:0")
    served: list[str] = []

    async def echo(conn: Connection) -> None:
        data = await conn.receive_some()
        served.append(conn.remote_address)
        await conn.send_frames([data])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, echo)
        conns = [await transport.dial(listener.local_address) for _ in range(25)]
        for index, conn in enumerate(conns):
            await conn.send_frames([b"%d" % index])
        for index, conn in enumerate(conns):
            assert await _receive_exactly(conn, len(b"%d" % index)) == b"%d" % index
            await conn.aclose()
        assert len(set(served)) == 25 and all(a.startswith("127.0.0.1:") for a in served)
        await listener.aclose()
        await listener.aclose()  # idempotent
        nursery.cancel_scope.cancel()


async def test_a_connection_can_take_over_a_trio_stream() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def accept_and_echo() -> None:
            stream = await listener.accept()
            async with stream:
                await stream.send_all(await stream.receive_some(100))

        nursery.start_soon(accept_and_echo)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = TcpConnection.from_stream(stream, f"127.0.0.1:{port}")
        assert conn.kind == "tcp" and not conn.keeps_frame_boundaries
        await conn.send_frames([b"ping"])
        assert await _receive_exactly(conn, 4) == b"ping"
        await conn.aclose()
    await listener.aclose()


async def _nowait_arrival(conn: Connection, max_bytes: int) -> bytes:
    """What ``receive_nowait`` returns once something arrived (loopback: within a few schedule points)."""
    with trio.fail_after(10):
        while True:
            data = conn.receive_nowait(max_bytes)
            if data is not None:
                return data
            await trio.sleep(0.001)


async def test_receive_nowait_says_none_until_bytes_arrive_and_empty_at_end_of_stream() -> None:
    async with _pair() as (dialed, accepted):
        assert accepted.receive_nowait(50) is None
        await dialed.send_frames([b"act one" * 10])
        assert await _nowait_arrival(accepted, 50) == (b"act one" * 10)[:50]
        assert await _receive_exactly(accepted, 20) == (b"act one" * 10)[50:]  # the rest stays for the next read
        await dialed.aclose()
        assert await _nowait_arrival(accepted, 50) == b""


async def test_receive_nowait_on_a_closed_connection_leaves_the_reason_to_receive_some() -> None:
    async with _pair() as (dialed, accepted):
        await accepted.aclose()
        assert accepted.receive_nowait(10) is None  # receive_some is the one that says why
        with pytest.raises(ConnectionClosed):
            await accepted.receive_some(10)


async def test_accepted_connections_have_nagle_off() -> None:
    """Small frames (acts, pings) leave at once on accepted connections too, whether the
    accepted socket inherited TCP_NODELAY from the listener or got it on its own."""
    listener = await TcpTransport().listen("127.0.0.1:0")
    accepted: list[TcpConnection] = []

    async def handler(conn) -> None:  # type: ignore[no-untyped-def]
        accepted.append(conn)
        await conn.receive_some(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, handler)
        clients = [await TcpTransport().dial(listener.local_address) for _ in range(2)]
        with trio.fail_after(10):
            while len(accepted) < 2:
                await trio.sleep(0.01)
        assert [conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0 for conn in accepted] == [True, True]
        for client in clients:
            await client.aclose()
        await listener.aclose()
        nursery.cancel_scope.cancel()


async def test_receive_into_nowait_fills_the_buffer_or_says_none() -> None:
    # A read into the caller's buffer: None while nothing is there, at most the
    # buffer's length, 0 at the end of stream; on a closed connection None (receive_some says why).
    async with _pair() as (dialed, accepted):
        assert accepted.reads_into
        buffer = bytearray(8)
        assert accepted.receive_into_nowait(memoryview(buffer)) is None
        await dialed.send_frames([b"0123456789"])
        while (size := accepted.receive_into_nowait(memoryview(buffer))) is None:
            await trio.sleep(0.001)
        assert size == 8 and buffer == b"01234567"
        assert accepted.receive_into_nowait(memoryview(buffer)[2:]) == 2 and buffer == b"0189" + b"4567"
        await dialed.aclose()
        while (size := accepted.receive_into_nowait(memoryview(buffer))) is None:
            await trio.sleep(0.001)
        assert size == 0
        await accepted.aclose()
        assert accepted.receive_into_nowait(memoryview(buffer)) is None
        with pytest.raises(ConnectionClosed):
            await accepted.receive_some()


async def test_wait_receivable_returns_when_bytes_are_there_and_takes_none() -> None:
    # The reader waits without a buffer, then reads into one: the wait ends when bytes
    # arrive (leaving them all to the read), or raises ConnectionClosed when the
    # connection is closed while it waits or was closed before.
    async with _pair() as (dialed, accepted):
        buffer = bytearray(16)
        async with trio.open_nursery() as nursery:
            woke = trio.Event()

            async def wait() -> None:
                await accepted.wait_receivable()
                woke.set()

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke.is_set()
            await dialed.send_frames([b"hello"])
        assert accepted.receive_into_nowait(memoryview(buffer)) == 5 and buffer[:5] == b"hello"
        failures: list[BaseException] = []

        async def wait_failing() -> None:
            try:
                await accepted.wait_receivable()
            except ConnectionClosed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_failing)
            await trio.testing.wait_all_tasks_blocked()
            assert accepted.close_nowait()
        assert len(failures) == 1
        with pytest.raises(ConnectionClosed):
            await accepted.wait_receivable()


async def test_a_tor_connection_reads_its_pending_bytes_into_the_buffer_first() -> None:
    # Bytes that came with the SOCKS reply are read before the socket's.
    from lnpmsg.transports.tor.transport import TorConnection

    left, right = socket.socketpair()
    left.setblocking(False)
    conn = TorConnection(left, "peer.onion:9735", pending=b"abc")
    try:
        right.sendall(b"defgh")
        buffer = bytearray(4)
        assert conn.receive_into_nowait(memoryview(buffer)[:2]) == 2 and buffer[:2] == b"ab"
        assert conn.receive_into_nowait(memoryview(buffer)) == 1 and buffer[:1] == b"c"
        assert conn.receive_into_nowait(memoryview(buffer)) == 4 and buffer == b"defg"
        assert await conn.receive_some(10) == b"h"
    finally:
        await conn.aclose()
        right.close()


async def test_a_tor_connection_s_pending_bytes_come_first_for_every_receive() -> None:
    # The handshake and the reader's first reads use receive_nowait and wait_receivable:
    # bytes that came with the SOCKS reply must be there for them too, before the socket's
    # (receive_nowait), and without waiting for the socket (wait_receivable).
    from lnpmsg.node.handshake import receive_exactly
    from lnpmsg.transports.tor.transport import TorConnection

    left, right = socket.socketpair()
    left.setblocking(False)
    conn = TorConnection(left, "peer.onion:9735", pending=b"abc")
    try:
        with trio.fail_after(5):
            await conn.wait_receivable()  # the pending bytes are there: no wait for the socket
            assert await receive_exactly(conn, 2, bytearray(), "act") == b"ab"
        right.sendall(b"def")
        assert conn.receive_nowait(10) == b"c"
        assert conn.receive_nowait(10) == b"def"
        assert conn.receive_nowait(10) is None
    finally:
        await conn.aclose()
        right.close()
