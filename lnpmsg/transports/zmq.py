"""ZeroMQ peer transport: a ROUTER listener serving many peers, DEALER dialers.

Endpoints are ZeroMQ's own: ``tcp://127.0.0.1:9735`` (port 0 picks a free
one) or ``ipc:///path/to/socket``. Everything is driven from trio through
:mod:`lnpmsg.io.zmq_trio`.

Wire convention
---------------
Data, close, credit and keepalive messages, and how frames are coalesced
into data messages: :mod:`lnpmsg.transports.zmq_wire` (the sans-IO part).

Flow control and bounds
-----------------------
Credit counts data messages, not frames (so the bytes a peer can queue here
stay bounded by ``recv_window`` times :data:`MAX_FRAME_SIZE`). Each side may
send :data:`INITIAL_CREDIT` data messages, then only as many as
the receiver grants with credit messages. The receiver grants credit as its
application consumes messages, so its per-peer queue never holds more than
its window (``recv_window``, at least :data:`INITIAL_CREDIT`); a peer that
sends past its credit is flooding and is dropped (logged, counted), not the
node. A sender without credit waits: that is the back-pressure of
``send_frames``. Messages over :data:`MAX_FRAME_SIZE` are dropped with the
peer; libzmq itself cuts connections sending parts over
:data:`ZMQ_MAX_MSG_SIZE`, so nobody can make it buffer a huge message.

Closing
-------
Each side sends *close* once: on ``aclose``, or on receiving the peer's
close (then it is the acknowledgement). A dialer's ``aclose`` waits (at most
``close_timeout``) for that acknowledgement before closing its socket,
because ZeroMQ's linger does not guarantee delivery (over ``ipc://`` the tail
of a stream can be lost); the ROUTER keeps running, so the listener side
needs no wait. After the peer's close, ``receive_some`` returns what was
already queued, then ``b""``.

Vanished peers
--------------
ZeroMQ heartbeats (``ZMQ_HEARTBEAT_IVL/TIMEOUT/TTL``) make libzmq cut dead
connections. A dialer watches its socket monitor: a disconnect ends its
Connection (``receive_some`` returns ``b""``) and, with reconnection
disabled, it never silently reconnects into a fresh ROUTER session. The
ROUTER's monitor reports disconnects by file descriptor, not routing id, so
on each one the listener probes its sessions (``ZMQ_ROUTER_MANDATORY`` makes
a send to a gone peer fail with ``EHOSTUNREACH``). Besides, each side sends a
keepalive when it has sent nothing for ``keepalive_interval``, and ends a
Connection that received nothing for ``idle_timeout``.

Tasks
-----
A listener's work runs inside ``serve`` (one receiving task for the ROUTER,
plus monitor, timer and flush tasks). ``dial`` returns a Connection that
needs the same background work while no one else may be waiting on it, so
each dialer runs it in a trio system task that ends with the Connection.

Routing ids
-----------
libzmq generates a 5-byte routing id (a zero byte, then a counter that starts
at a random value) for every peer that does not choose one. Sessions exist
only for ids of that shape: a peer-chosen ``ZMQ_ROUTING_ID`` is refused
(logged, counted), ``ZMQ_ROUTER_HANDOVER`` stays off so a second connection
presenting a live id is ignored by libzmq, and ids of ended sessions are
remembered (up to :data:`MAX_TOMBSTONES`) so they never start a new session.
``remote_address`` on the listener side is the listener's endpoint, ``#``,
and the routing id in hex.

Limits (of libzmq): a ROUTER cannot cut one peer's connection, so a dropped
peer's further messages are discarded rather than refused; and a peer that
claims, in the generated shape, an id libzmq will generate later makes
libzmq abort when that id comes up (the counter's random start makes this a
guess against 2**32).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import trio
import zmq

from lnpmsg.transports.base import (
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    Listener,
    Transport,
    TransportError,
)
from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket, YieldBudget
from lnpmsg.transports.zmq_wire import (
    CLOSE,
    INITIAL_CREDIT,
    KEEPALIVE,
    MAX_FRAME_SIZE,
    CloseMessage,
    CreditMessage,
    DataMessage,
    KeepaliveMessage,
    UnknownControl,
    WireMessage,
    ZmqProtocolError,
    coalesce,
    credit_message,
    decode_message,
    is_generated_routing_id,
)

__all__ = [
    "CLOSE",
    "INITIAL_CREDIT",
    "KEEPALIVE",
    "MAX_FRAME_SIZE",
    "MAX_TOMBSTONES",
    "ZMQ_MAX_MSG_SIZE",
    "CloseMessage",
    "CreditMessage",
    "DataMessage",
    "KeepaliveMessage",
    "UnknownControl",
    "WireMessage",
    "ZmqConnection",
    "ZmqListener",
    "ZmqProtocolError",
    "ZmqSettings",
    "ZmqTransport",
    "coalesce",
    "credit_message",
    "decode_message",
    "is_generated_routing_id",
]

log = logging.getLogger(__name__)

#: libzmq cuts a connection sending a bigger part (ZMQ_MAXMSGSIZE): above our
#: own limit, so that our check (with its log line) sees moderate excesses,
#: while nobody can make libzmq buffer a huge message
ZMQ_MAX_MSG_SIZE: Final = 2 * MAX_FRAME_SIZE
#: libzmq's per-pipe queue (messages); above the credit window, so that a
#: well-behaved peer never fills it and control messages always fit
ZMQ_HWM: Final = 4 * INITIAL_CREDIT
#: ended sessions' routing ids remembered, so they never start a new session
MAX_TOMBSTONES: Final = 4096
#: after a ROUTER disconnect event, probe the sessions after these delays (s):
#: libzmq tears the pipe down a moment after it reports the disconnect
SWEEP_DELAYS: Final = (0.0, 0.05, 0.5)
#: ROUTER sends to a peer whose queue is full are retried with these waits
#: (ROUTER_MANDATORY's POLLOUT only says that *some* peer could take one)
BACKOFF_FIRST: Final = 0.001
BACKOFF_MAX: Final = 0.05
#: a close-acknowledged dialer socket still lingers this long (ms): a help,
#: never relied on
CLOSE_LINGER_MS: Final = 500

_MONITOR_HEAD = struct.Struct("=Hi")
_SCHEMES: Final = ("tcp://", "ipc://")

_DIAL_EVENTS: Final = int(
    zmq.EVENT_CLOSED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# NO_DETAIL is what plain garbage (not ZMTP at all) produces: it is counted too
_LISTEN_EVENTS: Final = int(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_HANDSHAKE_FAILED: Final = frozenset(
    {
        int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL),
        int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
        int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
    }
)


def _check_endpoint(target: str) -> str:
    text = target.strip()
    if not text.startswith(_SCHEMES) or len(text) <= len("tcp://"):
        raise TransportError(f"bad ZeroMQ endpoint {target!r}: expected tcp://host:port or ipc:///path")
    return text


def _monitor_event(parts: list[bytes]) -> int:
    if len(parts) != 2 or len(parts[0]) != _MONITOR_HEAD.size:
        return 0
    return int(_MONITOR_HEAD.unpack(parts[0])[0])


# ------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True)
class ZmqSettings:
    """Timings and bounds of a :class:`ZmqTransport` (seconds, messages)."""

    #: data messages a peer may have queued here, unread by the application
    recv_window: int = INITIAL_CREDIT
    #: send a keepalive after this long without sending anything
    keepalive_interval: float = 10.0
    #: end a connection that received nothing for this long
    idle_timeout: float = 30.0
    #: ZeroMQ heartbeat (ZMTP PING) interval
    heartbeat_interval: float = 5.0
    #: ZeroMQ cuts a connection whose heartbeats go unanswered this long
    heartbeat_timeout: float = 15.0
    #: how long a dial may take
    connect_timeout: float = 20.0
    #: how long a dialer's aclose waits for the listener's acknowledgement
    close_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.recv_window < INITIAL_CREDIT:
            raise ValueError(f"recv_window must be at least INITIAL_CREDIT ({INITIAL_CREDIT})")
        for name in ("keepalive_interval", "idle_timeout", "heartbeat_interval", "heartbeat_timeout", "connect_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.idle_timeout <= self.keepalive_interval:
            raise ValueError("idle_timeout must exceed keepalive_interval, or idle peers time out")

    @property
    def timer_tick(self) -> float:
        """How often keepalives and idle timeouts are checked."""
        return min(self.keepalive_interval, self.idle_timeout) / 4


def _configure(sock: TrioSocket, settings: ZmqSettings) -> None:
    raw = sock.socket
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SNDHWM, ZMQ_HWM)
    raw.setsockopt(zmq.RCVHWM, ZMQ_HWM)
    raw.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MSG_SIZE)
    raw.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(settings.heartbeat_interval * 1000)))
    raw.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(settings.heartbeat_timeout * 1000)))
    # TTL asks the peer to cut us if it hears nothing for that long (0.1 s units on the wire)
    raw.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(settings.heartbeat_timeout * 1000)))


def _close_monitored(sock: TrioSocket, monitor: TrioSocket, linger: int) -> None:
    if not sock.closed:
        try:
            sock.socket.disable_monitor()
        except zmq.ZMQError:
            pass
    monitor.close(linger=0)
    sock.close(linger=linger)


# ------------------------------------------------------------------ ports


class _Port:
    """One ZeroMQ socket seen by its connections: how to send, what to do when one ends."""

    def __init__(self, sock: TrioSocket, settings: ZmqSettings) -> None:
        self.sock = sock
        self.settings = settings
        self.stats: Counter[str] = Counter()
        # Control messages a peer's full queue refused, per connection, with
        # the time after which a close is given up (credits never are: the
        # peer's sender depends on them).
        self._pending: dict[ZmqConnection, deque[tuple[tuple[bytes, ...], float]]] = {}
        self._pending_lot = trio.lowlevel.ParkingLot()

    # subclasses
    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        raise NotImplementedError

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        raise NotImplementedError

    def session_ended(self, conn: ZmqConnection) -> None:
        raise NotImplementedError

    def connections(self) -> list[ZmqConnection]:
        raise NotImplementedError

    def send_control(self, conn: ZmqConnection, parts: tuple[bytes, ...], *, required: bool = True) -> None:
        """Send a control message now if the peer's queue takes it.

        Otherwise a ``required`` one (credit, close) waits for the flush task,
        behind any earlier ones of the same peer; a keepalive is just skipped.
        """
        queue = self._pending.get(conn)
        if queue is None:
            try:
                if self.try_transmit(conn, parts):
                    return
            except ConnectionClosed:
                return
            if not required:
                return
            queue = self._pending[conn] = deque()
        elif not required:
            return
        queue.append((parts, trio.current_time() + self.settings.close_timeout))
        self._pending_lot.unpark_all()

    async def flush_loop(self) -> None:
        """Retry refused control messages, round-robin, so no peer holds up another."""
        delay = BACKOFF_FIRST
        while True:
            while not self._pending:
                await self._pending_lot.park()
                delay = BACKOFF_FIRST
            progressed = False
            now = trio.current_time()
            for conn in list(self._pending):
                queue = self._pending[conn]
                while queue:
                    parts, give_up_at = queue[0]
                    if conn.ended is not None and (parts != CLOSE or now > give_up_at):
                        queue.popleft()
                        continue
                    try:
                        if not self.try_transmit(conn, parts):
                            break
                    except ConnectionClosed:
                        queue.clear()
                        break
                    queue.popleft()
                    progressed = True
                if not queue:
                    del self._pending[conn]
            if self._pending:
                # libzmq cannot tell us when one ROUTER peer drains: poll gently.
                delay = BACKOFF_FIRST if progressed else min(delay * 2, BACKOFF_MAX)
                await trio.sleep(delay)

    async def timer_loop(self) -> None:
        settings = self.settings
        while True:
            await trio.sleep(settings.timer_tick)
            now = trio.current_time()
            for conn in list(self.connections()):
                if conn.ended is not None:
                    continue
                if now - conn._last_rx > settings.idle_timeout:
                    self.stats["idle"] += 1
                    log.info("zmq peer %s silent for %.1f s: closing", conn.remote_address, now - conn._last_rx)
                    conn._end("idle timeout", notify_peer=True, discard=False)
                elif now - conn._last_tx >= settings.keepalive_interval:
                    self.send_control(conn, KEEPALIVE, required=False)


class _RouterPort(_Port):
    def __init__(self, sock: TrioSocket, settings: ZmqSettings) -> None:
        super().__init__(sock, settings)
        self.sessions: dict[bytes, ZmqConnection] = {}
        self.tombstones: OrderedDict[bytes, None] = OrderedDict()
        self._yields = YieldBudget()

    def connections(self) -> list[ZmqConnection]:
        return list(self.sessions.values())

    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        assert conn.routing_id is not None
        try:
            sent = self.sock.try_send_multipart([conn.routing_id, *parts])
        except SocketClosedError as exc:
            conn._end("listener closed", notify_peer=False, discard=False)
            raise ConnectionClosed(f"{conn.remote_address}: listener closed") from exc
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.vanished(conn)
            raise ConnectionClosed(f"{conn.remote_address}: peer is gone") from exc
        if sent:
            conn._last_tx = trio.current_time()
        return sent

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        delay = BACKOFF_FIRST
        while not self.try_transmit(conn, parts):
            # This peer's queue is full (it does not read its socket); libzmq
            # cannot tell us when that one peer drains, so poll gently.
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            conn._check_can_send()
        await self._yields.spend()

    def vanished(self, conn: ZmqConnection) -> None:
        if conn.ended is None:
            self.stats["vanished"] += 1
            log.info("zmq peer %s is gone", conn.remote_address)
            conn._end("peer vanished", notify_peer=False, discard=False)

    def session_ended(self, conn: ZmqConnection) -> None:
        assert conn.routing_id is not None
        if self.sessions.get(conn.routing_id) is conn:
            del self.sessions[conn.routing_id]
        self.bury(conn.routing_id)

    def bury(self, routing_id: bytes) -> None:
        self.tombstones[routing_id] = None
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)

    def sweep(self) -> None:
        """Probe every session: a send to a peer libzmq has dropped fails."""
        try:
            self.sock.poll_events()  # let libzmq process pending pipe teardowns
        except SocketClosedError:
            return
        for conn in self.connections():
            if conn.ended is None:
                try:
                    self.try_transmit(conn, KEEPALIVE)
                except ConnectionClosed:
                    pass


class _DealerPort(_Port):
    def __init__(self, sock: TrioSocket, monitor: TrioSocket, settings: ZmqSettings) -> None:
        super().__init__(sock, settings)
        self.monitor = monitor
        self.conn: ZmqConnection | None = None
        self.scope = trio.CancelScope()

    def connections(self) -> list[ZmqConnection]:
        return [self.conn] if self.conn is not None else []

    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        try:
            sent = self.sock.try_send_multipart(parts)
        except SocketClosedError as exc:
            raise ConnectionClosed(f"{conn.remote_address}: socket closed") from exc
        if sent:
            conn._last_tx = trio.current_time()
        return sent

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        try:
            await self.sock.send_multipart(parts)
        except SocketClosedError as exc:
            conn._check_can_send()
            raise ConnectionClosed(f"{conn.remote_address}: socket closed") from exc
        conn._last_tx = trio.current_time()

    def session_ended(self, conn: ZmqConnection) -> None:
        self.close(linger=CLOSE_LINGER_MS if conn._close_sent else 0)

    def close(self, linger: int = 0) -> None:
        self.scope.cancel()
        _close_monitored(self.sock, self.monitor, linger)

    async def run(self) -> None:
        """The dialer's background work (a trio system task)."""
        conn = self.conn
        assert conn is not None
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.recv_loop, conn)
                    nursery.start_soon(self.monitor_loop, conn)
                    nursery.start_soon(self.timer_loop)
                    nursery.start_soon(self.flush_loop)
        except Exception:  # a system task must not crash the run: log and end
            log.exception("zmq dialer %s failed", conn.remote_address)
        finally:
            conn._end("transport stopped", notify_peer=False, discard=False)

    async def recv_loop(self, conn: ZmqConnection) -> None:
        try:
            while True:
                conn._on_message(await self.sock.recv_multipart())
        except SocketClosedError:
            return

    async def monitor_loop(self, conn: ZmqConnection) -> None:
        try:
            while True:
                event = _monitor_event(await self.monitor.recv_multipart())
                if event == zmq.EVENT_DISCONNECTED:
                    self.stats["vanished"] += 1
                    log.info("zmq listener %s disconnected", conn.remote_address)
                    conn._end("disconnected", notify_peer=False, discard=False)
                    return
        except SocketClosedError:
            return


# ------------------------------------------------------------------ connection


class ZmqConnection(Connection):
    """One peer session over ZeroMQ (either side); see the module docs."""

    kind = "zmq"
    #: frames travel whole, several to a ZeroMQ message (see :func:`coalesce`):
    #: the transport needs them apart to never split one across messages
    keeps_frame_boundaries = True

    def __init__(self, port: _Port, remote_address: str, routing_id: bytes | None, *, peer_ip: str | None = None) -> None:
        self._port = port
        self._remote = remote_address
        #: the peer's IP (listener side, TCP endpoints), for the node's per-source limits
        self.peer_ip = peer_ip
        #: the peer's ROUTER routing id (listener side), else None
        self.routing_id = routing_id
        window = port.settings.recv_window
        self._grant_threshold = max(1, window // 2)
        self._rx: deque[bytes] = deque()
        self._partial: memoryview | None = None
        self._rx_lot = trio.lowlevel.ParkingLot()
        self._credit_lot = trio.lowlevel.ParkingLot()
        self._send_credit = INITIAL_CREDIT
        # data messages the peer may still send before it floods
        self._allowance = INITIAL_CREDIT
        self._consumed = 0
        self._closed = False
        self._close_received = trio.Event()
        self._yields = YieldBudget()
        #: why the session ended (None while it runs)
        self.ended: str | None = None
        self._close_sent = False
        now = trio.current_time()
        self._last_rx = now
        self._last_tx = now
        if window > INITIAL_CREDIT:
            self._allowance = window
            port.send_control(self, credit_message(window - INITIAL_CREDIT))

    @property
    def remote_address(self) -> str:
        return self._remote

    # ------------------------------------------------------------ input

    def _on_message(self, parts: list[bytes]) -> None:
        """Take one ZeroMQ message from the peer (the pump calls this)."""
        if self.ended is not None:
            return
        self._last_rx = trio.current_time()
        if len(parts) == 1 and 0 < len(parts[0]) <= MAX_FRAME_SIZE:
            # data, by far the usual case: what decode_message would say, without the object
            self._allowance -= 1
            if self._allowance < 0:
                self._drop("flood", f"sent more than its {self._port.settings.recv_window}-message credit")
                return
            self._rx.append(parts[0])
            if self._rx_lot:
                self._rx_lot.unpark_all()
            return
        try:
            message = decode_message(parts)
        except ZmqProtocolError as exc:
            self._drop("oversize" if parts and len(parts[0]) > MAX_FRAME_SIZE else "protocol", str(exc))
            return
        if type(message) is DataMessage:
            self._allowance -= 1
            if self._allowance < 0:
                self._drop("flood", f"sent more than its {self._port.settings.recv_window}-message credit")
                return
            self._rx.append(message.frame)
            if self._rx_lot:
                self._rx_lot.unpark_all()
        elif type(message) is CreditMessage:
            self._send_credit += message.count
            if self._credit_lot:
                self._credit_lot.unpark_all()
        elif type(message) is CloseMessage:
            self._close_received.set()
            self._end("closed by peer", notify_peer=True, discard=False)
        elif type(message) is UnknownControl:
            log.debug("zmq peer %s: unknown control kind %d ignored", self._remote, message.kind)

    def _drop(self, counter: str, reason: str) -> None:
        """End the session because the peer misbehaved (logged, counted, queue discarded)."""
        self._port.stats[counter] += 1
        log.warning("dropping zmq peer %s: %s", self._remote, reason)
        self._end(f"dropped: {reason}", notify_peer=True, discard=True)

    def _end(self, reason: str, *, notify_peer: bool, discard: bool) -> None:
        """End the session (idempotent): no more input, no more output."""
        if self.ended is not None:
            return
        self.ended = reason
        if discard:
            self._rx.clear()
            self._partial = None
        if notify_peer:
            self._send_close()
        self._port.session_ended(self)
        self._rx_lot.unpark_all()
        self._credit_lot.unpark_all()
        # Nothing can arrive any more: a dialer's aclose must not wait out its
        # close_timeout for an acknowledgement from a peer that is gone.
        self._close_received.set()

    def _send_close(self) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        self._port.send_control(self, CLOSE)

    # ------------------------------------------------------------ the API

    def _check_can_send(self) -> None:
        """Raise :class:`ConnectionClosed` unless data may be sent now."""
        if self._closed:
            raise ConnectionClosed(f"{self._remote}: connection closed")
        if self.ended is not None:
            raise ConnectionClosed(f"{self._remote}: {self.ended}")

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        for data in coalesce(frames):
            self._check_can_send()
            while self._send_credit <= 0:
                await self._credit_lot.park()
                self._check_can_send()
            self._send_credit -= 1
            try:
                await self._port.transmit(self, (data,))
            except BaseException:
                self._send_credit += 1  # not sent (all or nothing)
                raise

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            if self._closed:
                raise ConnectionClosed(f"{self._remote}: connection closed")
            if self._partial is not None or self._rx:
                break
            if self.ended is not None:
                await self._settle(yielded)
                return b""
            await self._rx_lot.park()
            yielded = True
        if self._partial is None:
            message = self._rx.popleft()
            self._consumed += 1
            if self._consumed >= self._grant_threshold and self.ended is None:
                self._allowance += self._consumed
                self._port.send_control(self, credit_message(self._consumed))
                self._consumed = 0
            if len(message) <= max_bytes:
                await self._settle(yielded)
                return message
            self._partial = memoryview(message)
        chunk = bytes(self._partial[:max_bytes])
        rest = self._partial[max_bytes:]
        self._partial = rest if len(rest) else None
        await self._settle(yielded)
        return chunk

    async def _settle(self, yielded: bool) -> None:
        if not yielded:
            await self._yields.spend()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rx_lot.unpark_all()
        self._credit_lot.unpark_all()
        try:
            if self.ended is None and isinstance(self._port, _DealerPort):
                # Wait for the listener's close: then everything we sent
                # before it has arrived (linger would promise nothing).
                with trio.move_on_after(self._port.settings.close_timeout):
                    await self._port.transmit(self, CLOSE)
                    self._close_sent = True
                    await self._close_received.wait()
        except (ConnectionClosed, SocketClosedError):
            pass
        finally:
            self._end("closed", notify_peer=True, discard=True)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<ZmqConnection {self._remote} {self.ended or 'open'}>"


# ------------------------------------------------------------------ listener


class ZmqListener(Listener):
    """A ROUTER socket: each new routing id is one :class:`ZmqConnection`."""

    def __init__(self, sock: TrioSocket, monitor: TrioSocket, settings: ZmqSettings) -> None:
        self._sock = sock
        self._monitor = monitor
        self._port = _RouterPort(sock, settings)
        self._local = sock.last_endpoint
        self._serving = False
        self._closed = False
        self._aux_scope: trio.CancelScope | None = None
        self._disconnects = 0
        self._disconnect_lot = trio.lowlevel.ParkingLot()

    @property
    def local_address(self) -> str:
        return self._local

    @property
    def stats(self) -> Counter[str]:
        """Counters: sessions, refused_routing_id, stale, oversize, flood, protocol, vanished, idle, handshake_failed."""
        return self._port.stats

    @property
    def session_count(self) -> int:
        """Sessions currently open."""
        return len(self._port.sessions)

    async def serve(self, handler: ConnectionHandler) -> None:
        if self._serving:
            raise TransportError("this listener is already serving")
        if self._closed:
            raise TransportError("this listener is closed")
        self._serving = True
        # Handlers outlive the helper tasks: closing the listener stops the
        # helpers at once, and serve returns when the handlers are done.
        async with trio.open_nursery() as handlers, trio.open_nursery() as aux:
            self._aux_scope = aux.cancel_scope
            aux.start_soon(self._port.flush_loop)
            aux.start_soon(self._port.timer_loop)
            aux.start_soon(self._monitor_loop)
            aux.start_soon(self._sweeper)
            await self._recv_loop(handler, handlers)
            aux.cancel_scope.cancel()

    async def _recv_loop(self, handler: ConnectionHandler, handlers: trio.Nursery) -> None:
        port = self._port
        sessions = port.sessions
        while True:
            try:
                parts, peer_ip = await self._sock.recv_multipart_with_peer()
            except SocketClosedError:
                return
            routing_id = parts[0]
            body = parts[1:]
            conn = sessions.get(routing_id)
            if conn is None:
                conn = self._new_session(routing_id, body, peer_ip)
                if conn is None:
                    continue
                handlers.start_soon(self._run_handler, handler, conn)
            conn._on_message(body)

    def _new_session(self, routing_id: bytes, body: list[bytes], peer_ip: str | None = None) -> ZmqConnection | None:
        port = self._port
        if routing_id in port.tombstones:
            port.stats["stale"] += 1
            return None
        if not is_generated_routing_id(routing_id):
            port.stats["refused_routing_id"] += 1
            log.warning("zmq listener %s: refusing peer-chosen routing id %s", self._local, routing_id.hex())
            port.bury(routing_id)
            return None
        if body == [b""]:
            # A close before anything else: nothing to start, but the dialer
            # waits for our close as its acknowledgement.
            port.bury(routing_id)
            try:
                self._sock.try_send_multipart([routing_id, *CLOSE])
            except (zmq.ZMQError, SocketClosedError):
                pass
            return None
        conn = ZmqConnection(port, f"{self._local}#{routing_id.hex()}", routing_id, peer_ip=peer_ip)
        if conn.ended is not None:  # gone before its first credit could be sent
            return None
        port.sessions[routing_id] = conn
        port.stats["sessions"] += 1
        return conn

    @staticmethod
    async def _run_handler(handler: ConnectionHandler, conn: ZmqConnection) -> None:
        try:
            await handler(conn)
        finally:
            await conn.aclose()

    async def _monitor_loop(self) -> None:
        try:
            while True:
                event = _monitor_event(await self._monitor.recv_multipart())
                if event == zmq.EVENT_DISCONNECTED:
                    self._disconnects += 1
                    self._disconnect_lot.unpark_all()
                elif event in _HANDSHAKE_FAILED:
                    self._port.stats["handshake_failed"] += 1
                    log.info("zmq listener %s: a ZMTP handshake failed", self._local)
        except SocketClosedError:
            return

    async def _sweeper(self) -> None:
        # One task, however many disconnects: a burst of them costs one round
        # of sweeps, not one round each.
        handled = 0
        while True:
            while handled == self._disconnects:
                await self._disconnect_lot.park()
            handled = self._disconnects
            elapsed = 0.0
            for delay in SWEEP_DELAYS:
                await trio.sleep(delay - elapsed)
                elapsed = delay
                self._port.sweep()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for conn in self._port.connections():
            conn._end("listener closed", notify_peer=True, discard=False)
        if self._aux_scope is not None:
            self._aux_scope.cancel()
        _close_monitored(self._sock, self._monitor, CLOSE_LINGER_MS)
        await _wait_endpoint_released(self._local)


#: how long ``ZmqListener.aclose`` waits for libzmq to let go of a TCP port
RELEASE_TIMEOUT = 2.0
#: how long ``ZmqTransport.listen`` keeps retrying a port that is in use, and how often
BIND_RETRY_TIMEOUT = 2.0
BIND_RETRY_INTERVAL = 0.05


async def _wait_endpoint_released(endpoint: str) -> None:
    """Return once a closed listener's TCP port can be bound again.

    libzmq closes listening sockets later, in its I/O thread; without this
    wait a listener restarted on the same port right away can fail with
    "Address already in use". Gives up silently after ``RELEASE_TIMEOUT``.
    """
    if not endpoint.startswith("tcp://"):
        await trio.lowlevel.checkpoint()
        return
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.move_on_after(RELEASE_TIMEOUT):
        while True:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # libzmq listens with SO_REUSEADDR too, so TIME_WAIT does not count
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, int(port)))
                    return
                except OSError:
                    pass
            await trio.sleep(0.01)


# ------------------------------------------------------------------ transport


class ZmqTransport(Transport):
    """ZeroMQ sockets from one context (by default the process-wide one)."""

    kind = "zmq"

    def __init__(self, context: zmq.Context | None = None, settings: ZmqSettings | None = None) -> None:  # type: ignore[type-arg]
        self._context = context
        self.settings = settings or ZmqSettings()

    @property
    def context(self) -> zmq.Context:  # type: ignore[type-arg]
        """The ZeroMQ context sockets come from."""
        return zmq.Context.instance() if self._context is None else self._context

    def _socket(self, socket_type: int) -> TrioSocket:
        sock = TrioSocket(self.context.socket(socket_type))
        _configure(sock, self.settings)
        return sock

    async def dial(self, target: str) -> ZmqConnection:
        endpoint = _check_endpoint(target)
        sock = self._socket(zmq.DEALER)
        # A reconnection would carry the rest of our stream into a new,
        # unrelated ROUTER session: a lost connection ends the Connection.
        sock.socket.setsockopt(zmq.RECONNECT_IVL, -1)
        monitor = TrioSocket(sock.socket.get_monitor_socket(_DIAL_EVENTS))
        port = _DealerPort(sock, monitor, self.settings)
        try:
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot dial {endpoint}: {exc}") from exc
            with trio.fail_after(self.settings.connect_timeout):
                while True:
                    event = _monitor_event(await monitor.recv_multipart())
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        break
                    if event in _HANDSHAKE_FAILED:
                        raise TransportError(f"ZeroMQ handshake with {endpoint} failed")
                    if event in (zmq.EVENT_CLOSED, zmq.EVENT_DISCONNECTED):
                        raise TransportError(f"cannot connect to {endpoint} (refused or unreachable)")
        except trio.TooSlowError as exc:
            port.close()
            raise TransportError(f"dialing {endpoint} timed out after {self.settings.connect_timeout:g} s") from exc
        except BaseException:
            port.close()
            raise
        conn = ZmqConnection(port, endpoint, None)
        port.conn = conn
        trio.lowlevel.spawn_system_task(port.run, name=f"zmq dialer {endpoint}")
        return conn

    async def listen(self, target: str) -> ZmqListener:
        endpoint = _check_endpoint(target)
        sock = self._socket(zmq.ROUTER)
        raw = sock.socket
        # EHOSTUNREACH for gone peers and EAGAIN for full ones, instead of
        # silently dropping what we send them
        raw.setsockopt(zmq.ROUTER_MANDATORY, 1)
        raw.setsockopt(zmq.ROUTER_HANDOVER, 0)
        # A port freed a moment ago can still be held by libzmq's I/O thread
        # (the sockets of a listener just closed in this process): retry for
        # a short while before giving up, as nginx does on restart.
        failure: zmq.ZMQError | None = None
        with trio.move_on_after(BIND_RETRY_TIMEOUT):
            while True:
                try:
                    sock.bind(endpoint)
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        sock.close()
                        raise TransportError(f"cannot listen on {endpoint}: {exc}") from exc
                    failure = exc
                await trio.sleep(BIND_RETRY_INTERVAL)
        if not raw.last_endpoint:
            sock.close()
            raise TransportError(f"cannot listen on {endpoint}: {failure}") from failure
        monitor = TrioSocket(raw.get_monitor_socket(_LISTEN_EVENTS))
        await trio.lowlevel.checkpoint()
        return ZmqListener(sock, monitor, self.settings)
