"""What every :class:`~lnpmsg.transports.base.Connection` does, whatever carries it.

In the spirit of ``trio.testing.check_two_way_stream``: the checks take a
function that opens a connected pair of connections and test the contract
of :mod:`lnpmsg.transports.base` on it, below any node or handshake. A
transport is given frames of at most a BOLT-8 frame's size
(:data:`~lnpmsg.noise.MAX_FRAME_SIZE`), so the checks send no larger ones.


- both ends name their kind and the remote end;
- frames arrive intact and in order, both ways at once, in any batching;
- ``receive_some(n)`` never returns more than ``n`` bytes;
- closing one end delivers everything sent before it, then end of stream
  (``b""``) at the other end;
- ``aclose`` is idempotent, and once closed an end refuses to send or
  receive with a ``TransportError``; closing from another task wakes a
  pending receive with :class:`~lnpmsg.transports.base.ConnectionClosed`;
- a cancelled ``receive_some`` loses no data.

Run them over a transport through a conformance medium::

    await check_connection(lambda: medium_connection_pair(TcpMedium()))

or over any pair, e.g. the in-memory one::

    await check_connection(lambda: as_pair(memory_connection_pair()))

A failed check raises :class:`~lnpmsg.testing.conformance.ConformanceFailure`
naming the check; each runs under ``deadline`` seconds, a hang guard and
not a speed requirement.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio
import trio.testing

from lnpmsg.noise import MAX_FRAME_SIZE
from lnpmsg.testing.conformance import ConformanceFailure, Medium
from lnpmsg.transports.address import PeerAddress, format_peer_address, parse_listen_address, parse_peer_address
from lnpmsg.transports.base import Connection, ConnectionClosed, TransportError

__all__ = [
    "CONNECTION_CHECKS",
    "PairOpener",
    "as_pair",
    "check_connection",
    "medium_connection_pair",
]

#: opens a connected pair for one check and closes it afterwards
PairOpener = Callable[[], AbstractAsyncContextManager[tuple[Connection, Connection]]]
#: bytes each way in the bulk check
BULK_BYTES = 4 << 20
#: a hang guard per check (seconds), not a speed requirement
DEADLINE = 60.0


def _require(condition: object, what: str) -> None:
    if not condition:
        raise ConformanceFailure(what)


@asynccontextmanager
async def as_pair(pair: tuple[Connection, Connection]) -> AsyncIterator[tuple[Connection, Connection]]:
    """An already connected pair, closed when the block ends."""
    try:
        yield pair
    finally:
        with trio.CancelScope(shield=True):
            for conn in pair:
                await conn.aclose()


@asynccontextmanager
async def medium_connection_pair(medium: Medium) -> AsyncIterator[tuple[Connection, Connection]]:
    """A (dialed, accepted) pair over the medium's own transport: a listener, one dial, no handshake."""
    transport = medium.transports()[medium.kind]
    listener = await transport.listen(parse_listen_address(medium.listen_address()).target)
    accepted_send, accepted_receive = trio.open_memory_channel[Connection](1)
    release = trio.Event()

    async def hand_over(conn: Connection) -> None:
        await accepted_send.send(conn)
        await release.wait()  # the handler owns the connection: keep it open until the check ends

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, hand_over)
        dialed: Connection | None = None
        accepted: Connection | None = None
        try:
            local = format_peer_address(PeerAddress(medium.kind, listener.local_address))
            # a node id only to complete the address: no handshake runs here
            address = parse_peer_address(await medium.reachable(local, b"\x02" + bytes(32)))
            dialed = await transport.dial(address.target)
            # A dial may return before anything crossed (ZeroMQ, QUIC): the first bytes make the listener accept.
            await dialed.send_frames([b"\x00"])
            accepted = await accepted_receive.receive()
            first = await accepted.receive_some(1)
            _require(first == b"\x00", f"the first byte arrived as {first!r}")
            yield dialed, accepted
        finally:
            with trio.CancelScope(shield=True):
                for conn in (dialed, accepted):
                    if conn is not None:
                        await conn.aclose()
                release.set()
                await listener.aclose()
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ checks


def _pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _frames(data: bytes) -> list[bytes]:
    """``data`` cut into frames no larger than a BOLT-8 frame (what a transport is given)."""
    return [data[offset : offset + MAX_FRAME_SIZE] for offset in range(0, len(data), MAX_FRAME_SIZE)]


async def _receive_exactly(conn: Connection, size: int, chunk: int = 65536) -> bytes:
    data = bytearray()
    while len(data) < size:
        got = await conn.receive_some(chunk)
        _require(got, f"end of stream after {len(data)} of {size} bytes")
        data += got
    return bytes(data)


async def check_names(open_pair: PairOpener) -> None:
    """Both ends say their kind (the same) and name the remote end."""
    async with open_pair() as (a, b):
        for conn in (a, b):
            _require(isinstance(conn.kind, str) and conn.kind not in ("", "?"), f"{conn!r} has no kind")
            _require(isinstance(conn.remote_address, str) and conn.remote_address, f"{conn!r} has no remote address")
            _require(isinstance(conn.keeps_frame_boundaries, bool), "keeps_frame_boundaries is not a bool")
            joined = conn.max_joined_frames
            _require(
                joined is None or (conn.keeps_frame_boundaries and type(joined) is int and joined > 0),
                f"max_joined_frames {joined!r}: a positive int, and only where frames are kept apart",
            )
        _require(a.kind == b.kind, f"the ends disagree on the kind: {a.kind} and {b.kind}")


async def check_round_trip(open_pair: PairOpener) -> None:
    """A few frames each way, one way at a time, arrive whole and in order."""
    async with open_pair() as (a, b):
        for sender, receiver, seed in ((a, b, 1), (b, a, 2)):
            frames = [b"x", _pattern(seed, 1000), bytes(range(256)), _pattern(seed + 10, MAX_FRAME_SIZE)]
            await sender.send_frames(frames)
            expected = b"".join(frames)
            got = await _receive_exactly(receiver, len(expected))
            _require(got == expected, "frames arrived changed or out of order")


async def check_bulk_both_ways(open_pair: PairOpener) -> None:
    """:data:`BULK_BYTES` each way at once, in batches of random frames up to the largest BOLT-8 frame."""
    async with open_pair() as (a, b):

        async def send(conn: Connection, seed: int) -> None:
            rng = random.Random(seed)
            data = _pattern(seed, BULK_BYTES)
            offset = 0
            while offset < len(data):
                frames = []
                for _ in range(rng.randint(1, 8)):
                    size = min(rng.randint(1, MAX_FRAME_SIZE), len(data) - offset)
                    if size <= 0:
                        break
                    frames.append(data[offset : offset + size])
                    offset += size
                await conn.send_frames(frames)

        async def receive(conn: Connection, seed: int) -> None:
            got = await _receive_exactly(conn, BULK_BYTES, 128 * 1024)
            _require(got == _pattern(seed, BULK_BYTES), "bulk data arrived changed or out of order")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, a, 3)
            nursery.start_soon(send, b, 4)
            nursery.start_soon(receive, b, 3)
            nursery.start_soon(receive, a, 4)


async def check_receive_bound(open_pair: PairOpener) -> None:
    """``receive_some(n)`` never returns more than ``n`` bytes, and loses none of the rest."""
    async with open_pair() as (a, b):
        data = _pattern(5, 5000)
        await a.send_frames([data])
        got = bytearray()
        while len(got) < len(data):
            chunk = await b.receive_some(7)
            _require(0 < len(chunk) <= 7, f"receive_some(7) returned {len(chunk)} bytes")
            got += chunk
        _require(bytes(got) == data, "bytes were lost or changed across small reads")


async def check_close_delivers_then_eof(open_pair: PairOpener) -> None:
    """What one end sent before closing arrives whole at the other, then ``b""``; by either end."""
    for closer_index, seed in ((0, 6), (1, 7)):
        async with open_pair() as pair:
            closer, other = pair[closer_index], pair[1 - closer_index]
            data = _pattern(seed, 200_000)

            async def close_after_sending() -> None:
                await closer.send_frames(_frames(data))
                await closer.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_after_sending)
                got = await _receive_exactly(other, len(data))
                _require(got == data, "data sent before the close arrived changed")
                end = await other.receive_some(1000)
                _require(end == b"", f"expected end of stream after the close, got {len(end)} more bytes")


async def check_closed_end_refuses(open_pair: PairOpener) -> None:
    """``aclose`` twice is fine; a closed end refuses to send and to receive with a ``TransportError``."""
    async with open_pair() as (a, _b):
        await a.aclose()
        await a.aclose()
        for name, operation in (("send_frames", lambda: a.send_frames([b"late"])), ("receive_some", lambda: a.receive_some(10))):
            try:
                await operation()
            except TransportError:
                continue
            raise ConformanceFailure(f"{name} on a closed connection did not fail")


async def check_close_wakes_receiver(open_pair: PairOpener) -> None:
    """Closing an end from another task ends a receive waiting on it with ``ConnectionClosed``."""
    async with open_pair() as (_a, b):
        outcome: list[object] = []

        async def receive() -> None:
            try:
                outcome.append(await b.receive_some(10))
            except ConnectionClosed as exc:
                outcome.append(exc)
            except TransportError as exc:
                outcome.append(f"a TransportError that is not ConnectionClosed: {exc!r}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()
        _require(len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed), f"the waiting receive ended with {outcome}")


async def check_cancelled_receive_loses_nothing(open_pair: PairOpener) -> None:
    """A ``receive_some`` cancelled while it waits takes nothing: the next one gets every byte."""
    async with open_pair() as (a, b):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive_some, 1000)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        data = _pattern(8, 3000)
        await a.send_frames([data])
        got = await _receive_exactly(b, len(data))
        _require(got == data, "data after a cancelled receive arrived changed")


async def check_send_nowait_keeps_order(open_pair: PairOpener) -> None:
    """``send_nowait`` takes a prefix (maybe none) at once; ``send_frames`` sends the rest, in order.

    A full buffer (nobody reads yet) makes it take part or nothing; a closed
    end refuses with a ``TransportError`` or takes nothing.
    """
    async with open_pair() as (a, b):
        if a.keeps_frame_boundaries:
            return  # frames kept apart: the peer never uses it on such a transport
        sent = bytearray()
        for seed, size in ((20, 40), (21, 4 * 1024 * 1024), (22, 40)):
            data = _pattern(seed, size)
            taken = a.send_nowait(data)
            _require(isinstance(taken, int) and 0 <= taken <= len(data), f"send_nowait took {taken!r} of {len(data)} bytes")
            sent += data
            if taken < len(data):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.send_frames, [data[taken:]])
                    got = await _receive_exactly(b, len(sent))
                _require(got == sent, "bytes after a partial send_nowait arrived changed or out of order")
                sent.clear()
        if sent:
            _require(await _receive_exactly(b, len(sent)) == sent, "bytes sent with send_nowait arrived changed")
        await a.aclose()
        try:
            taken = a.send_nowait(b"late")
        except TransportError:
            return
        # Taking nothing is as good: the caller's send_frames of the rest then fails.
        _require(taken == 0, f"send_nowait on a closed connection took {taken} bytes")


#: every connection check by name, each taking only the pair opener
CONNECTION_CHECKS: dict[str, Callable[[PairOpener], Awaitable[None]]] = {
    "names": check_names,
    "round_trip": check_round_trip,
    "bulk_both_ways": check_bulk_both_ways,
    "receive_bound": check_receive_bound,
    "close_delivers_then_eof": check_close_delivers_then_eof,
    "closed_end_refuses": check_closed_end_refuses,
    "close_wakes_receiver": check_close_wakes_receiver,
    "cancelled_receive_loses_nothing": check_cancelled_receive_loses_nothing,
    "send_nowait_keeps_order": check_send_nowait_keeps_order,
}


async def check_connection(open_pair: PairOpener, *, deadline: float = DEADLINE) -> None:
    """Run every connection check on fresh pairs from ``open_pair``, each under ``deadline`` seconds."""
    for name, check in CONNECTION_CHECKS.items():
        with trio.fail_after(deadline):
            try:
                await check(open_pair)
            except ConformanceFailure as exc:
                raise ConformanceFailure(f"{name}: {exc}") from exc
