"""A lossy, reordering UDP relay on loopback, for testing datagram transports.

A client sends to :attr:`LossyUdpRelay.address` instead of the real target;
the relay forwards each datagram both ways, dropping a fraction of them and
holding back another fraction for a few milliseconds so that they arrive
after later ones. Which datagrams are dropped or delayed is decided by a
seeded random generator, in arrival order, so a run is repeatable up to the
timing of the operating system.

:meth:`LossyUdpRelay.change_source_port` makes the relay talk to the target
from a new port, as a NAT that rebinds would: the target sees its peer move
(QUIC connection migration), while the client keeps talking to the same
relay address.

Example::

    async with LossyUdpRelay(listener.local_address, loss=0.2, reorder=0.2, seed=1) as relay:
        conn = await transport.dial(relay.address)
        ...
        await relay.change_source_port()
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Self

import trio

__all__ = ["LossyUdpRelay"]

#: receive size: the largest UDP payload there can be
_MAX_DATAGRAM = 65535

#: socket buffers, so that the relay itself does not add loss under bursts
_SOCKET_BUFFER = 4 << 20


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class LossyUdpRelay:
    """Forwards datagrams between one client and ``target`` ("host:port" on loopback).

    ``loss`` and ``reorder`` are fractions (0..1) of datagrams, in each
    direction, to drop and to delay by ``min_delay``..``max_delay`` seconds.
    Both may be changed while the relay runs (``loss = 1.0`` cuts the link).
    """

    def __init__(
        self,
        target: str,
        *,
        loss: float = 0.05,
        reorder: float = 0.05,
        seed: int = 0,
        min_delay: float = 0.001,
        max_delay: float = 0.010,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = _split(target)
        self.loss = loss
        self.reorder = reorder
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._host = host
        self._rng = random.Random(seed)
        self._client: tuple[str, int] | None = None
        self._front: socket.socket | None = None
        self._upstream: socket.socket | None = None
        self._nursery: trio.Nursery | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        #: counters: datagrams ``forwarded`` (at once or late), ``dropped``,
        #: ``delayed`` (forwarded late), ``overflow`` (a full socket buffer)
        self.stats: dict[str, int] = {"forwarded": 0, "dropped": 0, "delayed": 0, "overflow": 0}
        #: how many times the upstream port changed
        self.migrations = 0

    @property
    def address(self) -> str:
        """Where clients send to reach the target through the relay."""
        if self._front is None:
            raise RuntimeError("the relay is not running")
        host, port = self._front.getsockname()[:2]
        return f"{host}:{port}"

    @property
    def source_port(self) -> int:
        """The port the target currently sees the relay's datagrams come from."""
        if self._upstream is None:
            raise RuntimeError("the relay is not running")
        return int(self._upstream.getsockname()[1])

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self._front = self._open_socket()
            self._nursery.start_soon(self._front_loop, self._front)
            self._switch_upstream()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._stack is not None
        self._nursery.cancel_scope.cancel()
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            for sock in (self._front, self._upstream):
                if sock is not None:
                    self._close(sock)
            self._front = self._upstream = None
            self._nursery = None

    async def change_source_port(self) -> int:
        """Talk to the target from a fresh port from now on; returns the new port."""
        self._switch_upstream()
        self.migrations += 1
        await trio.lowlevel.checkpoint()
        return self.source_port

    # -- internals ----------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.bind((self._host, 0))
        return sock

    @staticmethod
    def _close(sock: socket.socket) -> None:
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def _switch_upstream(self) -> None:
        assert self._nursery is not None
        old = self._upstream
        self._upstream = self._open_socket()
        self._nursery.start_soon(self._upstream_loop, self._upstream)
        if old is not None:
            # What the target still sends to the old port is lost, as behind a NAT that rebinds.
            self._close(old)

    async def _front_loop(self, sock: socket.socket) -> None:
        def from_client(data: bytes, addr: tuple[str, int]) -> None:
            self._client = addr
            self._forward(data, upstream=True)

        await self._read_loop(sock, from_client)

    async def _upstream_loop(self, sock: socket.socket) -> None:
        def from_target(data: bytes, addr: tuple[str, int]) -> None:
            if addr == self.target and self._client is not None:
                self._forward(data, upstream=False)

        await self._read_loop(sock, from_target)

    @staticmethod
    async def _read_loop(sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
        while sock.fileno() != -1:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError):
                return
            while sock.fileno() != -1:
                try:
                    data, addr = sock.recvfrom(_MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                handle(data, (addr[0], addr[1]))

    def _forward(self, data: bytes, *, upstream: bool) -> None:
        # Draw both numbers every time so that one datagram's fate does not
        # shift the decisions for all the following ones.
        drop_draw, delay_draw, delay = self._rng.random(), self._rng.random(), self._rng.uniform(self.min_delay, self.max_delay)
        if drop_draw < self.loss:
            self.stats["dropped"] += 1
        elif delay_draw < self.reorder:
            self.stats["delayed"] += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._send_later, delay, data, upstream)
        else:
            self._send(data, upstream)

    async def _send_later(self, delay: float, data: bytes, upstream: bool) -> None:
        await trio.sleep(delay)
        self._send(data, upstream)

    def _send(self, data: bytes, upstream: bool) -> None:
        sock, dest = (self._upstream, self.target) if upstream else (self._front, self._client)
        if sock is None or dest is None or sock.fileno() == -1:
            return
        try:
            sock.sendto(data, dest)
        except BlockingIOError:
            self.stats["overflow"] += 1
            return
        except OSError:
            return
        self.stats["forwarded"] += 1
