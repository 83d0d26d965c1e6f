"""One QUIC connection of the UDP transport as a byte stream (see :mod:`lnpmsg.transports.udp`).

:class:`UdpConnection` is what the node sees: the lnp/1 stream, its
receive buffer and back-pressure. Its endpoint (:mod:`lnpmsg.transports.udp_endpoint`)
owns the socket and drives the QUIC core behind it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from lnpmsg.transports.address import format_host_port
from lnpmsg.transports.base import Connection, ConnectionClosed
from lnpmsg.transports.udp_quic import LOOPBACK_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE, STREAM_ID, LnpQuicConnection

if TYPE_CHECKING:
    from lnpmsg.transports.udp_endpoint import _Endpoint

__all__ = ["LINGER_TIMEOUT", "WRITE_SHARE", "Address", "UdpConnection"]

log = logging.getLogger("lnpmsg.transports.udp")

#: seconds ``aclose`` lets unacknowledged data (and the FIN) reach the peer
#: before the connection is closed regardless
LINGER_TIMEOUT = 10.0

#: a writer's preferred write is this share of the send buffer limit (1 MiB by
#: default: 256 KiB writes). Each write leaves as one QUIC burst, which wakes
#: the receiver once and is acknowledged about once, so the per-write costs on
#: both ends (wake-ups, ACKs, ``datagrams_to_send`` calls, reads) shrink with
#: larger writes: at 1 KiB messages 256 KiB writes took 10-15 % less CPU per
#: message on each side than 128 KiB ones. A quarter keeps several writes in
#: flight: a write as large as the limit waits for every ACK before the next.
WRITE_SHARE = 4

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Settings:
    idle_timeout: float
    handshake_timeout: float
    max_connections: int
    keepalive: bool
    send_buffer_limit: int
    receive_window: int
    max_datagram_size: int | None

    def datagram_size(self, peer: Address) -> int:
        """The QUIC payload size for a path to ``peer``: larger on loopback (see udp_quic)."""
        if self.max_datagram_size is not None:
            return self.max_datagram_size
        return LOOPBACK_DATAGRAM_SIZE if _is_loopback(peer[0]) else MAX_DATAGRAM_SIZE


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _Signal:
    """Wakes every task waiting for "something changed" (data, acks, the end)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class UdpConnection(Connection):
    """One peer over QUIC: the lnp/1 stream as a byte stream (see the module docstring)."""

    kind = "udp"

    def __init__(self, endpoint: _Endpoint, core: LnpQuicConnection, now: float, fallback_address: Address) -> None:
        self._endpoint = endpoint
        self._core = core
        self._fallback_address = fallback_address
        # Stream data as the core handed it over: whole chunks, joined only when
        # read, so a chunk is copied once (or not at all, when read alone).
        self._inbox: deque[bytes] = deque()
        self._inbox_size = 0
        self._peer_finished = False  # FIN arrived: b"" once the inbox is drained
        self._ended = False  # the QUIC connection is closing or gone
        self._end_reason = ""
        self._terminated = False  # the core is done; its task may stop
        self._closed = False  # our aclose ran
        self._close_sent = False
        self._linger_until: float | None = None
        self._handshake_deadline: float | None = now + endpoint.settings.handshake_timeout
        self._established = False
        self._last_heard = now
        self._last_ping = now
        self._changed = _Signal()
        self._wakeup = trio.Event()
        #: when the driver wakes up next unless woken (set before it waits)
        self._armed_at = -math.inf
        self._cids: set[bytes] = set()

    # -- Connection API --------------------------------------------------------------

    @property
    def remote_address(self) -> str:
        """The peer's current address; it follows the peer when it migrates."""
        addr = self._core.get_peer_address() or self._fallback_address
        return format_host_port(addr[0], addr[1])

    @property
    def preferred_write_size(self) -> int:  # type: ignore[override]
        """Bytes per ``send_frames`` call that keep the path busy at the least cost (see :data:`WRITE_SHARE`)."""
        return max(MAX_DATAGRAM_SIZE, self._endpoint.settings.send_buffer_limit // WRITE_SHARE)

    @property
    def is_closed(self) -> bool:
        """True once the QUIC connection ended (either side closed, or it timed out)."""
        return self._ended

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if data:
            try:
                self._core.send_stream_data(STREAM_ID, bytes(data))
            except (ValueError, RuntimeError) as exc:  # stream reset or finished under us
                raise ConnectionClosed(f"UDP send to {self.remote_address} failed: {exc}") from exc
            self._endpoint.transmit_now(self)
        limit = self._endpoint.settings.send_buffer_limit
        while self._core.unacked_bytes() > limit:
            await self._changed.wait()
            self._check_open()

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise ConnectionClosed("connection closed")
            if self._inbox:
                data = self._take(max_bytes)
                if self._core.consume(len(data)):
                    self._endpoint.transmit_now(self)  # the credit the peer may be waiting for
                return data
            if self._peer_finished or self._ended:
                return b""
            await self._changed.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.clear()
            self._inbox_size = 0
            if not self._ended:
                try:
                    self._core.send_stream_data(STREAM_ID, b"", end_stream=True)
                except (ValueError, RuntimeError):
                    pass  # already finished or reset: nothing to flush
                self._linger_until = trio.current_time() + LINGER_TIMEOUT
                self._wake()
            self._changed.fire()
        await trio.lowlevel.cancel_shielded_checkpoint()

    @property
    def buffered_bytes(self) -> int:
        """Stream bytes received and not read yet (at most the receive window)."""
        return self._inbox_size

    def _take(self, max_bytes: int) -> bytes:
        inbox = self._inbox
        first = inbox.popleft()
        if len(first) > max_bytes:
            inbox.appendleft(first[max_bytes:])
            first = first[:max_bytes]
        elif inbox and len(first) + len(inbox[0]) <= max_bytes:
            parts = [first]
            size = len(first)
            while inbox and size + len(inbox[0]) <= max_bytes:
                chunk = inbox.popleft()
                parts.append(chunk)
                size += len(chunk)
            first = b"".join(parts)
        self._inbox_size -= len(first)
        return first

    # -- driven by the endpoint ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed("connection closed")
        if self._ended:
            raise ConnectionClosed(f"UDP connection to {self.remote_address} ended: {self._end_reason}")

    def _wake(self) -> None:
        self._wakeup.set()

    def _deliver(self, data: bytes, end_stream: bool) -> None:
        if self._closed:
            # Nobody will read it; keep the peer's credit flowing so its own close can finish.
            self._core.consume(len(data))
        elif data:  # an empty chunk (a bare FIN) must not read as the end before it
            self._inbox.append(data)
            self._inbox_size += len(data)
        if end_stream:
            self._peer_finished = True

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self._end_reason = reason
            log.debug("UDP connection %s ended: %s", self.remote_address, reason)

    def _deadline(self) -> float:
        deadlines = [self._core.get_timer(), self._handshake_deadline]
        if not self._ended:
            if self._linger_until is not None and not self._close_sent:
                deadlines.append(self._linger_until)
            if self._endpoint.settings.keepalive and self._established:
                deadlines.append(self._keepalive_at())
        return min((d for d in deadlines if d is not None), default=trio.current_time() + 3600.0)

    def _keepalive_at(self) -> float:
        return max(self._last_heard, self._last_ping) + self._endpoint.settings.idle_timeout / 3
