"""The socket side of the UDP transport: one UDP socket and the QUIC connections behind it.

An endpoint reads datagrams and routes them by connection id (never by
address, so a migrating peer keeps its connection), opens connections for
Initials a listener accepts (with Retry under load), and drives each
connection's QUIC core from one task: events, datagrams out, the timer.
See :mod:`lnpmsg.transports.udp` for the design.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicErrorCode, encode_quic_retry

from lnpmsg.transports.address import format_host_port
from lnpmsg.transports.udp_connection import Address, UdpConnection, _Settings
from lnpmsg.transports.udp_quic import (
    ALPN,
    CONNECTION_ID_LENGTH,
    STREAM_ID,
    DatagramHeader,
    LnpQuicConnection,
    classify_datagram,
)
from lnpmsg.transports.udp_retry import RetryTokens

__all__ = ["MAX_PENDING_HANDSHAKES", "MAX_PENDING_PER_SOURCE", "RETRY_THRESHOLD"]

log = logging.getLogger("lnpmsg.transports.udp")

#: connections still handshaking at once; Initials beyond it are dropped so a
#: flood of them cannot take every slot or all the CPU
MAX_PENDING_HANDSHAKES = 64

#: with this many handshakes under way a listener validates addresses first: an
#: Initial without a token gets a QUIC Retry and costs no state (RFC 9000 8.1.2)
RETRY_THRESHOLD = 16

#: handshakes under way from one source IP (counted once addresses are validated:
#: below ``RETRY_THRESHOLD`` a flood cannot reach it anyway)
MAX_PENDING_PER_SOURCE = 8

#: datagrams read per wake-up before other tasks get their turn
_RECEIVE_BATCH = 64

#: largest UDP payload there can be
_MAX_UDP_PAYLOAD = 65535

#: socket buffers asked of the kernel (it may grant less): bursts of a full
#: congestion window should not be dropped before we get to read them
_SOCKET_BUFFER = 4 << 20


class _Endpoint:
    """One UDP socket and the QUIC connections behind it (one for a dialer, many for a listener)."""

    def __init__(
        self,
        sock: socket.socket,
        settings: _Settings,
        *,
        server_config: Callable[[Address], QuicConfiguration] | None = None,
    ) -> None:
        self.sock = sock
        self.settings = settings
        self.is_client = server_config is None
        self._server_config = server_config
        self._routes: dict[bytes, UdpConnection] = {}
        self.connections: set[UdpConnection] = set()
        self.stats: dict[str, int] = {
            "datagrams": 0,
            "garbage": 0,
            "unroutable": 0,
            "refused": 0,
            "retry": 0,
            "bad_token": 0,
            "evicted": 0,
            "handshake_timeouts": 0,
            "accepted": 0,
        }
        self.on_accept: Callable[[UdpConnection], None] | None = None
        #: a listener's Retry tokens (address validation under load)
        self.retry_tokens = RetryTokens() if server_config is not None else None
        self._nursery: trio.Nursery | None = None
        self._send_lock = trio.Lock()
        #: datagrams a writer or reader could not send at once (full socket); the driver sends them first
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._closed = False

    # -- lifetime -------------------------------------------------------------------

    async def run(self) -> None:
        """Read datagrams and drive every connection until the socket is closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for conn in list(self.connections):
                    nursery.start_soon(self._drive, conn)
                await self._receive_loop()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.close()

    async def run_detached(self) -> None:
        """``run`` as a system task (a dialer's): never lets an error escape into trio itself."""
        try:
            await self.run()
        except Exception:
            log.exception("UDP endpoint failed")

    def close(self) -> None:
        """Close every connection at once (best-effort CONNECTION_CLOSE) and the socket."""
        if self._closed:
            return
        self._closed = True
        now = trio.current_time()
        for conn in list(self.connections):
            if not conn._core.is_closing:
                conn._core.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="endpoint closed")
                for data, addr in conn._core.datagrams_to_send(now):
                    try:
                        self.sock.sendto(data, addr)
                    except OSError:
                        break
            conn._end("endpoint closed")
            conn._changed.fire()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()

    def add(self, conn: UdpConnection, cids: Iterable[bytes]) -> None:
        self.connections.add(conn)
        for cid in cids:
            self._route(conn, cid)
        if self._nursery is not None:
            self._nursery.start_soon(self._drive, conn)

    def _route(self, conn: UdpConnection, cid: bytes) -> None:
        self._routes[cid] = conn
        conn._cids.add(cid)

    def _unroute(self, conn: UdpConnection, cid: bytes) -> None:
        if self._routes.get(cid) is conn:
            del self._routes[cid]
        conn._cids.discard(cid)

    def _forget(self, conn: UdpConnection) -> None:
        for cid in list(conn._cids):
            self._unroute(conn, cid)
        self.connections.discard(conn)
        conn._end("closed")
        conn._changed.fire()
        if self.is_client:
            self.close()  # a dialer's socket lives exactly as long as its one connection

    # -- receiving ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        sock = self.sock
        while not self._closed:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError):
                return
            for _ in range(_RECEIVE_BATCH):
                if self._closed:
                    return
                try:
                    data, addr = sock.recvfrom(_MAX_UDP_PAYLOAD)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. an ICMP error reported on the socket
                    log.debug("UDP receive error ignored: %s", exc)
                    continue
                self._dispatch(data, (addr[0], addr[1]), trio.current_time())

    def _dispatch(self, data: bytes, addr: Address, now: float) -> None:
        self.stats["datagrams"] += 1
        if data and not data[0] & 0x80:
            # A short header (RFC 9000 17.3), what every datagram of an established
            # connection carries: the destination id is the next bytes, of the length
            # we issue. Routing it needs no parse; the core checks the rest.
            conn = self._routes.get(data[1 : 1 + CONNECTION_ID_LENGTH])
            if conn is not None:
                conn._last_heard = now
                self._feed(conn, data, addr, now)
                return
        header = classify_datagram(data)
        if header is None:
            self._drop("garbage", "not a QUIC packet", addr, data)
            return
        conn = self._routes.get(header.destination_cid)
        if conn is None:
            if header.opens_connection and not self.is_client:
                self._open(header, data, addr, now)
            else:
                self._drop("unroutable", "unknown connection id", addr, data)
            return
        conn._last_heard = now
        self._feed(conn, data, addr, now)

    def _feed(self, conn: UdpConnection, data: bytes, addr: Address, now: float) -> None:
        try:
            conn._core.receive_datagram(data, addr, now)
        except Exception:  # a core bug on hostile input must not take the endpoint down
            log.warning("QUIC core failed on a datagram from %s; closing that connection", addr, exc_info=True)
            conn._core.close(error_code=QuicErrorCode.INTERNAL_ERROR, reason_phrase="internal error")
        conn._wake()

    def _open(self, header: DatagramHeader, data: bytes, addr: Address, now: float) -> None:
        if self._closed or len(self.connections) >= self.settings.max_connections:
            self._drop("refused", "listener full", addr, data)
            return
        handshaking = [c for c in self.connections if not c._established and not c._ended]
        odcid = header.destination_cid
        retry_scid: bytes | None = None
        assert self.retry_tokens is not None
        if header.token:
            try:
                odcid = self.retry_tokens.validate(addr, header.token, header.destination_cid, now)
            except ValueError as exc:
                self._drop("bad_token", f"Retry token refused: {exc}", addr, data)
                return
            retry_scid = header.destination_cid
        elif len(handshaking) >= RETRY_THRESHOLD:
            self._send_retry(header, addr, now)
            return
        if sum(1 for c in handshaking if c._fallback_address[0] == addr[0]) >= MAX_PENDING_PER_SOURCE:
            self._drop("refused", "too many handshakes under way from that address", addr, data)
            return
        if len(handshaking) >= MAX_PENDING_HANDSHAKES:
            # Full of validated handshakes: the oldest makes room (a peer that is
            # really there finishes in a round trip; one holding a slot does not).
            oldest = min(handshaking, key=lambda c: c._handshake_deadline or 0.0)
            self.stats["evicted"] += 1
            oldest._handshake_deadline = None
            oldest._end("evicted: too many handshakes under way")
            oldest._core.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="busy")
            oldest._wake()
        assert self._server_config is not None
        core = LnpQuicConnection(
            configuration=self._server_config(addr),
            original_destination_connection_id=odcid,
            retry_source_connection_id=retry_scid,
        )
        try:
            core.receive_datagram(data, addr, now)
        except Exception:
            log.warning("QUIC core failed on an Initial from %s", addr, exc_info=True)
            self._drop("garbage", "Initial crashed the QUIC core", addr, data)
            return
        if not core.initial_accepted:
            self._drop("garbage", "Initial that does not decrypt", addr, data)
            return
        conn = UdpConnection(self, core, now, addr)
        self.add(conn, (header.destination_cid, core.host_cid))
        conn._wake()

    def _send_retry(self, header: DatagramHeader, addr: Address, now: float) -> None:
        """Answer an Initial with a Retry: no state kept until the client echoes the token."""
        assert self.retry_tokens is not None and header.version is not None
        retry_scid = os.urandom(CONNECTION_ID_LENGTH)
        packet = encode_quic_retry(
            version=header.version,
            source_cid=retry_scid,
            destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=self.retry_tokens.create(addr, header.destination_cid, retry_scid, now),
        )
        self.stats["retry"] += 1
        try:
            self.sock.sendto(packet, addr)
        except OSError as exc:  # full buffer or unreachable: the client sends its Initial again
            log.debug("QUIC Retry to %s not sent: %s", addr, exc)

    def _drop(self, counter: str, reason: str, addr: Address, data: bytes) -> None:
        self.stats[counter] += 1
        if log.isEnabledFor(logging.DEBUG):  # floods come here: format nothing unless asked to
            log.debug("dropped %d-byte datagram from %s: %s", len(data), format_host_port(addr[0], addr[1]), reason)

    # -- one task per connection: events, datagrams out, the timer -----------------------

    async def _drive(self, conn: UdpConnection) -> None:
        core = conn._core
        try:
            while True:
                conn._wakeup = trio.Event()
                try:
                    now = trio.current_time()
                    timer_at = core.get_timer()
                    if timer_at is not None and now >= timer_at:
                        core.handle_timer(now)
                    self._housekeeping(conn, now)
                    self._handle_events(conn)
                    await self._transmit(conn)
                    self._handle_events(conn)
                    if core.is_closing:
                        conn._end(core.close_reason or "closing")
                    if conn._terminated or (core.is_closing and core.get_timer() is None):
                        return
                    deadline = conn._deadline()
                except Exception:  # a core bug must cost one connection, not the listener
                    log.warning("QUIC core failed; dropping %s", conn.remote_address, exc_info=True)
                    conn._end("internal error")
                    return
                finally:
                    conn._changed.fire()
                if not conn._wakeup.is_set():
                    conn._armed_at = deadline
                    with trio.move_on_at(deadline):
                        await conn._wakeup.wait()
                    conn._armed_at = -math.inf
        finally:
            self._forget(conn)

    def _housekeeping(self, conn: UdpConnection, now: float) -> None:
        core = conn._core
        if conn._handshake_deadline is not None and now >= conn._handshake_deadline:
            conn._handshake_deadline = None
            self.stats["handshake_timeouts"] += 1
            conn._end("handshake timed out")
            core.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="handshake timeout")
            return
        if conn._ended:
            return
        if conn._linger_until is not None and not conn._close_sent:
            if core.send_finished() or now >= conn._linger_until:
                conn._close_sent = True
                core.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="closed")
            return
        if self.settings.keepalive and conn._established and now >= conn._keepalive_at():
            conn._last_ping = now
            core.send_ping(0)

    def _handle_events(self, conn: UdpConnection) -> None:
        core = conn._core
        while (event := core.next_event()) is not None:
            if isinstance(event, quic_events.StreamDataReceived):
                if event.stream_id != STREAM_ID:
                    core.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION, reason_phrase="lnp/1 uses one stream")
                    continue
                conn._deliver(event.data, event.end_stream)
                if not conn._established and not self.is_client:
                    self._accept(conn)
            elif isinstance(event, quic_events.ConnectionIdIssued):
                self._route(conn, event.connection_id)
            elif isinstance(event, quic_events.ConnectionIdRetired):
                self._unroute(conn, event.connection_id)
            elif isinstance(event, quic_events.HandshakeCompleted):
                if event.alpn_protocol != ALPN:
                    core.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION, reason_phrase="ALPN lnp/1 required")
                elif self.is_client:
                    conn._established = True
                    conn._handshake_deadline = None
            elif isinstance(event, (quic_events.StreamReset, quic_events.StopSendingReceived)):
                # lnp/1 never resets its stream: treat it as the peer aborting the session.
                core.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="stream aborted")
            elif isinstance(event, quic_events.ConnectionTerminated):
                conn._end(event.reason_phrase or f"QUIC error 0x{event.error_code:x}")
                conn._terminated = True

    def _accept(self, conn: UdpConnection) -> None:
        conn._established = True
        conn._handshake_deadline = None
        self.stats["accepted"] += 1
        if self.on_accept is None:
            conn._core.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="not serving")
        else:
            self.on_accept(conn)

    def transmit_now(self, conn: UdpConnection) -> None:
        """Send what ``conn``'s core has to send from the calling task (a writer or reader).

        Waking the connection's driver for it would cost a task switch per
        write; the driver is woken only when it has work: its timer is now
        due earlier than it sleeps, the socket is full (the driver waits for
        room), a send of its own waits for room, events to hand over, or the
        connection is closing.
        """
        core = conn._core
        if self._closed or self._send_lock.locked() or conn._armed_at == -math.inf:
            conn._wake()  # the driver is sending, running, or gone: it takes over
            return
        datagrams = core.datagrams_to_send(trio.current_time())
        sock = self.sock
        for index, (data, addr) in enumerate(datagrams):
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                self._backlog.extend(datagrams[index:])
                conn._wake()
                return
            except OSError as exc:  # unreachable peer and the like: QUIC treats it as loss
                log.debug("UDP send to %s failed: %s", addr, exc)
        if core.has_events() or core.is_closing:
            conn._wake()
            return
        timer = core.get_timer()
        if timer is not None and timer < conn._armed_at:
            conn._wake()

    async def _transmit(self, conn: UdpConnection) -> None:
        backlog = self._backlog
        while backlog:
            data, addr = backlog.popleft()
            await self._send(data, addr)
        for data, addr in conn._core.datagrams_to_send(trio.current_time()):
            await self._send(data, addr)

    async def _send(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        try:
            self.sock.sendto(data, addr)
            return
        except BlockingIOError:
            pass
        except OSError as exc:  # unreachable peer and the like: QUIC treats it as loss
            log.debug("UDP send to %s failed: %s", addr, exc)
            return
        # The socket buffer is full: wait for room. One waiter at a time, as trio requires.
        async with self._send_lock:
            while not self._closed:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                    self.sock.sendto(data, addr)
                    return
                except BlockingIOError:
                    continue
                except (trio.ClosedResourceError, OSError) as exc:
                    log.debug("UDP send to %s failed: %s", addr, exc)
                    return


def _open_socket(family: int, bind_to: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            except OSError:
                pass  # the kernel's default will do
        sock.bind(bind_to)
    except BaseException:
        sock.close()
        raise
    return sock
