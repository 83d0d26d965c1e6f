"""The routing graph fed from gossip decisions (lnpmsg.gossip.routing).

A synthetic signed network goes through the gossip graph; the accepted
decisions feed a RoutingFeed, and the store they were written to loads a
second feed: both give pathfinding the same channel directions and policies.
A removal takes the channel out of both directions.
"""

from __future__ import annotations

from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import GOSSIP_MESSAGES, ChannelUpdate
from lnpmsg.gossip.routing import RoutingFeed
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.payments.pathfind import find_route
from lnpmsg.wire import CHAIN_HASHES, MessageRegistry

CHAIN = CHAIN_HASHES["regtest"]


def edges(feed: RoutingFeed, node_ids: list[bytes]) -> set[tuple[object, ...]]:
    return {
        (e.short_channel_id, e.direction, e.source, e.target, e.fee_base_msat, e.fee_proportional_millionths,
         e.cltv_expiry_delta, e.htlc_minimum_msat, e.htlc_maximum_msat, e.disabled, e.capacity_msat)
        for n in node_ids for e in feed.graph.incoming(n)
    }  # fmt: skip


def test_feed_follows_decisions_and_loads_the_same_from_the_store() -> None:
    net = SyntheticNetwork(nodes=30, channels=60, updates_per_channel=3, chain_hash=CHAIN)
    registry = MessageRegistry()
    for cls in GOSSIP_MESSAGES:
        registry.register(cls)
    items = [(registry.decode(raw), raw) for raw in net.messages()]
    graph = Graph(CHAIN)
    decisions = graph.process_many(items, now=net.base_timestamp + 100_000)
    feed = RoutingFeed()
    feed.apply(decisions)
    assert len(feed.graph) == 60 and feed.graph.node_count == 30
    # every direction has its latest accepted update
    latest = {}
    for d in decisions:
        if d.accepted and type(d.message) is ChannelUpdate:
            latest[(d.message.short_channel_id.to_int(), d.message.channel_flags & 1)] = d.message
    for (scid, direction), update in latest.items():
        edge = feed.graph.channel(scid, direction)
        assert edge is not None and edge.fee_base_msat == update.fee_base_msat and edge.disabled == bool(update.channel_flags & 2)

    with GossipStore(":memory:", CHAIN) as store:
        store.apply(decisions)
        loaded = RoutingFeed()
        assert loaded.load(store) == 60
        assert edges(loaded, net.node_ids) == edges(feed, net.node_ids)

        # a route over the fed graph, then the channel it used is removed
        a, b = net.ends(0)
        src, dst = net.node_ids[a], net.node_ids[b]
        route = find_route(feed.graph, src, dst, 1000, current_height=1000, now=0.0)
        assert route.hops[-1].node_id == dst
        scid = route.hops[0].short_channel_id
        change = graph.remove_channel(scid)
        assert change is not None
        feed.remove([change])
        assert feed.graph.channel(scid, 0) is None and all(e.short_channel_id != scid for n in net.node_ids for e in feed.graph.incoming(n))
