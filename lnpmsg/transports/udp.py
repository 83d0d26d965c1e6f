"""UDP peer transport: lnp/1, the BOLT-8 byte stream inside one QUIC stream.

Why this design
---------------
Lightning's peer protocol needs a reliable, ordered byte stream: BOLT-8 frames
are length-prefixed and their nonces count up, so one lost, duplicated or
reordered byte breaks the session. UDP gives none of that. Instead of growing
one more home-made retransmission scheme, this transport drives a well-kept
QUIC implementation (aioquic's sans-IO ``QuicConnection``) from trio. QUIC
brings what a homegrown scheme would get wrong or leave out: loss recovery and
congestion control (RFC 9002), flow control, an idle timeout, and connection
migration, so a peer whose address changes (NAT rebinding, a new network)
keeps its connection and loses nothing.

- **One stream.** The dialer opens bidirectional stream 0, and it carries
  exactly the bytes a TCP connection would: BOLT-8 acts one to three, then
  encrypted frames. Messages are not spread over several streams: a peer's
  Lightning messages are ordered, and BOLT-8 nonces make frames decryptable
  only in the order they were sent, so more streams would buy nothing but
  state. Each side accepts no other stream.
- **Node keys, not certificates, authenticate peers.** QUIC requires TLS 1.3,
  so a listener makes a throw-away self-signed certificate at start and
  dialers do not check it (``CERT_NONE``). Authentication happens one layer
  up, in the BOLT-8 Noise_XK handshake inside the stream: the dialer must
  already know the listener's node key (act two only decrypts for its
  owner), act three proves the dialer's key, and every frame after that is
  encrypted with keys from that handshake. So the session is bound to the
  node id whoever terminates QUIC: a machine in the middle can relay QUIC
  packets but cannot read, forge or replay messages, exactly as with BOLT-8
  over plain TCP. The fixed ALPN ``lnp/1`` keeps other QUIC applications (and
  lnp/1 peers of an incompatible future version) from being mistaken for a
  peer.
- **A thin trio shell.** aioquic's asyncio layer is not used. Each endpoint
  owns one UDP socket; datagrams go into the core with ``now``, and one task
  per connection pulls datagrams, events and the one timer out of it. The
  listener routes every datagram by its destination connection id, never by
  address, which is what lets a migrating peer keep its ``UdpConnection``; a
  new connection starts only from a QUIC Initial of a supported version that
  decrypts.
- **Bounded.** The receive window follows what the application has read (see
  :class:`~lnpmsg.transports.udp_quic.LnpQuicConnection`), so a peer can make
  us buffer at most ``receive_window`` bytes; ``send_frames`` blocks while
  more than ``send_buffer_limit`` bytes are unacknowledged, so a peer that
  stops reading stops us rather than growing our memory; a listener holds at
  most ``max_connections``, of which at most :data:`MAX_PENDING_HANDSHAKES`
  still handshaking, each given ``handshake_timeout`` to finish. Datagrams
  that route nowhere are dropped, counted in :attr:`UdpListener.stats` and
  logged at debug level.

Differences from TCP a caller may notice: the listener hands a connection to
its handler once the dialer has sent the first bytes on the stream (in lnp/1
the dialer always speaks first: BOLT-8 act one); and the connections a
listener accepted share its socket, so closing the listener closes them too.
``aclose`` sends FIN and returns at once; the connection stays alive in the
background until the peer has acknowledged everything (at most
:data:`LINGER_TIMEOUT`), then closes with a QUIC CONNECTION_CLOSE.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicErrorCode, encode_quic_retry

from lnpmsg.transports.base import (
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    Listener,
    Transport,
    TransportError,
)
from lnpmsg.transports.address import format_host_port, split_host_port
from lnpmsg.transports.udp_retry import RetryTokens
from lnpmsg.transports.udp_quic import (
    ALPN,
    CONNECTION_ID_LENGTH,
    LOOPBACK_DATAGRAM_SIZE,
    MAX_DATAGRAM_SIZE,
    RECEIVE_WINDOW,
    STREAM_ID,
    DatagramHeader,
    LnpQuicConnection,
    classify_datagram,
    client_configuration,
    self_signed_certificate,
    server_configuration,
)

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "IDLE_TIMEOUT",
    "LINGER_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_PENDING_HANDSHAKES",
    "MAX_PENDING_PER_SOURCE",
    "RETRY_THRESHOLD",
    "SEND_BUFFER_LIMIT",
    "UdpConnection",
    "UdpListener",
    "UdpTransport",
]

log = logging.getLogger(__name__)

#: seconds without a packet from the peer after which the connection is dead.
#: Keepalive PINGs (every third of it) keep a quiet but living peer connected,
#: so this is how long a vanished peer goes unnoticed.
IDLE_TIMEOUT = 60.0

#: seconds a dialer waits for the QUIC handshake, and a listener for a new
#: peer to finish it and open the stream; bounds the cost of handshake floods
HANDSHAKE_TIMEOUT = 10.0

#: seconds ``aclose`` lets unacknowledged data (and the FIN) reach the peer
#: before the connection is closed regardless
LINGER_TIMEOUT = 10.0

#: unacknowledged bytes above which ``send_frames`` blocks: what a peer that
#: stops reading can make us hold, beside one batch of frames
SEND_BUFFER_LIMIT = 1 << 20

#: connections one listener serves at once (handshaking ones included)
MAX_CONNECTIONS = 256

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


async def _resolve(target: str, *, passive: bool) -> tuple[int, Any]:
    try:
        host, port = split_host_port(target)
    except ValueError as exc:
        raise TransportError(str(exc)) from exc
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    except OSError as exc:
        raise TransportError(f"cannot resolve {target}: {exc}") from exc
    if not infos:
        raise TransportError(f"cannot resolve {target}")
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr


class UdpListener(Listener):
    """A bound UDP socket serving QUIC peers (see the module docstring)."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        host, port = endpoint.sock.getsockname()[:2]
        self._local = format_host_port(host, port)
        self._serving = False

    @property
    def local_address(self) -> str:
        return self._local

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        return int(self._local.rsplit(":", 1)[1])

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``datagrams`` read, and dropped ones by reason (``garbage``,
        ``unroutable``, ``refused``), ``handshake_timeouts``, ``accepted``."""
        return self._endpoint.stats

    @property
    def connection_count(self) -> int:
        """Connections the listener holds now (handshaking and closing ones included)."""
        return len(self._endpoint.connections)

    async def serve(self, handler: ConnectionHandler) -> None:
        if self._serving:
            raise TransportError("this listener is already serving")
        self._serving = True

        async def run_handler(conn: UdpConnection) -> None:
            try:
                await handler(conn)
            finally:
                await conn.aclose()

        async with trio.open_nursery() as handlers:
            self._endpoint.on_accept = lambda conn: handlers.start_soon(run_handler, conn)
            await self._endpoint.run()

    async def aclose(self) -> None:
        self._endpoint.close()
        await trio.lowlevel.checkpoint()


class UdpTransport(Transport):
    """Peers over UDP: QUIC (aioquic's core, driven from trio) carrying the BOLT-8 stream."""

    kind = "udp"

    def __init__(
        self,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        keepalive: bool = True,
        send_buffer_limit: int = SEND_BUFFER_LIMIT,
        receive_window: int = RECEIVE_WINDOW,
        max_datagram_size: int | None = None,
    ) -> None:
        """Settings apply to every connection of this transport; ``max_datagram_size``
        None picks :data:`~lnpmsg.transports.udp_quic.LOOPBACK_DATAGRAM_SIZE` for
        loopback peers and the 1200 bytes any path carries for the others."""
        self.settings = _Settings(
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            keepalive=keepalive,
            send_buffer_limit=send_buffer_limit,
            receive_window=receive_window,
            max_datagram_size=max_datagram_size,
        )
        self._certificate: Any = None

    async def dial(self, target: str) -> UdpConnection:
        family, sockaddr = await _resolve(target, passive=False)
        peer: Address = (sockaddr[0], sockaddr[1])
        try:
            sock = _open_socket(family, ("", 0))
        except OSError as exc:
            raise TransportError(f"cannot open a UDP socket: {exc}") from exc
        settings = self.settings
        endpoint = _Endpoint(sock, settings)
        core = LnpQuicConnection(
            configuration=client_configuration(
                idle_timeout=settings.idle_timeout,
                receive_window=settings.receive_window,
                max_datagram_size=settings.datagram_size(peer),
            )
        )
        now = trio.current_time()
        core.connect(peer, now)
        core.open_stream()
        conn = UdpConnection(endpoint, core, now, peer)
        endpoint.add(conn, (core.host_cid,))
        # The connection outlives this call, and the interface gives us no
        # nursery: its driver runs as a system task that ends with the connection.
        trio.lowlevel.spawn_system_task(endpoint.run_detached)
        try:
            while not conn._established and not conn._ended:
                await conn._changed.wait()
        except BaseException:
            endpoint.close()
            raise
        if not conn._established:
            endpoint.close()
            raise TransportError(f"UDP/QUIC connect to {target} failed: {conn._end_reason}")
        return conn

    async def listen(self, target: str) -> UdpListener:
        family, sockaddr = await _resolve(target, passive=True)
        try:
            sock = _open_socket(family, sockaddr)
        except OSError as exc:
            raise TransportError(f"cannot listen on UDP {target}: {exc.strerror or exc}") from exc
        if self._certificate is None:
            self._certificate = self_signed_certificate(datetime.datetime.now(datetime.UTC))
        certificate, key = self._certificate
        settings = self.settings
        configs = {
            size: server_configuration(
                certificate=certificate,
                private_key=key,
                idle_timeout=settings.idle_timeout,
                receive_window=settings.receive_window,
                max_datagram_size=size,
            )
            for size in {settings.datagram_size(("127.0.0.1", 0)), settings.datagram_size(("192.0.2.1", 0))}
        }
        return UdpListener(_Endpoint(sock, settings, server_config=lambda peer: configs[settings.datagram_size(peer)]))
