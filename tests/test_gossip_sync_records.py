"""The gossip app's syncs as peers come and go: their records stay bounded (the
syncs of the peers connected, and of the last ``MAX_GONE_SYNCS`` peers that
left), and with ``full_syncs`` the peers after enough syncs are not synced with."""

from __future__ import annotations

import pytest

from lnpmsg.gossip import peers as gossip_peers
from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.messages import (
    GossipTimestampFilter,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lnpmsg.gossip.sync import SyncState
from lnpmsg.node.node import Node
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import CHAIN_HASH_REGTEST, Features, Init, Ping, Pong, ShortChannelId
from lnpmsg.wire.bolt1 import INIT_TLVS
from tests.test_gossip_app import REGISTRY, make, next_of, raw_peer, running, until

KEPT = 3  # MAX_GONE_SYNCS for this test: a few peers are enough to pass it


async def answer_range(peer: RawPeer, query_raw: bytes | None = None, channels: list[ShortChannelId] | None = None) -> None:
    """Answer our query_channel_range (the next, or ``query_raw`` if already read) with
    ``channels`` (none by default), the range complete."""
    query = REGISTRY.decode(query_raw or await next_of(peer, QueryChannelRange.TYPE))
    await peer.send(range_reply(query, channels or []))


def range_reply(query: QueryChannelRange, channels: list[ShortChannelId]) -> ReplyChannelRange:
    """The one reply that answers ``query`` whole, with ``channels``."""
    return ReplyChannelRange(
        chain_hash=CHAIN_HASH_REGTEST,
        first_blocknum=query.first_blocknum,
        number_of_blocks=query.number_of_blocks,
        sync_complete=1,
        short_channel_ids=channels,
    )


async def offer_a_channel(peer: RawPeer, block: int) -> None:
    """Offer one channel and answer the query for it (with nothing: the sync is done all the same)."""
    await answer_range(peer, channels=[ShortChannelId(block, 0, 0)])
    await next_of(peer, QueryShortChannelIds.TYPE)
    await peer.send(ReplyShortChannelIdsEnd(chain_hash=CHAIN_HASH_REGTEST, full_information=1))


async def sent_before_a_pong(peer: RawPeer) -> list[int]:
    """The types of the messages the node sent us before its pong to our ping."""
    await peer.send(Ping(num_pong_bytes=1))
    types = []
    while (kind := int.from_bytes((await peer.receive())[:2], "big")) != Pong.TYPE:
        types.append(kind)
    return types


async def leave(app: GossipApp, peer: RawPeer) -> None:
    await peer.aclose()
    await until(lambda: peer.key.node_id not in app._peers)


def assert_bounded(app: GossipApp) -> None:
    assert len(app._gone_syncs) <= KEPT
    assert set(app._syncs) <= set(app._peers) | set(app._gone_syncs)
    assert not set(app._gone_syncs) & set(app._peers)


async def test_sync_records_keep_the_connected_peers_and_the_last_ones_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gossip_peers, "MAX_GONE_SYNCS", KEPT)
    node: Node
    node, app = make("regtest", config=GossipConfig(flush_interval=0.05, reply_timeout=60.0, sync_peers=2))
    async with running((node, app)):
        # The first peer's sync is done; it leaves.
        first = await raw_peer(node, CHAIN_HASH_REGTEST)
        await answer_range(first)
        await until(lambda: first.key.node_id in app._syncs and app._syncs[first.key.node_id].state is SyncState.DONE)
        await leave(app, first)
        assert app.progress()["synced"]
        # Many more come, are asked for their channels, never answer and leave (some do not
        # offer gossip_queries: no sync, no record): the records of those gone stay the last few.
        failed = []
        for i in range(8):
            peer = await raw_peer(node, CHAIN_HASH_REGTEST, queries=i % 3 != 2)
            if i % 3 != 2:
                await next_of(peer, QueryChannelRange.TYPE)
                failed.append(peer.key)
            await leave(app, peer)
            assert_bounded(app)
        assert list(app._gone_syncs) == [key.node_id for key in failed[-KEPT:]]
        assert all(app._syncs[key.node_id].reason == "peer disconnected" for key in failed[-KEPT:])
        # The done sync's record went, and the node still reports that it synced.
        assert first.key.node_id not in app._syncs
        progress = app.progress()
        assert progress["synced"] and not progress["syncing"] and progress["percent"] == 100.0
        assert set(progress["peers"]) == {key.node_id.hex() for key in failed[-KEPT:]}

        # Peers connected now: one syncing, one done, and one of those gone back (syncing anew).
        syncing = await raw_peer(node, CHAIN_HASH_REGTEST)
        await next_of(syncing, QueryChannelRange.TYPE)
        done = await raw_peer(node, CHAIN_HASH_REGTEST)
        await answer_range(done)
        await until(lambda: done.key.node_id in app._syncs and app._syncs[done.key.node_id].state is SyncState.DONE)
        back_key = failed[-1]
        back = await RawPeer.connect(node.listen_addresses[0], node.node_id, back_key)
        await back.exchange_init(
            Init(features=Features.from_names(optional=["gossip_queries"]).to_bytes(), tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_REGTEST]))
        )
        back_query = await next_of(back, QueryChannelRange.TYPE)
        assert_bounded(app)
        assert back_key.node_id not in app._gone_syncs and len(app._gone_syncs) == KEPT - 1
        progress = app.progress()
        peers = progress["peers"]
        assert peers[syncing.key.node_id.hex()]["state"] == "range"
        assert peers[done.key.node_id.hex()]["state"] == "done"
        assert peers[back_key.node_id.hex()]["state"] == "range"
        assert len(peers) == 3 + KEPT - 1
        assert progress["syncing"] and not progress["synced"] and progress["percent"] == 0.0
        # The one back is done; more peers come, sync and leave: the records of the connected
        # peers stay, those of the peers gone stay the last few.
        await answer_range(back, back_query)
        await until(lambda: app._syncs[back_key.node_id].state is SyncState.DONE)
        for _ in range(KEPT + 1):
            peer = await raw_peer(node, CHAIN_HASH_REGTEST)
            await next_of(peer, QueryChannelRange.TYPE)
            await leave(app, peer)
            assert_bounded(app)
        assert len(app._gone_syncs) == KEPT
        assert set(app._syncs) == {syncing.key.node_id, done.key.node_id, back_key.node_id} | set(app._gone_syncs)
        peers = app.progress()["peers"]
        assert [peers[p.key.node_id.hex()]["state"] for p in (syncing, done, back)] == ["range", "done", "done"]
        for peer in (syncing, done, back):
            await peer.aclose()


async def test_with_full_syncs_set_later_peers_get_only_the_timestamp_filter() -> None:
    node, app = make("regtest", config=GossipConfig(flush_interval=0.05, reply_timeout=60.0, sync_peers=2, full_syncs=2))
    async with running((node, app)):
        # A new node offers no channel: its sync is done but does not count.
        empty = await raw_peer(node, CHAIN_HASH_REGTEST)
        await answer_range(empty)
        await until(lambda: app._syncs[empty.key.node_id].state is SyncState.DONE)
        # Two peers offering channels sync; a third comes meanwhile and waits its turn.
        first, second = await raw_peer(node, CHAIN_HASH_REGTEST), await raw_peer(node, CHAIN_HASH_REGTEST)
        waiting = await raw_peer(node, CHAIN_HASH_REGTEST)
        await until(lambda: waiting.key.node_id in app._peers)
        assert list(app._syncing) == [first.key.node_id, second.key.node_id] and list(app._unsynced) == [waiting.key.node_id]
        await offer_a_channel(first, 100)
        await offer_a_channel(second, 101)
        await until(lambda: app.progress()["synced"])
        # Two full syncs: the one waiting is not synced with, nor any peer coming later;
        # they have our timestamp filter (their new gossip) and no query.
        assert not app._unsynced and not app._syncing and waiting.key.node_id not in app._syncs
        later = await raw_peer(node, CHAIN_HASH_REGTEST)
        assert GossipTimestampFilter.TYPE in await sent_before_a_pong(later)
        assert QueryChannelRange.TYPE not in await sent_before_a_pong(waiting)
        assert set(app._syncs) == {empty.key.node_id, first.key.node_id, second.key.node_id} and not app._unsynced
        progress = app.progress()
        assert progress["synced"] and not progress["syncing"] and len(progress["peers"]) == 3
        for peer in (empty, first, second, waiting, later):
            await peer.aclose()


async def test_with_full_syncs_set_a_failed_sync_makes_room_for_the_next_peer() -> None:
    node, app = make("regtest", config=GossipConfig(flush_interval=0.05, reply_timeout=60.0, sync_peers=2, full_syncs=1))
    async with running((node, app)):
        first, second = await raw_peer(node, CHAIN_HASH_REGTEST), await raw_peer(node, CHAIN_HASH_REGTEST)
        await next_of(first, QueryChannelRange.TYPE)
        await until(lambda: second.key.node_id in app._peers)
        # One sync under way may be enough: the second peer waits.
        assert list(app._syncing) == [first.key.node_id] and list(app._unsynced) == [second.key.node_id]
        await leave(app, first)  # that sync fails: the second's starts
        await offer_a_channel(second, 100)
        await until(lambda: app.progress()["synced"])
        assert app._full_syncs == 1
        await second.aclose()
