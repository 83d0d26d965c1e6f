"""An in-memory transport: connections and whole nodes inside one trio run.

Nothing leaves the process and nothing reads a clock, so a test over this
transport runs the same under trio's ``MockClock`` (virtual time, see
:mod:`lnpmsg.testing.virtual`) as under the real one. It implements
:mod:`lnpmsg.transports.base` like every other transport and passes the same
conformance suites (:mod:`lnpmsg.testing.conformance`).

Two ways in:

- a bare connected pair, to drive a protocol by hand::

      a, b = memory_connection_pair()
      await a.send_frames([b"ping"])
      assert await b.receive_some() == b"ping"

- a :class:`MemoryNetwork` whose transports nodes use under the kind
  ``mem``; a listener is a name, peers dial ``mem://NODEID@name``::

      network = MemoryNetwork()
      a = Node(NodeKey.generate(), NodeConfig(listen=["mem://"]), transports={"mem": network.transport()})
      b = Node(NodeKey.generate(), transports={"mem": network.transport()})
      ...
      await b.connect(a.addresses[0])          # mem://02ab...@mem-1

Faults, to test what an app does when the network misbehaves (each
:class:`MemoryConnection` is one end; ``conn.other`` is the other):

- :meth:`MemoryConnection.hang`: the link stops delivering in both
  directions while both ends stay open (a half-open connection, a
  partition): receives wait, sends fill the buffer and then wait.
  :meth:`MemoryConnection.resume` delivers again, nothing lost.
- :meth:`MemoryConnection.drop`: the link is reset: bytes in flight are
  lost and every pending or later operation at either end fails with
  :class:`~lnpmsg.transports.base.ConnectionClosed`.
- :meth:`MemoryNetwork.hang_dials`: dials to a name wait forever (a host
  that swallows SYNs), until :meth:`MemoryNetwork.resume_dials`.

Each direction holds at most ``buffer_size`` bytes (default
:data:`BUFFER_SIZE`); a sender beyond that waits for the receiver, so
back-pressure behaves as on a real link.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import trio

from lnpmsg.transports.base import (
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    Listener,
    Transport,
    TransportError,
)

__all__ = [
    "BUFFER_SIZE",
    "KIND",
    "LISTEN_BACKLOG",
    "MemoryConnection",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryTransport",
    "memory_connection_pair",
]

#: the transport kind (and address scheme): ``mem://NODEID@name``
KIND = "mem"
#: bytes one direction of a connection holds before its sender waits (about a loopback socket's buffer)
BUFFER_SIZE = 256 * 1024
#: dialed connections a listener holds before ``serve`` takes them; more are refused
LISTEN_BACKLOG = 128
#: a listener name: what follows ``mem://`` (and ``NODEID@``)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _Pipe:
    """One direction of a connection: a bounded byte buffer and the tasks waiting on it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        #: the writing end closed: the reader gets the data, then end of stream
        self.eof = False
        #: the reading end closed: writes fail
        self.reader_gone = False
        #: the link was reset (the reason): everything fails
        self.reset: str | None = None
        #: the link delivers nothing while held (``hang``)
        self.held = False
        self.lot = trio.lowlevel.ParkingLot()

    def changed(self) -> None:
        self.lot.unpark_all()


class MemoryConnection(Connection):
    """One end of an in-memory byte stream (see the module docstring for the fault knobs)."""

    kind = KIND
    keeps_frame_boundaries = False

    def __init__(self, outgoing: _Pipe, incoming: _Pipe, local_address: str, remote_address: str) -> None:
        self._out = outgoing
        self._in = incoming
        self.local_address = local_address
        self._remote_address = remote_address
        self._closed = False
        self._sending = False
        self._receiving = False
        #: the other end (set by :func:`memory_connection_pair`)
        self.other: MemoryConnection

    @property
    def remote_address(self) -> str:
        return self._remote_address

    @property
    def closed(self) -> bool:
        """True once this end was closed (by :meth:`aclose` or :meth:`drop`)."""
        return self._closed

    @property
    def bytes_in_flight(self) -> int:
        """Bytes sent by this end that the other end has not read yet."""
        return len(self._out.data)

    def _check(self, pipe: _Pipe, writing: bool) -> None:
        if self._closed:
            raise ConnectionClosed("connection closed")
        if pipe.reset is not None:
            raise ConnectionClosed(pipe.reset)
        if writing and pipe.reader_gone:
            raise ConnectionClosed("connection closed by the other end")

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._out
            self._check(pipe, writing=True)
            for frame in frames:
                view = memoryview(frame)
                while view:
                    self._check(pipe, writing=True)
                    room = pipe.capacity - len(pipe.data)
                    if room <= 0:
                        await pipe.lot.park()
                        continue
                    pipe.data += view[:room]
                    view = view[room:]
                    pipe.changed()
        finally:
            self._sending = False

    def send_nowait(self, data: bytes) -> int:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        pipe = self._out
        self._check(pipe, writing=True)
        taken = min(len(data), max(0, pipe.capacity - len(pipe.data)))
        if taken:
            pipe.data += memoryview(data)[:taken]
            pipe.changed()
        return taken

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._in
            while True:
                self._check(pipe, writing=False)
                if not pipe.held:
                    if pipe.data:
                        chunk = bytes(pipe.data[:max_bytes])
                        del pipe.data[:max_bytes]
                        pipe.changed()
                        return chunk
                    if pipe.eof:
                        return b""
                await pipe.lot.park()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._in.reader_gone = True
            self._in.data.clear()
            self._out.changed()
            self._in.changed()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------- faults

    def hang(self) -> None:
        """Stop delivering in both directions, both ends staying open (see :meth:`resume`)."""
        for pipe in (self._out, self._in):
            pipe.held = True
            pipe.changed()

    def resume(self) -> None:
        """Deliver again after :meth:`hang`; nothing sent meanwhile is lost."""
        for pipe in (self._out, self._in):
            pipe.held = False
            pipe.changed()

    def drop(self, reason: str = "connection reset") -> None:
        """Reset the link: bytes in flight are lost and both ends fail with ``ConnectionClosed(reason)``."""
        for pipe in (self._out, self._in):
            if pipe.reset is None:
                pipe.reset = reason
            pipe.data.clear()
            pipe.changed()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryConnection {self.local_address} -> {self._remote_address} {state}>"


def memory_connection_pair(
    *, buffer_size: int = BUFFER_SIZE, names: tuple[str, str] = ("mem-a", "mem-b")
) -> tuple[MemoryConnection, MemoryConnection]:
    """Two connected ends; each direction holds at most ``buffer_size`` bytes."""
    if buffer_size < 1:
        raise ValueError("buffer_size must be at least 1")
    a_to_b, b_to_a = _Pipe(buffer_size), _Pipe(buffer_size)
    a = MemoryConnection(a_to_b, b_to_a, names[0], names[1])
    b = MemoryConnection(b_to_a, a_to_b, names[1], names[0])
    a.other, b.other = b, a
    return a, b


class MemoryListener(Listener):
    """A name in a :class:`MemoryNetwork` that dialers reach."""

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self._network = network
        self.name = name
        self._send, self._receive = trio.open_memory_channel[MemoryConnection](LISTEN_BACKLOG)
        self._closed = False
        #: connections accepted (handed to the handler) so far
        self.accepted = 0

    @property
    def local_address(self) -> str:
        return self.name

    def _offer(self, conn: MemoryConnection) -> None:
        if self._closed:
            raise TransportError(f"connection refused: mem://{self.name} is closed")
        try:
            self._send.send_nowait(conn)
        except trio.WouldBlock:
            raise TransportError(f"connection refused: mem://{self.name} has {LISTEN_BACKLOG} connections waiting") from None

    async def serve(self, handler: ConnectionHandler) -> None:
        async def accepted(conn: MemoryConnection) -> None:
            try:
                await handler(conn)
            finally:
                await conn.aclose()  # whatever the handler did, the connection ends with it

        async with trio.open_nursery() as nursery:
            async for conn in self._receive:
                self.accepted += 1
                nursery.start_soon(accepted, conn)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._network._unbind(self)
            await self._send.aclose()
            # connections dialed but never served are refused, not left hanging
            while True:
                try:
                    conn = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                await conn.aclose()
        await trio.lowlevel.checkpoint()


class MemoryNetwork:
    """The names that memory transports listen on and dial, and every connection made.

    One network per test keeps tests apart; :meth:`transport` gives each
    node its own transport on it.
    """

    def __init__(self, *, buffer_size: int = BUFFER_SIZE) -> None:
        self.buffer_size = buffer_size
        self._listeners: dict[str, MemoryListener] = {}
        self._names = itertools.count(1)
        self._clients = itertools.count(1)
        self._hung: set[str] = set()
        self._resumed = trio.lowlevel.ParkingLot()
        #: the connections dialed on this network, as (dialer's end, listener's end),
        #: oldest first; pairs closed at both ends are forgotten at the next dial
        self.connections: list[tuple[MemoryConnection, MemoryConnection]] = []

    def transport(self) -> MemoryTransport:
        """A transport on this network (one per node)."""
        return MemoryTransport(self)

    @property
    def names(self) -> list[str]:
        """The names listened on now."""
        return sorted(self._listeners)

    def listener(self, name: str) -> MemoryListener:
        """The listener bound to ``name`` (KeyError if none)."""
        return self._listeners[name]

    def hang_dials(self, name: str) -> None:
        """Dials to ``name`` wait (forever, or until :meth:`resume_dials`) instead of connecting."""
        self._hung.add(name)

    def resume_dials(self, name: str) -> None:
        """Let dials to ``name`` through again (waiting ones go on)."""
        self._hung.discard(name)
        self._resumed.unpark_all()

    def _bind(self, name: str) -> MemoryListener:
        if not name or name == "0":
            name = f"mem-{next(self._names)}"
            while name in self._listeners:
                name = f"mem-{next(self._names)}"
        elif not _NAME.fullmatch(name):
            raise TransportError(f"bad memory listener name {name!r}: letters, digits, '.', '-', '_' (up to 100)")
        if name in self._listeners:
            raise TransportError(f"mem://{name} is already listened on")
        listener = self._listeners[name] = MemoryListener(self, name)
        return listener

    def _unbind(self, listener: MemoryListener) -> None:
        if self._listeners.get(listener.name) is listener:
            del self._listeners[listener.name]

    async def _dial(self, name: str) -> MemoryConnection:
        await trio.lowlevel.checkpoint()
        while name in self._hung:
            await self._resumed.park()
        listener = self._listeners.get(name)
        if listener is None:
            raise TransportError(f"connection refused: nothing listens on mem://{name}")
        client = f"{name}-client-{next(self._clients)}"
        dialer, accepted = memory_connection_pair(buffer_size=self.buffer_size, names=(client, name))
        listener._offer(accepted)
        self.connections = [pair for pair in self.connections if not (pair[0].closed and pair[1].closed)]
        self.connections.append((dialer, accepted))
        return dialer


class MemoryTransport(Transport):
    """The ``mem`` transport of one node on a :class:`MemoryNetwork` (a fresh network if none is given)."""

    kind = KIND

    def __init__(self, network: MemoryNetwork | None = None) -> None:
        self.network = network if network is not None else MemoryNetwork()

    async def dial(self, target: str) -> Connection:
        return await self.network._dial(target)

    async def listen(self, target: str) -> Listener:
        await trio.lowlevel.checkpoint()
        return self.network._bind(target)
