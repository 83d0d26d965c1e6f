"""Node events and the bounded fan-out that delivers them to subscribers.

Every subscriber has its own bounded queue. A subscriber that falls behind
by more than its bound is dropped (its stream ends with
:class:`SubscriberDropped`); it never slows the node or other subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

__all__ = [
    "DEFAULT_SUBSCRIBER_QUEUE",
    "AppStateChanged",
    "PeerReplaced",
    "EventBus",
    "NodeEvent",
    "PeerConnected",
    "PeerDisconnected",
    "CustomMessageReceived",
    "ErrorReported",
    "Listener",
    "PeerWarningReceived",
    "PeerErrorReceived",
    "Subscription",
    "SubscriberDropped",
]

log = logging.getLogger(__name__)

#: events a subscriber may have unread before it is dropped
DEFAULT_SUBSCRIBER_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class PeerConnected:
    topic = "peer.connected"
    node_id: bytes
    address: str
    transport: str
    outbound: bool
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    topic = "peer.disconnected"
    node_id: bytes
    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class CustomMessageReceived:
    """A message of a type no built-in part of the node consumes (apps, custom odd types)."""

    topic = "message.received"
    node_id: bytes
    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeerWarningReceived:
    topic = "peer.warning"
    node_id: bytes
    channel_id: bytes
    text: str


@dataclass(frozen=True, slots=True)
class PeerErrorReceived:
    topic = "peer.error"
    node_id: bytes
    channel_id: bytes
    text: str


@dataclass(frozen=True, slots=True)
class ErrorReported:
    """Something went wrong inside the node that its operator should see (an
    app handler raised or timed out, a request failed); the node carries on.

    ``source`` names the part (``"app.chat"``, ``"rpc"``, ``"node"``);
    ``node_id`` is the peer concerned, if any.
    """

    topic = "error"
    source: str
    text: str
    node_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class PeerReplaced:
    """A new connection of a node replaced its live one (``connect(..., reconnect=True)``,
    or the peer connected again while its old connection still looked alive)."""

    topic = "peer.replaced"
    node_id: bytes
    old_address: str
    new_address: str


@dataclass(frozen=True, slots=True)
class AppStateChanged:
    """An app's life changed: ``state`` is ``running``, ``restarting`` or ``stopped``
    (``reason`` says why, e.g. the exception that stopped its tasks)."""

    topic = "app.state"
    app: str
    state: str
    reason: str = ""


NodeEvent = (
    PeerConnected
    | PeerDisconnected
    | PeerReplaced
    | CustomMessageReceived
    | PeerWarningReceived
    | PeerErrorReceived
    | ErrorReported
    | AppStateChanged
)

#: a synchronous callback given every published event (see :meth:`EventBus.add_listener`)
Listener = Callable[[object], None]


class SubscriberDropped(Exception):
    """The subscriber fell too far behind and was dropped."""


@dataclass(eq=False)
class Subscription:
    """A bounded stream of events. Iterate with ``async for``; close with ``close()``."""

    bus: EventBus
    send: trio.MemorySendChannel[object]
    receive: trio.MemoryReceiveChannel[object]
    accepts: Callable[[object], bool]
    dropped: bool = False
    label: str = field(default="subscriber")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> object:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            if self.dropped:
                raise SubscriberDropped(f"{self.label} fell more than its queue behind and was dropped") from None
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.bus._remove(self)
        self.send.close()
        self.receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Publish events to any number of bounded subscriptions (never blocks the publisher)."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously for every published event; returns its remover.

        For bridges that forward events without queueing (the ZeroMQ PUB
        bridge): the listener must be quick and must never block. An exception
        it raises is logged and does not reach the publisher.
        """
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def subscribe(
        self,
        accepts: Callable[[object], bool] = lambda event: True,
        *,
        max_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
        label: str = "subscriber",
    ) -> Subscription:
        send, receive = trio.open_memory_channel[object](max_queue)
        subscription = Subscription(self, send, receive, accepts, label=label)
        self._subscriptions.append(subscription)
        return subscription

    def publish(self, event: object) -> None:
        for listener in tuple(self._listeners) if self._listeners else ():
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, type(event).__name__)
        for subscription in list(self._subscriptions):
            if not subscription.accepts(event):
                continue
            try:
                subscription.send.send_nowait(event)
            except trio.WouldBlock:
                log.warning("dropping %s: its event queue is full", subscription.label)
                subscription.dropped = True
                self._remove(subscription)
                subscription.send.close()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._remove(subscription)

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def __len__(self) -> int:
        return len(self._subscriptions) + len(self._listeners)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscriptions or self._listeners)
