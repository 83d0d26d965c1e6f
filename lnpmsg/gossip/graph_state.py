"""What the gossip graph holds, and how it is read, loaded and pruned (sans-IO).

:class:`GraphState` keeps, in memory, each channel's node ids and the
timestamps of its latest updates, each node's latest announcement timestamp
and how many channels it has; it answers the lookups of query sync (which
channels are in a block range, which offered channels are worth asking
for), loads what the store holds and removes channels (closed, or stale:
BOLT 7's two weeks). :class:`~lnpmsg.gossip.graph.Graph` adds the decisions.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable

from lnpmsg.gossip.decision import ChannelRemoved
from lnpmsg.gossip.messages import (
    QUERY_FLAG_ANNOUNCEMENT,
    QUERY_FLAG_NODE_1,
    QUERY_FLAG_NODE_2,
    QUERY_FLAG_UPDATE_1,
    QUERY_FLAG_UPDATE_2,
)

__all__ = ["STALE_AFTER", "ChannelState", "GraphState", "NodeState"]

#: BOLT 7: a channel whose latest update in either direction is older than
#: two weeks may be pruned.
STALE_AFTER = 1_209_600

_ALL_FLAGS = QUERY_FLAG_ANNOUNCEMENT | QUERY_FLAG_UPDATE_1 | QUERY_FLAG_UPDATE_2 | QUERY_FLAG_NODE_1 | QUERY_FLAG_NODE_2


class ChannelState:
    """What the graph keeps of a channel (the store has the rest)."""

    __slots__ = ("capacity_sat", "features", "first_seen", "node_id_1", "node_id_2", "update_ts")

    def __init__(self, node_id_1: bytes, node_id_2: bytes, features: bytes, capacity_sat: int | None, first_seen: int) -> None:
        self.node_id_1 = node_id_1
        self.node_id_2 = node_id_2
        self.features = features
        self.capacity_sat = capacity_sat
        self.first_seen = first_seen
        #: timestamp of the latest channel_update per direction (0: none yet)
        self.update_ts = [0, 0]


class NodeState:
    """A node: its latest announcement timestamp (0: none yet) and channel count."""

    __slots__ = ("channels", "timestamp")

    def __init__(self) -> None:
        self.timestamp = 0
        self.channels = 0


class GraphState:
    """The channels and nodes of the graph, their lookups, loading and removal
    (:class:`~lnpmsg.gossip.graph.Graph` is one, with the decisions)."""

    def __init__(self) -> None:
        self.channels: dict[int, ChannelState] = {}
        self.nodes: dict[bytes, NodeState] = {}
        self._sorted: list[int] | None = None
        #: channel ids seen in updates for channels we did not know (see :meth:`take_unknown_channels`)
        self._unknown_channels: OrderedDict[int, None] = OrderedDict()

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.channels)

    @property
    def update_count(self) -> int:
        """How many channel directions have an update."""
        return sum((c.update_ts[0] > 0) + (c.update_ts[1] > 0) for c in self.channels.values())

    @property
    def announced_node_count(self) -> int:
        """Nodes with a node_announcement."""
        return sum(1 for n in self.nodes.values() if n.timestamp)

    def has_channel(self, scid: int) -> bool:
        return scid in self.channels

    def sorted_channels(self) -> list[int]:
        """Every channel id, ascending (cached until the graph changes)."""
        if self._sorted is None:
            self._sorted = sorted(self.channels)
        return self._sorted

    def channels_in_blocks(self, first_block: int, end_block: int) -> list[int]:
        """Channel ids of blocks ``first_block <= height < end_block``, ascending."""
        ids = self.sorted_channels()
        lo = bisect.bisect_left(ids, first_block << 40)
        hi = bisect.bisect_left(ids, min(end_block, 1 << 24) << 40)
        return ids[lo:hi]

    def wanted(self, offered: Iterable[tuple[int, int, int]]) -> list[tuple[int, int]]:
        """Given ``(scid, timestamp_1, timestamp_2)`` a peer has (timestamps 0 when it did
        not say), what to ask it for: ``(scid, query_flags)``, ascending.

        An unknown channel: everything; a known one: the directions whose
        update the peer has newer than ours (and then the announcements of
        its nodes we lack).
        """
        out = []
        channels = self.channels
        for scid, ts1, ts2 in offered:
            channel = channels.get(scid)
            if channel is None:
                out.append((scid, _ALL_FLAGS))
                continue
            flags = 0
            if ts1 > channel.update_ts[0]:
                flags |= QUERY_FLAG_UPDATE_1
            if ts2 > channel.update_ts[1]:
                flags |= QUERY_FLAG_UPDATE_2
            if flags:
                # Ask for the announcements of nodes we have none of, while at it.
                if not self._node_announced(channel.node_id_1):
                    flags |= QUERY_FLAG_NODE_1
                if not self._node_announced(channel.node_id_2):
                    flags |= QUERY_FLAG_NODE_2
            if flags:
                out.append((scid, flags))
        out.sort()
        return out

    def _node_announced(self, node_id: bytes) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.timestamp > 0

    def take_unknown_channels(self, limit: int) -> list[int]:
        """Channel ids seen in updates for channels we did not know (and still do not), oldest first."""
        out: list[int] = []
        while self._unknown_channels and len(out) < limit:
            scid, _ = self._unknown_channels.popitem(last=False)
            if scid not in self.channels:
                out.append(scid)
        return out

    # ------------------------------------------------------------ loading (from the store)

    def load_channel(self, scid: int, node_id_1: bytes, node_id_2: bytes, features: bytes, capacity_sat: int | None, first_seen: int) -> None:
        """Add a channel the store already holds (no checks)."""
        if scid in self.channels:
            return
        self.channels[scid] = ChannelState(node_id_1, node_id_2, features, capacity_sat, first_seen)
        for node_id in (node_id_1, node_id_2):
            node = self.nodes.get(node_id)
            if node is None:
                node = self.nodes[node_id] = NodeState()
            node.channels += 1
        self._sorted = None

    def load_update(self, scid: int, direction: int, timestamp: int) -> None:
        channel = self.channels.get(scid)
        if channel is not None and timestamp > channel.update_ts[direction]:
            channel.update_ts[direction] = timestamp

    def load_node(self, node_id: bytes, timestamp: int) -> None:
        node = self.nodes.get(node_id)
        if node is not None and timestamp > node.timestamp:
            node.timestamp = timestamp
    # ------------------------------------------------------------ removing

    def remove_channel(self, scid: int, reason: str = "closed") -> ChannelRemoved | None:
        """Take a channel out (closed or pruned); nodes left without channels go too."""
        channel = self.channels.pop(scid, None)
        if channel is None:
            return None
        self._sorted = None
        orphans = []
        for node_id in (channel.node_id_1, channel.node_id_2):
            node = self.nodes.get(node_id)
            if node is not None:
                node.channels -= 1
                if node.channels <= 0:
                    del self.nodes[node_id]
                    orphans.append(node_id)
        return ChannelRemoved(scid, tuple(orphans), reason, (channel.node_id_1, channel.node_id_2))

    def stale_channels(self, now: float, stale_after: int = STALE_AFTER) -> list[int]:
        """Channels whose oldest latest-update (or first sight, for a direction never updated) is too old."""
        limit = now - stale_after
        out = []
        for scid, channel in self.channels.items():
            ts1, ts2 = channel.update_ts
            oldest = min(ts1 or channel.first_seen, ts2 or channel.first_seen)
            if oldest < limit:
                out.append(scid)
        return out

    def prune(self, now: float, stale_after: int = STALE_AFTER) -> list[ChannelRemoved]:
        """Remove every stale channel (BOLT 7's two weeks by default)."""
        removed = []
        horizon = f"{stale_after / 86400:g} days" if stale_after % 86400 == 0 else f"{stale_after:g} s"
        for scid in self.stale_channels(now, stale_after):
            change = self.remove_channel(scid, f"stale: no update for {horizon}")
            if change is not None:
                removed.append(change)
        return removed
