"""The trio shell around one peer after its handshake (:mod:`lnpmsg.node.handshake`,
re-exported here): a reading task and, while there is something to send, a
writing task. The session's timers (keepalive pings, the init and pong
deadlines) are run by the node's keepalive schedule
(:mod:`lnpmsg.node.keepalive`), so an idle peer's reading task only waits for
bytes.

All protocol decisions are made by the sans-IO cores (:mod:`lnpmsg.noise` and
:class:`lnpmsg.node.session.PeerSession`); this module only moves bytes and
time between them and a :class:`~lnpmsg.transports.base.Connection`.

The peer's tasks besides the one running it (a writer, a timer's handler, the
reading handed on) form its task group (:mod:`lnpmsg.node.peer_tasks`); its
reading side (the read loop, a handler's hold on the reading task) is
:mod:`lnpmsg.node.peer_reading`.

Writes are coalesced (:mod:`lnpmsg.node.peer_writing`): while one batch is on its way, new messages pile up in
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
from lnpmsg.node.peer_reading import RECEIVE_CHUNK, PeerReading
from lnpmsg.node.peer_tasks import PeerTasks
from lnpmsg.node.peer_writing import CLOSE_FLUSH_TIMEOUT, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, PeerWriting
from lnpmsg.node.session import (
    PeerReady,
    PeerSession,
    PongReceived,
    SessionClosed,
    SessionEvent,
    SessionState,
)
from lnpmsg.noise import MAX_MESSAGE_SIZE, MessageTooLarge, NoiseError, TransportCipher
from lnpmsg.transports.base import Connection, TransportError
from lnpmsg.wire import Message

__all__ = [
    "CLOSE_FLUSH_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_QUEUED_BYTES",
    "HandshakeFailed",
    "Peer",
    "PeerClosedError",
    "PeerQueueFull",
    "RECEIVE_CHUNK",
    "handshake_as_initiator",
    "handshake_as_responder",
]

log = logging.getLogger(__name__)

#: plaintext bytes queued for one peer before senders must wait
MAX_QUEUED_BYTES = 4 * 1024 * 1024


def _encoded(message: Message | bytes) -> bytes:
    """A message's wire bytes (a bytes subclass or bytearray is copied into plain bytes)."""
    return message.encode() if isinstance(message, Message) else bytes(message)


class PeerClosedError(Exception):
    """The peer is closed; nothing can be sent to it any more."""


class PeerQueueFull(Exception):
    """``send_nowait`` found the peer's outbound queue full."""


#: the node's callback: every event of one read (or timer), in order
EventsHandler = Callable[["Peer", list[SessionEvent]], Awaitable[None]]
#: the node's callback for a read :meth:`Peer.start_now` takes: handle its events now if
#: nothing in them has to wait (True), else leave them all to the :data:`EventsHandler`
EventsHandlerNow = Callable[["Peer", list[SessionEvent]], bool]


@dataclass(slots=True)
class PeerCounters:
    """Traffic counters of one connection (bytes are on the wire, after encryption)."""

    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0


class Peer(PeerReading, PeerWriting, PeerTasks):
    """One connected, authenticated peer.

    Created by the node after a successful handshake; :meth:`run` drives it
    until it closes. Apps use :meth:`send`, :meth:`send_nowait`, :meth:`ping`
    and :meth:`close`.
    """

    # A node holds thousands of idle peers: no per-instance dict, and the
    # objects only some peers need (a parking lot for blocked senders, pong
    # waiters) are made on first use.
    __slots__ = (
        "_body_done",
        "_child_error",
        "_children",
        "_children_done",
        "_cipher",
        "_closing",
        "_direct_write",
        "_due_read",
        "_flush_scope",
        "_found_nothing",
        "_hold_reading",
        "_read_scope",
        "_reading_turn",
        "_keepalive",
        "_leftover",
        "_unsent_init",
        "_max_queued",
        "_nursery",
        "_on_events",
        "_on_events_now",
        "_outbox",
        "_pong_waiters",
        "_queued_bytes",
        "_writer_running",
        "_room",
        "_scope",
        "_tasks",
        "_tasks_cancelled",
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
        tasks: trio.Nursery | None = None,
        now: float | None = None,
        on_events_now: EventsHandlerNow | None = None,
    ) -> None:
        self.conn = conn
        self.node_id = node_id
        self.outbound = outbound
        #: the address we dialed (outbound peers): where to reach the peer again
        self.dialed: str | None = None
        self.session = session
        self.counters = PeerCounters()
        self.ping_rtt: float | None = None
        #: ``now``: the caller's clock reading, if it has one (a node has: the session's start)
        self.connected_at = trio.current_time() if now is None else now
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
        #: None: :meth:`start_now` leaves every read to :meth:`run`
        self._on_events_now = on_events_now
        self._leftover = leftover
        #: a read :meth:`start_now` took whose events go to ``on_events`` first thing in :meth:`run`
        self._due_read: tuple[list[SessionEvent] | None, NoiseError | None, bool] | None = None
        #: None until :meth:`start_now` sent our init; then what the transport left of it
        self._unsent_init: bytes | None = None
        #: :meth:`start_now` found nothing to read, and :meth:`run` follows at once: its
        #: first read waits without trying again first
        self._found_nothing = False
        self._max_queued = max_queued_bytes
        self._queued_bytes = 0
        self._room: trio.lowlevel.ParkingLot | None = None
        self._pong_waiters: list[trio.Event] | None = None
        #: a writer task is under way (it ends when the outbox is empty)
        self._writer_running = False
        #: a lone message may go to the socket at once, from the sending task
        #: (once after a read of one message: see :meth:`_enqueue`)
        self._direct_write = False
        #: a handler of the current read keeps the reading task (:meth:`hold_reading`)
        self._hold_reading = False
        #: counts hand-offs of the reading to another task: a reading task whose turn
        #: is over leaves the read loop once its handlers return
        self._reading_turn = 0
        #: the cancel scope of the reading task's handlers (see :meth:`hold_reading`)
        self._read_scope: trio.CancelScope | None = None
        #: the node's schedule that runs the session's timers (:meth:`keepalive_due`)
        self._keepalive = keepalive
        self._flush_scope: trio.CancelScope | None = None
        #: where the peer's tasks besides the one in :meth:`run` start (the node's
        #: nursery; None: run opens one of its own); see :meth:`run`
        self._tasks = tasks
        #: the nursery tasks start in while the peer runs; None before and after
        self._nursery: trio.Nursery | None = None
        #: run's cancel scope, the scope of each task of the peer's under way (made at
        #: the first), whether they were cancelled, and what run waits on for them
        self._scope: trio.CancelScope | None = None
        self._children: set[trio.CancelScope] | None = None
        self._tasks_cancelled = False
        self._body_done = False
        self._children_done: trio.Event | None = None
        #: the first exception a task of the peer's raised: run raises it
        self._child_error: Exception | None = None
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
        queued = self._queued_bytes
        outbox = self._outbox
        if outbox and queued + size <= self._max_queued and size <= MAX_MESSAGE_SIZE and not self._closing:
            # A stream of sends: the writer was woken by the first message queued (it
            # waits only on an empty outbox), so this one only joins the queue.
            outbox.append(data)
            self._queued_bytes = queued + size
            return
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
        if self._nursery is not None and not (reader_ends and not self._children):
            self._cancel_tasks()  # nothing to flush: stop the reader now

    # ------------------------------------------------------------------ run

    def start_now(self, *, run_follows: bool = False) -> bool:
        """Begin what :meth:`run` begins, without waiting and without a task: our ``init``
        leaves if the transport takes it at once, then what the peer has sent already
        is read (what came with the handshake's last act first).

        A read's events go to the node's ``on_events_now`` (given at construction;
        without it the read is left to :meth:`run`): when it takes them (nothing
        in them has to wait: a peer's ``init`` on a node without apps), the next
        read follows (a peer that sent its ``init`` and hung up ends here, as a
        real peer that stays does once it closes); else :meth:`run` hands them to
        the node's ``on_events`` first thing.

        ``run_follows``: the caller runs :meth:`run` right after a True, without a
        schedule point in between (a connection's task that finished the handshake
        itself): when nothing was there to read, run's first read then waits
        without trying again first.

        False: that ended the peer (it had hung up already, or the connection
        failed) and its connection is closed: it needs no :meth:`run`. True:
        :meth:`run` goes on from here, in a task (the peer sent something for
        the node to handle, or nothing yet, or the transport did not take all of
        our init). A listener's accept loop calls this (through the node) so
        that a connection that hangs up right after its handshake (a probe, a
        scan, a flood of handshakes) costs no task; no app heard of such a
        peer, as it never sent its ``init``.
        """
        unsent = self._send_first_nowait()
        if unsent is not None:
            self._unsent_init = unsent
            if unsent:
                return True  # the rest of our init leaves from run
            taken = 0
            while True:
                if self._leftover:
                    # The peer's first bytes (with the handshake's last act, or just received).
                    if self._on_events_now is None or not self._read_now():
                        return True  # run reads them, or hands their events on
                    if self._closing:
                        break
                    taken += 1
                    if taken == 2:
                        return True  # a peer that goes on talking: run reads on
                try:
                    received = self.conn.receive_nowait(RECEIVE_CHUNK)
                except TransportError as exc:
                    self._begin_close(f"connection lost: {exc}", reader_ends=True)
                    break
                if received is None:
                    self._found_nothing = run_follows
                    return True  # nothing yet: run waits for it
                if not received:
                    self._begin_close("peer closed the connection", reader_ends=True)
                    break
                self._leftover = received
        return self._end_now()

    def _read_now(self) -> bool:
        """:meth:`start_now`'s read of what is in ``_leftover``: True if the node took its
        events at once (or there were none), False if they wait for :meth:`run`."""
        data = self._leftover
        self._leftover = b""
        events, failure = self._take_read(data, 0, note=False)
        # Only a peer's readiness is taken here: anything else (a close, a bad frame, something
        # to send back) needs the peer's tasks, so run notes its events and hands them on.
        if failure is not None or self.session.outbox or (events and (len(events) > 1 or type(events[0]) is not PeerReady)):
            self._due_read = events, failure, False
            return False
        if events:
            self._note_all(events)
            if not self._on_events_now(self, events):
                self._due_read = events, None, True
                return False
        # The session's next deadline (the first ping, or the init's if no whole message came)
        # goes into the keepalive schedule when run starts, before it waits.
        return True

    def _end_now(self) -> bool:
        """:meth:`start_now` ended the peer: its connection closes now (False) or in :meth:`run` (True)."""
        if not self.conn.close_nowait():
            return True  # a transport whose close must wait: run closes it
        self._is_closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        return False

    async def run(self) -> None:
        """Drive the peer until it closes. Always closes the connection.

        The reading runs in the calling task. The peer's other tasks (a writer
        while there is more to send than leaves at once, a handler of timer
        events, the reading handed on) start in the nursery given as ``tasks``
        (the node's), each under a cancel scope of the peer's, and this call
        returns only once they have all ended, as a nursery of its own would
        make it: every connection passes here, and a nursery costs as much as
        the rest of a peer's setup (most peers of an accepting node never need
        a second task). Without ``tasks`` it opens a nursery for them itself.
        """
        nursery = self._tasks
        if nursery is None:
            async with trio.open_nursery() as nursery:
                self._tasks = nursery
                await self.run()
            return
        try:
            with trio.CancelScope() as scope:
                self._open_tasks(nursery, scope)
                if not self._leftover:
                    # the init deadline (the first ping's if start_now took the init)
                    self._keepalive.set(self, self.session.get_timer())
                # else the peer's first bytes are here (its init came with act three): the
                # read loop takes them before this task can wait, and the session's next
                # deadline goes into the schedule from there (the first ping, once the
                # init is accepted; the init's still, if they held no whole message).
                # Our init is queued: it leaves from this task, before the first
                # read (a fresh connection takes a small write at once, without
                # waiting), so a connection needs no second task until there is
                # more to send. Unless start_now sent it already (or ended the peer).
                unsent = self._send_first_nowait() if self._unsent_init is None else self._unsent_init
                self._unsent_init = None
                written = unsent is not None and not self._closing
                if unsent or (written and self.session.outbox):
                    # The transport did not take it at once: the init timeout bounds
                    # that write here (the keepalive schedule cannot stop a write under way).
                    init_deadline = self.session.get_timer()
                    scope.deadline = math.inf if init_deadline is None else init_deadline
                    written = await self._write_first(unsent)
                    scope.deadline = math.inf
                if written:
                    await self._read_loop()
            if self._children:
                await self._join_tasks()  # as a nursery's end: the tasks the peer started end first
            else:
                self._end_tasks()  # none under way (most peers): the same without a coroutine
            if scope.cancelled_caught and not self._closing:
                self._begin_close("our init could not be sent before the init timeout")
        finally:
            self._close_tasks()
            self._keepalive.set(self, None)
            if not self._closing:
                self._begin_close("cancelled")
            if not self.conn.close_nowait():
                with trio.CancelScope(shield=True):
                    await self.conn.aclose()
            self._is_closed = True
            if self._closed_event is not None:
                self._closed_event.set()

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
            if self._nursery is not None:
                self._keepalive.set(self, self.session.get_timer())  # the first ping
            # else start_now took the init: run puts the first ping in as it starts (a peer
            # that hangs up right after its init never needs one)

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

    def _wake_waiters(self) -> None:
        if self._pong_waiters:
            for waiter in self._pong_waiters:
                waiter.set()
            self._pong_waiters.clear()
