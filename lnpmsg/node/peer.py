"""The trio shell around one peer: handshake, then a reading task (which also runs
the session's timers) and, while there is something to send, a writing task.

All protocol decisions are made by the sans-IO cores (:mod:`lnpmsg.noise` and
:class:`lnpmsg.node.session.PeerSession`); this module only moves bytes and
time between them and a :class:`~lnpmsg.transports.base.Connection`.

Writes are coalesced: while one batch is on its way, new messages pile up in
the session's outbox and leave together in the next write. The bytes queued
for a peer are bounded (``MAX_QUEUED_BYTES``): a sender waits (back-pressure)
rather than letting a peer that does not read grow our memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.session import (
    MessagesReceived,
    PeerReady,
    PeerSession,
    PongReceived,
    SessionClosed,
    SessionEvent,
    SessionState,
)
from lnpmsg.noise import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    MAX_MESSAGE_SIZE,
    InitiatorHandshake,
    MessageTooLarge,
    NoiseError,
    ResponderHandshake,
    TransportCipher,
)
from lnpmsg.transports.base import Connection, TransportError
from lnpmsg.wire import Message

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_QUEUED_BYTES",
    "HandshakeFailed",
    "Peer",
    "PeerClosedError",
    "PeerQueueFull",
    "handshake_as_initiator",
    "handshake_as_responder",
]

log = logging.getLogger(__name__)

#: the whole BOLT-8 handshake must finish within this (a silent peer costs us no more)
HANDSHAKE_TIMEOUT = 15.0
#: plaintext bytes queued for one peer before senders must wait
MAX_QUEUED_BYTES = 4 * 1024 * 1024
#: about this many bytes go into one write: enough to spread a write's fixed cost over
#: ~125 1-KiB messages, small enough that a batch's frames stay in the CPU cache
#: (measured with benchmarks/bench_bolt8.py: 1 MiB batches were no faster). A batch
#: is sized by the queue's average message, so mixed sizes can make it larger, never
#: larger than the queue (``MAX_QUEUED_BYTES``).
MAX_BATCH_BYTES = 128 * 1024
#: at most this many messages go into one write (bounds a batch of tiny messages the same way)
MAX_BATCH_MESSAGES = 16384
#: bytes asked of the transport per read; a large read decodes many small frames at once
RECEIVE_CHUNK = 128 * 1024
#: on close, pending messages (e.g. our ``error``) get this long to leave
CLOSE_FLUSH_TIMEOUT = 2.0


def _encoded(message: Message | bytes) -> bytes:
    """A message's wire bytes (a bytes subclass or bytearray is copied into plain bytes)."""
    return message.encode() if isinstance(message, Message) else bytes(message)


class HandshakeFailed(Exception):
    """The BOLT-8 handshake did not complete (timeout, wrong key, bad act, closed)."""


class PeerClosedError(Exception):
    """The peer is closed; nothing can be sent to it any more."""


class PeerQueueFull(Exception):
    """``send_nowait`` found the peer's outbound queue full."""


async def _receive_exactly(conn: Connection, size: int, buffer: bytearray, what: str) -> bytes:
    while len(buffer) < size:
        chunk = await conn.receive_some(RECEIVE_CHUNK)
        if not chunk:
            raise HandshakeFailed(f"connection closed during the handshake (waiting for {what})")
        buffer += chunk
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


async def handshake_as_initiator(
    conn: Connection, key: NodeKey, remote_node_id: bytes, timeout: float = HANDSHAKE_TIMEOUT
) -> tuple[TransportCipher, bytes]:
    """Run acts 1-3 as initiator. Returns the cipher and any bytes read past act two."""
    buffer = bytearray()
    try:
        with trio.fail_after(timeout):
            hs = InitiatorHandshake(key.secret, remote_node_id)
            await conn.send_frames([hs.act_one()])
            try:
                act_two = await _receive_exactly(conn, ACT_TWO_SIZE, buffer, "act two")
            except HandshakeFailed as exc:
                # A responder whose key differs cannot read act one and hangs up: say so.
                raise HandshakeFailed(f"{exc}; is {remote_node_id.hex()} the right node id?") from None
            act_three = hs.receive_act_two(act_two)
            await conn.send_frames([act_three])
    except trio.TooSlowError:
        raise HandshakeFailed(f"handshake timed out after {timeout:g} s") from None
    except NoiseError as exc:
        raise HandshakeFailed(f"handshake failed: {exc} (is {remote_node_id.hex()} the right node id?)") from exc
    except TransportError as exc:
        raise HandshakeFailed(f"connection failed during the handshake: {exc}") from exc
    return TransportCipher(hs.keys), bytes(buffer)


async def handshake_as_responder(
    conn: Connection, key: NodeKey, timeout: float = HANDSHAKE_TIMEOUT, *, act_one_timeout: float | None = None
) -> tuple[TransportCipher, bytes, bytes]:
    """Run acts 1-3 as responder. Returns the cipher, the initiator's node id and leftover bytes.

    ``act_one_timeout`` (shorter than ``timeout``) bounds the wait for act
    one: a socket that says nothing holds a handshake slot no longer.
    """
    buffer = bytearray()
    deadline = trio.current_time() + timeout
    act_one_deadline = deadline if act_one_timeout is None else min(deadline, trio.current_time() + act_one_timeout)
    got_act_one = False
    try:
        # One cancel scope whose deadline moves once act one is in: every accepted
        # connection passes here, and a scope costs as much as a dozen hashes.
        with trio.CancelScope(deadline=act_one_deadline) as scope:
            hs = ResponderHandshake(key.secret)
            act_one = await _receive_exactly(conn, ACT_ONE_SIZE, buffer, "act one")
            got_act_one = True
            scope.deadline = deadline
            await conn.send_frames([hs.receive_act_one(act_one)])
            act_three = await _receive_exactly(conn, ACT_THREE_SIZE, buffer, "act three")
            remote_node_id = hs.receive_act_three(act_three)
    except NoiseError as exc:
        raise HandshakeFailed(f"handshake failed: {exc}") from exc
    except TransportError as exc:
        raise HandshakeFailed(f"connection failed during the handshake: {exc}") from exc
    if scope.cancelled_caught:
        if not got_act_one and act_one_deadline < deadline:
            raise HandshakeFailed(f"no act one within {act_one_timeout:g} s")
        raise HandshakeFailed(f"handshake timed out after {timeout:g} s")
    return TransportCipher(hs.keys), remote_node_id, bytes(buffer)


#: the node's callback: every event of one read (or timer), in order
EventsHandler = Callable[["Peer", list[SessionEvent]], Awaitable[None]]


@dataclass(slots=True)
class PeerCounters:
    """Traffic counters of one connection (bytes are on the wire, after encryption)."""

    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0


class Peer:
    """One connected, authenticated peer.

    Created by the node after a successful handshake; :meth:`run` drives it
    until it closes. Apps use :meth:`send`, :meth:`send_nowait`, :meth:`ping`
    and :meth:`close`.
    """

    # A node holds thousands of idle peers: no per-instance dict, and the
    # objects only some peers need (a parking lot for blocked senders, pong
    # waiters) are made on first use.
    __slots__ = (
        "_cipher",
        "_closing",
        "_flush_scope",
        "_leftover",
        "_max_queued",
        "_nursery",
        "_on_events",
        "_outbox",
        "_pong_waiters",
        "_queued_bytes",
        "_writer_running",
        "_receive_scope",
        "_room",
        "_closed_event",
        "_is_closed",
        "_is_ready",
        "_ready_event",
        "close_reason",
        "conn",
        "connected_at",
        "counters",
        "dialed",
        "node_id",
        "outbound",
        "ping_rtt",
        "session",
    )

    def __init__(
        self,
        conn: Connection,
        cipher: TransportCipher,
        session: PeerSession,
        node_id: bytes,
        *,
        outbound: bool,
        on_events: EventsHandler,
        leftover: bytes = b"",
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.conn = conn
        self.node_id = node_id
        self.outbound = outbound
        #: the address we dialed (outbound peers): where to reach the peer again
        self.dialed: str | None = None
        self.session = session
        self.counters = PeerCounters()
        self.ping_rtt: float | None = None
        self.connected_at = trio.current_time()
        self.close_reason: str | None = None
        # The two events are made when somebody asks for them: an inbound peer
        # nobody waits on costs two sets (and their events) less.
        self._closed_event: trio.Event | None = None
        self._is_closed = False
        self._ready_event: trio.Event | None = None
        self._is_ready = False
        self._cipher = cipher
        self._outbox = session.outbox
        self._on_events = on_events
        self._leftover = leftover
        self._max_queued = max_queued_bytes
        self._queued_bytes = 0
        self._room: trio.lowlevel.ParkingLot | None = None
        self._pong_waiters: list[trio.Event] | None = None
        #: a writer task is under way (it ends when the outbox is empty)
        self._writer_running = False
        #: the scope of the receive under way: its deadline is the session's next timer
        self._receive_scope: trio.CancelScope | None = None
        self._flush_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False

    # ------------------------------------------------------------ properties

    @property
    def closed(self) -> trio.Event:
        """Set once the peer's connection is closed and :meth:`run` is over."""
        if self._closed_event is None:
            self._closed_event = trio.Event()
            if self._is_closed:
                self._closed_event.set()
        return self._closed_event

    @property
    def ready(self) -> trio.Event:
        """Set when the peer's ``init`` has been accepted."""
        if self._ready_event is None:
            self._ready_event = trio.Event()
            if self._is_ready:
                self._ready_event.set()
        return self._ready_event

    @property
    def address(self) -> str:
        return self.conn.remote_address

    @property
    def transport_kind(self) -> str:
        return self.conn.kind

    @property
    def is_ready(self) -> bool:
        return self.session.state is SessionState.ACTIVE and not self._closing

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def __repr__(self) -> str:
        return f"<Peer {self.node_id.hex()[:16]}… {self.conn.kind} {self.address}>"

    # ------------------------------------------------------------------ API

    async def send(self, message: Message | bytes) -> None:
        """Queue a message, waiting while this peer's outbound queue is full."""
        data = message if type(message) is bytes else _encoded(message)
        size = len(data)
        while self._queued_bytes and self._queued_bytes + size > self._max_queued:
            self._check_open()
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()
        self._enqueue(data)

    def send_nowait(self, message: Message | bytes) -> None:
        """Queue a message now or raise :class:`PeerQueueFull`."""
        data = message if type(message) is bytes else _encoded(message)
        if self._queued_bytes and self._queued_bytes + len(data) > self._max_queued:
            raise PeerQueueFull(f"{self._queued_bytes} bytes already queued for {self!r}")
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        # The session's only checks on send are "not closed" and "whole
        # message", both enforced here, so append to its outbox directly:
        # this is the hot path of every send.
        if self._closing:
            self._check_open()
        size = len(data)
        if size > MAX_MESSAGE_SIZE:
            raise MessageTooLarge(f"message of {size} bytes exceeds {MAX_MESSAGE_SIZE}")
        outbox = self._outbox
        # The writer waits only on an empty outbox, so only the first message wakes it.
        if not outbox and not self._wake_writer():
            raise PeerClosedError(f"peer {self.node_id.hex()} is closing: its tasks have ended")
        outbox.append(data)
        self._queued_bytes += size

    def _check_open(self) -> None:
        if self._closing:
            raise PeerClosedError(f"peer {self.node_id.hex()} is closed: {self.close_reason}")

    async def ping(self, timeout: float = 30.0) -> float:
        """Ping the peer and return the round-trip time in seconds."""
        self._check_open()
        waiter = trio.Event()
        if self._pong_waiters is None:
            self._pong_waiters = []
        self._pong_waiters.append(waiter)
        self.session.ping(trio.current_time())
        if not self._wake_writer():
            raise PeerClosedError(f"peer {self.node_id.hex()} is closing: its tasks have ended")
        self._rearm_timer()
        with trio.fail_after(timeout):
            await waiter.wait()
        self._check_open()
        assert self.ping_rtt is not None
        return self.ping_rtt

    def close(self, reason: str, *, send_error: bool = False) -> None:
        """Start closing: flush what is queued (briefly), then drop the connection."""
        if self._closing:
            return
        if not self.session.is_closed:
            self.session.close(reason, send_error=send_error)
        self._begin_close(reason)

    def _begin_close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        if self._flush_scope is not None:
            self._flush_scope.deadline = min(self._flush_scope.deadline, trio.current_time() + CLOSE_FLUSH_TIMEOUT)
        self._wake_waiters()
        if self._room is not None:
            self._room.unpark_all()
        if (self._writer_running or self.session.outbox) and self._wake_writer():
            return  # the writer flushes what is queued, then stops the reader
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # nothing to flush: stop the reader now

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Drive the peer until it closes. Always closes the connection."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._wake_writer()  # our init is queued
                # Reading and the session's timers run in this task: fewer tasks
                # to start per connection.
                await self._read_loop()
        finally:
            self._nursery = None
            if not self._closing:
                self._begin_close("cancelled")
            with trio.CancelScope(shield=True):
                await self.conn.aclose()
            self._is_closed = True
            if self._closed_event is not None:
                self._closed_event.set()

    async def _read_loop(self) -> None:
        decryptor = self._cipher.decryptor
        session = self.session
        counters = self.counters
        on_events = self._on_events
        data = self._leftover
        self._leftover = b""
        while True:
            if data:
                counters.bytes_in += len(data)
                failure: NoiseError | None = None
                try:
                    messages = decryptor.feed(data)
                except NoiseError as exc:
                    # The inbound stream is undecipherable from here on: BOLT 8 says terminate,
                    # but the authentic frames before the bad one are handled first.
                    failure = exc
                    messages = getattr(exc, "decoded", [])
                if messages:
                    counters.messages_in += len(messages)
                    events = session.receive_messages(messages, trio.current_time())
                    for event in events:
                        if type(event) is not MessagesReceived:
                            self._note(event)
                    # One call per read, however many messages it carried.
                    await on_events(self, events)
                    if self._closing:
                        return
                    if session.outbox:
                        self._wake_writer()
                if failure is not None:
                    self._begin_close(f"bad encrypted frame from peer: {failure}")
                    return
            # A receive waits at most until the session's next timer is due
            # (a ping to send, a deadline to check); cancelling one loses no data.
            received: bytes | None = None
            with trio.CancelScope(deadline=self._timer_deadline()) as self._receive_scope:
                try:
                    received = await self.conn.receive_some(RECEIVE_CHUNK)
                except TransportError as exc:
                    self._begin_close(f"connection lost: {exc}")
                    return
            self._receive_scope = None
            if received is None:
                await self._on_timer()
                if self._closing:
                    return
                data = b""
                continue
            if not received:
                self._begin_close("peer closed the connection")
                return
            data = received

    def _note(self, event: SessionEvent) -> None:
        """Update the peer's own state from a session event (before the node sees it)."""
        if isinstance(event, SessionClosed):
            self._begin_close(event.reason)
        elif isinstance(event, PongReceived):
            self.ping_rtt = event.rtt
            self._wake_waiters()
        elif isinstance(event, PeerReady):
            self._is_ready = True
            if self._ready_event is not None:
                self._ready_event.set()

    def _wake_writer(self) -> bool:
        """Start a writer task unless one runs: it drains the outbox, then ends.

        An idle peer thus holds one task (the reader), not two; a writer that
        is under way sees what is queued meanwhile, since it re-checks the
        outbox after every write. False when no writer can start any more:
        :meth:`run`'s tasks have all ended (e.g. cancelled by the node's stop)
        and it has not resumed yet to close the peer, while another task of
        the node (an app's) sends.
        """
        if not self._writer_running and self._nursery is not None:
            try:
                self._nursery.start_soon(self._write_loop)
            except RuntimeError:  # "Nursery is closed to new arrivals"
                return False
            self._writer_running = True
        return True

    async def _write_loop(self) -> None:
        # Once closing starts, the writer gets CLOSE_FLUSH_TIMEOUT more, whatever
        # it is doing: a send stuck on a peer that does not read must not keep
        # the connection (and its pong timeout) from ending.
        idle = False
        try:
            with trio.CancelScope() as scope:
                self._flush_scope = scope
                if self._closing:
                    scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
                idle = await self._write_until_flushed()
            self._flush_scope = None
        finally:
            self._writer_running = False
        if idle:
            return  # the outbox is empty: the next message starts a writer again
        # Closing: everything that could be flushed is out; stop the other tasks.
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _write_until_flushed(self) -> bool:
        """Write until the outbox is empty (True) or, when closing, until flushed (False)."""
        encryptor = self._cipher.encryptor
        keeps_frames = self.conn.keeps_frame_boundaries
        outbox = self.session.outbox
        counters = self.counters
        while True:
            if not outbox:
                return not self._closing
            if self._queued_bytes <= MAX_BATCH_BYTES and len(outbox) <= MAX_BATCH_MESSAGES:
                # Usual case: everything queued fits in one write.
                batch = list(outbox)
                outbox.clear()
                size = sum(map(len, batch))
            else:
                # About MAX_BATCH_BYTES at the queue's average message size, cut by two C
                # slice operations. A sender ahead of the writer makes this the usual case;
                # finding the exact cut took a length, a running sum and a test per message.
                count = min(len(outbox), MAX_BATCH_MESSAGES, max(1, MAX_BATCH_BYTES * len(outbox) // self._queued_bytes))
                batch = outbox[:count]
                del outbox[:count]
                size = sum(map(len, batch))
            # A byte stream takes the batch as one buffer, its frames joined.
            frames = encryptor.encrypt_many(batch) if keeps_frames else [encryptor.encrypt_joined(batch)]
            try:
                await self.conn.send_frames(frames)
            except TransportError as exc:
                self._begin_close(f"connection lost: {exc}")
                return False
            counters.messages_out += len(batch)
            counters.bytes_out += sum(map(len, frames))
            self._queued_bytes = max(0, self._queued_bytes - size)
            if self._room is not None:
                self._room.unpark_all()

    def _wake_waiters(self) -> None:
        if self._pong_waiters:
            for waiter in self._pong_waiters:
                waiter.set()
            self._pong_waiters.clear()

    def _timer_deadline(self) -> float:
        deadline = self.session.get_timer()
        return math.inf if deadline is None else deadline

    def _rearm_timer(self) -> None:
        if self._receive_scope is not None:
            self._receive_scope.deadline = self._timer_deadline()

    async def _on_timer(self) -> None:
        events = self.session.handle_timer(trio.current_time())
        for event in events:
            self._note(event)
        if events:
            await self._on_events(self, events)
        if self.session.outbox:
            self._wake_writer()
