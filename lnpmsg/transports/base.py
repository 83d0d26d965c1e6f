"""The one interface every transport implements.

A transport moves opaque bytes between two endpoints; it never sees a
plaintext message. The BOLT-8 layer above it writes *frames* (a handshake act
or one encrypted message) and reads a byte stream back, so that:

- stream transports (TCP, Tor) join a batch of frames into one write, which is
  what makes small messages fast (one syscall for many frames);
- message transports (ZeroMQ, QUIC streams) may keep each frame as one
  message of their own.

Reading is always a byte stream: the Noise decoder is incremental, so a read
may return part of a frame, one frame or many.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "AcceptNow",
    "ContinueNow",
    "Connection",
    "ConnectionClosed",
    "Listener",
    "Transport",
    "TransportError",
    "ConnectionHandler",
]


class TransportError(Exception):
    """A transport could not dial, listen, send or receive (with the reason)."""


class ConnectionClosed(TransportError):
    """The connection was closed (by either side) while an operation was under way."""


class Connection(abc.ABC):
    """One bidirectional connection to a remote endpoint.

    Contract (as trio's ``Stream``): at most one task sends and one task
    receives at a time; ``aclose`` may be called from any task, at any time,
    more than once, and makes pending operations fail with
    ``ConnectionClosed``. Cancellation of a send leaves the connection in an
    undefined state, so the caller must close it.
    """

    #: short name of the transport kind: "tcp", "tor", "udp", "zmq", ...
    kind: str = "?"
    #: True when the transport needs the frames apart (ZeroMQ packs whole
    #: frames into its messages and never splits one), so ``send_frames``
    #: must get one frame per item. Byte streams (the default) may get a
    #: whole batch of frames joined into one buffer.
    keeps_frame_boundaries: bool = False
    #: on a transport that keeps frame boundaries: when set, an item given to
    #: ``send_frames`` may also be several whole frames back to back, of at most
    #: this many bytes in all; the transport moves each item whole, as it moves
    #: a frame (so a sender that joins frames itself saves a copy of each)
    max_joined_frames: int | None = None
    #: the remote IP when ``remote_address`` does not hold it (a ZeroMQ
    #: listener's sessions: libzmq tells the peer's IP apart from the endpoint)
    peer_ip: str | None = None
    #: bytes a writer should hand to one ``send_frames`` call when it has that
    #: much queued; None: the writer's own default (the node's is
    #: ``lnpmsg.node.peer_writing.MAX_BATCH_BYTES``). A transport whose every
    #: write has a large fixed cost on both ends (UDP: a QUIC burst, a wake-up
    #: and an acknowledgement) asks for larger writes.
    preferred_write_size: int | None = None

    @property
    @abc.abstractmethod
    def remote_address(self) -> str:
        """The remote endpoint as text (e.g. ``127.0.0.1:9735``, ``xyz.onion:9735``)."""

    @abc.abstractmethod
    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send the frames in order. Returns when the transport has taken them all.

        Blocks (back-pressure) while the transport cannot take more.
        """

    def send_nowait(self, data: bytes) -> int:
        """Send as much of ``data`` as the transport takes at once, without waiting.

        Returns how many bytes it took (the caller sends the rest with
        :meth:`send_frames`). For byte streams only, and never while a
        ``send_frames`` is under way. The default takes nothing: a transport
        without such a path sends everything through ``send_frames``.
        When the connection is gone it raises ``ConnectionClosed`` (or takes
        nothing, and the ``send_frames`` that follows fails).
        """
        del data
        return 0

    @abc.abstractmethod
    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Return the next bytes that arrived (at most ``max_bytes``), or ``b""`` at end of stream."""

    #: whether :meth:`receive_into_nowait` can read (else it always says None); such a
    #: transport also answers :meth:`receive_nowait` and :meth:`wait_receivable` for the
    #: same bytes (:meth:`receive_after_nothing` waits with the one and takes with the
    #: other: a ``receive_nowait`` that always said None would spin there)
    reads_into = False

    def receive_into_nowait(self, buffer: memoryview) -> int | None:
        """Put bytes that already arrived at the start of ``buffer`` (at most its length): their
        count (0 at end of stream), or None when nothing is there yet or the transport cannot.

        Not a schedule point, like :meth:`receive_nowait`: the caller makes
        one before (a reader that takes turns with other tasks). Errors are
        those of ``receive_some``. The default says None.
        """
        del buffer
        return None

    async def wait_receivable(self) -> None:
        """Wait until bytes (or the end of stream, or an error) are there for
        :meth:`receive_into_nowait`, taking none: a reader that waits with no
        buffer of its own, and reads into one when there is something to read.

        Only for transports that read into (:attr:`reads_into`); errors are
        those of ``receive_some``.
        """
        raise NotImplementedError

    async def receive_after_nothing(self, max_bytes: int) -> bytes:
        """The next bytes (at most ``max_bytes``; ``b""`` at end of stream), for a caller
        whose receive just found nothing: a transport that reads into
        (:attr:`reads_into`) waits first (:meth:`wait_receivable`), so no second
        receive fails before the wait, as one would in ``receive_some`` (which tries
        first); another receives with ``receive_some``. Errors are those of
        ``receive_some``.
        """
        if not self.reads_into:
            return await self.receive_some(max_bytes)
        while True:
            await self.wait_receivable()
            received = self.receive_nowait(max_bytes)
            if received is not None:
                return received

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection (idempotent)."""

    def close_nowait(self) -> bool:
        """Close the connection at once, without a schedule point, if the transport can.

        True when it is closed (as by :meth:`aclose`: pending operations of other
        tasks fail with ``ConnectionClosed``); False when closing needs to wait
        (a ZeroMQ or QUIC goodbye): then call :meth:`aclose`. The default says False.
        """
        return False

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """Bytes that already arrived (at most ``max_bytes``; ``b""`` at end of stream), or
        None when nothing is there yet or the transport cannot tell without waiting.

        Not a schedule point: for a short, bounded exchange (a handshake's
        acts), whose next ``await`` comes soon anyway. Errors are those of
        ``receive_some``. The default says None.
        """
        return None


ConnectionHandler = Callable[[Connection], Awaitable[None]]
#: the first, synchronous look at a new connection (see :meth:`Listener.serve_accepting`)
AcceptNow = Callable[[Connection], bool]
#: the second, after a schedule point of the accept loop (see :meth:`Listener.serve_accepting`)
ContinueNow = Callable[[Connection], "bool | None"]


class Listener(abc.ABC):
    """A bound listening endpoint. ``serve`` runs until cancelled or closed."""

    @property
    @abc.abstractmethod
    def local_address(self) -> str:
        """Where peers reach this listener, as text (e.g. ``127.0.0.1:9735``)."""

    @abc.abstractmethod
    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections forever; run ``handler(conn)`` for each in its own task.

        The handler owns the connection and must close it.
        """

    async def serve_accepting(
        self, accept_now: AcceptNow, handler: ConnectionHandler, *, continue_now: ContinueNow | None = None
    ) -> None:
        """As :meth:`serve`, with ``accept_now(conn)`` called first for each connection.

        ``accept_now`` must not wait (no ``await``) and must not raise: it
        decides at once (True: run ``handler(conn)`` in a task; False: the
        connection is closed, no task). A listener with an accept loop of its
        own (TCP) calls it right there, before any task exists, so a refused
        connection costs no task, and what a connection has already sent is
        answered before its task starts; the default calls it first thing in
        the connection's task.

        ``continue_now`` (the same rules) lets such a loop take a kept
        connection one step further without a task: it is called once for
        each, after the loop's next schedule point (the peer has had time to
        answer), and only a True starts ``handler(conn)``; False: the connection
        is over and closed; None: not ready yet (its peer has not answered):
        the loop may call it once more after a later schedule point, if it is
        busy accepting others anyway, before it starts ``handler(conn)``. The
        default has no accept loop and ignores it: the handler does that step
        in the connection's task.
        """

        async def accept_then_handle(conn: Connection) -> None:
            if accept_now(conn):
                await handler(conn)

        await self.serve(accept_then_handle)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop accepting and release the endpoint (idempotent)."""


class Transport(abc.ABC):
    """A factory of connections and listeners of one kind."""

    kind: str = "?"

    @abc.abstractmethod
    async def dial(self, target: str) -> Connection:
        """Open a connection to ``target``, the transport's own address text
        (``host:port`` for TCP/Tor/UDP, a ZeroMQ endpoint for ZeroMQ).

        Raises ``TransportError`` with a clear reason.
        """

    @abc.abstractmethod
    async def listen(self, target: str) -> Listener:
        """Bind a listener on ``target`` (for ``host:port`` forms, port 0 picks a free one)."""
