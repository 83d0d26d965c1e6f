"""Gossip events and their subscription filters."""

from __future__ import annotations

import json

from lnpmsg.gossip.events import (
    ChannelAnnouncementEvent,
    ChannelUpdateEvent,
    NodeAnnouncementEvent,
    event_for,
    gossip_filter,
)
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import register_gossip_messages
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.wire import CHAIN_HASH_REGTEST, DEFAULT_REGISTRY

REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
NET = SyntheticNetwork(3, 3, CHAIN_HASH_REGTEST)


def events() -> list:
    graph = Graph(CHAIN_HASH_REGTEST)
    out = []
    for raw in NET.messages():
        decision = graph.process(REGISTRY.decode(raw), raw, now=NET.base_timestamp + 10)
        assert decision.accepted
        scid = getattr(decision.message, "short_channel_id", None)
        channel = graph.channels.get(scid.to_int()) if scid is not None else None
        nodes = (channel.node_id_1, channel.node_id_2) if channel is not None else None
        out.append(event_for(decision, nodes))
    return out


def test_events_carry_raw_decoded_and_subjects() -> None:
    all_events = events()
    kinds = [type(e) for e in all_events]
    assert kinds.count(ChannelAnnouncementEvent) == 3 and kinds.count(ChannelUpdateEvent) == 6 and kinds.count(NodeAnnouncementEvent) == 3
    for event in all_events:
        data = json.loads(json.dumps(event.to_json()))
        assert bytes.fromhex(data["raw"]) == event.raw
        assert data["topic"] == event.topic and data["message"]["type"] == event.topic.removeprefix("gossip.")
        if isinstance(event, NodeAnnouncementEvent):
            assert event.short_channel_id is None and len(event.node_ids) == 1
        else:
            assert event.short_channel_id == data["message"]["short_channel_id"] and len(event.node_ids) == 2


def test_filters() -> None:
    all_events = events()
    assert all(gossip_filter()(e) for e in all_events)
    assert not gossip_filter()(object())
    updates = [e for e in all_events if gossip_filter(types=["channel_update"])(e)]
    assert len(updates) == 6 and all(isinstance(e, ChannelUpdateEvent) for e in updates)
    assert len([e for e in all_events if gossip_filter(types=["gossip.node_announcement"])(e)]) == 3
    node = NET.node_ids[0].hex()
    mine = [e for e in all_events if gossip_filter(node_ids=[node])(e)]
    # Node 0 is in channels 0 and 2 (the ring): 2 announcements, 4 updates, and its own announcement.
    assert len(mine) == 7 and all(node in [n.hex() for n in e.node_ids] for e in mine)
    scid = str(NET.short_channel_id(1))
    one = [e for e in all_events if gossip_filter(short_channel_ids=[scid])(e)]
    assert len(one) == 3 and {e.short_channel_id for e in one} == {scid}
    both = [e for e in all_events if gossip_filter(types=["channel_announcement"], node_ids=[node], short_channel_ids=[scid])(e)]
    assert len(both) == 3  # channels 0 and 2 by node, channel 1 by id
