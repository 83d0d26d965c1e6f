"""pyzmq inside trio: one task, no thread per socket, no busy polling.

A libzmq socket exposes one file descriptor (``ZMQ_FD``) that becomes readable
when the socket's internal state *may* have changed; the actual state is in
``ZMQ_EVENTS`` (``POLLIN``/``POLLOUT``). The descriptor is edge-triggered in
effect: any ``send``, ``recv`` or ``ZMQ_EVENTS`` read may consume the pending
notification, after which the descriptor stays quiet even though a message is
waiting. :class:`TrioSocket` keeps to four rules so that no wake-up is lost:

1. Every operation is first tried with ``zmq.NOBLOCK``; only ``zmq.Again``
   makes a task wait (the fast path never touches the descriptor).
2. A waiting task re-reads ``ZMQ_EVENTS`` before it sleeps and after every
   wake-up, and sleeps only if its event is not ready.
3. After every successful send or receive, if tasks are waiting, ``ZMQ_EVENTS``
   is read again and the waiters are woken if the event they want is ready
   (the operation may have consumed the notification meant for them).
4. Only one task at a time sleeps in ``trio.lowlevel.wait_readable`` on the
   descriptor; the others park on a ``trio.Event`` that the descriptor's
   watcher (or an operation under rule 3) sets. Any task that leaves the
   watcher role (woken, kicked, cancelled) wakes the parked ones so that one
   of them takes the role over.

Cancellation: a cancelled ``recv``/``recv_multipart`` has taken nothing (the
message stays for the next receive); a cancelled ``send``/``send_multipart``
has either queued the whole message or nothing. libzmq accepts the remaining
parts of a multipart message once the first part is in (its high-water mark
counts whole messages), so the parts are queued in one go without yielding;
should a later part ever be refused, the send finishes under a cancel shield
and other senders wait for it, so no message is ever split or interleaved.
Every operation checks for cancellation before it touches the socket, and an
operation that completed returns its result even if cancelled meanwhile.

Scheduling: an operation that had to wait has yielded; one that did not
yields every :data:`FAST_PATH_YIELD_EVERY` calls (see there why not always).

Closing: :meth:`TrioSocket.close` calls ``trio.lowlevel.notify_closing`` on the
descriptor before closing the socket, so a task sleeping on it wakes up and
every pending or later operation raises :class:`SocketClosedError`.

Known libzmq limitation: over ``ipc://`` a sender that closes its socket and
exits right away can lose the tail of what it sent, even with ``ZMQ_LINGER``.
Never rely on linger for delivery: have the receiver acknowledge the end (an
ack or a final marker message) before closing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import TracebackType
from typing import Final, Self

import trio
import zmq

__all__ = ["FAST_PATH_YIELD_EVERY", "SocketClosedError", "TrioSocket", "YieldBudget", "open_socket"]

# Plain ints: pyzmq's flag enums make every ``|`` a slow Python-level call.
_NOBLOCK: Final = int(zmq.NOBLOCK)
_SNDMORE: Final = int(zmq.SNDMORE)
_POLLIN: Final = int(zmq.POLLIN)
_POLLOUT: Final = int(zmq.POLLOUT)
_EVENTS: Final = int(zmq.EVENTS)
_RCVMORE: Final = int(zmq.RCVMORE)

#: A fast-path operation (one that did not have to wait) checks for
#: cancellation every time but yields to the scheduler only every this many
#: operations: yielding after each message wakes libzmq's I/O thread once per
#: message and halves PUSH/PULL throughput, while this bound still keeps a busy
#: sender or receiver from starving other tasks.
FAST_PATH_YIELD_EVERY: Final = 16

#: errno values meaning the socket (or its context) is gone, not a bad call
_GONE_ERRNOS: Final = frozenset({zmq.ENOTSOCK, zmq.ETERM})


class YieldBudget:
    """Yields to the scheduler once every :data:`FAST_PATH_YIELD_EVERY` calls.

    For operations that completed without waiting (and so without yielding).
    """

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    async def spend(self) -> None:
        """Count one fast-path operation; yield (cancel-shielded) if it is the Nth."""
        self._count += 1
        if self._count >= FAST_PATH_YIELD_EVERY:
            self._count = 0
            await trio.lowlevel.cancel_shielded_checkpoint()


class SocketClosedError(trio.ClosedResourceError):
    """The :class:`TrioSocket` was closed (here, or its context terminated)."""


class TrioSocket:
    """A pyzmq socket driven from trio tasks.

    Any number of tasks may send and receive on one ``TrioSocket`` at the same
    time; each message goes whole to exactly one receiving task (with
    :meth:`recv_multipart`; :meth:`recv` takes one part). The wrapped socket
    must be a plain (blocking-API) ``zmq.Socket`` and must only be used
    through this wrapper, in the thread running trio.

    A ROUTER with ``ZMQ_ROUTER_MANDATORY`` reports ``POLLOUT`` when *some*
    peer can take a message, so a send waiting for one full peer would spin:
    use :meth:`try_send_multipart` there and decide how to wait per peer.
    """

    __slots__ = (
        "_changed",
        "_closed",
        "_fd",
        "_fd_scope",
        "_partial_send",
        "_recv_waiters",
        "_send_waiters",
        "_sock",
        "_yields",
    )

    def __init__(self, socket: zmq.Socket) -> None:  # type: ignore[type-arg]
        future_mod = sys.modules.get("zmq._future")
        if future_mod is not None and isinstance(socket, future_mod._AsyncSocket):
            raise TypeError("TrioSocket needs a plain zmq.Socket, not an asyncio/future one")
        if socket.closed:
            raise SocketClosedError("the zmq socket is already closed")
        self._sock = socket
        self._fd = int(socket.getsockopt(zmq.FD))
        self._closed = False
        # The cancel scope of the one task sleeping on the descriptor, if any.
        self._fd_scope: trio.CancelScope | None = None
        # Parked tasks wait on this; it is set and replaced on every wake-up.
        self._changed = trio.Event()
        self._recv_waiters = 0
        self._send_waiters = 0
        # True while a multipart message is half queued (see the module docs).
        self._partial_send = False
        self._yields = YieldBudget()

    # ------------------------------------------------------------------ info

    @property
    def socket(self) -> zmq.Socket:  # type: ignore[type-arg]
        """The wrapped pyzmq socket (for options, ``bind``, ``connect``...)."""
        return self._sock

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the context went away)."""
        return self._closed

    def bind(self, endpoint: str) -> str:
        """Bind to ``endpoint``; returns the bound endpoint (port 0 / ``*`` resolved)."""
        self._check_open()
        self._sock.bind(endpoint)
        return self.last_endpoint

    def connect(self, endpoint: str) -> None:
        """Connect to ``endpoint`` (libzmq connects in the background)."""
        self._check_open()
        self._sock.connect(endpoint)

    @property
    def last_endpoint(self) -> str:
        """The endpoint of the last ``bind``/``connect``, as libzmq resolved it."""
        value = self._sock.getsockopt(zmq.LAST_ENDPOINT)
        return value.decode() if isinstance(value, bytes) else str(value)

    # -------------------------------------------------------------- sending

    async def send(self, data: bytes) -> None:
        """Queue one single-part message; waits while the socket cannot take it."""
        await self.send_multipart((data,))

    async def send_multipart(self, parts: Iterable[bytes]) -> None:
        """Queue one message made of ``parts``; all of it, or (if cancelled) none of it."""
        frames = list(parts)
        if not frames:
            raise ValueError("a ZeroMQ message needs at least one part")
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            self._check_open()
            if not self._partial_send and self._try_send_first(frames):
                break
            await self._wait(_POLLOUT)
            yielded = True
        if len(frames) > 1:
            await self._send_rest(frames)
        self._after_op()
        if not yielded:
            await self._yields.spend()

    def try_send_multipart(self, parts: Iterable[bytes]) -> bool:
        """Queue one message now if the socket takes it; ``False`` (nothing sent) if not.

        For ROUTER sockets with ``ZMQ_ROUTER_MANDATORY``, whose ``POLLOUT``
        says only that *some* peer can take a message: the caller decides how
        to wait for one particular peer. Raises ``zmq.ZMQError`` as libzmq does
        (e.g. ``EHOSTUNREACH`` for an unknown ROUTER peer).
        """
        frames = list(parts)
        if not frames:
            raise ValueError("a ZeroMQ message needs at least one part")
        self._check_open()
        if self._partial_send or not self._try_send_first(frames):
            return False
        if len(frames) > 1 and not self._try_send_rest(frames):
            # libzmq counts its high-water mark in whole messages, so it does
            # not refuse the tail of a message whose head it took; were it to,
            # a blocking send is the only way to keep the message whole here.
            last = len(frames) - 1
            for index, frame in enumerate(frames):
                self._sock.send(frame, 0 if index == last else _SNDMORE)
        self._after_op()
        return True

    def _try_send_first(self, frames: list[bytes]) -> bool:
        flags = _NOBLOCK | (_SNDMORE if len(frames) > 1 else 0)
        try:
            self._sock.send(frames[0], flags)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            self._raise_if_gone(exc)
            raise
        return True

    def _try_send_rest(self, frames: list[bytes]) -> bool:
        last = len(frames) - 1
        for index in range(1, len(frames)):
            try:
                self._sock.send(frames[index], _NOBLOCK | (0 if index == last else _SNDMORE))
            except zmq.Again:
                del frames[:index]
                return False
        return True

    async def _send_rest(self, frames: list[bytes]) -> None:
        if self._try_send_rest(frames):
            return
        # The message is half queued: finish it, whatever cancellation says,
        # and keep other senders out until then.
        self._partial_send = True
        try:
            with trio.CancelScope(shield=True):
                while True:
                    await self._wait(_POLLOUT, partial_owner=True)
                    self._check_open()
                    if self._try_send_rest(frames):
                        return
        finally:
            self._partial_send = False
            self._kick()

    # ------------------------------------------------------------ receiving

    async def recv(self) -> bytes:
        """Receive the next message part (use :meth:`recv_multipart` for multipart sockets)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            self._check_open()
            try:
                data: bytes = self._sock.recv(_NOBLOCK)
            except zmq.Again:
                await self._wait(_POLLIN)
                yielded = True
                continue
            except zmq.ZMQError as exc:
                self._raise_if_gone(exc)
                raise
            self._after_op()
            if not yielded:
                await self._yields.spend()
            return data

    async def recv_multipart(self) -> list[bytes]:
        """Receive the next whole message, as its list of parts."""
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            self._check_open()
            try:
                # libzmq delivers messages atomically: once the first part is
                # here, the others are too, so NOBLOCK never splits a message.
                parts: list[bytes] = [self._sock.recv(_NOBLOCK)]
                while self._sock.get(_RCVMORE):
                    parts.append(self._sock.recv(_NOBLOCK))
            except zmq.Again:
                await self._wait(_POLLIN)
                yielded = True
                continue
            except zmq.ZMQError as exc:
                self._raise_if_gone(exc)
                raise
            self._after_op()
            if not yielded:
                await self._yields.spend()
            return parts

    async def recv_multipart_with_peer(self) -> tuple[list[bytes], str | None]:
        """Like :meth:`recv_multipart`, plus the sender's IP (libzmq's ``Peer-Address``
        property of the first part: set for TCP peers, None otherwise)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            self._check_open()
            try:
                first = self._sock.recv(_NOBLOCK, copy=False)
                parts: list[bytes] = [first.bytes]
                while self._sock.get(_RCVMORE):
                    parts.append(self._sock.recv(_NOBLOCK))
            except zmq.Again:
                await self._wait(_POLLIN)
                yielded = True
                continue
            except zmq.ZMQError as exc:
                self._raise_if_gone(exc)
                raise
            self._after_op()
            if not yielded:
                await self._yields.spend()
            try:
                peer: str | None = first.get("Peer-Address")
            except zmq.ZMQError:
                peer = None
            return parts, peer

    # -------------------------------------------------------------- waiting

    def _ready(self, event: int, partial_owner: bool) -> bool:
        if event == _POLLOUT and self._partial_send and not partial_owner:
            return False
        try:
            events = int(self._sock.getsockopt(_EVENTS))
        except zmq.ZMQError as exc:
            self._raise_if_gone(exc)
            raise
        return bool(events & event)

    async def _wait(self, event: int, partial_owner: bool = False) -> None:
        """Return once ``ZMQ_EVENTS`` shows ``event`` (the caller then retries)."""
        if event == _POLLIN:
            self._recv_waiters += 1
        else:
            self._send_waiters += 1
        try:
            while True:
                self._check_open()
                if self._ready(event, partial_owner):
                    return
                if self._fd_scope is None:
                    with trio.CancelScope() as scope:
                        self._fd_scope = scope
                        try:
                            await trio.lowlevel.wait_readable(self._fd)
                        except trio.ClosedResourceError:
                            pass  # close() woke us; _check_open raises the clear error
                        finally:
                            self._fd_scope = None
                            # Whatever woke us (descriptor, kick, cancel), let the
                            # parked tasks look again; one takes the watch over.
                            self._wake()
                else:
                    await self._changed.wait()
        finally:
            if event == _POLLIN:
                self._recv_waiters -= 1
            else:
                self._send_waiters -= 1

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _kick(self) -> None:
        """Wake every waiter, including the one sleeping on the descriptor."""
        self._wake()
        if self._fd_scope is not None:
            self._fd_scope.cancel()

    def _after_op(self) -> None:
        if not (self._recv_waiters or self._send_waiters):
            return
        try:
            events = int(self._sock.getsockopt(_EVENTS))
        except zmq.ZMQError:
            return
        self._wake_for(events)

    def _wake_for(self, events: int) -> None:
        if (events & _POLLIN and self._recv_waiters) or (events & _POLLOUT and self._send_waiters):
            self._kick()

    def poll_events(self) -> int:
        """Read ``ZMQ_EVENTS`` now and return it (``zmq.POLLIN``/``zmq.POLLOUT`` bits).

        Reading it makes libzmq handle its pending internal commands (e.g. a
        peer's pipe being torn down). Use this, never the raw socket's
        ``getsockopt(zmq.EVENTS)``, which could swallow a notice that a
        waiting task needs; this wakes the waiters the new state concerns.
        """
        self._check_open()
        try:
            events = int(self._sock.getsockopt(_EVENTS))
        except zmq.ZMQError as exc:
            self._raise_if_gone(exc)
            raise
        self._wake_for(events)
        return events

    # -------------------------------------------------------------- closing

    def _check_open(self) -> None:
        if self._closed:
            raise SocketClosedError("the zmq socket was closed")
        if self._sock.closed:
            self.close()
            raise SocketClosedError("the zmq socket was closed outside its TrioSocket")

    def _raise_if_gone(self, exc: zmq.ZMQError) -> None:
        if exc.errno in _GONE_ERRNOS:
            self.close()
            raise SocketClosedError(f"the zmq socket is gone: {exc}") from exc

    def close(self, linger: int | None = None) -> None:
        """Close the socket (idempotent). Pending operations raise :class:`SocketClosedError`.

        ``linger`` (milliseconds) overrides ``ZMQ_LINGER`` for this close; see
        the module docs on why delivery must not depend on it.
        """
        if self._closed:
            return
        self._closed = True
        try:
            trio.lowlevel.notify_closing(self._fd)
        except RuntimeError:
            pass  # not inside trio (e.g. interpreter teardown): nobody can be waiting
        self._kick()
        if not self._sock.closed:
            self._sock.close(linger=linger)

    async def aclose(self) -> None:
        """Close, as :meth:`close`; a checkpoint like every trio ``aclose``."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<TrioSocket {self._sock.socket_type} {state}>"


def open_socket(socket_type: int, context: zmq.Context | None = None) -> TrioSocket:  # type: ignore[type-arg]
    """Create a :class:`TrioSocket` of ``socket_type`` (``zmq.PUSH``, ``zmq.ROUTER``...).

    Sockets come from ``context``, by default the process-wide shared
    ``zmq.Context.instance()`` (one I/O thread serves them all).
    """
    ctx = zmq.Context.instance() if context is None else context
    return TrioSocket(ctx.socket(socket_type))
