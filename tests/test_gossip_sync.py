"""Gossip queries, sans-IO: our sync state machine against the answering functions, and their bounds."""

from __future__ import annotations

import itertools

import pytest

from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import (
    QUERY_OPTION_CHECKSUMS,
    QUERY_OPTION_TIMESTAMPS,
    ChannelAnnouncement,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
    register_gossip_messages,
)
from lnpmsg.gossip.sign import sign_channel_announcement
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.sync import (
    MAX_U32,
    PeerSync,
    SyncState,
    build_range_replies,
    channel_range_ids,
    max_ids_per_reply,
    plan_scid_reply,
)
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.wire import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    DEFAULT_REGISTRY,
    MAX_MESSAGE_SIZE,
    ShortChannelId,
)

CHAIN = CHAIN_HASH_REGTEST
NOW = 1_700_100_000
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())


def serving(net: SyntheticNetwork) -> tuple[Graph, GossipStore]:
    graph = Graph(CHAIN)
    store = GossipStore(":memory:", CHAIN)
    store.apply(graph.process_many([(REGISTRY.decode(m), m) for m in net.messages()], NOW))
    return graph, store


def many_announcements(count: int, per_block: int) -> Graph:
    """A graph with ``count`` channels (announcements only, no signature checks: loaded directly)."""
    graph = Graph(CHAIN)
    for i in range(count):
        scid = ShortChannelId(600_000 + i // per_block, i % per_block, 0).to_int()
        graph.load_channel(scid, b"\x02" * 33, b"\x03" * 33, b"", None, NOW)
        graph.load_update(scid, 0, NOW - i)
    return graph


def run_sync(client: Graph, server: Graph, store: GossipStore, *, extended: bool, max_query_ids: int = 5) -> PeerSync:
    """Drive a PeerSync against the answering functions, feeding the gossip replies to ``client``."""
    sync = PeerSync(CHAIN, extended=extended, max_query_ids=max_query_ids)
    outbox = list(sync.start(0.0).send)
    while outbox:
        query = REGISTRY.decode(outbox.pop(0).encode())
        if isinstance(query, QueryChannelRange):
            replies = build_range_replies(query, channel_range_ids(query, server), server)
            for reply in replies:
                step = sync.on_reply_channel_range(REGISTRY.decode(reply.encode()), client, 1.0)
                assert step.warning is None
                outbox.extend(step.send)
        else:
            assert isinstance(query, QueryShortChannelIds)
            assert len(query.short_channel_ids) <= max_query_ids
            assert (query.query_flags is not None) == extended
            wanted, warning = plan_scid_reply(query, server)
            assert warning is None
            gossip = store.query_reply(wanted)
            client.process_many([(REGISTRY.decode(r), r) for r in gossip], NOW)
            step = sync.on_reply_end(ReplyShortChannelIdsEnd(chain_hash=CHAIN, full_information=1), 2.0)
            assert step.warning is None
            outbox.extend(step.send)
    return sync


@pytest.mark.parametrize("extended", [True, False])
def test_sync_fetches_everything_missing(extended: bool) -> None:
    net = SyntheticNetwork(8, 23, CHAIN)
    server, store = serving(net)
    client = Graph(CHAIN)
    sync = run_sync(client, server, store, extended=extended)
    assert sync.state is SyncState.DONE and sync.percent == 100.0
    assert set(client.channels) == set(server.channels)
    assert client.update_count == server.update_count == 46
    assert client.announced_node_count == 8
    assert sync.progress()["channels_wanted"] == 23 and sync.answered == 23
    assert sync._wanted == [] and sync._offered == []  # a done sync keeps its counters, not the ids


def test_second_sync_asks_only_for_newer_updates() -> None:
    net = SyntheticNetwork(8, 23, CHAIN)
    server, store = serving(net)
    client = Graph(CHAIN)
    run_sync(client, server, store, extended=True)
    again = run_sync(client, server, store, extended=True)
    assert again.offered == 23 and again.wanted == 0


def test_unsolicited_and_bad_replies_warn() -> None:
    sync = PeerSync(CHAIN, extended=True)
    graph = Graph(CHAIN)
    reply = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=0, number_of_blocks=MAX_U32, sync_complete=1, short_channel_ids=[])
    assert sync.on_reply_channel_range(reply, graph, 0.0).warning is not None  # nothing asked yet
    assert sync.on_reply_end(ReplyShortChannelIdsEnd(chain_hash=CHAIN, full_information=1), 0.0).warning is not None
    sync.start(0.0)
    wrong = ReplyChannelRange(chain_hash=CHAIN_HASH_MAINNET, first_blocknum=0, number_of_blocks=10, sync_complete=1, short_channel_ids=[])
    step = sync.on_reply_channel_range(wrong, graph, 0.0)
    assert step.warning and step.finished and sync.state is SyncState.FAILED
    late = PeerSync(CHAIN, extended=False, first_blocknum=100, number_of_blocks=10)
    late.start(0.0)
    not_covering = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=105, number_of_blocks=10, sync_complete=1, short_channel_ids=[])
    assert late.on_reply_channel_range(not_covering, graph, 0.0).warning is not None


def test_replies_going_backwards_fail() -> None:
    sync = PeerSync(CHAIN, extended=False, first_blocknum=0, number_of_blocks=1000)
    sync.start(0.0)
    graph = Graph(CHAIN)
    part = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=0, number_of_blocks=500, sync_complete=0, short_channel_ids=[])
    assert sync.on_reply_channel_range(part, graph, 0.0).warning is None
    back = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=0, number_of_blocks=100, sync_complete=0, short_channel_ids=[])
    assert sync.on_reply_channel_range(back, graph, 0.0).warning is None  # same first block is allowed
    earlier = PeerSync(CHAIN, extended=False, first_blocknum=10, number_of_blocks=1000)
    earlier.start(0.0)
    earlier.on_reply_channel_range(ReplyChannelRange(chain_hash=CHAIN, first_blocknum=10, number_of_blocks=5, sync_complete=0, short_channel_ids=[]), graph, 0.0)
    step = earlier.on_reply_channel_range(ReplyChannelRange(chain_hash=CHAIN, first_blocknum=9, number_of_blocks=5, sync_complete=0, short_channel_ids=[]), graph, 0.0)
    assert step.warning and earlier.state is SyncState.FAILED


def test_timeout_fails_the_sync() -> None:
    sync = PeerSync(CHAIN, extended=True, reply_timeout=10.0)
    sync.start(100.0)
    assert sync.get_timer() == 110.0
    assert not sync.handle_timer(109.0).finished
    step = sync.handle_timer(110.0)
    assert step.finished and sync.state is SyncState.FAILED and "no reply" in sync.reason
    assert sync.get_timer() is None


def test_a_sync_that_fails_mid_range_lets_the_offered_ids_go() -> None:
    net = SyntheticNetwork(8, 23, CHAIN)
    server, _ = serving(net)
    sync = PeerSync(CHAIN, extended=False, reply_timeout=10.0)
    query = sync.start(0.0).send[0]
    first = build_range_replies(query, channel_range_ids(query, server), server)[0]
    partial = ReplyChannelRange(
        chain_hash=CHAIN, first_blocknum=first.first_blocknum, number_of_blocks=1, sync_complete=0,
        short_channel_ids=first.short_channel_ids[:5],
    )  # fmt: skip
    sync.on_reply_channel_range(partial, Graph(CHAIN), 1.0)
    assert len(sync._offered) == 5  # the range phase collects what the peer offers
    assert sync.handle_timer(20.0).finished and sync.state is SyncState.FAILED
    assert sync._offered == [] and sync.progress()["state"] == "failed"


def test_a_query_for_a_billion_blocks_is_bounded_and_split_to_fit() -> None:
    per_block = 40
    graph = many_announcements(7000, per_block)
    query = QueryChannelRange(
        chain_hash=CHAIN,
        first_blocknum=0,
        number_of_blocks=10**9,
        tlvs=QueryChannelRange.tlv_stream(query_option=QUERY_OPTION_TIMESTAMPS | QUERY_OPTION_CHECKSUMS),
    )
    ids = channel_range_ids(query, graph)
    assert len(ids) == 7000
    checksums = {s: (1, 2) for s in ids}
    replies = build_range_replies(query, ids, graph, checksums)
    assert len(replies) == 3  # 7000 ids, ~2700 a reply with both extensions
    assert sum(len(r.short_channel_ids) for r in replies) == 7000
    for reply in replies:
        encoded = reply.encode()
        assert len(encoded) <= MAX_MESSAGE_SIZE
        assert len(reply.timestamps) == len(reply.checksums) == len(reply.short_channel_ids)
        # Blocks are not split across replies.
        assert all(s.block >= reply.first_blocknum and s.block < reply.end_blocknum for s in reply.short_channel_ids)
    assert replies[0].first_blocknum == 0
    for a, b in itertools.pairwise(replies):
        assert a.end_blocknum == b.first_blocknum and not a.sync_complete
    assert replies[-1].sync_complete and replies[-1].end_blocknum == 10**9
    assert max_ids_per_reply(QUERY_OPTION_TIMESTAMPS | QUERY_OPTION_CHECKSUMS) >= 2700


def test_overflowing_ranges_are_clamped() -> None:
    graph = many_announcements(5, 5)
    query = QueryChannelRange(chain_hash=CHAIN, first_blocknum=MAX_U32 - 10, number_of_blocks=MAX_U32)
    replies = build_range_replies(query, channel_range_ids(query, graph), graph)
    assert len(replies) == 1 and replies[0].end_blocknum == MAX_U32 and replies[0].sync_complete
    empty = QueryChannelRange(chain_hash=CHAIN, first_blocknum=5, number_of_blocks=0)
    (reply,) = build_range_replies(empty, channel_range_ids(empty, graph), graph)
    assert reply.first_blocknum == 5 and reply.number_of_blocks == 1
    other_chain = QueryChannelRange(chain_hash=CHAIN_HASH_MAINNET, first_blocknum=0, number_of_blocks=MAX_U32)
    assert channel_range_ids(other_chain, graph) == []


def test_a_block_larger_than_a_reply_is_split() -> None:
    graph = many_announcements(100, 100)  # one block
    query = QueryChannelRange(chain_hash=CHAIN, first_blocknum=600_000, number_of_blocks=1)
    replies = build_range_replies(query, channel_range_ids(query, graph), graph, max_ids=30)
    assert [len(r.short_channel_ids) for r in replies] == [30, 30, 30, 10]
    assert all(r.first_blocknum == 600_000 and r.number_of_blocks == 1 for r in replies)
    # Our own sync accepts that shape.
    sync = PeerSync(CHAIN, extended=False, first_blocknum=600_000, number_of_blocks=1)
    sync.start(0.0)
    client = Graph(CHAIN)
    steps = [sync.on_reply_channel_range(r, client, 0.0) for r in replies]
    assert all(s.warning is None for s in steps) and sync.wanted == 100


def test_plan_scid_reply() -> None:
    graph = many_announcements(3, 3)
    ids = [ShortChannelId.from_int(s) for s in graph.sorted_channels()] + [ShortChannelId(1, 1, 1)]
    plain = QueryShortChannelIds(chain_hash=CHAIN, short_channel_ids=ids)
    wanted, warning = plan_scid_reply(plain, graph)
    assert warning is None and [s for s, _ in wanted] == graph.sorted_channels()
    flagged = QueryShortChannelIds(chain_hash=CHAIN, short_channel_ids=ids, tlvs=QueryShortChannelIds.tlv_stream(query_flags=[1, 0, 2, 1]))
    wanted, _ = plan_scid_reply(flagged, graph)
    assert [f for _, f in wanted] == [1, 2]
    mismatch = QueryShortChannelIds(chain_hash=CHAIN, short_channel_ids=ids, tlvs=QueryShortChannelIds.tlv_stream(query_flags=[1]))
    wanted, warning = plan_scid_reply(mismatch, graph)
    assert wanted == [] and "flags" in warning
    assert plan_scid_reply(QueryShortChannelIds(chain_hash=CHAIN_HASH_MAINNET, short_channel_ids=ids), graph) == ([], None)


def test_too_many_offered_ids_fail_the_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    import lnpmsg.gossip.sync as sync_module

    monkeypatch.setattr(sync_module, "MAX_OFFERED_IDS", 10)
    sync = PeerSync(CHAIN, extended=False)
    sync.start(0.0)
    ids = [ShortChannelId(1, i, 0) for i in range(11)]
    reply = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=0, number_of_blocks=5, sync_complete=0, short_channel_ids=ids)
    step = sync.on_reply_channel_range(reply, Graph(CHAIN), 0.0)
    assert step.finished and sync.state is SyncState.FAILED


def test_wrong_key_announcement_from_sync_is_rejected() -> None:
    """Gossip fetched by queries goes through the same checks as any other."""
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    ann = sign_channel_announcement(*keys, ShortChannelId(5, 5, 5), CHAIN)
    forged = ChannelAnnouncement.decode(ann.encode()[:-33] + ann.bitcoin_key_1)
    decision = Graph(CHAIN).process(forged, now=NOW)
    # The keys are signed over: changing one breaks every signature, the first is named.
    assert not decision.accepted and decision.reason == "node_signature_1 invalid"
