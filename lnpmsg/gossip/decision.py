"""What the gossip graph gives out: the :class:`Decision` on a message, the
:class:`Pending` message waiting for its signature checks, the
:class:`ChannelRemoved` change (sans-IO values).

:class:`~lnpmsg.gossip.graph.Graph` makes them; the store, the routing feed,
the events and the app read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.verify import SigCheck
from lnpmsg.wire import Features, Message, WireError
from lnpmsg.wire.features import known_features, unknown_required

__all__ = [
    "KIND_NAMES",
    "ChannelRemoved",
    "Decision",
    "Outcome",
    "Pending",
    "message_kind",
    "routable",
]

_KNOWN_FEATURES = known_features()


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    #: not for us, not new, or not yet placeable: dropped quietly (BOLT 7 "ignore")
    IGNORED = "ignored"
    #: invalid: bad signature, malformed, far future
    REJECTED = "rejected"


#: a gossip message's class -> its BOLT 7 name (read once per decision: a dict, not a call)
KIND_NAMES = {
    ChannelAnnouncement: "channel_announcement",
    NodeAnnouncement: "node_announcement",
    ChannelUpdate: "channel_update",
}


def message_kind(message: Message) -> str:
    """``channel_announcement``, ``node_announcement`` or ``channel_update``."""
    return KIND_NAMES[type(message)]


def routable(features: bytes) -> bool:
    """BOLT 7: a channel or node with unknown even (required) feature bits must not be routed through."""
    try:
        return not unknown_required(Features.from_bytes(features), _KNOWN_FEATURES)
    except WireError:
        return False


class Decision(NamedTuple):
    """What happened to one gossip message (immutable; a named tuple: one is made per
    message on the ingest path, and a tuple is built several times faster than a
    frozen dataclass)."""

    outcome: Outcome
    message: Message
    raw: bytes
    reason: str = ""
    #: BOLT 7 says to send the peer a ``warning`` (bad signature, malformed)
    warn: bool = False
    #: BOLT 7 says to close the connection too (a channel_update whose signature fails)
    close: bool = False
    #: accepted and fit to pass on to other peers
    relay: bool = False
    #: the peer it came from (None: imported or our own)
    source: bytes | None = None
    #: channel_announcement: the funding amount, when known
    capacity_sat: int | None = None
    #: channel_announcement: when we learned it (unix seconds)
    first_seen: int = 0

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @property
    def kind(self) -> str:
        return message_kind(self.message)


@dataclass(slots=True, eq=False)
class Pending:
    """A message waiting for its signature checks (see :meth:`Graph.commit`)."""

    message: Message
    raw: bytes
    checks: list[SigCheck]
    source: bytes | None = None
    capacity_sat: int | None = None
    first_seen: int = 0
    relay: bool = True
    #: decided at commit by what is committed then: a message that only the
    #: pending (not yet committed) messages before it would have made a
    #: duplicate or stale; it holds no pending marks of its own
    shadow: bool = False
    #: a channel message's packed short channel id (read once, at prepare)
    scid: int = -1


@dataclass(frozen=True, slots=True)
class ChannelRemoved:
    """A channel left the graph (pruned or closed), with the nodes that had no other channel."""

    short_channel_id: int
    orphaned_nodes: tuple[bytes, ...]
    reason: str
    #: the channel's two ends
    node_ids: tuple[bytes, ...] = ()
