"""The node's events on a ZeroMQ PUB socket, as JSON.

Each event is a two-part ZeroMQ message: the topic (UTF-8) and one JSON
object. Subscribers filter by topic prefix, the ZeroMQ way:

=========================  ===================================================
topic                      JSON members besides ``topic``, ``seq``, ``time``
=========================  ===================================================
``peer.connected``         node_id, address, transport, outbound, features
``peer.disconnected``      node_id, address, reason
``message.received.N``     node_id, type (N), payload (hex): a custom message
                           of type N (subscribe to ``message.received.`` for all)
``peer.warning``           node_id, channel_id, text (a BOLT-1 warning)
``peer.error``             node_id, channel_id, text (a BOLT-1 error)
``peer.replaced``          node_id, old_address, new_address: a new
                           connection replaced a live one
``error``                  source, text, node_id (or null): failures inside
                           the node, e.g. an app handler that raised
``app.state``              app, state (running, restarting, stopped), reason
``app.NAME.KIND``          the callbacks of an attached app
                           (:mod:`lnpmsg.rpc.attached`)
``control.sync.TOKEN``     token: the answer to the ``eventsync`` call
=========================  ===================================================

``node.heartbeat``         uptime: every ``HEARTBEAT_INTERVAL`` seconds, so a
                           subscriber can tell a quiet node from a gone one
``node.stopping``          reason: the node is going away (a clean stop)

``seq`` counts the events of each topic (1, 2, 3...): a jump tells a
subscriber how many it missed; ``time`` is the Unix time of publication;
``epoch`` (the publisher's start, in ms) is the same for every event of one
run of the node: when it changes, the node restarted and ``seq`` begins
again at 1 (nothing was missed in between that this run published).
Later event kinds (gossip, channels) follow the same shape: their
dataclass fields, bytes as hex.

The socket is an XPUB: the bridge learns which prefixes are subscribed and
does no work at all (not even JSON encoding) for events nobody wants. It
never waits: ZeroMQ drops messages for a subscriber whose queue
(``SNDHWM`` here plus its ``RCVHWM``) is full, so a slow or stuck
subscriber loses events (and sees gaps in ``seq``) but never slows the node.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import trio
import zmq

from lnpmsg.node.events import CustomMessageReceived, EventBus
from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket

__all__ = ["EVENTS_HWM", "HEARTBEAT_INTERVAL", "EventPublisher", "encode_event", "event_topic"]

log = logging.getLogger(__name__)

#: events queued per subscriber before ZeroMQ drops that subscriber's events
EVENTS_HWM = 10_000
#: node ids whose hex form is cached (one per active peer is the common case)
_HEX_CACHE_SIZE = 4096
#: seconds between ``node.heartbeat`` events (subscribers call a node silent after 3)
HEARTBEAT_INTERVAL = 5.0
#: events sent in one go before the sender lets other tasks run
SEND_BATCH = 1000

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def event_topic(event: object) -> str:
    """The PUB topic of a node event."""
    if type(event) is CustomMessageReceived:
        return f"message.received.{event.type}"
    return str(getattr(event, "topic", type(event).__name__))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | list | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def encode_event(event: object, topic: str, seq: int, now: float, epoch: int = 0) -> bytes:
    """The JSON body of an event (any dataclass event; bytes become hex)."""
    body: dict[str, Any] = {"topic": topic, "seq": seq, "time": round(now, 6), "epoch": epoch}
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        for f in dataclasses.fields(event):
            body[f.name] = _jsonable(getattr(event, f.name))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class EventPublisher:
    """Forwards a node's :class:`EventBus` to an XPUB socket (see the module docs).

    The socket must be an XPUB with ``XPUB_VERBOSER`` set (so that every
    subscribe and unsubscribe reaches :meth:`run`).

    The node's side of an event costs a topic check and a queue append: a
    wanted event is stamped (``seq``, ``time``) and queued; the sender task
    encodes and sends the queue in batches when the node yields. At most
    ``max_pending`` events wait there (more are dropped and counted: the
    subscribers see the gap in ``seq``).
    """

    def __init__(
        self,
        bus: EventBus,
        sock: TrioSocket,
        *,
        clock: Callable[[], float] = time.time,
        max_pending: int = EVENTS_HWM,
    ) -> None:
        self.bus = bus
        self.sock = sock
        self.clock = clock
        self.max_pending = max_pending
        #: this run's start (ms): in every event, so a restart (seq from 1 again) is seen
        self.epoch = int(clock() * 1000)
        self._started = clock()
        #: events sent to the socket; events nobody was subscribed to; events
        #: dropped because the sender fell ``max_pending`` behind
        self.published = 0
        self.unwanted = 0
        self.dropped = 0
        self._prefixes: Counter[bytes] = Counter()
        self._wanted: dict[str, bool] = {}
        self._seq: dict[str, int] = {}
        self._hex: dict[bytes, str] = {}
        self._pending: deque[tuple[str, int, float, object]] = deque()
        self._ready = trio.Event()
        self._remove_listener: Callable[[], None] | None = None

    @property
    def subscriptions(self) -> list[str]:
        """The prefixes subscribers asked for."""
        return sorted(p.decode(errors="replace") for p in self._prefixes)

    async def run(self) -> None:
        """Track subscriptions and send events until the socket closes (or cancelled)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop)
                nursery.start_soon(self._heartbeat_loop)
                await self._track_subscriptions()
                nursery.cancel_scope.cancel()
        finally:
            if self._remove_listener is not None:
                self._remove_listener()
                self._remove_listener = None

    async def _heartbeat_loop(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT_INTERVAL)
            self.publish("node.heartbeat", {"uptime": round(self.clock() - self._started, 3)})

    async def announce_stop(self, reason: str, timeout: float = 0.5) -> None:
        """Publish ``node.stopping`` and give it a moment to leave before the socket closes."""
        self.publish("node.stopping", {"reason": reason})
        with trio.move_on_after(timeout):
            while self._pending:
                await trio.sleep(0.01)
            await trio.sleep(0.05)  # out of our queue; let libzmq's I/O thread send it

    async def _track_subscriptions(self) -> None:
        while True:
            try:
                frame = await self.sock.recv()
            except SocketClosedError:
                return
            if not frame or frame[0] not in (0, 1):
                continue
            prefix = frame[1:]
            if frame[0] == 1:
                self._prefixes[prefix] += 1
            else:
                self._prefixes[prefix] -= 1
                if self._prefixes[prefix] <= 0:
                    del self._prefixes[prefix]
            self._wanted.clear()
            self._update_listener()

    def _update_listener(self) -> None:
        if self._prefixes and self._remove_listener is None:
            self._remove_listener = self.bus.add_listener(self._on_event)
        elif not self._prefixes and self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def _is_wanted(self, topic: str) -> bool:
        wanted = self._wanted.get(topic)
        if wanted is None:
            raw = topic.encode()
            wanted = any(raw.startswith(p) for p in self._prefixes)
            if len(self._wanted) > 10_000:
                self._wanted.clear()
            self._wanted[topic] = wanted
        return wanted

    def _on_event(self, event: object) -> None:
        topic = f"message.received.{event.type}" if type(event) is CustomMessageReceived else event_topic(event)  # type: ignore[attr-defined]
        if not self._is_wanted(topic):
            self.unwanted += 1
            return
        self._queue(topic, event)

    def publish(self, topic: str, fields: dict[str, Any]) -> None:
        """Publish an event that is not a node event (e.g. ``control.sync.TOKEN``)."""
        if self._is_wanted(topic):
            self._queue(topic, fields)

    def _queue(self, topic: str, event: object) -> None:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((topic, seq, self.clock(), event))
        if not self._ready.is_set():
            self._ready.set()

    def _encode(self, topic: str, seq: int, now: float, event: object) -> bytes:
        if type(event) is CustomMessageReceived:
            # The hot path (every custom message): formatted by hand, no dict, no json.
            node_hex = self._hex.get(event.node_id)
            if node_hex is None:
                if len(self._hex) >= _HEX_CACHE_SIZE:
                    self._hex.clear()
                node_hex = self._hex[event.node_id] = event.node_id.hex()
            return (
                f'{{"topic":"{topic}","seq":{seq},"time":{now:.6f},"epoch":{self.epoch},"node_id":"{node_hex}",'
                f'"type":{event.type},"payload":"{event.payload.hex()}"}}'
            ).encode()
        if isinstance(event, dict):
            body = {"topic": topic, "seq": seq, "time": round(now, 6), "epoch": self.epoch}
            body.update({k: _jsonable(v) for k, v in event.items()})
            return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return encode_event(event, topic, seq, now, self.epoch)

    async def _send_loop(self) -> None:
        pending = self._pending
        raw = self.sock.socket
        while True:
            if not pending:
                await self._ready.wait()
                self._ready = trio.Event()
            sent = 0
            try:
                while pending and sent < SEND_BATCH:
                    topic, seq, now, event = pending.popleft()
                    body = self._encode(topic, seq, now, event)
                    # XPUB never refuses a message (it drops it for a full
                    # subscriber), so these sends return at once.
                    raw.send(topic.encode(), _SNDMORE_NOBLOCK)
                    raw.send(body, _NOBLOCK)
                    sent += 1
            except zmq.ZMQError as exc:
                if self.sock.closed or raw.closed or exc.errno in (zmq.ENOTSOCK, zmq.ETERM):
                    return
                log.warning("event not published: %s", exc)
            finally:
                self.published += sent
            if self.sock.closed:
                return
            # The sends above went around TrioSocket to keep its per-send
            # ZMQ_EVENTS read out of the loop; reading it once per batch here
            # wakes the subscription reader if a send took its notification.
            self.sock.poll_events()
            await trio.lowlevel.checkpoint()
