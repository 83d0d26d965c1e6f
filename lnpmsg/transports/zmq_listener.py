"""The ZeroMQ listener: a ROUTER socket, each new routing id one :class:`ZmqConnection`."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from typing import Final

import trio
import zmq

from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket
from lnpmsg.transports.base import ConnectionHandler, Listener, TransportError
from lnpmsg.transports.zmq_connection import ZmqConnection
from lnpmsg.transports.zmq_port import CLOSE_LINGER_MS, RouterPort
from lnpmsg.transports.zmq_socket import HANDSHAKE_FAILED, ZmqSettings, close_monitored, monitor_event
from lnpmsg.transports.zmq_wire import CLOSE, is_generated_routing_id

#: the transport's one logger, whichever of its modules logs
log = logging.getLogger("lnpmsg.transports.zmq")

#: after a ROUTER disconnect event, probe the sessions after these delays (s):
#: libzmq tears the pipe down a moment after it reports the disconnect
SWEEP_DELAYS: Final = (0.0, 0.05, 0.5)
#: how long ``ZmqListener.aclose`` waits for libzmq to let go of a TCP port
RELEASE_TIMEOUT = 2.0


class ZmqListener(Listener):
    """A ROUTER socket: each new routing id is one :class:`ZmqConnection`."""

    def __init__(self, sock: TrioSocket, monitor: TrioSocket, settings: ZmqSettings) -> None:
        self._sock = sock
        self._monitor = monitor
        self._port = RouterPort(sock, settings)
        self._local = sock.last_endpoint
        self._serving = False
        self._closed = False
        self._aux_scope: trio.CancelScope | None = None
        self._disconnects = 0
        self._disconnect_lot = trio.lowlevel.ParkingLot()

    @property
    def local_address(self) -> str:
        return self._local

    @property
    def stats(self) -> Counter[str]:
        """Counters: sessions, refused_routing_id, stale, oversize, flood, protocol, vanished, idle, handshake_failed."""
        return self._port.stats

    @property
    def session_count(self) -> int:
        """Sessions currently open."""
        return len(self._port.sessions)

    async def serve(self, handler: ConnectionHandler) -> None:
        if self._serving:
            raise TransportError("this listener is already serving")
        if self._closed:
            raise TransportError("this listener is closed")
        self._serving = True
        # Handlers outlive the helper tasks: closing the listener stops the
        # helpers at once, and serve returns when the handlers are done.
        async with trio.open_nursery() as handlers, trio.open_nursery() as aux:
            self._aux_scope = aux.cancel_scope
            aux.start_soon(self._port.flush_loop)
            aux.start_soon(self._port.timer_loop)
            aux.start_soon(self._monitor_loop)
            aux.start_soon(self._sweeper)
            await self._recv_loop(handler, handlers)
            aux.cancel_scope.cancel()

    async def _recv_loop(self, handler: ConnectionHandler, handlers: trio.Nursery) -> None:
        port = self._port
        sessions = port.sessions
        while True:
            try:
                parts, peer_ip = await self._sock.recv_multipart_with_peer()
            except SocketClosedError:
                return
            routing_id = parts[0]
            body = parts[1:]
            conn = sessions.get(routing_id)
            if conn is None:
                conn = self._new_session(routing_id, body, peer_ip)
                if conn is None:
                    continue
                handlers.start_soon(self._run_handler, handler, conn)
            conn._on_message(body)

    def _new_session(self, routing_id: bytes, body: list[bytes], peer_ip: str | None = None) -> ZmqConnection | None:
        port = self._port
        if routing_id in port.tombstones:
            port.stats["stale"] += 1
            return None
        if not is_generated_routing_id(routing_id):
            port.stats["refused_routing_id"] += 1
            log.warning("zmq listener %s: refusing peer-chosen routing id %s", self._local, routing_id.hex())
            port.bury(routing_id)
            return None
        if body == [b""]:
            # A close before anything else: nothing to start, but the dialer
            # waits for our close as its acknowledgement.
            port.bury(routing_id)
            try:
                self._sock.try_send_multipart([routing_id, *CLOSE])
            except (zmq.ZMQError, SocketClosedError):
                pass
            return None
        conn = ZmqConnection(port, f"{self._local}#{routing_id.hex()}", routing_id, peer_ip=peer_ip)
        if conn.ended is not None:  # gone before its first credit could be sent
            return None
        port.sessions[routing_id] = conn
        port.stats["sessions"] += 1
        return conn

    @staticmethod
    async def _run_handler(handler: ConnectionHandler, conn: ZmqConnection) -> None:
        try:
            await handler(conn)
        finally:
            await conn.aclose()

    async def _monitor_loop(self) -> None:
        try:
            while True:
                event = monitor_event(await self._monitor.recv_multipart())
                if event == zmq.EVENT_DISCONNECTED:
                    self._disconnects += 1
                    self._disconnect_lot.unpark_all()
                elif event in HANDSHAKE_FAILED:
                    self._port.stats["handshake_failed"] += 1
                    log.info("zmq listener %s: a ZMTP handshake failed", self._local)
        except SocketClosedError:
            return

    async def _sweeper(self) -> None:
        # One task, however many disconnects: a burst of them costs one round
        # of sweeps, not one round each.
        handled = 0
        while True:
            while handled == self._disconnects:
                await self._disconnect_lot.park()
            handled = self._disconnects
            elapsed = 0.0
            for delay in SWEEP_DELAYS:
                await trio.sleep(delay - elapsed)
                elapsed = delay
                self._port.sweep()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for conn in self._port.connections():
            conn._end("listener closed", notify_peer=True, discard=False)
        if self._aux_scope is not None:
            self._aux_scope.cancel()
        close_monitored(self._sock, self._monitor, CLOSE_LINGER_MS)
        await wait_endpoint_released(self._local)


async def wait_endpoint_released(endpoint: str) -> None:
    """Return once a closed listener's TCP port can be bound again.

    libzmq closes listening sockets later, in its I/O thread; without this
    wait a listener restarted on the same port right away can fail with
    "Address already in use". Gives up silently after ``RELEASE_TIMEOUT``.
    """
    if not endpoint.startswith("tcp://"):
        await trio.lowlevel.checkpoint()
        return
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.move_on_after(RELEASE_TIMEOUT):
        while True:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # libzmq listens with SO_REUSEADDR too, so TIME_WAIT does not count
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, int(port)))
                    return
                except OSError:
                    pass
            await trio.sleep(0.01)
