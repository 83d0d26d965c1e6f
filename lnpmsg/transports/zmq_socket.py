"""ZeroMQ socket setup for :mod:`lnpmsg.transports.zmq`: settings, socket options, monitor events, endpoints."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import zmq

from lnpmsg.io.zmq_trio import TrioSocket
from lnpmsg.transports.base import TransportError
from lnpmsg.transports.zmq_wire import INITIAL_CREDIT, MAX_FRAME_SIZE

#: libzmq cuts a connection sending a bigger part (ZMQ_MAXMSGSIZE): above our
#: own limit, so that our check (with its log line) sees moderate excesses,
#: while nobody can make libzmq buffer a huge message
ZMQ_MAX_MSG_SIZE: Final = 2 * MAX_FRAME_SIZE
#: libzmq's per-pipe queue (messages); above the credit window, so that a
#: well-behaved peer never fills it and control messages always fit
ZMQ_HWM: Final = 4 * INITIAL_CREDIT

_MONITOR_HEAD = struct.Struct("=Hi")
_SCHEMES: Final = ("tcp://", "ipc://")

DIAL_EVENTS: Final = int(
    zmq.EVENT_CLOSED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# NO_DETAIL is what plain garbage (not ZMTP at all) produces: it is counted too
LISTEN_EVENTS: Final = int(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
HANDSHAKE_FAILED: Final = frozenset(
    {
        int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL),
        int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
        int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
    }
)


def check_endpoint(target: str) -> str:
    text = target.strip()
    if not text.startswith(_SCHEMES) or len(text) <= len("tcp://"):
        raise TransportError(f"bad ZeroMQ endpoint {target!r}: expected tcp://host:port or ipc:///path")
    return text


def monitor_event(parts: list[bytes]) -> int:
    if len(parts) != 2 or len(parts[0]) != _MONITOR_HEAD.size:
        return 0
    return int(_MONITOR_HEAD.unpack(parts[0])[0])




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


def configure_socket(sock: TrioSocket, settings: ZmqSettings) -> None:
    raw = sock.socket
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SNDHWM, ZMQ_HWM)
    raw.setsockopt(zmq.RCVHWM, ZMQ_HWM)
    raw.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MSG_SIZE)
    raw.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(settings.heartbeat_interval * 1000)))
    raw.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(settings.heartbeat_timeout * 1000)))
    # TTL asks the peer to cut us if it hears nothing for that long (0.1 s units on the wire)
    raw.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(settings.heartbeat_timeout * 1000)))


def close_monitored(sock: TrioSocket, monitor: TrioSocket, linger: int) -> None:
    if not sock.closed:
        try:
            sock.socket.disable_monitor()
        except zmq.ZMQError:
            pass
    monitor.close(linger=0)
    sock.close(linger=linger)
