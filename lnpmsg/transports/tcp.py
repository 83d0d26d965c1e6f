"""Plain TCP transport (trio sockets).

Frames handed to ``send_frames`` are joined into a single write: one
``send_all`` costs far more than the crypto of a small frame, so batching is
what lets many small messages through per second.
"""

from __future__ import annotations

import _socket
import errno
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Any, Self

import trio

from lnpmsg.transports.address import format_host_port, split_host_port
from lnpmsg.transports.base import (
    AcceptNow,
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    ContinueNow,
    Listener,
    Transport,
    TransportError,
)

__all__ = ["TcpConnection", "TcpListener", "TcpTransport", "split_host_port", "format_host_port"]

log = logging.getLogger(__name__)

#: how long a TCP connect may take before we give up on the peer
CONNECT_TIMEOUT = 20.0


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


def _stdlib_socket(trio_socket: trio.socket.SocketType) -> socket.socket:
    """Take the OS socket out of a trio socket (which is left detached), non-blocking."""
    sock = socket.socket(fileno=trio_socket.detach())
    sock.setblocking(False)
    return sock


class TcpConnection(Connection):
    """A connection on a connected TCP socket (plain, or to Tor's SOCKS port).

    The socket is driven with trio's I/O waits directly rather than through
    ``trio.SocketStream``: every send or receive is one system call and one
    schedule point (trio's stream adds a second schedule point whenever it had
    to wait, and a few layers of wrappers), which is most of what an accepted
    connection costs besides the handshake's crypto (measured by
    ``benchmarks/bench_bolt8.py``).
    """

    kind = "tcp"

    def __init__(self, sock: socket.socket, remote_address: str, kind: str = "tcp", *, peer_ip: str | None = None) -> None:
        sock.setblocking(False)
        self._sock: socket.socket | _socket.socket = sock
        self._remote: str | None = remote_address
        self._port = 0
        self.kind = kind
        self._closed = False
        #: tasks waiting on the socket now (only they need trio's notify_closing at close)
        self._waits = 0
        if peer_ip is not None:
            # Known at accept: the node need not parse it back out of ``remote_address``.
            self.peer_ip = peer_ip

    @classmethod
    def _accepted(cls, sock: _socket.socket, ip: str, port: int, kind: str) -> Self:
        """An accepted socket, as the accept loop has it: ``remote_address`` is formatted
        when first asked for (most inbound connections never are: only logs and peers use it)."""
        conn = cls.__new__(cls)
        sock.setblocking(False)
        conn._sock = sock
        conn._remote = None
        conn._port = port
        conn.kind = kind
        conn._closed = False
        conn._waits = 0
        conn.peer_ip = ip
        return conn

    @classmethod
    def from_stream(cls, stream: trio.SocketStream, remote_address: str, **options: Any) -> Self:
        """Take over the socket of a connected trio stream (the stream is unusable afterwards)."""
        return cls(_stdlib_socket(stream.socket), remote_address, **options)

    @property
    def remote_address(self) -> str:
        if self._remote is None:
            assert self.peer_ip is not None
            self._remote = format_host_port(self.peer_ip, self._port)
        return self._remote

    def _lost(self, action: str, exc: BaseException) -> ConnectionClosed:
        if self._closed:
            return ConnectionClosed(f"{action} {self.remote_address} failed: connection closed")
        return ConnectionClosed(f"{action} {self.remote_address} failed: {exc or type(exc).__name__}")

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        waited = False
        try:
            with memoryview(data) as view:
                sent = 0
                while True:
                    try:
                        sent += sock.send(view[sent:] if sent else data)
                    except BlockingIOError:
                        # The send buffer is full: waiting is this call's schedule point.
                        waited = True
                        self._waits += 1
                        try:
                            await trio.lowlevel.wait_writable(sock)
                        finally:
                            self._waits -= 1
                        continue
                    if sent >= len(view):
                        break
        except (OSError, trio.ClosedResourceError) as exc:
            raise self._lost("send to", exc) from exc
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def send_nowait(self, data: bytes) -> int:
        # One non-blocking send: a keepalive ping leaves without a task or a schedule point.
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._lost("send to", exc) from exc

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        waited = False
        try:
            while True:
                try:
                    data = sock.recv(max_bytes)
                    break
                except BlockingIOError:
                    # Nothing there yet: waiting is this call's schedule point.
                    waited = True
                    self._waits += 1
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    finally:
                        self._waits -= 1
        except (OSError, trio.ClosedResourceError) as exc:
            raise self._lost("receive from", exc) from exc
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    reads_into = True

    def receive_into_nowait(self, buffer: memoryview) -> int | None:
        if self._closed:
            return None  # receive_some says why
        try:
            return self._sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise self._lost("receive from", exc) from exc

    async def wait_receivable(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"receive from {self.remote_address} failed: connection closed")
        self._waits += 1
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except (OSError, trio.ClosedResourceError) as exc:
            raise self._lost("receive from", exc) from exc
        finally:
            self._waits -= 1

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        if self._closed:
            return None  # receive_some says why
        try:
            return self._sock.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise self._lost("receive from", exc) from exc

    async def aclose(self) -> None:
        self.close_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close_nowait(self) -> bool:
        if not self._closed:
            self._closed = True
            if self._waits:
                # Wakes a task blocked in a send or receive on this socket (with
                # ClosedResourceError). Without one waiting it is skipped: it costs an
                # epoll_ctl that fails, as a socket nobody waits on is not registered.
                trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        return True


def _accept_all(conn: Connection) -> bool:
    del conn
    return True


#: connections accepted in a row before the accept loop lets other tasks run: each may
#: cost its ``accept_now`` (a node answers act one there, ~0.1 ms of ECDHs), and after
#: that schedule point the loop continues them (act three, another ~0.06 ms)
_ACCEPT_BURST = 8


def _continue_kept(
    kept: list[TcpConnection],
    continue_now: ContinueNow | None,
    nursery: trio.Nursery,
    handle: ConnectionHandler,
    name: str,
    not_ready: list[TcpConnection] | None = None,
) -> None:
    """``continue_now`` for each connection kept, in the order they came; a task (named ``name``) for
    those it keeps. One it says is not ready yet (None) goes to ``not_ready``, for another look after
    the loop's next burst, or gets its task now (``not_ready`` None)."""
    assert continue_now is not None  # connections are kept only for it
    for conn in kept:
        try:
            more = continue_now(conn)
        except Exception:
            # A bug there must not stop the listener: this connection is dropped.
            log.exception("continuing a connection from %s failed", conn.remote_address)
            more = False
        if more is None:
            if not_ready is not None:
                not_ready.append(conn)
                continue
            more = True
        if more:
            nursery.start_soon(handle, conn, name=name)
        else:
            conn.close_nowait()
    kept.clear()


class TcpListener(Listener):
    """A bound TCP listener; ``serve`` runs a handler task per accepted connection."""

    def __init__(self, listeners: list[trio.SocketListener], kind: str = "tcp") -> None:
        self._sockets = [_stdlib_socket(listener.socket) for listener in listeners]
        for listening in self._sockets:
            # Accepted sockets inherit it on Linux: then accepting needs no setsockopt of its own.
            listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        #: whether an accepted socket comes with TCP_NODELAY already (found out at the first)
        self._nodelay_inherited: bool | None = None
        self._kind = kind
        sockname = self._sockets[0].getsockname()
        self._local = format_host_port(sockname[0], sockname[1])
        self._closed = False

    @property
    def local_address(self) -> str:
        return self._local

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        return int(self._sockets[0].getsockname()[1])

    async def serve(self, handler: ConnectionHandler) -> None:
        await self.serve_accepting(_accept_all, handler)

    async def serve_accepting(
        self, accept_now: AcceptNow, handler: ConnectionHandler, *, continue_now: ContinueNow | None = None
    ) -> None:
        """As ``serve``; ``accept_now(conn)`` runs in the accept loop, before the connection's
        task, and ``continue_now(conn)`` after the loop's next schedule point (see
        :meth:`Listener.serve_accepting`): a connection whose peer has answered by then
        may need no task at all."""

        async def accepted(conn: TcpConnection) -> None:
            try:
                await handler(conn)
            finally:
                conn.close_nowait()

        async with trio.open_nursery() as nursery:
            for listening in self._sockets:
                nursery.start_soon(self._accept_loop, listening, accept_now, continue_now, accepted)

    async def _accept_loop(self, listening: socket.socket, accept_now: AcceptNow, continue_now: ContinueNow | None, handle) -> None:  # type: ignore[no-untyped-def]
        kind = self._kind
        family = listening.family
        # The connections' tasks' name, as trio would make it from ``handle`` for each (made once here).
        name = f"{handle.__module__}.{handle.__qualname__}"
        #: connections ``accept_now`` kept, to be continued after the loop's next
        #: schedule point (at most ``_ACCEPT_BURST``)
        kept: list[TcpConnection] = []
        #: connections ``continue_now`` found not ready once at a burst's end, and twice
        #: (at most ``_ACCEPT_BURST`` each): while the loop is busy accepting, they get
        #: another look at the next burst's end, twice at most, before a task each
        looked_once: list[TcpConnection] = []
        looked_twice: list[TcpConnection] = []
        async with trio.open_nursery() as nursery:
            try:
                burst = 0
                while True:
                    try:
                        # The OS socket alone: ``socket.accept`` would wrap it in ``socket.socket``
                        # (a Python ``__init__``, enum lookups of the family and type), a few µs of
                        # every accepted connection that the connection never uses.
                        fd, peer = listening._accept()
                    except BlockingIOError:
                        burst = 0
                        if kept or looked_once or looked_twice:
                            # Before waiting for the next connection: one schedule point, then
                            # those kept are continued (their peers have usually answered by then),
                            # each for the last time: a task waits for what is not there yet.
                            await trio.lowlevel.checkpoint()
                            _continue_kept(looked_twice, continue_now, nursery, handle, name)
                            _continue_kept(looked_once, continue_now, nursery, handle, name)
                            _continue_kept(kept, continue_now, nursery, handle, name)
                            continue
                        try:
                            await trio.lowlevel.wait_readable(listening)
                        except trio.ClosedResourceError:
                            return
                        continue
                    except OSError as exc:
                        if listening.fileno() < 0:
                            return  # closed by aclose
                        # Out of file descriptors and similar: back off instead of spinning.
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.warning("accept failed (%s); pausing 100 ms", exc)
                            await trio.sleep(0.1)
                            if kept or looked_once or looked_twice:
                                _continue_kept(looked_twice, continue_now, nursery, handle, name)
                                _continue_kept(looked_once, continue_now, nursery, handle, name)
                                _continue_kept(kept, continue_now, nursery, handle, name)
                            continue
                        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                            continue  # that client gave up before we accepted it
                        raise
                    sock = _socket.socket(family, _socket.SOCK_STREAM, 0, fd)
                    if not self._nodelay_inherited:
                        if self._nodelay_inherited is None:
                            self._nodelay_inherited = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                        if not self._nodelay_inherited:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = TcpConnection._accepted(sock, peer[0], peer[1], kind)
                    try:
                        keep = accept_now(conn)
                    except Exception:
                        # A bug there must not stop the listener: this connection is dropped.
                        log.exception("accepting a connection from %s failed", conn.remote_address)
                        keep = False
                    if not keep:
                        conn.close_nowait()
                    elif continue_now is None:
                        nursery.start_soon(handle, conn, name=name)
                    else:
                        kept.append(conn)
                    burst += 1
                    if burst == _ACCEPT_BURST:
                        burst = 0
                        await trio.lowlevel.checkpoint()
                        # A busy loop: a connection whose peer has not answered yet gets
                        # the next burst's time, and the next's (~1 ms each), before a task
                        # waits for it: most answer meanwhile, and need no task at all.
                        if looked_twice:
                            _continue_kept(looked_twice, continue_now, nursery, handle, name)
                        if looked_once:
                            _continue_kept(looked_once, continue_now, nursery, handle, name, looked_twice)
                        if kept:
                            _continue_kept(kept, continue_now, nursery, handle, name, looked_once)
            finally:
                # The loop stopped (cancelled, or the listener closed): connections not
                # continued yet get their task, which ends them as it ends any other.
                for conn in looked_twice + looked_once + kept:
                    nursery.start_soon(handle, conn, name=name)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for listening in self._sockets:
            trio.lowlevel.notify_closing(listening)
            listening.close()
        await trio.lowlevel.checkpoint()


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
        return TcpConnection.from_stream(stream, format_host_port(host, port))

    async def listen(self, target: str) -> TcpListener:
        host, port = split_host_port(target)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise TransportError(f"cannot listen on {target}: {exc.strerror or exc}") from exc
        return TcpListener(listeners)
