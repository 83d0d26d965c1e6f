"""The gossip app's read API: the control API's ``gossip.*`` calls and the
Python methods behind them (channels, nodes, stats, event subscriptions),
their arguments checked with a clear error; and ``gossip.resync``, the one
call that acts (:meth:`~lnpmsg.gossip.peers.GossipPeers.resync_now`).

A part of :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from lnpmsg._hex import parse_hex
from lnpmsg.gossip.events import gossip_filter
from lnpmsg.rpc.params import hex_param
from lnpmsg.wire import Features, ShortChannelId, WireError

if TYPE_CHECKING:
    from lnpmsg.gossip.app import GossipAppCounters
    from lnpmsg.gossip.graph import Graph
    from lnpmsg.gossip.peers import PeerState
    from lnpmsg.gossip.store import AsyncGossipStore, GossipStore
    from lnpmsg.gossip.store_backlog import StoreBacklog
    from lnpmsg.node.events import Subscription
    from lnpmsg.node.node import Node

__all__ = ["GossipLookups"]


class GossipLookups:
    """The read API of the :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it)."""

    store: GossipStore
    astore: AsyncGossipStore
    store_backlog: StoreBacklog
    graph: Graph
    counters: GossipAppCounters
    node: Node
    _peers: dict[bytes, PeerState]
    progress: Callable[[], dict[str, Any]]
    resync_now: Callable[[bytes | None], dict[str, Any]]

    # ------------------------------------------------------------ control API

    def control_api(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """The calls the node's control server exposes as ``gossip.<name>`` (JSON in, JSON out)."""

        async def listchannels(node_id: str | None = None, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
            """Channels with both directions' policies, by id (page with ``after``), optionally of one node."""
            return {"channels": await self.list_channels(node_id, after=after, limit=limit)}

        async def listnodes(after: str | None = None, limit: int = 1000) -> dict[str, Any]:
            """Nodes with a channel (announced or not), by id (page with ``after``)."""
            return {"nodes": await self.list_nodes(after=after, limit=limit)}

        async def getnode(node_id: str) -> dict[str, Any]:
            """One node: its announcement and its channels' ids (``null`` if unknown)."""
            return {"node": await self.get_node(node_id)}

        async def getchannel(short_channel_id: str) -> dict[str, Any]:
            """One channel (``BLOCKxTXxOUT``) with its policies (``null`` if unknown)."""
            return {"channel": await self.get_channel(short_channel_id)}

        async def stats() -> dict[str, Any]:
            """Counts: graph, store, decisions and their reasons, relay, sync."""
            return await self.gossip_stats()

        async def progress() -> dict[str, Any]:
            """The initial sync's progress (percent overall and per peer)."""
            return self.progress()

        async def resync(peer: str | None = None) -> dict[str, Any]:
            """Start a re-sync now with peer (hex node id) or, without one, the schedule's choice."""
            return self.resync_now(None if peer is None else hex_param(peer, "peer", 33))

        return {
            "listchannels": listchannels,
            "listnodes": listnodes,
            "getnode": getnode,
            "getchannel": getchannel,
            "stats": stats,
            "progress": progress,
            "resync": resync,
        }


    def subscribe(self, types: Sequence[str] = (), node_ids: Sequence[str] = (), short_channel_ids: Sequence[str] = ()) -> Subscription:
        """A stream of accepted gossip events (see :func:`~lnpmsg.gossip.events.gossip_filter`)."""
        return self.node.events.subscribe(gossip_filter(types, node_ids, short_channel_ids), label="gossip subscriber")

    async def list_channels(self, node_id: str | bytes | None = None, *, after: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Channels with their policies, ascending id (page with ``after``)."""
        node = _node_id(node_id) if node_id is not None else None
        start = _scid_int(after) if after is not None else None
        return await self.astore.run(self.store.list_channels, node, after=start, limit=_limit(limit))

    async def list_nodes(self, *, after: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        start = _node_id(after) if after is not None else None
        return await self.astore.run(self.store.list_nodes, after=start, limit=_limit(limit))

    async def get_node(self, node_id: str | bytes) -> dict[str, Any] | None:
        return await self.astore.run(self.store.get_node, _node_id(node_id))

    async def announced_features(self, node_id: str | bytes) -> Features | None:
        """The features of the node's ``node_announcement`` in the store (None: no announcement of it known)."""
        node = await self.get_node(node_id)
        if node is None or not node.get("announced"):
            return None
        return Features.from_bytes(bytes.fromhex(node["features"]))

    async def announced_alias(self, node_id: str | bytes) -> str | None:
        """The alias of the node's ``node_announcement`` in the store (None: no announcement of it known)."""
        node = await self.get_node(node_id)
        return node["alias"] if node is not None and node.get("announced") else None

    async def get_channel(self, short_channel_id: str | int) -> dict[str, Any] | None:
        return await self.astore.run(self.store.get_channel, _scid_int(short_channel_id))

    async def gossip_stats(self) -> dict[str, Any]:
        """Counts of the graph, the store, decisions, relay and sync (JSON-able)."""
        counts = await self.astore.run(self.store.counts)
        graph = self.graph
        c = self.counters
        return {
            "channels": len(graph),
            "nodes": len(graph.nodes),
            "node_announcements": graph.announced_node_count,
            "channel_updates": graph.update_count,
            "store": counts,
            "store_backlog": {
                "waiting": self.store_backlog.messages,
                "not_kept": self.store_backlog.dropped,
                "error": self.store_backlog.error,
            },
            "received": dict(c.received),
            "decisions": {f"{k}: {o}": n for (k, o), n in graph.counters.by_kind.items()},
            "reasons": dict(graph.counters.reasons),
            "signature_checks": graph.counters.signature_checks,
            "relayed": c.relayed,
            "relay_dropped": c.relay_dropped,
            "relay_queued": sum(len(s.queue) for s in self._peers.values() if s.queue is not None),
            "warnings_sent": c.warnings_sent,
            "peers_disconnected": c.disconnected,
            "queries_answered": c.queries_answered,
            "replies_sent": c.replies_sent,
            "sync": self.progress(),
        }


def _node_id(value: str | bytes) -> bytes:
    if not isinstance(value, bytes):
        return parse_hex(value, "a node id", 33)
    if len(value) != 33:
        raise ValueError(f"a node id is 33 bytes, got {len(value)}")
    return value


def _scid_int(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return ShortChannelId.parse(value).to_int()
    except WireError as exc:
        raise ValueError(str(exc)) from None


def _limit(limit: int) -> int:
    return max(1, min(int(limit), 100_000))
