"""Events the gossip app publishes on the node's event bus.

Every accepted gossip message is published once, on a topic per message
type (``gossip.channel_announcement``, ``gossip.node_announcement``,
``gossip.channel_update``), raw (hex, exactly as signed) and decoded (a
JSON-able dict). Sync progress goes out on ``gossip.sync``; a channel leaving
the graph (pruned as stale, or closed) on ``gossip.channel_removed``; a
message rejected (bad signature, malformed) on ``gossip.rejected``.

A gossip event holds the message and its bytes; the hex and the decoded
dict are made when read, so publishing costs little when few subscribers
look. Its dataclass fields (``raw``, ``message``, ``source``,
``short_channel_id``, ``node_ids``) are what the node's event socket
encodes (bytes as hex, the message as its fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lnpmsg.gossip.graph import Decision
from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.wire import Message

__all__ = [
    "ALL_GOSSIP_TOPICS",
    "ChannelRemovedEvent",
    "GOSSIP_TOPICS",
    "GossipRejectedEvent",
    "ChannelAnnouncementEvent",
    "ChannelUpdateEvent",
    "GossipEvent",
    "GossipSyncEvent",
    "NodeAnnouncementEvent",
    "event_for",
    "gossip_filter",
]


@dataclass(frozen=True, slots=True, eq=False)
class GossipEvent:
    """An accepted gossip message (base of the three per-type events)."""

    topic = "gossip"
    #: the message, type included, exactly as signed
    raw: bytes
    message: Message
    #: the peer it came from, or None (imported, our own)
    source: bytes | None
    #: the channel it is about (``BLOCKxTXxOUT``), None for a node_announcement
    short_channel_id: str | None
    #: the nodes it is about: a channel's two ends, or the announced node
    node_ids: tuple[bytes, ...]

    @property
    def raw_hex(self) -> str:
        return self.raw.hex()

    @property
    def decoded(self) -> dict[str, Any]:
        """The decoded message (JSON-able)."""
        return self.message.to_dict()  # type: ignore[attr-defined, no-any-return]

    @property
    def source_hex(self) -> str | None:
        """The peer it came from (hex), or None."""
        return self.source.hex() if self.source is not None else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: topic, source, raw hex, the decoded message, what it concerns."""
        return {
            "topic": self.topic,
            "source": self.source_hex,
            "raw": self.raw_hex,
            "message": self.decoded,
            "short_channel_id": self.short_channel_id,
            "node_ids": [n.hex() for n in self.node_ids],
        }


@dataclass(frozen=True, slots=True, eq=False)
class ChannelAnnouncementEvent(GossipEvent):
    topic = "gossip.channel_announcement"


@dataclass(frozen=True, slots=True, eq=False)
class NodeAnnouncementEvent(GossipEvent):
    topic = "gossip.node_announcement"


@dataclass(frozen=True, slots=True, eq=False)
class ChannelUpdateEvent(GossipEvent):
    topic = "gossip.channel_update"


@dataclass(frozen=True, slots=True)
class GossipSyncEvent:
    """Progress of the initial sync with one peer."""

    topic = "gossip.sync"
    peer: str
    state: str
    percent: float
    channels_wanted: int
    channels_answered: int


@dataclass(frozen=True, slots=True)
class ChannelRemovedEvent:
    """A channel left the graph: pruned (no update within the horizon) or closed."""

    topic = "gossip.channel_removed"
    short_channel_id: str
    #: the channel's two ends
    node_ids: tuple[bytes, ...]
    #: nodes that left with it (no other channel)
    orphaned_nodes: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class GossipRejectedEvent:
    """A peer's gossip message was rejected (BOLT 7: a bad signature, a malformed field)."""

    topic = "gossip.rejected"
    #: channel_announcement, channel_update or node_announcement
    type: str
    #: the channel (``BLOCKxTXxOUT``) or node (hex) it was about
    subject: str
    #: the peer it came from
    source: bytes | None
    reason: str


GOSSIP_TOPICS = (ChannelAnnouncementEvent.topic, NodeAnnouncementEvent.topic, ChannelUpdateEvent.topic)
#: every topic the gossip app publishes on
ALL_GOSSIP_TOPICS = (*GOSSIP_TOPICS, GossipSyncEvent.topic, ChannelRemovedEvent.topic, GossipRejectedEvent.topic)


def event_for(decision: Decision, channel_nodes: tuple[bytes, bytes] | None = None) -> GossipEvent:
    """The event of an accepted message (``channel_nodes``: a channel_update's channel ends)."""
    msg = decision.message
    if type(msg) is ChannelAnnouncement:
        return ChannelAnnouncementEvent(decision.raw, msg, decision.source, str(msg.short_channel_id), (msg.node_id_1, msg.node_id_2))
    if type(msg) is ChannelUpdate:
        return ChannelUpdateEvent(decision.raw, msg, decision.source, str(msg.short_channel_id), channel_nodes or ())
    if type(msg) is NodeAnnouncement:
        return NodeAnnouncementEvent(decision.raw, msg, decision.source, None, (msg.node_id,))
    raise TypeError(f"not a gossip message: {type(msg).__name__}")


def gossip_filter(
    types: Iterable[str] = (),
    node_ids: Iterable[str] = (),
    short_channel_ids: Iterable[str] = (),
) -> Callable[[object], bool]:
    """An ``EventBus.subscribe`` filter for gossip events.

    ``types``: message type names (``channel_update``) or topics; none
    means all three. ``node_ids`` (hex) and ``short_channel_ids``
    (``BLOCKxTXxOUT``): when given, an event passes if it concerns any of them.
    """
    topics = {t if t.startswith("gossip.") else f"gossip.{t}" for t in types} or set(GOSSIP_TOPICS)
    nodes = {bytes.fromhex(n) for n in node_ids}
    scids = set(short_channel_ids)

    def accepts(event: object) -> bool:
        if not isinstance(event, GossipEvent) or event.topic not in topics:
            return False
        if not nodes and not scids:
            return True
        if nodes and nodes.intersection(event.node_ids):
            return True
        return bool(scids) and event.short_channel_id in scids

    return accepts
