"""The trio shell around one peer after its handshake (:mod:`lnpmsg.node.handshake`,
re-exported here): a reading task and, while there is something to send, a
writing task. The session's timers (keepalive pings, the init and pong
deadlines) are run by the node's keepalive schedule
(:mod:`lnpmsg.node.keepalive`), so an idle peer's reading task only waits for
bytes.

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

from lnpmsg.node.handshake import HANDSHAKE_TIMEOUT, HandshakeFailed, handshake_as_initiator, handshake_as_responder
from lnpmsg.node.keepalive import KeepaliveSchedule
from lnpmsg.node.session import (
    MessagesReceived,
    PeerReady,
    PeerSession,
    PongReceived,
    RunReceived,
    SessionClosed,
    SessionEvent,
    SessionState,
)
from lnpmsg.noise import MAX_MESSAGE_SIZE, MessageTooLarge, NoiseError, TransportCipher
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


class PeerClosedError(Exception):
    """The peer is closed; nothing can be sent to it any more."""


class PeerQueueFull(Exception):
    """``send_nowait`` found the peer's outbound queue full."""


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
        "_direct_write",
        "_flush_scope",
        "_keepalive",
        "_leftover",
        "_max_queued",
        "_nursery",
        "_on_events",
        "_outbox",
        "_pong_waiters",
        "_queued_bytes",
        "_writer_running",
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
        keepalive: KeepaliveSchedule,
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
        #: a lone message may go to the socket at once, from the sending task
        #: (once after a read of one message: see :meth:`_enqueue`)
        self._direct_write = False
        #: the node's schedule that runs the session's timers (:meth:`keepalive_due`)
        self._keepalive = keepalive
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
        if not outbox:
            if self._direct_write and not self._writer_running and self._nursery is not None and not self.conn.keeps_frame_boundaries:
                # Nothing queued and nothing being written: the message leaves from
                # here, as a pong does, instead of waking a writer task for it (a
                # task start and two more scheduler passes per reply or request).
                # Only after a read of one message, and once, so a burst of sends
                # (a handler answering every request of a read, callers woken by
                # its responses) still coalesces in the writer's batches.
                self._direct_write = False
                self._write_now(data)
                return
            # The writer waits only on an empty outbox, so only the first message wakes it.
            if not self._wake_writer():
                raise PeerClosedError(f"peer {self.node_id.hex()} is closing: its tasks have ended")
        outbox.append(data)
        self._queued_bytes += size

    def _write_now(self, data: bytes) -> None:
        """Encrypt one message and hand it to the transport without waiting; a writer task takes what it left."""
        frame = self._cipher.encryptor.encrypt(data)
        try:
            sent = self.conn.send_nowait(frame)
        except TransportError as exc:
            self._begin_close(f"connection lost: {exc}")
            return
        counters = self.counters
        counters.messages_out += 1
        counters.bytes_out += len(frame)
        if sent < len(frame) and self._start_task(self._write_loop, frame[sent:]):
            self._writer_running = True

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
        # The ping leaves as the keepalive's do: straight to the socket when nothing else is being written.
        if not self._send_queued():
            raise PeerClosedError(f"peer {self.node_id.hex()} is closing: its tasks have ended")
        self._keepalive.set(self, self.session.get_timer())  # the pong deadline
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

    def _begin_close(self, reason: str, *, reader_ends: bool = False) -> None:
        """Start closing. ``reader_ends``: the reading task calls this and returns next, so
        with no other task of the peer's under way, nothing needs cancelling (a
        cancelled nursery costs its exit ~5 µs more: every accepted connection ends here)."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        self._keepalive.set(self, None)
        if self._flush_scope is not None:
            self._flush_scope.deadline = min(self._flush_scope.deadline, trio.current_time() + CLOSE_FLUSH_TIMEOUT)
        self._wake_waiters()
        if self._room is not None:
            self._room.unpark_all()
        if (self._writer_running or self.session.outbox) and self._wake_writer():
            return  # the writer flushes what is queued, then stops the reader
        if self._nursery is not None and not (reader_ends and not self._nursery.child_tasks):
            self._nursery.cancel_scope.cancel()  # nothing to flush: stop the reader now

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Drive the peer until it closes. Always closes the connection."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                init_deadline = self.session.get_timer()
                self._keepalive.set(self, init_deadline)
                # Our init is queued: it leaves from this task, before the first
                # read (a fresh connection takes a small write at once, without
                # waiting), so a connection needs no second task until there is
                # more to send.
                unsent = self._send_first_nowait()
                written = unsent is not None
                if unsent or (written and self.session.outbox):
                    # The transport did not take it at once: the init timeout bounds
                    # that write here (the keepalive schedule cannot stop a write under way).
                    nursery.cancel_scope.deadline = math.inf if init_deadline is None else init_deadline
                    written = await self._write_first(unsent)
                    nursery.cancel_scope.deadline = math.inf
                if written:
                    try:
                        await self._read_loop()
                    finally:
                        # From here a send may find the nursery closed: it must take the
                        # writer's path, which says so (PeerClosedError), not write directly.
                        self._direct_write = False
            self._nursery = None  # closed: nothing may start in it any more
            if nursery.cancel_scope.cancelled_caught and not self._closing:
                self._begin_close("our init could not be sent before the init timeout")
        finally:
            self._nursery = None
            self._keepalive.set(self, None)
            if not self._closing:
                self._begin_close("cancelled")
            if not self.conn.close_nowait():
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
                # A read of one message (a request, a response: one call at a time) lets
                # one message out directly; a read of several (calls pipelined) leaves
                # the replies and next requests to the writer, in one batch, as the
                # peer sent them, rather than one alone and then the rest.
                self._direct_write = len(messages) == 1
                if messages:
                    counters.messages_in += len(messages)
                    events = session.receive_messages(messages, trio.current_time())
                    for event in events:
                        if type(event) is not RunReceived and type(event) is not MessagesReceived:
                            self._note(event)
                    # One call per read, however many messages it carried.
                    await on_events(self, events)
                    if self._closing:
                        return
                    if session.outbox:
                        self._send_queued()  # e.g. a pong
                if failure is not None:
                    self._begin_close(f"bad encrypted frame from peer: {failure}", reader_ends=True)
                    return
            # No deadline here: the node's keepalive schedule runs the session's
            # timers, so an idle peer's receive is never cancelled and re-armed.
            try:
                received = await self.conn.receive_some(RECEIVE_CHUNK)
            except TransportError as exc:
                self._begin_close(f"connection lost: {exc}", reader_ends=True)
                return
            if not received:
                self._begin_close("peer closed the connection", reader_ends=True)
                return
            data = received

    def _note(self, event: SessionEvent) -> None:
        """Update the peer's own state from a session event (before the node sees it)."""
        if isinstance(event, SessionClosed):
            self._begin_close(event.reason)
        elif isinstance(event, PongReceived):
            self.ping_rtt = event.rtt
            self._wake_waiters()
            self._keepalive.set(self, self.session.get_timer())  # the next ping
        elif isinstance(event, PeerReady):
            self._is_ready = True
            if self._ready_event is not None:
                self._ready_event.set()
            self._keepalive.set(self, self.session.get_timer())  # the first ping

    def _send_first_nowait(self) -> bytes | None:
        """Send what is queued at the start (our ``init``) if the transport takes it without
        waiting. Returns the encrypted bytes it did not take (``b""``: all sent, or
        nothing tried: a transport that keeps frame boundaries leaves the outbox as it
        is), None if the connection failed."""
        outbox = self._outbox
        if not outbox or self.conn.keeps_frame_boundaries:
            return b""
        batch = list(outbox)
        outbox.clear()
        encryptor = self._cipher.encryptor
        data = encryptor.encrypt(batch[0]) if len(batch) == 1 else encryptor.encrypt_joined(batch)
        try:
            sent = self.conn.send_nowait(data)
        except TransportError as exc:
            self._begin_close(f"connection lost: {exc}", reader_ends=True)
            return None
        counters = self.counters
        counters.messages_out += len(batch)
        counters.bytes_out += len(data)
        return data[sent:]

    async def _write_first(self, unsent: bytes = b"") -> bool:
        """Write ``unsent`` and what is queued at the start (our ``init``) from the calling
        task; False if that failed."""
        if not (unsent or self.session.outbox) or self._writer_running:
            return True
        self._writer_running = True
        try:
            idle = await self._write_until_flushed(unsent)
        finally:
            self._writer_running = False
        if not idle:
            return False
        if self.session.outbox:
            self._wake_writer()  # queued while the first write was under way
        return True

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
            if not self._start_task(self._write_loop):
                return False
            self._writer_running = True
        return True

    def _start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool:
        """Start a task of the peer's; False when its nursery is closed (its tasks ended, :meth:`run` not resumed yet)."""
        assert self._nursery is not None
        try:
            self._nursery.start_soon(fn, *args)
        except RuntimeError:  # "Nursery is closed to new arrivals"
            return False
        return True

    def _send_queued(self) -> bool:
        """Send what the session queued (a ping, a pong) now, without a task, if we can.

        When no writer is under way and no app message is queued
        (``_queued_bytes`` counts those only), the outbox holds just the
        session's own few small messages. They are encrypted and handed to
        the transport at once when it takes them without waiting
        (``send_nowait``); what it does not take goes to a writer task, as
        does everything else (app messages a handler queued behind a pong
        leave in the writer's batches). False when no writer can start any more
        (see :meth:`_wake_writer`).
        """
        if self._writer_running or self._queued_bytes or self._closing or self._nursery is None or self.conn.keeps_frame_boundaries:
            return self._wake_writer()
        outbox = self._outbox
        batch = list(outbox)
        outbox.clear()
        data = self._cipher.encryptor.encrypt_joined(batch)
        try:
            sent = self.conn.send_nowait(data)
        except TransportError as exc:
            self._begin_close(f"connection lost: {exc}")
            return True
        counters = self.counters
        counters.messages_out += len(batch)
        counters.bytes_out += len(data)
        if sent < len(data) and self._start_task(self._write_loop, data[sent:]):
            self._writer_running = True
        return True

    def keepalive_due(self, now: float) -> float | None:
        """Run the session's due timers; the node's keepalive schedule calls this.

        Returns the session's next deadline (None once closed). A ping goes
        out from here (see :meth:`_send_queued`); a passed deadline closes
        the peer, and a task of the peer's tells the node.
        """
        session = self.session
        events = session.handle_timer(now)
        if events:
            if self._nursery is not None:
                self._start_task(self._on_events, self, events)
            for event in events:
                self._note(event)
        if session.outbox:
            self._send_queued()
        return None if self._closing else session.get_timer()

    async def _write_loop(self, unsent: bytes = b"") -> None:
        # Once closing starts, the writer gets CLOSE_FLUSH_TIMEOUT more, whatever
        # it is doing: a send stuck on a peer that does not read must not keep
        # the connection (and its pong timeout) from ending.
        idle = False
        try:
            with trio.CancelScope() as scope:
                self._flush_scope = scope
                if self._closing:
                    scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
                idle = await self._write_until_flushed(unsent)
            self._flush_scope = None
        finally:
            self._writer_running = False
        if idle:
            return  # the outbox is empty: the next message starts a writer again
        # Closing: everything that could be flushed is out; stop the other tasks.
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _write_until_flushed(self, unsent: bytes = b"") -> bool:
        """Write ``unsent`` (encrypted bytes a send left over), then until the outbox
        is empty (True) or, when closing, until flushed (False)."""
        encryptor = self._cipher.encryptor
        keeps_frames = self.conn.keeps_frame_boundaries
        outbox = self.session.outbox
        counters = self.counters
        if unsent:
            try:
                await self.conn.send_frames([unsent])
            except TransportError as exc:
                self._begin_close(f"connection lost: {exc}")
                return False
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
            if len(batch) == 1:
                # One message (an init, a ping, a reply): the batch path costs twice as much.
                frames = [encryptor.encrypt(batch[0])]
            else:
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
