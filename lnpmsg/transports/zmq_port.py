"""The ZeroMQ socket each :class:`~lnpmsg.transports.zmq_connection.ZmqConnection` sends through.

A listener's ROUTER serves many connections (routing ids, tombstones,
probing sessions after a disconnect); a dialer's DEALER serves one and runs
its background work. Both retry refused control messages and run the
keepalive and idle timers.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio
import zmq

from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket, YieldBudget
from lnpmsg.transports.base import ConnectionClosed
from lnpmsg.transports.zmq_socket import ZmqSettings, close_monitored, monitor_event
from lnpmsg.transports.zmq_wire import CLOSE, KEEPALIVE

if TYPE_CHECKING:
    from lnpmsg.transports.zmq_connection import ZmqConnection

#: the transport's one logger, whichever of its modules logs
log = logging.getLogger("lnpmsg.transports.zmq")

#: ended sessions' routing ids remembered, so they never start a new session
MAX_TOMBSTONES: Final = 4096
#: ROUTER sends to a peer whose queue is full are retried with these waits
#: (ROUTER_MANDATORY's POLLOUT only says that *some* peer could take one)
BACKOFF_FIRST: Final = 0.001
BACKOFF_MAX: Final = 0.05
#: a close-acknowledged dialer socket still lingers this long (ms): a help,
#: never relied on
CLOSE_LINGER_MS: Final = 500


class Port:
    """One ZeroMQ socket seen by its connections: how to send, what to do when one ends."""

    def __init__(self, sock: TrioSocket, settings: ZmqSettings) -> None:
        self.sock = sock
        self.settings = settings
        self.stats: Counter[str] = Counter()
        # Control messages a peer's full queue refused, per connection, with
        # the time after which a close is given up (credits never are: the
        # peer's sender depends on them).
        self._pending: dict[ZmqConnection, deque[tuple[tuple[bytes, ...], float]]] = {}
        self._pending_lot = trio.lowlevel.ParkingLot()

    # subclasses
    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        raise NotImplementedError

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        raise NotImplementedError

    def session_ended(self, conn: ZmqConnection) -> None:
        raise NotImplementedError

    def connections(self) -> list[ZmqConnection]:
        raise NotImplementedError

    def send_control(self, conn: ZmqConnection, parts: tuple[bytes, ...], *, required: bool = True) -> None:
        """Send a control message now if the peer's queue takes it.

        Otherwise a ``required`` one (credit, close) waits for the flush task,
        behind any earlier ones of the same peer; a keepalive is just skipped.
        """
        queue = self._pending.get(conn)
        if queue is None:
            try:
                if self.try_transmit(conn, parts):
                    return
            except ConnectionClosed:
                return
            if not required:
                return
            queue = self._pending[conn] = deque()
        elif not required:
            return
        queue.append((parts, trio.current_time() + self.settings.close_timeout))
        self._pending_lot.unpark_all()

    async def flush_loop(self) -> None:
        """Retry refused control messages, round-robin, so no peer holds up another."""
        delay = BACKOFF_FIRST
        while True:
            while not self._pending:
                await self._pending_lot.park()
                delay = BACKOFF_FIRST
            progressed = False
            now = trio.current_time()
            for conn in list(self._pending):
                queue = self._pending[conn]
                while queue:
                    parts, give_up_at = queue[0]
                    if conn.ended is not None and (parts != CLOSE or now > give_up_at):
                        queue.popleft()
                        continue
                    try:
                        if not self.try_transmit(conn, parts):
                            break
                    except ConnectionClosed:
                        queue.clear()
                        break
                    queue.popleft()
                    progressed = True
                if not queue:
                    del self._pending[conn]
            if self._pending:
                # libzmq cannot tell us when one ROUTER peer drains: poll gently.
                delay = BACKOFF_FIRST if progressed else min(delay * 2, BACKOFF_MAX)
                await trio.sleep(delay)

    async def timer_loop(self) -> None:
        settings = self.settings
        while True:
            await trio.sleep(settings.timer_tick)
            now = trio.current_time()
            for conn in list(self.connections()):
                if conn.ended is not None:
                    continue
                if now - conn._last_rx > settings.idle_timeout:
                    self.stats["idle"] += 1
                    log.info("zmq peer %s silent for %.1f s: closing", conn.remote_address, now - conn._last_rx)
                    conn._end("idle timeout", notify_peer=True, discard=False)
                elif now - conn._last_tx >= settings.keepalive_interval:
                    self.send_control(conn, KEEPALIVE, required=False)


class RouterPort(Port):
    def __init__(self, sock: TrioSocket, settings: ZmqSettings) -> None:
        super().__init__(sock, settings)
        self.sessions: dict[bytes, ZmqConnection] = {}
        self.tombstones: OrderedDict[bytes, None] = OrderedDict()
        self._yields = YieldBudget()

    def connections(self) -> list[ZmqConnection]:
        return list(self.sessions.values())

    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        assert conn.routing_id is not None
        try:
            sent = self.sock.try_send_multipart([conn.routing_id, *parts])
        except SocketClosedError as exc:
            conn._end("listener closed", notify_peer=False, discard=False)
            raise ConnectionClosed(f"{conn.remote_address}: listener closed") from exc
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.vanished(conn)
            raise ConnectionClosed(f"{conn.remote_address}: peer is gone") from exc
        if sent:
            conn._last_tx = trio.current_time()
        return sent

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        delay = BACKOFF_FIRST
        while not self.try_transmit(conn, parts):
            # This peer's queue is full (it does not read its socket); libzmq
            # cannot tell us when that one peer drains, so poll gently.
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            conn._check_can_send()
        await self._yields.spend()

    def vanished(self, conn: ZmqConnection) -> None:
        if conn.ended is None:
            self.stats["vanished"] += 1
            log.info("zmq peer %s is gone", conn.remote_address)
            conn._end("peer vanished", notify_peer=False, discard=False)

    def session_ended(self, conn: ZmqConnection) -> None:
        assert conn.routing_id is not None
        if self.sessions.get(conn.routing_id) is conn:
            del self.sessions[conn.routing_id]
        self.bury(conn.routing_id)

    def bury(self, routing_id: bytes) -> None:
        self.tombstones[routing_id] = None
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)

    def sweep(self) -> None:
        """Probe every session: a send to a peer libzmq has dropped fails."""
        try:
            self.sock.poll_events()  # let libzmq process pending pipe teardowns
        except SocketClosedError:
            return
        for conn in self.connections():
            if conn.ended is None:
                try:
                    self.try_transmit(conn, KEEPALIVE)
                except ConnectionClosed:
                    pass


class DealerPort(Port):
    def __init__(self, sock: TrioSocket, monitor: TrioSocket, settings: ZmqSettings) -> None:
        super().__init__(sock, settings)
        self.monitor = monitor
        self.conn: ZmqConnection | None = None
        self.scope = trio.CancelScope()

    def connections(self) -> list[ZmqConnection]:
        return [self.conn] if self.conn is not None else []

    def try_transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> bool:
        try:
            sent = self.sock.try_send_multipart(parts)
        except SocketClosedError as exc:
            raise ConnectionClosed(f"{conn.remote_address}: socket closed") from exc
        if sent:
            conn._last_tx = trio.current_time()
        return sent

    async def transmit(self, conn: ZmqConnection, parts: Sequence[bytes]) -> None:
        try:
            await self.sock.send_multipart(parts)
        except SocketClosedError as exc:
            conn._check_can_send()
            raise ConnectionClosed(f"{conn.remote_address}: socket closed") from exc
        conn._last_tx = trio.current_time()

    def session_ended(self, conn: ZmqConnection) -> None:
        self.close(linger=CLOSE_LINGER_MS if conn._close_sent else 0)

    def close(self, linger: int = 0) -> None:
        self.scope.cancel()
        close_monitored(self.sock, self.monitor, linger)

    async def run(self) -> None:
        """The dialer's background work (a trio system task)."""
        conn = self.conn
        assert conn is not None
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.recv_loop, conn)
                    nursery.start_soon(self.monitor_loop, conn)
                    nursery.start_soon(self.timer_loop)
                    nursery.start_soon(self.flush_loop)
        except Exception:  # a system task must not crash the run: log and end
            log.exception("zmq dialer %s failed", conn.remote_address)
        finally:
            conn._end("transport stopped", notify_peer=False, discard=False)

    async def recv_loop(self, conn: ZmqConnection) -> None:
        try:
            while True:
                conn._on_message(await self.sock.recv_multipart())
        except SocketClosedError:
            return

    async def monitor_loop(self, conn: ZmqConnection) -> None:
        try:
            while True:
                event = monitor_event(await self.monitor.recv_multipart())
                if event == zmq.EVENT_DISCONNECTED:
                    self.stats["vanished"] += 1
                    log.info("zmq listener %s disconnected", conn.remote_address)
                    conn._end("disconnected", notify_peer=False, discard=False)
                    return
        except SocketClosedError:
            return
