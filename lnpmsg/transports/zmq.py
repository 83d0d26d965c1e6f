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

The code: socket settings and options in :mod:`~lnpmsg.transports.zmq_socket`,
the ROUTER and DEALER sides in :mod:`~lnpmsg.transports.zmq_port`, the
session in :mod:`~lnpmsg.transports.zmq_connection`, the listener in
:mod:`~lnpmsg.transports.zmq_listener`; this module dials and listens.
"""

from __future__ import annotations

import errno

import trio
import zmq

from lnpmsg.io.zmq_trio import TrioSocket
from lnpmsg.transports.base import Transport, TransportError
from lnpmsg.transports.zmq_connection import ZmqConnection
from lnpmsg.transports.zmq_listener import ZmqListener
from lnpmsg.transports.zmq_port import MAX_TOMBSTONES, DealerPort
from lnpmsg.transports.zmq_socket import (
    DIAL_EVENTS,
    HANDSHAKE_FAILED,
    LISTEN_EVENTS,
    ZMQ_MAX_MSG_SIZE,
    ZmqSettings,
    check_endpoint,
    configure_socket,
    monitor_event,
)
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

#: how long ``ZmqTransport.listen`` keeps retrying a port that is in use, and how often
BIND_RETRY_TIMEOUT = 2.0
BIND_RETRY_INTERVAL = 0.05


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
        configure_socket(sock, self.settings)
        return sock

    async def dial(self, target: str) -> ZmqConnection:
        endpoint = check_endpoint(target)
        sock = self._socket(zmq.DEALER)
        # A reconnection would carry the rest of our stream into a new,
        # unrelated ROUTER session: a lost connection ends the Connection.
        sock.socket.setsockopt(zmq.RECONNECT_IVL, -1)
        monitor = TrioSocket(sock.socket.get_monitor_socket(DIAL_EVENTS))
        port = DealerPort(sock, monitor, self.settings)
        try:
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot dial {endpoint}: {exc}") from exc
            with trio.fail_after(self.settings.connect_timeout):
                while True:
                    event = monitor_event(await monitor.recv_multipart())
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        break
                    if event in HANDSHAKE_FAILED:
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
        endpoint = check_endpoint(target)
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
        monitor = TrioSocket(raw.get_monitor_socket(LISTEN_EVENTS))
        await trio.lowlevel.checkpoint()
        return ZmqListener(sock, monitor, self.settings)