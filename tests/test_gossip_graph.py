"""The sans-IO graph: every accept / ignore / reject rule of BOLT 7, batching, pruning."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.gossip.graph import (
    MAX_FUTURE_SKEW,
    RELAY_BURST,
    STALE_AFTER,
    Graph,
    Outcome,
    Pending,
    routable,
)
from lnpmsg.gossip.messages import (
    QUERY_FLAG_ANNOUNCEMENT,
    QUERY_FLAG_NODE_1,
    QUERY_FLAG_NODE_2,
    QUERY_FLAG_UPDATE_1,
    QUERY_FLAG_UPDATE_2,
    ChannelAnnouncement,
    ChannelUpdate,
    NodeAnnouncement,
    register_gossip_messages,
)
from lnpmsg.gossip.sign import (
    public_key,
    sign_channel_announcement,
    sign_channel_update,
    sign_node_announcement,
)
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.wire import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    DEFAULT_REGISTRY,
    DnsAddr,
    IPv4Addr,
    ShortChannelId,
    WireError,
)

CHAIN = CHAIN_HASH_REGTEST
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
NOW = 1_700_100_000
KEYS = [bytes([i]) * 32 for i in range(1, 9)]
SCID = ShortChannelId(700_000, 1, 0)


def announcement(scid: ShortChannelId = SCID, chain: bytes = CHAIN, features: bytes = b"") -> ChannelAnnouncement:
    return sign_channel_announcement(KEYS[0], KEYS[1], KEYS[2], KEYS[3], scid, chain, features=features)


def signer(ann: ChannelAnnouncement, direction: int) -> bytes:
    want = ann.node_id_1 if direction == 0 else ann.node_id_2
    return next(k for k in KEYS[:2] if public_key(k) == want)


def update(ann: ChannelAnnouncement, timestamp: int, direction: int = 0, **kw: object) -> ChannelUpdate:
    return sign_channel_update(signer(ann, direction), ann.short_channel_id, ann.chain_hash, timestamp, direction=direction, **kw)  # type: ignore[arg-type]


def graph_with_channel() -> tuple[Graph, ChannelAnnouncement]:
    graph = Graph(CHAIN)
    ann = announcement()
    assert graph.process(ann, now=NOW).accepted
    return graph, ann


def test_channel_announcement_rules() -> None:
    graph = Graph(CHAIN)
    ann = announcement()
    first = graph.process(ann, now=NOW)
    assert first.accepted and first.relay and first.first_seen == NOW
    assert graph.has_channel(SCID.to_int()) and len(graph.nodes) == 2
    # Known channel: ignored, and without a signature check.
    checked = graph.verifier.checked
    again = graph.process(ann, now=NOW)
    assert again.outcome is Outcome.IGNORED and again.reason == "known channel"
    assert graph.verifier.checked == checked
    # Another chain: ignored (BOLT 7: MUST ignore), no warning.
    other = graph.process(announcement(ShortChannelId(1, 1, 1), CHAIN_HASH_MAINNET), now=NOW)
    assert other.outcome is Outcome.IGNORED and other.reason == "unknown chain" and not other.warn


def test_bad_signature_is_rejected_with_a_warning_and_remembered() -> None:
    graph = Graph(CHAIN)
    ann = announcement()
    bad = dataclasses.replace(ann, bitcoin_signature_2=ann.bitcoin_signature_1)
    decision = graph.process(bad, now=NOW)
    assert decision.outcome is Outcome.REJECTED and decision.warn
    assert decision.reason == "bitcoin_signature_2 invalid"
    assert not graph.has_channel(SCID.to_int()) and not graph.nodes
    # The same bad bytes again cost a lookup, not four signature checks.
    checked = graph.verifier.checked
    repeat = graph.process(bad, now=NOW)
    assert repeat.outcome is Outcome.REJECTED and "seen before" in repeat.reason and not repeat.warn
    assert graph.verifier.checked == checked
    # The genuine one is still accepted afterwards.
    assert graph.process(ann, now=NOW).accepted


def test_channel_update_rules() -> None:
    graph, ann = graph_with_channel()
    scid = SCID.to_int()
    assert graph.process(update(ann, NOW - 100, 0), now=NOW).accepted
    assert graph.channels[scid].update_ts == [NOW - 100, 0]
    checked = graph.verifier.checked
    for ts in (NOW - 100, NOW - 200):  # equal or older: ignored without a signature check
        d = graph.process(update(ann, ts, 0, fee_base_msat=5), now=NOW)
        assert d.outcome is Outcome.IGNORED and d.reason == "not newer"
    assert graph.verifier.checked == checked
    # Newer: accepted; the other direction is independent.
    assert graph.process(update(ann, NOW - 50, 0), now=NOW).accepted
    assert graph.process(update(ann, NOW - 500, 1), now=NOW).accepted
    assert graph.channels[scid].update_ts == [NOW - 50, NOW - 500]
    # Signed by the wrong node (node 1 signing direction 1): rejected with a warning.
    wrong = sign_channel_update(signer(ann, 0), SCID, CHAIN, NOW, direction=1)
    d = graph.process(wrong, now=NOW)
    assert d.outcome is Outcome.REJECTED and d.warn and d.reason == "signature (by node_id_2) invalid"
    # Unknown channel: ignored, remembered as a channel to ask about.
    other = ShortChannelId(1, 2, 3)
    d = graph.process(sign_channel_update(KEYS[0], other, CHAIN, NOW, direction=0), now=NOW)
    assert d.outcome is Outcome.IGNORED and d.reason == "unknown channel"
    assert graph.take_unknown_channels(10) == [other.to_int()]
    # Wrong chain, far future.
    d = graph.process(sign_channel_update(signer(ann, 0), SCID, CHAIN_HASH_MAINNET, NOW, direction=0), now=NOW)
    assert d.outcome is Outcome.IGNORED and d.reason == "unknown chain"
    d = graph.process(update(ann, NOW + MAX_FUTURE_SKEW + 1, 0), now=NOW)
    assert d.outcome is Outcome.REJECTED and "future" in d.reason and not d.warn
    assert graph.process(update(ann, NOW + MAX_FUTURE_SKEW, 0), now=NOW).accepted


def test_dont_forward_updates_are_stored_not_relayed() -> None:
    graph, ann = graph_with_channel()
    d = graph.process(update(ann, NOW, 0, dont_forward=True), now=NOW)
    assert d.accepted and not d.relay


def test_a_decision_cannot_be_changed_after_the_graph_gave_it() -> None:
    graph, ann = graph_with_channel()
    d = graph.process(update(ann, NOW, 0), now=NOW)
    with pytest.raises(AttributeError):
        d.outcome = Outcome.REJECTED  # type: ignore[misc]
    assert d.accepted and d.kind == "channel_update" and d.reason == "" and d.relay


def test_relay_is_rate_limited_per_direction() -> None:
    graph, ann = graph_with_channel()
    relays = [graph.process(update(ann, NOW - 1000 + i, 0), now=NOW).relay for i in range(RELAY_BURST + 3)]
    assert relays == [True] * RELAY_BURST + [False] * 3
    # Still stored: the newest timestamp is the graph's.
    assert graph.channels[SCID.to_int()].update_ts[0] == NOW - 1000 + RELAY_BURST + 2
    # The other direction has its own budget; time refills it.
    assert graph.process(update(ann, NOW - 10, 1), now=NOW).relay
    assert graph.process(update(ann, NOW, 0), now=NOW + 86_400).relay


def test_node_announcement_rules() -> None:
    graph = Graph(CHAIN)
    node = sign_node_announcement(KEYS[0], NOW - 10, alias="one", addresses=[IPv4Addr("1.2.3.4", 9735)])
    d = graph.process(node, now=NOW)
    assert d.outcome is Outcome.IGNORED and d.reason == "unknown node (no channel)"
    graph.process(announcement(), now=NOW)
    assert graph.process(node, now=NOW).accepted
    assert graph.process(node, now=NOW).reason == "not newer"
    newer = sign_node_announcement(KEYS[0], NOW, alias="two", addresses=[DnsAddr("a.example", 1), DnsAddr("b.example", 2)])
    d = graph.process(newer, now=NOW)
    assert d.accepted and not d.relay  # two DNS names: kept, not forwarded
    malformed = sign_node_announcement(KEYS[1], NOW, alias="bad")
    malformed = dataclasses.replace(malformed, addresses=b"\x01\x01\x02")
    d = graph.process(malformed, now=NOW)
    assert d.outcome is Outcome.REJECTED and d.warn and "addresses" in d.reason
    forged = dataclasses.replace(sign_node_announcement(KEYS[1], NOW, alias="x"), alias=b"forged".ljust(32, b"\x00"))
    d = graph.process(forged, now=NOW)
    assert d.outcome is Outcome.REJECTED and d.reason == "signature invalid"
    assert graph.announced_node_count == 1


def test_unknown_even_features_are_stored_but_not_routable() -> None:
    graph = Graph(CHAIN)
    features = (1 << 100).to_bytes(13, "big")  # an unknown required bit
    d = graph.process(announcement(features=features), now=NOW)
    assert d.accepted
    assert not routable(features) and routable(b"") and routable((1 << 101).to_bytes(13, "big"))


def test_batch_sees_pending_announcements_and_handles_their_failure() -> None:
    graph = Graph(CHAIN)
    good = announcement()
    bad = dataclasses.replace(announcement(ShortChannelId(700_001, 1, 0)), node_signature_1=bytes(64))
    items = [good, update(good, NOW, 0), bad, update(bad, NOW, 0)]
    node = sign_node_announcement(KEYS[0], NOW)
    items.append(node)
    decisions = graph.process_many([(m, m.encode()) for m in items], NOW)
    assert [d.outcome for d in decisions] == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.REJECTED, Outcome.IGNORED, Outcome.ACCEPTED]
    assert decisions[3].reason == "unknown channel"  # its announcement failed in the same batch
    assert not graph._pending_channels and not graph._pending_update_ts and not graph._pending_node_ts


def test_two_phase_abandon_releases_pending_marks() -> None:
    graph = Graph(CHAIN)
    ann = announcement()
    step = graph.prepare(ann, ann.encode(), NOW)
    assert isinstance(step, Pending)
    # A copy prepared while the first is pending: decided at commit, by what is committed then.
    copy = graph.prepare(ann, ann.encode(), NOW)
    assert isinstance(copy, Pending) and copy.shadow
    graph.abandon(copy)  # holds no marks: the first one's stay
    assert graph._pending_channels
    graph.abandon(step)
    assert not graph._pending_channels
    assert isinstance(graph.prepare(ann, ann.encode(), NOW), Pending)


def test_a_copy_prepared_behind_a_failing_original_is_decided_as_if_it_came_after() -> None:
    """One message at a time, a bad announcement is rejected and its good copy then accepted:
    prepared together (a batch, or batches in flight), the decisions are the same."""
    good = announcement()
    raw = good.encode()
    bad = raw[:-1] + bytes([raw[-1] ^ 1])
    one_by_one = Graph(CHAIN)
    expected = [one_by_one.process(ChannelAnnouncement.decode(r), r, NOW) for r in (bad, raw, raw)]
    graph = Graph(CHAIN)
    steps = [graph.prepare(ChannelAnnouncement.decode(r), r, NOW) for r in (bad, raw, raw)]
    assert all(isinstance(s, Pending) for s in steps)
    got = [graph.commit(s, graph.verifier.verify_many(s.checks), NOW) for s in steps]  # type: ignore[union-attr]
    assert [(d.outcome, d.reason) for d in got] == [(d.outcome, d.reason) for d in expected]
    assert [d.outcome for d in got] == [Outcome.REJECTED, Outcome.ACCEPTED, Outcome.IGNORED]
    assert graph.counters.signature_checks == one_by_one.counters.signature_checks == 8
    assert not graph._pending_channels and not graph._pending_node_refs


def test_wanted_plans_queries() -> None:
    graph, ann = graph_with_channel()
    scid = SCID.to_int()
    graph.process(update(ann, NOW - 100, 0), now=NOW)
    unknown = ShortChannelId(800_000, 0, 0).to_int()
    wanted = graph.wanted([(scid, NOW - 100, NOW - 5), (unknown, 0, 0), (scid + 1, 0, 0)])
    all_flags = QUERY_FLAG_ANNOUNCEMENT | QUERY_FLAG_UPDATE_1 | QUERY_FLAG_UPDATE_2 | QUERY_FLAG_NODE_1 | QUERY_FLAG_NODE_2
    assert wanted == [(scid, QUERY_FLAG_UPDATE_2 | QUERY_FLAG_NODE_1 | QUERY_FLAG_NODE_2), (scid + 1, all_flags), (unknown, all_flags)]
    assert graph.wanted([(scid, NOW - 100, 0)]) == []


def test_block_ranges() -> None:
    graph = Graph(CHAIN)
    net = SyntheticNetwork(4, 30, CHAIN, node_announcements=False, updates_per_channel=0)
    for raw in net.messages():
        assert graph.process(ChannelAnnouncement.decode(raw), raw, NOW).accepted
    ids = graph.sorted_channels()
    assert ids == sorted(ids) and len(ids) == 30
    assert graph.channels_in_blocks(net.first_block, net.first_block + 1) == ids
    assert graph.channels_in_blocks(0, 10**9) == ids  # a huge range is bounded by what we hold
    assert graph.channels_in_blocks(net.first_block + 1, 2**32) == []


def test_prune_and_remove() -> None:
    graph, ann = graph_with_channel()
    scid = SCID.to_int()
    graph.process(update(ann, NOW, 0), now=NOW)
    # Direction 1 never updated: its age is when we learned the channel (NOW).
    assert graph.stale_channels(NOW + STALE_AFTER - 1) == []
    assert graph.stale_channels(NOW + STALE_AFTER + 1) == [scid]
    removed = graph.prune(NOW + STALE_AFTER + 1)
    assert [r.short_channel_id for r in removed] == [scid]
    assert set(removed[0].orphaned_nodes) == {ann.node_id_1, ann.node_id_2}
    assert not graph.channels and not graph.nodes
    assert graph.remove_channel(scid) is None


def test_graph_is_sans_io() -> None:
    for name in ("graph.py", "verify.py", "messages.py", "sync.py", "cln_store.py", "sign.py", "checksum.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / "lnpmsg" / "gossip" / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"trio", "socket", "time", "sqlite3", "zmq"}, name


@pytest.mark.parametrize("bad_type", [b"not a message", 42])
def test_prepare_refuses_non_gossip(bad_type: object) -> None:
    with pytest.raises(TypeError):
        Graph(CHAIN).prepare(bad_type, b"", NOW)  # type: ignore[arg-type]


def test_node_announcement_in_the_same_batch_as_its_channel() -> None:
    graph = Graph(CHAIN)
    ann = announcement()
    node = sign_node_announcement(KEYS[1], NOW, alias="early")
    decisions = graph.process_many([(ann, ann.encode()), (node, node.encode())], NOW)
    assert all(d.accepted for d in decisions)
    assert isinstance(decisions[1].message, NodeAnnouncement)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_decodable_gossip_gets_a_decision(data: st.DataObject) -> None:
    """Mutated real messages: decode fails with WireError, or the graph decides (never raises)."""
    graph, ann = graph_with_channel()
    base = data.draw(st.sampled_from([ann.encode(), update(ann, NOW, 0).encode(), sign_node_announcement(KEYS[0], NOW, alias="f").encode()]))
    flips = data.draw(st.lists(st.tuples(st.integers(2, len(base) - 1), st.integers(0, 255)), max_size=4))
    raw = bytearray(base)
    for pos, value in flips:
        raw[pos] = value
    raw = bytes(raw) + data.draw(st.binary(max_size=8))
    try:
        msg = REGISTRY.decode(raw)
    except WireError:
        return
    decision = graph.process(msg, raw, NOW)
    assert decision.outcome in (Outcome.ACCEPTED, Outcome.IGNORED, Outcome.REJECTED)
    if flips and raw[:len(base)] != base and decision.accepted:
        # Only bytes outside the signed range may change and still verify: none for these messages.
        raise AssertionError(f"a changed signed message was accepted: {decision}")
