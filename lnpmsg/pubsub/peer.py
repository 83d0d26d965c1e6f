"""Peer pub/sub: a node publishes on topics, its peers subscribe over the wire.

::

    pubsub = PeerPubSub()                 # mount on both nodes
    node.mount(pubsub)

    # publisher
    pubsub.publish("prices", b"42")       # never waits; returns how many got it

    # subscriber (on the other node)
    async with await pubsub.subscribe(peer, "prices") as sub:
        async for pub in sub:
            print(pub.seq, pub.data, pub.missed)

Wire format (odd custom types; optional feature bit 329):

===================  =====  ====================================================
message              type   fields
===================  =====  ====================================================
pubsub_subscribe     32811  topic u8-prefixed UTF-8
pubsub_unsubscribe   32813  topic
pubsub_subscribed    32815  topic, status u8 (0 ok, 1 refused), reason u16-prefixed
pubsub_publication   32817  topic, seq u64, data u16-prefixed
===================  =====  ====================================================

Every topic numbers its publications (``seq`` 1, 2, 3...). Nothing ever
waits for a subscriber: a publication goes to a subscriber only while that
peer's outbound queue holds less than ``max_queued_bytes`` (its bounded
per-subscriber queue); a slow subscriber misses publications instead of
slowing the publisher. The subscriber sees each gap as the ``missed`` count
of the next publication it gets (from the jump in ``seq``); the same holds
for its own bounded local queue when its reader is slow. A publisher serves
at most ``max_topics_per_peer`` subscriptions per peer and may refuse topics
(:meth:`PeerPubSub.authorize`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import trio

from lnpmsg.app import DONE, App, PeerNotConnected
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.node.session import printable
from lnpmsg.wire import MAX_MESSAGE_SIZE, Message, message
from lnpmsg.wire.fields import u8, u8_prefixed_bytes, u16_prefixed_bytes, u64

__all__ = [
    "MAX_DATA",
    "MAX_QUEUED_BYTES",
    "MAX_TOPICS_PER_PEER",
    "PUBSUB_FEATURE_BIT",
    "SUBSCRIBER_QUEUE",
    "PeerPubSub",
    "PubSubError",
    "Publication",
    "RemoteSubscription",
    "SubscribeRefused",
    "SubscriptionEnded",
]

log = logging.getLogger(__name__)

#: optional feature bit of peer pub/sub (pair 328/329)
PUBSUB_FEATURE_BIT = 329
#: a subscriber's bound: publications are skipped while its peer has this much queued
MAX_QUEUED_BYTES = 1024 * 1024
#: subscriptions one peer may hold here: bounds per-peer state
MAX_TOPICS_PER_PEER = 256
#: publications a local subscription buffers before it starts missing some
SUBSCRIBER_QUEUE = 1000
#: data bytes in one publication: a message minus type, topic (<= 256), seq and prefix
MAX_DATA = MAX_MESSAGE_SIZE - 2 - 256 - 8 - 2
#: seconds :meth:`PeerPubSub.subscribe` waits for the publisher's answer
SUBSCRIBE_TIMEOUT = 10.0

STATUS_OK = 0
STATUS_REFUSED = 1


@message(type=32811)
@dataclass(frozen=True, slots=True)
class PubSubSubscribe(Message):
    FIELDS = (("topic", u8_prefixed_bytes),)
    topic: bytes


@message(type=32813)
@dataclass(frozen=True, slots=True)
class PubSubUnsubscribe(Message):
    FIELDS = (("topic", u8_prefixed_bytes),)
    topic: bytes


@message(type=32815)
@dataclass(frozen=True, slots=True)
class PubSubSubscribed(Message):
    FIELDS = (("topic", u8_prefixed_bytes), ("status", u8), ("reason", u16_prefixed_bytes))
    topic: bytes
    status: int
    reason: bytes = b""


@message(type=32817)
@dataclass(frozen=True, slots=True)
class PubSubPublication(Message):
    FIELDS = (("topic", u8_prefixed_bytes), ("seq", u64), ("data", u16_prefixed_bytes))
    topic: bytes
    seq: int
    data: bytes


class PubSubError(Exception):
    """A subscription could not be made or kept."""


class SubscribeRefused(PubSubError):
    """The publisher refused the subscription (the reason says why)."""


class SubscriptionEnded(PubSubError):
    """The publisher's connection dropped before :meth:`PeerPubSub.subscribe` returned.

    (Once subscribed, the publisher leaving ends the ``async for`` loop
    quietly; :attr:`RemoteSubscription.end_reason` says why.)"""


@dataclass(frozen=True, slots=True)
class Publication:
    """One received publication; ``missed`` publications of the topic were lost just before it."""

    topic: str
    seq: int
    data: bytes
    missed: int = 0


def _topic_bytes(topic: str) -> bytes:
    data = topic.encode()
    if not 0 < len(data) <= 255:
        raise PubSubError(f"a topic is 1..255 bytes of UTF-8, got {len(data)}")
    return data


class RemoteSubscription:
    """A subscription to a topic of one peer: iterate it for :class:`Publication` objects."""

    def __init__(self, app: PeerPubSub, peer: Peer, topic: str, max_queue: int) -> None:
        self.app = app
        self.peer = peer
        self.topic = topic
        self.max_queue = max_queue
        #: publications lost so far (the publisher skipped them, or our queue was full)
        self.missed = 0
        self._queue: deque[tuple[int, bytes]] = deque()
        self._ready = trio.Event()
        self._last_seq: int | None = None
        self._closed = False
        self._ended: str | None = None

    @property
    def end_reason(self) -> str | None:
        """Why the subscription ended: the publisher's connection dropped (None while it lasts,
        or when it was closed here with :meth:`aclose`)."""
        return self._ended

    @property
    def ended(self) -> bool:
        """The publisher left or the subscription was closed: no more publications will come."""
        return self._ended is not None or self._closed

    def _push(self, seq: int, data: bytes) -> None:
        if len(self._queue) >= self.max_queue:
            return  # dropped: the jump in seq reports it
        self._queue.append((seq, data))
        self._ready.set()

    def _end(self, reason: str) -> None:
        self._ended = reason
        self._ready.set()

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def __anext__(self) -> Publication:
        while not self._queue:
            if self._closed or self._ended is not None:
                # The publisher leaving ends the loop like a closed stream does:
                # nothing escapes into the subscriber's task (end_reason says why).
                raise StopAsyncIteration
            await self._ready.wait()
            self._ready = trio.Event()
        seq, data = self._queue.popleft()
        missed = 0 if self._last_seq is None or seq <= self._last_seq else seq - self._last_seq - 1
        self._last_seq = seq
        self.missed += missed
        return Publication(self.topic, seq, data, missed)

    async def aclose(self) -> None:
        """Stop receiving; the publisher is told when this was the last local subscriber."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        self.app._unsubscribed(self)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class _Wanted:
    """Our subscription to (peer, topic), shared by local subscriptions."""

    __slots__ = ("answered", "local", "refused")

    def __init__(self) -> None:
        self.local: list[RemoteSubscription] = []
        self.answered = trio.Event()
        self.refused: str | None = None


class PeerPubSub(App):
    """The peer pub/sub app (publisher and subscriber sides).

    Args:
        max_queued_bytes: a subscriber's bound (see the module docs).
        max_topics_per_peer: subscriptions one peer may hold here.
    """

    def __init__(
        self,
        name: str = "pubsub",
        *,
        feature_bit: int | None = PUBSUB_FEATURE_BIT,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_topics_per_peer: int = MAX_TOPICS_PER_PEER,
    ) -> None:
        super().__init__(name, feature_bit=feature_bit)
        self.max_queued_bytes = max_queued_bytes
        self.max_topics_per_peer = max_topics_per_peer
        # publisher side
        self._subscribers: dict[bytes, list[Peer]] = {}
        self._topics_of: dict[Peer, set[bytes]] = {}
        self._seq: dict[bytes, int] = {}
        #: publications skipped because a subscriber was too slow, per subscriber node id
        self.skipped: dict[bytes, int] = {}
        # subscriber side
        self._wanted: dict[tuple[Peer, bytes], _Wanted] = {}
        for cls in (PubSubSubscribe, PubSubUnsubscribe, PubSubSubscribed, PubSubPublication):
            self.message(cls)
        self.add_handler(PubSubSubscribe, self._on_subscribe, guard=False)
        self.add_handler(PubSubUnsubscribe, self._on_unsubscribe, guard=False)
        self.add_handler(PubSubSubscribed, self._on_subscribed, guard=False)
        self.add_handler(PubSubPublication, self._on_publication, guard=False)
        self.add_control_method("publish", self._control_publish)
        self.add_control_method("topics", self._control_topics)

    # ---------------------------------------------------------- publisher

    def authorize(self, peer: Peer, topic: str) -> str | None:
        """Override to refuse subscriptions: return a reason to refuse, None to accept."""
        del peer, topic
        return None

    def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to every subscriber of ``topic`` that keeps up. Never waits.

        Returns how many subscribers got it queued.
        """
        key = _topic_bytes(topic)
        if len(data) > MAX_DATA:
            raise PubSubError(f"publication of {len(data)} bytes exceeds {MAX_DATA}")
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        subscribers = self._subscribers.get(key)
        if not subscribers:
            return 0
        encoded = PubSubPublication(topic=key, seq=seq, data=data).encode()
        bound = self.max_queued_bytes
        sent = 0
        for peer in subscribers:
            if peer.queued_bytes + len(encoded) > bound:
                self.skipped[peer.node_id] = self.skipped.get(peer.node_id, 0) + 1
                continue
            try:
                peer.send_nowait(encoded)
                sent += 1
            except (PeerQueueFull, PeerClosedError):
                self.skipped[peer.node_id] = self.skipped.get(peer.node_id, 0) + 1
        return sent

    def subscribers(self, topic: str) -> list[bytes]:
        """Node ids subscribed to ``topic`` here."""
        return [p.node_id for p in self._subscribers.get(_topic_bytes(topic), [])]

    def _on_subscribe(self, peer: Peer, msg: PubSubSubscribe) -> Awaitable[None]:
        topics = self._topics_of.get(peer)
        if topics is None:
            topics = self._topics_of[peer] = set()
        reason: str | None = None
        try:
            topic = msg.topic.decode()
        except UnicodeDecodeError:
            reason = "topic is not UTF-8"
        else:
            if not topic:
                reason = "empty topic"
            elif msg.topic not in topics and len(topics) >= self.max_topics_per_peer:
                reason = f"too many subscriptions (limit {self.max_topics_per_peer})"
            else:
                reason = self.authorize(peer, topic)
        if reason is None and msg.topic not in topics:
            topics.add(msg.topic)
            self._subscribers.setdefault(msg.topic, []).append(peer)
        status = STATUS_OK if reason is None else STATUS_REFUSED
        self._send_quietly(peer, PubSubSubscribed(topic=msg.topic, status=status, reason=(reason or "").encode()))
        return DONE

    def _on_unsubscribe(self, peer: Peer, msg: PubSubUnsubscribe) -> Awaitable[None]:
        topics = self._topics_of.get(peer)
        if topics is not None and msg.topic in topics:
            topics.discard(msg.topic)
            self._drop_subscriber(msg.topic, peer)
        return DONE

    def _drop_subscriber(self, topic: bytes, peer: Peer) -> None:
        peers = self._subscribers.get(topic)
        if peers is not None and peer in peers:
            peers.remove(peer)
            if not peers:
                del self._subscribers[topic]

    @staticmethod
    def _send_quietly(peer: Peer, msg: Message) -> None:
        try:
            peer.send_nowait(msg)
        except (PeerQueueFull, PeerClosedError) as exc:
            log.debug("dropped %s to %s: %s", type(msg).__name__, peer.node_id.hex(), exc)

    # --------------------------------------------------------- subscriber

    async def subscribe(
        self,
        peer: Peer | bytes | str,
        topic: str,
        *,
        max_queue: int = SUBSCRIBER_QUEUE,
        timeout: float = SUBSCRIBE_TIMEOUT,
    ) -> RemoteSubscription:
        """Subscribe to ``topic`` on ``peer``; returns once the publisher accepted.

        Raises :class:`SubscribeRefused`, or :class:`PubSubError` when the
        peer is not connected, does not support pub/sub or does not answer.
        """
        if not isinstance(peer, Peer):
            try:
                peer = self.peer(peer)
            except PeerNotConnected as exc:
                raise PubSubError(str(exc)) from None
        if not self.supports(peer):
            raise PubSubError(f"peer {peer.node_id.hex()} does not advertise pub/sub (feature bit {self.feature_bit})")
        key = _topic_bytes(topic)
        sub = RemoteSubscription(self, peer, topic, max_queue)
        wanted = self._wanted.get((peer, key))
        if wanted is None:
            wanted = self._wanted[(peer, key)] = _Wanted()
            try:
                await peer.send(PubSubSubscribe(topic=key))
            except PeerClosedError as exc:
                del self._wanted[(peer, key)]
                raise PubSubError(str(exc)) from None
        wanted.local.append(sub)
        try:
            with trio.move_on_after(timeout):
                await wanted.answered.wait()
        except BaseException:
            self._unsubscribed(sub)
            raise
        if wanted.refused is not None or not wanted.answered.is_set():
            self._unsubscribed(sub)
            if wanted.refused is not None:
                raise SubscribeRefused(f"{topic} on {peer.node_id.hex()}: {wanted.refused}")
            raise PubSubError(f"{topic} on {peer.node_id.hex()}: no answer within {timeout:g} s")
        if sub._ended is not None:
            raise SubscriptionEnded(sub._ended)
        return sub

    def _unsubscribed(self, sub: RemoteSubscription) -> None:
        key = sub.topic.encode()
        wanted = self._wanted.get((sub.peer, key))
        if wanted is None or sub not in wanted.local:
            return
        wanted.local.remove(sub)
        if not wanted.local:
            del self._wanted[(sub.peer, key)]
            if sub.peer.is_ready and wanted.refused is None:
                self._send_quietly(sub.peer, PubSubUnsubscribe(topic=key))

    def _on_subscribed(self, peer: Peer, msg: PubSubSubscribed) -> Awaitable[None]:
        wanted = self._wanted.get((peer, msg.topic))
        if wanted is not None and not wanted.answered.is_set():
            if msg.status != STATUS_OK:
                wanted.refused = printable(msg.reason) or "refused"
            wanted.answered.set()
        return DONE

    def _on_publication(self, peer: Peer, msg: PubSubPublication) -> Awaitable[None]:
        wanted = self._wanted.get((peer, msg.topic))
        if wanted is not None:
            for sub in wanted.local:
                sub._push(msg.seq, msg.data)
        return DONE

    # -------------------------------------------------------- both sides

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """The node's hook: the peer's subscriptions here go, ours to it end (their loops stop)."""
        for topic in self._topics_of.pop(peer, set()):
            self._drop_subscriber(topic, peer)
        why = f"peer {peer.node_id.hex()} disconnected: {reason}"
        for key in [k for k in self._wanted if k[0] is peer]:
            wanted = self._wanted.pop(key)
            wanted.answered.set()
            for sub in wanted.local:
                sub._end(why)
        await super().peer_gone(peer, reason)

    # -------------------------------------------------------- control API

    async def _control_publish(self, topic: str, data: str | None = None, text: str | None = None) -> dict[str, Any]:
        """Publish ``data`` (hex) or ``text`` (UTF-8) on ``topic`` to this node's subscribers."""
        if (data is None) == (text is None):
            raise ValueError("give exactly one of data (hex) and text")
        payload = text.encode() if text is not None else bytes.fromhex(data or "")
        return {"topic": topic, "subscribers": self.publish(topic, payload)}

    async def _control_topics(self) -> dict[str, Any]:
        """Topics with subscribers here, and the publications skipped per slow subscriber."""
        return {
            "topics": {t.decode(errors="replace"): [p.node_id.hex() for p in peers] for t, peers in self._subscribers.items()},
            "skipped": {n.hex(): count for n, count in self.skipped.items()},
        }

