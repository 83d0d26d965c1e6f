"""The Tor transport: dial through Tor's SOCKS port, listen on loopback for an onion service.

``dial`` accepts ``host:port`` or ``<peer id>@host:port``. Onion hosts are
validated (v3, checksum) before anything is sent; other hosts are refused
with :class:`ClearnetRefused` unless ``allow_clearnet`` is set, before any
socket is opened. Host names always go to Tor as names: no local DNS lookup
ever happens.

Stream isolation: each peer gets its own SOCKS username (its id when the
target names one, else the host and port) and Tor's ``IsolateSOCKSAuth``
(on by default) puts streams with different credentials on different
circuits, so one peer cannot be linked to another by a shared circuit. The
password is a random token of this transport instance, so two nodes sharing
one Tor never share circuits either.

Circuits fail now and then (a relay drops out, an introduction point is
gone): when Tor answers a CONNECT with a circuit failure, ``dial`` asks once
more after ``circuit_retry_delay`` seconds, within the same
``connect_timeout``, as Tor Browser's users would by reloading.

``listen`` binds the plain TCP listener (127.0.0.1 only) that the node's
onion service points at; connections arriving there came through Tor.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import socket

import trio

from lnpmsg.transports.base import Transport
from lnpmsg.transports.tcp import (
    TcpConnection,
    TcpListener,
    format_host_port,
    split_host_port,
)
from lnpmsg.transports.tor.address import is_onion_host, parse_onion_address
from lnpmsg.transports.tor.errors import ClearnetRefused, SocksError, TorError
from lnpmsg.transports.tor.socks import Socks5Handshake

__all__ = [
    "CIRCUIT_RETRY_DELAY",
    "DEFAULT_CONNECT_TIMEOUT",
    "FIRST_ATTEMPT_TIMEOUT",
    "TRANSIENT_SOCKS_REPLIES",
    "TorConnection",
    "TorTransport",
    "open_socks5_stream",
    "split_tor_target",
]

log = logging.getLogger(__name__)

#: building a rendezvous circuit to an onion service takes a few seconds,
#: on a slow public network sometimes tens of seconds
DEFAULT_CONNECT_TIMEOUT = 60.0
#: the first attempt gets this long: a dial stuck inside Tor (a circuit that never
#: answers) is given up and tried once more on a new circuit, within the rest of
#: ``connect_timeout``, instead of holding the caller for the whole of it
FIRST_ATTEMPT_TIMEOUT = 20.0

#: SOCKS5 replies that mean a circuit failed, not that the target is wrong:
#: general failure (a circuit could not be built), introduction failed,
#: rendezvous failed, introduction timed out
TRANSIENT_SOCKS_REPLIES = frozenset({0x01, 0xF2, 0xF3, 0xF7})
#: seconds before the one retry after a transient reply (new circuits by then)
CIRCUIT_RETRY_DELAY = 1.0

#: RFC 1929 limits usernames to 255 bytes; longer isolation keys are hashed
_MAX_USERNAME = 255


class TorConnection(TcpConnection):
    """A connection through Tor (a TCP stream to the SOCKS port, after the handshake)."""

    def __init__(self, sock: socket.socket, remote_address: str, kind: str = "tor", pending: bytes = b"") -> None:
        super().__init__(sock, remote_address, kind)
        self._pending = pending

    def _take_pending(self, most: int) -> bytes:
        """Up to ``most`` of the bytes that came with the SOCKS reply: every receive gives
        them before the socket's."""
        data, self._pending = self._pending[:most], self._pending[most:]
        return data

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._pending:
            return self._take_pending(max_bytes)
        return await super().receive_some(max_bytes)

    def receive_into_nowait(self, buffer: memoryview) -> int | None:
        if self._pending:
            data = self._take_pending(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        return super().receive_into_nowait(buffer)

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        if self._pending:
            return self._take_pending(max_bytes)
        return super().receive_nowait(max_bytes)

    async def wait_receivable(self) -> None:
        if self._pending:
            # receive_into_nowait has them already: the socket may never get more
            await trio.lowlevel.checkpoint()
            return
        await super().wait_receivable()


def split_tor_target(target: str) -> tuple[str | None, str, int]:
    """Split ``[peer@]host:port`` into ``(peer or None, host, port)``; onion hosts are validated and lower-cased.

    Raises :class:`TorError` (:class:`~lnpmsg.transports.tor.errors.OnionAddressError`
    for a bad onion address).
    """
    peer: str | None = None
    rest = target.strip()
    if "@" in rest:
        peer, _, rest = rest.partition("@")
        if not peer:
            raise TorError(f"bad Tor target {target!r}: empty peer id before '@'")
    try:
        host, port = split_host_port(rest)
    except ValueError as exc:
        raise TorError(f"bad Tor target: {exc}") from None
    if port == 0:
        raise TorError(f"bad Tor target {target!r}: port 0")
    if is_onion_host(host):
        host = parse_onion_address(host).hostname
    return peer, host, port


class TorTransport(Transport):
    """Connections through a Tor SOCKS5 port (``socks_address``, e.g. ``("127.0.0.1", 9050)``).

    ``allow_clearnet=False`` (the default) makes this an onion-only
    transport: non-.onion targets raise :class:`ClearnetRefused`.
    """

    kind = "tor"

    def __init__(
        self,
        socks_address: tuple[str, int],
        *,
        allow_clearnet: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        circuit_retry_delay: float = CIRCUIT_RETRY_DELAY,
        first_attempt_timeout: float = FIRST_ATTEMPT_TIMEOUT,
    ) -> None:
        host, port = socks_address
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # A remote SOCKS port would need a DNS lookup or expose traffic in clear.
            raise TorError(f"Tor's SOCKS port must be on a loopback address, not {host!r}")
        self.socks_address = (host, port)
        self.allow_clearnet = allow_clearnet
        self.connect_timeout = connect_timeout
        self.circuit_retry_delay = circuit_retry_delay
        self.first_attempt_timeout = first_attempt_timeout
        self._isolation_secret = secrets.token_hex(16)

    def socks_credentials(self, isolation_key: str) -> tuple[str, str]:
        """The SOCKS username/password used for ``isolation_key`` (a peer id, or ``host:port``)."""
        username = isolation_key
        if len(username.encode("utf-8")) > _MAX_USERNAME:
            username = hashlib.sha256(username.encode("utf-8")).hexdigest()
        return username, self._isolation_secret

    async def dial(self, target: str, *, isolation_key: str | None = None) -> TorConnection:
        """Connect to ``[peer@]host:port`` through Tor.

        ``isolation_key`` overrides the stream-isolation key (default: the
        peer id in the target, else ``host:port``).

        Raises :class:`ClearnetRefused`, :class:`OnionAddressError`,
        :class:`SocksError` (Tor's reply, or the timeout) or :class:`TorError`.
        """
        peer, host, port = split_tor_target(target)
        if not is_onion_host(host) and not self.allow_clearnet:
            raise ClearnetRefused(
                f"refusing to dial {format_host_port(host, port)}: not an onion address, and this Tor "
                "transport is onion-only (allow_clearnet=False)"
            )
        remote = format_host_port(host, port)
        key = isolation_key or peer or remote
        username, password = self.socks_credentials(key)
        stage = ["connecting to Tor's SOCKS port"]
        deadline = trio.current_time() + self.connect_timeout
        first_deadline = trio.current_time() + min(self.first_attempt_timeout, self.connect_timeout)
        try:
            with trio.fail_at(deadline):
                try:
                    with trio.fail_at(first_deadline):
                        stream, pending = await open_socks5_stream(
                            self.socks_address, host, port, username=username, password=password, progress=stage
                        )
                except trio.TooSlowError:
                    # Stuck inside Tor: once more, on a new circuit (another isolation key).
                    log.warning(
                        "dial %s through Tor: no progress within %g s (%s); trying once more on a new circuit",
                        remote, self.first_attempt_timeout, stage[0],
                    )
                    username, password = self.socks_credentials(f"{key}#retry")
                    stream, pending = await open_socks5_stream(
                        self.socks_address, host, port, username=username, password=password, progress=stage
                    )
                except SocksError as exc:
                    if exc.code not in TRANSIENT_SOCKS_REPLIES:
                        raise
                    log.info("%s; asking Tor once more in %g s", exc, self.circuit_retry_delay)
                    await trio.sleep(self.circuit_retry_delay)
                    stream, pending = await open_socks5_stream(
                        self.socks_address, host, port, username=username, password=password, progress=stage
                    )
        except trio.TooSlowError:
            what = "onion service not reachable" if is_onion_host(host) else "Tor could not connect"
            raise SocksError(
                f"{what}: {remote}: no answer through Tor within {self.connect_timeout:g} s (two attempts; stuck at: {stage[0]})"
            ) from None
        return TorConnection.from_stream(stream, remote, pending=pending)

    async def listen(self, target: str) -> TcpListener:
        """Bind the loopback TCP listener an onion service points at (``127.0.0.1:0`` picks a port)."""
        return await listen_behind_onion(target)


async def listen_behind_onion(target: str) -> TcpListener:
    """Bind the loopback TCP listener an onion service points at; refuses any other address."""
    try:
        host, port = split_host_port(target)
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TorError(f"the listener behind an onion service must be on a loopback address (e.g. 127.0.0.1), not {target!r}")
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise TorError(f"cannot listen on {target}: {exc.strerror or exc}") from exc
    return TcpListener(listeners, kind="tor")


async def open_socks5_stream(
    proxy: tuple[str, int],
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    progress: list[str] | None = None,
) -> tuple[trio.SocketStream, bytes]:
    """Connect to ``host:port`` through the SOCKS5 proxy at ``proxy``.

    Returns the connected stream and any bytes that already arrived after the
    proxy's reply (normally none). The caller sets the timeout (e.g. with
    ``trio.fail_after``); on any failure the socket is closed.

    Raises :class:`SocksError` (the proxy answered with a failure, or broke
    the protocol) or :class:`TorError` (the proxy could not be reached).
    ``progress[0]``, if given, says where the attempt is (for a timeout's message).
    """
    progress = progress if progress is not None else [""]
    progress[:] = ["connecting to Tor's SOCKS port"]
    handshake = Socks5Handshake(host, port, username, password)
    proxy_host, proxy_port = proxy
    try:
        stream = await trio.open_tcp_stream(proxy_host, proxy_port)
    except OSError as exc:
        raise TorError(
            f"cannot reach Tor's SOCKS port at {proxy_host}:{proxy_port}: {exc.strerror or exc} (is Tor running?)"
        ) from exc
    try:
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        await stream.send_all(handshake.start())
        while not handshake.done:
            progress[:] = [f"SOCKS: {handshake.stage}" + (f" (Tor is building a circuit to {host}:{port})" if "CONNECT" in handshake.stage else "")]
            data = await stream.receive_some(max(1, handshake.bytes_wanted))
            if not data:
                raise SocksError(
                    f"Tor's SOCKS port closed the connection during the handshake for {host}:{port} "
                    f"({handshake.stage})"
                )
            reply = handshake.receive_data(data)
            if reply:
                await stream.send_all(reply)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        if isinstance(exc, (trio.BrokenResourceError, OSError)):
            raise SocksError(f"connection to Tor's SOCKS port broke during the handshake for {host}:{port}: {exc}") from exc
        raise
    return stream, handshake.unused_data
