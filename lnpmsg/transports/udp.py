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
import logging
import socket
from typing import Any

import trio

from lnpmsg.transports.address import format_host_port, split_host_port
from lnpmsg.transports.base import ConnectionHandler, Listener, Transport, TransportError
from lnpmsg.transports.udp_connection import LINGER_TIMEOUT, Address, UdpConnection, _Settings
from lnpmsg.transports.udp_endpoint import (
    MAX_PENDING_HANDSHAKES,
    MAX_PENDING_PER_SOURCE,
    RETRY_THRESHOLD,
    _Endpoint,
    _open_socket,
)
from lnpmsg.transports.udp_quic import (
    RECEIVE_WINDOW,
    LnpQuicConnection,
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


#: unacknowledged bytes above which ``send_frames`` blocks: what a peer that
#: stops reading can make us hold, beside one batch of frames
SEND_BUFFER_LIMIT = 1 << 20

#: connections one listener serves at once (handshaking ones included)
MAX_CONNECTIONS = 256


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
