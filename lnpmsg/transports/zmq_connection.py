"""One peer session over ZeroMQ, either side: credit, close, keepalive (see :mod:`lnpmsg.transports.zmq`)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import trio

from lnpmsg.io.zmq_trio import SocketClosedError, YieldBudget
from lnpmsg.transports.base import Connection, ConnectionClosed
from lnpmsg.transports.zmq_port import DealerPort, Port
from lnpmsg.transports.zmq_wire import (
    CLOSE,
    INITIAL_CREDIT,
    MAX_FRAME_SIZE,
    CloseMessage,
    CreditMessage,
    DataMessage,
    UnknownControl,
    ZmqProtocolError,
    coalesce,
    credit_message,
    decode_message,
)

#: the transport's one logger, whichever of its modules logs
log = logging.getLogger("lnpmsg.transports.zmq")


class ZmqConnection(Connection):
    """One peer session over ZeroMQ (either side); see the module docs."""

    kind = "zmq"
    #: frames travel whole, several to a ZeroMQ message (see :func:`coalesce`):
    #: the transport needs them apart to never split one across messages
    keeps_frame_boundaries = True
    #: whole frames already joined up to a data message's size travel as they are
    max_joined_frames = MAX_FRAME_SIZE

    def __init__(self, port: Port, remote_address: str, routing_id: bytes | None, *, peer_ip: str | None = None) -> None:
        self._port = port
        self._remote = remote_address
        #: the peer's IP (listener side, TCP endpoints), for the node's per-source limits
        self.peer_ip = peer_ip
        #: the peer's ROUTER routing id (listener side), else None
        self.routing_id = routing_id
        window = port.settings.recv_window
        self._grant_threshold = max(1, window // 2)
        self._rx: deque[bytes] = deque()
        self._partial: memoryview | None = None
        self._rx_lot = trio.lowlevel.ParkingLot()
        self._credit_lot = trio.lowlevel.ParkingLot()
        self._send_credit = INITIAL_CREDIT
        # data messages the peer may still send before it floods
        self._allowance = INITIAL_CREDIT
        self._consumed = 0
        self._closed = False
        self._close_received = trio.Event()
        self._yields = YieldBudget()
        #: why the session ended (None while it runs)
        self.ended: str | None = None
        self._close_sent = False
        now = trio.current_time()
        self._last_rx = now
        self._last_tx = now
        if window > INITIAL_CREDIT:
            self._allowance = window
            port.send_control(self, credit_message(window - INITIAL_CREDIT))

    @property
    def remote_address(self) -> str:
        return self._remote

    # ------------------------------------------------------------ input

    def _on_message(self, parts: list[bytes]) -> None:
        """Take one ZeroMQ message from the peer (the pump calls this)."""
        if self.ended is not None:
            return
        self._last_rx = trio.current_time()
        if len(parts) == 1 and 0 < len(parts[0]) <= MAX_FRAME_SIZE:
            # data, by far the usual case: what decode_message would say, without the object
            self._allowance -= 1
            if self._allowance < 0:
                self._drop("flood", f"sent more than its {self._port.settings.recv_window}-message credit")
                return
            self._rx.append(parts[0])
            if self._rx_lot:
                self._rx_lot.unpark_all()
            return
        try:
            message = decode_message(parts)
        except ZmqProtocolError as exc:
            self._drop("oversize" if parts and len(parts[0]) > MAX_FRAME_SIZE else "protocol", str(exc))
            return
        if type(message) is DataMessage:
            self._allowance -= 1
            if self._allowance < 0:
                self._drop("flood", f"sent more than its {self._port.settings.recv_window}-message credit")
                return
            self._rx.append(message.frame)
            if self._rx_lot:
                self._rx_lot.unpark_all()
        elif type(message) is CreditMessage:
            self._send_credit += message.count
            if self._credit_lot:
                self._credit_lot.unpark_all()
        elif type(message) is CloseMessage:
            self._close_received.set()
            self._end("closed by peer", notify_peer=True, discard=False)
        elif type(message) is UnknownControl:
            log.debug("zmq peer %s: unknown control kind %d ignored", self._remote, message.kind)

    def _drop(self, counter: str, reason: str) -> None:
        """End the session because the peer misbehaved (logged, counted, queue discarded)."""
        self._port.stats[counter] += 1
        log.warning("dropping zmq peer %s: %s", self._remote, reason)
        self._end(f"dropped: {reason}", notify_peer=True, discard=True)

    def _end(self, reason: str, *, notify_peer: bool, discard: bool) -> None:
        """End the session (idempotent): no more input, no more output."""
        if self.ended is not None:
            return
        self.ended = reason
        if discard:
            self._rx.clear()
            self._partial = None
        if notify_peer:
            self._send_close()
        self._port.session_ended(self)
        self._rx_lot.unpark_all()
        self._credit_lot.unpark_all()
        # Nothing can arrive any more: a dialer's aclose must not wait out its
        # close_timeout for an acknowledgement from a peer that is gone.
        self._close_received.set()

    def _send_close(self) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        self._port.send_control(self, CLOSE)

    # ------------------------------------------------------------ the API

    def _check_can_send(self) -> None:
        """Raise :class:`ConnectionClosed` unless data may be sent now."""
        if self._closed:
            raise ConnectionClosed(f"{self._remote}: connection closed")
        if self.ended is not None:
            raise ConnectionClosed(f"{self._remote}: {self.ended}")

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        for data in coalesce(frames):
            self._check_can_send()
            while self._send_credit <= 0:
                await self._credit_lot.park()
                self._check_can_send()
            self._send_credit -= 1
            try:
                await self._port.transmit(self, (data,))
            except BaseException:
                self._send_credit += 1  # not sent (all or nothing)
                raise

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            if self._closed:
                raise ConnectionClosed(f"{self._remote}: connection closed")
            if self._partial is not None or self._rx:
                break
            if self.ended is not None:
                await self._settle(yielded)
                return b""
            await self._rx_lot.park()
            yielded = True
        if self._partial is None:
            message = self._rx.popleft()
            self._consumed += 1
            if self._consumed >= self._grant_threshold and self.ended is None:
                self._allowance += self._consumed
                self._port.send_control(self, credit_message(self._consumed))
                self._consumed = 0
            if len(message) <= max_bytes:
                await self._settle(yielded)
                return message
            self._partial = memoryview(message)
        chunk = bytes(self._partial[:max_bytes])
        rest = self._partial[max_bytes:]
        self._partial = rest if len(rest) else None
        await self._settle(yielded)
        return chunk

    async def _settle(self, yielded: bool) -> None:
        if not yielded:
            await self._yields.spend()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rx_lot.unpark_all()
        self._credit_lot.unpark_all()
        try:
            if self.ended is None and isinstance(self._port, DealerPort):
                # Wait for the listener's close: then everything we sent
                # before it has arrived (linger would promise nothing).
                with trio.move_on_after(self._port.settings.close_timeout):
                    await self._port.transmit(self, CLOSE)
                    self._close_sent = True
                    await self._close_received.wait()
        except (ConnectionClosed, SocketClosedError):
            pass
        finally:
            self._end("closed", notify_peer=True, discard=True)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<ZmqConnection {self._remote} {self.ended or 'open'}>"
