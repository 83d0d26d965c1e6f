"""A peer's sending side: what leaves at once from the calling task, and the writer
task that drains the session's outbox in batches while there is more.

A mixin of :class:`lnpmsg.node.peer.Peer`, which holds the state; kept apart
because the reading side and the peer's lifecycle are a concern of their own.
A message leaves from the task that queued it when the transport takes it
without waiting and nothing else is queued or being written (a pong, a reply,
our ``init``); everything else goes to one writer task, which coalesces what
piles up meanwhile into writes of about ``MAX_BATCH_BYTES`` (or the size the
transport prefers, ``Connection.preferred_write_size``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from lnpmsg.noise import FRAME_OVERHEAD, FrameScratch
from lnpmsg.transports.base import TransportError

if TYPE_CHECKING:
    from lnpmsg.node.peer import PeerCounters
    from lnpmsg.node.session import PeerSession
    from lnpmsg.noise import TransportCipher
    from lnpmsg.transports.base import Connection

__all__ = ["CLOSE_FLUSH_TIMEOUT", "MAX_BATCH_BYTES", "MAX_BATCH_MESSAGES", "PeerWriting"]

#: about this many bytes go into one write: enough to spread a write's fixed cost over
#: ~125 1-KiB messages, small enough that a batch's frames stay in the CPU cache
#: (measured with benchmarks/bench_bolt8.py: 1 MiB batches were no faster). A batch
#: is sized by the queue's average message, so mixed sizes can make it larger, never
#: larger than the queue (``MAX_QUEUED_BYTES``).
MAX_BATCH_BYTES = 128 * 1024
#: at most this many messages go into one write (bounds a batch of tiny messages the same way)
MAX_BATCH_MESSAGES = 16384
#: on close, pending messages (e.g. our ``error``) get this long to leave
CLOSE_FLUSH_TIMEOUT = 2.0


class PeerWriting:
    """The sending half of :class:`~lnpmsg.node.peer.Peer` (state lives there)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _cipher: TransportCipher
        _closing: bool
        _flush_scope: trio.CancelScope | None
        _nursery: trio.Nursery | None
        _outbox: list[bytes]
        _queued_bytes: int
        _room: trio.lowlevel.ParkingLot | None
        _writer_running: bool
        conn: Connection
        counters: PeerCounters
        session: PeerSession

        def _begin_close(self, reason: str, *, reader_ends: bool = False) -> None: ...

        def _start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool: ...

        def _cancel_tasks(self) -> None: ...

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
            self._cancel_tasks()

    async def _write_until_flushed(self, unsent: bytes = b"") -> bool:
        """Write ``unsent`` (encrypted bytes a send left over), then until the outbox
        is empty (True) or, when closing, until flushed (False)."""
        max_batch = self.conn.preferred_write_size or MAX_BATCH_BYTES
        encryptor = self._cipher.encryptor
        keeps_frames = self.conn.keeps_frame_boundaries
        joined_limit = self.conn.max_joined_frames if keeps_frames else None
        outbox = self.session.outbox
        counters = self.counters
        # Where a batch of like messages is encrypted for a transport that joins frames
        # (ZeroMQ copies each item as it sends it, so the next batch may reuse it): lives
        # as long as this writer, so an idle peer holds none.
        scratch = FrameScratch() if joined_limit else None
        if unsent:
            try:
                await self.conn.send_frames([unsent])
            except TransportError as exc:
                self._begin_close(f"connection lost: {exc}")
                return False
        while True:
            if not outbox:
                return not self._closing
            if self._queued_bytes <= max_batch and len(outbox) <= MAX_BATCH_MESSAGES:
                # Usual case: everything queued fits in one write.
                batch = list(outbox)
                outbox.clear()
                size = sum(map(len, batch))
            else:
                # About max_batch bytes at the queue's average message size, cut by two C
                # slice operations. A sender ahead of the writer makes this the usual case;
                # finding the exact cut took a length, a running sum and a test per message.
                if joined_limit:
                    # As many messages as fill whole items of the transport (at the
                    # queue's average frame), as many items as make about MAX_BATCH_BYTES:
                    # a batch cut at MAX_BATCH_BYTES would end in a small item, a ZeroMQ
                    # message of its own for a few frames.
                    frame = self._queued_bytes // len(outbox) + FRAME_OVERHEAD
                    items = max(1, (MAX_BATCH_BYTES + joined_limit // 2) // joined_limit)
                    count = max(1, joined_limit // frame) * items
                else:
                    count = max(1, max_batch * len(outbox) // self._queued_bytes)
                count = min(len(outbox), MAX_BATCH_MESSAGES, count)
                batch = outbox[:count]
                del outbox[:count]
                size = sum(map(len, batch))
            if len(batch) == 1:
                # One message (an init, a ping, a reply): the batch path costs twice as much.
                frames = [encryptor.encrypt(batch[0])]
            elif not keeps_frames:
                # A byte stream takes the batch as one buffer, its frames joined.
                frames = [encryptor.encrypt_joined(batch)]
            elif scratch is not None:
                # Whole frames joined as the transport will carry them (a ZeroMQ
                # message each), encrypted in place (or one copy per frame for
                # mixed sizes), none of a frame allocated on its own.
                frames = encryptor.encrypt_grouped_into(batch, joined_limit, scratch)
            else:
                frames = encryptor.encrypt_many(batch)
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
