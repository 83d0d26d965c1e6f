"""Plain TCP transport (trio sockets).

Frames handed to ``send_frames`` are joined into a single write: one
``send_all`` costs far more than the crypto of a small frame, so batching is
what lets many small messages through per second.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Sequence

import trio

from lnpmsg.transports.base import (
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    Listener,
    Transport,
    TransportError,
)

__all__ = ["TcpConnection", "TcpListener", "TcpTransport", "split_host_port", "format_host_port"]

log = logging.getLogger(__name__)

#: how long a TCP connect may take before we give up on the peer
CONNECT_TIMEOUT = 20.0


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    >>> split_host_port("127.0.0.1:9735")
    ('127.0.0.1', 9735)
    >>> split_host_port("[::1]:9735")
    ('::1', 9735)
    """
    text = target.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad address {target!r}: missing ']'")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {target!r}: junk after ']'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"bad address {target!r}: IPv6 addresses need brackets, e.g. [::1]:9735")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"bad address {target!r}: empty host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {target!r}: missing port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad address {target!r}: port must be 0..65535")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _open_tcp_stream(host: str, port: int) -> trio.SocketStream:
    """Connect; an IP literal skips the resolver (trio resolves in a worker thread)."""
    try:
        family = trio.socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else trio.socket.AF_INET
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def _os_error_reason(exc: OSError) -> str:
    """The most specific reason: trio wraps per-address failures in an exception group."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = sorted({e.strerror or str(e) for e in cause.exceptions if isinstance(e, OSError)})
        if reasons:
            return "; ".join(reasons)
    return exc.strerror or str(exc)


class TcpConnection(Connection):
    """A connection over any trio byte stream (TCP, or a SOCKS-proxied TCP stream)."""

    kind = "tcp"

    def __init__(self, stream: trio.abc.HalfCloseableStream | trio.abc.Stream, remote_address: str, kind: str = "tcp") -> None:
        self._stream = stream
        self._remote = remote_address
        self.kind = kind
        self._closed = False

    @property
    def remote_address(self) -> str:
        return self._remote

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying trio stream."""
        return self._stream

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"send to {self._remote} failed: {exc or type(exc).__name__}") from exc

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"receive from {self._remote} failed: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


class TcpListener(Listener):
    """A bound TCP listener; ``serve`` runs a handler task per accepted connection."""

    def __init__(self, listeners: list[trio.SocketListener], kind: str = "tcp") -> None:
        self._listeners = listeners
        self._kind = kind
        sockname = listeners[0].socket.getsockname()
        self._local = format_host_port(sockname[0], sockname[1])

    @property
    def local_address(self) -> str:
        return self._local

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        return int(self._listeners[0].socket.getsockname()[1])

    async def serve(self, handler: ConnectionHandler) -> None:
        async def accepted(stream: trio.SocketStream) -> None:
            try:
                peer = stream.socket.getpeername()
                remote = format_host_port(peer[0], peer[1])
            except OSError:
                remote = "?"
            conn = TcpConnection(stream, remote, self._kind)
            try:
                await handler(conn)
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                nursery.start_soon(self._accept_loop, listener, accepted)

    @staticmethod
    async def _accept_loop(listener: trio.SocketListener, handle) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    # Out of file descriptors and similar: back off instead of spinning.
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("accept failed (%s); pausing 100 ms", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(handle, stream)

    async def aclose(self) -> None:
        for listener in self._listeners:
            await listener.aclose()


class TcpTransport(Transport):
    """TCP over the operating system's sockets."""

    kind = "tcp"

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.connect_timeout = connect_timeout

    async def dial(self, target: str) -> Connection:
        host, port = split_host_port(target)
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await _open_tcp_stream(host, port)
        except trio.TooSlowError as exc:
            raise TransportError(f"TCP connect to {target} timed out after {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise TransportError(f"TCP connect to {target} failed: {_os_error_reason(exc)}") from exc
        return TcpConnection(stream, format_host_port(host, port))

    async def listen(self, target: str) -> TcpListener:
        host, port = split_host_port(target)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise TransportError(f"cannot listen on {target}: {exc.strerror or exc}") from exc
        return TcpListener(listeners)
