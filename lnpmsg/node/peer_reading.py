"""A peer's reading side: the read loop that decrypts what arrives, feeds the session
and hands each read's events to the node, and a handler's hold on the reading task
(:meth:`PeerReading.hold_reading`) with the reading handed on to another task.

A mixin of :class:`lnpmsg.node.peer.Peer`, which holds the state; kept apart as
:mod:`lnpmsg.node.peer_writing` is for the sending side, because the peer's
lifecycle (start, close, timers) is a concern of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from lnpmsg.node.session import MessagesReceived, RunReceived, SessionState
from lnpmsg.noise import NoiseError
from lnpmsg.transports.base import TransportError

if TYPE_CHECKING:
    from lnpmsg.node.keepalive import KeepaliveSchedule
    from lnpmsg.node.peer import PeerCounters
    from lnpmsg.node.session import PeerSession, SessionEvent
    from lnpmsg.noise import TransportCipher
    from lnpmsg.transports.base import Connection

__all__ = ["RECEIVE_CHUNK", "RUN_READ_BYTES", "TURN_BYTES", "PeerReading", "room_before_turn"]

#: bytes asked of the transport per read that returns them as new bytes; a large read
#: decodes many small frames at once
RECEIVE_CHUNK = 128 * 1024
#: most bytes read into a run's kept buffer between two turns of the scheduler: a turn
#: (a trio checkpoint, one pass of the run loop with its epoll_wait) costs 5-8 µs of a
#: full read's ~600 µs, and a peer streaming full reads holds the thread for ~0.6 ms at
#: most (a wait for data is a turn too)
TURN_BYTES = 256 * 1024
#: most bytes of one read into a run's kept buffer (a TCP stream's run of like frames):
#: a whole turn's worth, so a peer streaming full reads makes one read per turn. Half
#: as many reads as 128 KiB ones for the same turns: fewer calls of the read loop, and
#: fewer window updates from the kernel (each read that frees room in the socket sends
#: one): ~0.06 µs less CPU per 1 KiB message (docs/benchmarks.md). The buffer and the
#: messages it decrypts to (~0.5 MiB) stay within a core's L2 cache.
RUN_READ_BYTES = TURN_BYTES


def room_before_turn(unturned: int, offered: int) -> int:
    """How much of a read buffer of ``offered`` bytes the next read may fill before the
    reader's next turn of the scheduler, ``unturned`` bytes having been read since its
    last; 0: take a turn first (then the whole buffer).

    Never more than keeps the bytes between two turns within :data:`TURN_BYTES`. A
    read that leaves room for at least half a buffer is followed by one into that
    room without a turn: reads that end short (a reader keeping up with its peer)
    share a turn, as two 128 KiB reads did, rather than each taking one (5-8 µs).
    """
    room = TURN_BYTES - unturned
    if room >= offered:
        return offered
    return room if 2 * room >= offered else 0


class PeerReading:
    """The reading half of :class:`~lnpmsg.node.peer.Peer` (state lives there)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _cipher: TransportCipher
        _closing: bool
        _direct_write: bool
        _due_read: tuple[list[SessionEvent] | None, NoiseError | None, bool] | None
        _found_nothing: bool
        _hold_reading: bool
        _keepalive: KeepaliveSchedule
        _leftover: bytes
        _nursery: trio.Nursery | None
        _on_events: Callable[..., Awaitable[None]]
        _read_scope: trio.CancelScope | None
        _reading_turn: int
        conn: Connection
        counters: PeerCounters
        session: PeerSession

        def _begin_close(self, reason: str, *, reader_ends: bool = False) -> None: ...

        def _note(self, event: SessionEvent) -> None: ...

        def _send_queued(self) -> bool: ...

        def _start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool: ...

    def hold_reading(self) -> trio.CancelScope | None:
        """From a handler of a read of one message that is about to await its work in
        the reading task: may the reading go on in another task if that work waits?

        A scope (yes): the handler may await here; it must call :meth:`resume_reading`
        as soon as its work may wait for longer than a scheduler pass or two, and
        another task then reads on (this one leaves the read loop when its
        handlers return). If the handler returns first, this task reads on
        itself. Work that ends within a pass or two so runs without handing it
        to another task (a task hop and a scheduler pass less on the way to its
        reply). None (a read of several messages, pipelined traffic, or the peer
        is closing): do not await long here (hand the work to a task of your own).
        None also the first time on a connection: its reading task then enters
        the scope below after this read, so a peer that never needs it costs
        nothing more.

        The scope is the reading task's own, entered once for many reads (a scope
        per handler costs more than the rest of a short one): cancelling it
        cancels the handler, whose ``Cancelled`` the task takes; if it still
        reads, it reads on, having lost nothing (its read held this one message).
        Cancel it only while the handler runs; a cancel after the handler's
        ``await`` ended (it can only happen before the task's next checkpoint)
        interrupts nothing but the task's next receive, which starts again.

        The events of a read whose reading was handed on may reach event
        subscribers after those of later reads.
        """
        if not self._direct_write or self._closing or self._nursery is None:
            return None
        self._hold_reading = True  # without a scope yet: the read loop enters one after this read
        return self._read_scope

    def resume_reading(self) -> None:
        """End a :meth:`hold_reading`: another task reads on from now (nothing happens without a hold)."""
        if not self._hold_reading:
            return
        self._hold_reading = False
        if self._nursery is not None and self._start_task(self._read_loop):
            self._reading_turn += 1

    async def _read_loop(self) -> None:
        """Read and dispatch until the peer closes, or until a handler hands the reading to
        another task (:meth:`resume_reading`), which then runs this loop."""
        turn = self._reading_turn
        try:
            # A peer reads without a scope of its own until a handler first asks to hold
            # the reading (an idle peer, or one that never gets such messages, saves
            # the scope's few µs and its objects); from then on under one.
            # This task has just had a turn (it started, or run awaited last).
            fresh = True
            if self._read_scope is None and turn == 0:
                if not await self._read_messages(turn, fresh=True):
                    return
                fresh = False  # the first read under the scope follows a read's handlers
            while True:
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    await self._read_messages(turn, fresh=fresh)
                    return
                fresh = False
                # A held handler was cancelled through this scope (see hold_reading).
                if self._reading_turn != turn or self._closing:
                    return
                self._hold_reading = False
        finally:
            if self._reading_turn == turn:
                # From here a send may find the nursery closed: it must take the
                # writer's path, which says so (PeerClosedError), not write directly.
                self._direct_write = False

    def _take_read(self, data: bytes, kept: int, *, note: bool = True) -> tuple[list[SessionEvent] | None, NoiseError | None]:
        """Decrypt a read (``kept`` bytes in the decryptor's read buffer, else ``data``) and
        feed its messages to the session: the events for the node (None: no whole
        message) and the error that ends the stream, if any. The peer's own state
        follows the events already (:meth:`_note`), unless ``note`` is False (then
        the caller notes them, see :meth:`_note_all`)."""
        counters = self.counters
        counters.bytes_in += kept or len(data)
        decryptor = self._cipher.decryptor
        failure: NoiseError | None = None
        try:
            messages = decryptor.feed_read(kept) if kept else decryptor.feed(data)
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
        if not messages:
            return None, failure
        counters.messages_in += len(messages)
        events = self.session.receive_messages(messages, trio.current_time())
        if note:
            self._note_all(events)
        return events, failure

    def _note_all(self, events: list[SessionEvent]) -> None:
        """The peer's own state follows a read's events (before the node sees them)."""
        for event in events:
            if type(event) is not RunReceived and type(event) is not MessagesReceived:
                self._note(event)

    async def _read_messages(self, turn: int, *, fresh: bool = False) -> bool:
        """The read loop's body; True when it stopped to go on under a cancel scope (see :meth:`hold_reading`).

        ``fresh``: the task has just had a turn of the scheduler (it started, or
        ``run`` awaited last) and has read nothing since but what the handshake
        left: its first read outside a run then takes what is there without
        another (see below)."""
        decryptor = self._cipher.decryptor
        session = self.session
        counters = self.counters
        on_events = self._on_events
        data = self._leftover
        self._leftover = b""
        # a read start_now took whose events it could not hand to the node without waiting
        due = self._due_read
        self._due_read = None
        # bytes the last read put in the decryptor's buffer for a run (see MessageDecryptor.read_buffer)
        kept = 0
        # bytes read in place since this task's last turn of the scheduler (see TURN_BYTES)
        unturned = TURN_BYTES
        reads_into = self.conn.reads_into
        while True:
            if data or kept or due:
                wants_scope = False
                if due is None:
                    events, failure = self._take_read(data, kept)
                else:
                    events, failure, noted = due
                    due = None
                    if events and not noted:
                        self._note_all(events)
                if events is not None:
                    # One call per read, however many messages it carried.
                    await on_events(self, events)
                    # The read's messages go now, not when the next read's replace them:
                    # a peer that goes quiet holds none of them (unless a handler kept
                    # them), and a streaming one's next plaintexts may take their blocks
                    # while they are in the cache (~0.03 µs less per 1 KiB message).
                    del events
                    if self._reading_turn != turn:
                        return False  # a handler waited and another task reads on (resume_reading)
                    if self._hold_reading:
                        self._hold_reading = False
                        # asked for by a handler while this task reads without a scope:
                        # it goes on under one after this read (see _read_loop)
                        wants_scope = self._read_scope is None
                    if self._closing:
                        return False
                    if session.outbox:
                        self._send_queued()  # e.g. a pong
                else:
                    del events
                    if session.state is SessionState.AWAITING_INIT:
                        # No whole message yet: the init deadline must be in the schedule before this
                        # task waits (run leaves it out when the peer's first bytes came with the handshake).
                        self._keepalive.set(self, session.get_timer())
                if failure is not None:
                    self._begin_close(f"bad encrypted frame from peer: {failure}", reader_ends=True)
                    return False
                if wants_scope:
                    return True
            # No deadline here: the node's keepalive schedule runs the session's
            # timers, so an idle peer's receive is never cancelled and re-armed.
            try:
                # The peer's first read takes what is there without a schedule point (the
                # initiator's init usually came with act three, or its close did): it
                # extends the handshake's turn by one bounded read, and saves a pass of
                # the scheduler on every connection.
                first = not counters.bytes_in
                # start_now just found nothing (after what came with the handshake, if
                # anything): the first read waits for it without trying again first
                nothing = self._found_nothing
                if nothing:
                    self._found_nothing = False
                    received = None
                else:
                    received = self.conn.receive_nowait(RECEIVE_CHUNK) if first else None
                kept = 0
                if received is None:
                    # In a run of frames of one size, bytes that are there go where they
                    # are decrypted in place (after a schedule point every TURN_BYTES, so
                    # a cancel there loses nothing). A wait holds no buffer: the reader
                    # waits for bytes without one, then reads them into one all the same.
                    buffer = decryptor.read_buffer(RUN_READ_BYTES) if reads_into else None
                    if buffer is not None:
                        room = room_before_turn(unturned, len(buffer))
                        if not room:
                            await trio.lowlevel.checkpoint()
                            unturned = 0
                        elif room < len(buffer):
                            buffer = buffer[:room]
                        while (size := self.conn.receive_into_nowait(buffer)) is None:
                            decryptor.release_read_buffer()
                            await self.conn.wait_receivable()  # the schedule point of this read
                            unturned = 0
                            buffer = decryptor.read_buffer(RUN_READ_BYTES)
                            if buffer is None:
                                break
                        else:
                            kept = size
                            unturned += size
                            received = b"" if not size else None
                    if buffer is None:
                        # not in a run: a read that ends on a frame of the run when it can
                        size = decryptor.read_size(RECEIVE_CHUNK)
                        if fresh and reads_into:
                            # One read per turn without a schedule point of its own (the
                            # init that came with act three was handled in this turn, and
                            # now the close, or the peer's next message, is often there):
                            # a wait is the turn, with the same system calls as receive_some's.
                            # (Nothing there at the first read just now: straight to the wait.)
                            received = None if first or nothing else self.conn.receive_nowait(size)
                            if received is None:
                                received = await self.conn.receive_after_nothing(size)
                        else:
                            received = await self.conn.receive_some(size)
                fresh = False
            except TransportError as exc:
                self._begin_close(f"connection lost: {exc}", reader_ends=True)
                return False
            if received is not None and not received:
                self._begin_close("peer closed the connection", reader_ends=True)
                return False
            data = received or b""
