"""Import of Core Lightning gossip_store files: the real mainnet and regtest data."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.gossip.cln_store import (
    FLAG_DELETED,
    import_gossip_store,
    load_gossip_store_file,
    read_gossip_store,
)
from lnpmsg.gossip.errors import GossipError
from lnpmsg.gossip.graph import Graph, Outcome
from lnpmsg.gossip.store import GossipStore
from lnpmsg.wire import CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST, ShortChannelId

GOSSIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gossip"
PART1 = GOSSIP / "gossip_store-part1.xz"
PART2 = GOSSIP / "gossip_store-part2.xz"
SIMPLE = GOSSIP / "gossip_store.simple.xz"
NOW = time.time()


def scid(text: str) -> int:
    return ShortChannelId.parse(text).to_int()


def test_mainnet_store_counts_exactly() -> None:
    records = list(read_gossip_store(load_gossip_store_file(PART1, PART2)))
    graph = Graph(CHAIN_HASH_MAINNET)
    result = import_gossip_store(records, graph, NOW)
    # 89 channel_announcement (1 deleted), 8 channel_update (4 deleted), 0 node_announcement
    assert result.live["channel_announcement"] + result.deleted["channel_announcement"] == 89
    assert result.deleted["channel_announcement"] == 1
    assert result.live["channel_update"] + result.deleted["channel_update"] == 8
    assert result.deleted["channel_update"] == 4
    assert result.live["node_announcement"] == result.deleted["node_announcement"] == 0
    # Every live record verifies: nothing rejected, nothing malformed.
    assert result.outcomes == {"channel_announcement: accepted": 88, "channel_update: accepted": 4}
    assert not result.rejected and not result.malformed
    assert graph.counters.signature_checks == 88 * 4 + 4


def test_deleted_records_are_honoured() -> None:
    data = load_gossip_store_file(PART1, PART2)
    records = list(read_gossip_store(data))
    graph = Graph(CHAIN_HASH_MAINNET)
    result = import_gossip_store(records, graph, NOW)
    deleted_channels = {
        ShortChannelId.from_bytes(r.msg[2 + 256 + 2 + 32 : 2 + 256 + 2 + 32 + 8]) for r in records if r.type == 256 and r.flags & FLAG_DELETED
    }
    assert len(deleted_channels) == 1
    for sid in deleted_channels:
        assert not graph.has_channel(sid.to_int())
    # The deleted updates are not in the graph: only the live ones' timestamps are.
    live_updates = {(r.msg[2 + 64 + 32 : 2 + 64 + 40], r.msg[2 + 64 + 32 + 8 : 2 + 64 + 32 + 12]) for r in records if r.type == 258 and not r.deleted}
    assert graph.update_count == len(live_updates) == 4
    # Part 2 ends with a delete_chan record: that channel, and its node left without channels, go
    # (as Core Lightning's own gossmap test expects).
    assert not graph.has_channel(scid("686386x1093x1"))
    assert bytes.fromhex("029deaf9d2fba868fe0a124050f0a13e021519a12f41bea34f391fe7533fb3166d") not in graph.nodes
    assert bytes.fromhex("02e0af3c70bf42343316513e54683b10c01d906c04a05dfcd9479b90d7beed9129") in graph.nodes
    assert len(graph) == 87
    assert [r.short_channel_id for r in result.removals] == [scid("686386x1093x1")]


def test_capacity_comes_from_channel_amount_records() -> None:
    graph = Graph(CHAIN_HASH_MAINNET)
    import_gossip_store(read_gossip_store(load_gossip_store_file(PART1, PART2)), graph, NOW)
    assert graph.channels[scid("686200x1137x0")].capacity_sat == 3_000_000


def test_part1_alone_then_part2_gives_the_same_graph() -> None:
    one = Graph(CHAIN_HASH_MAINNET)
    import_gossip_store(read_gossip_store(load_gossip_store_file(PART1, PART2)), one, NOW)
    two = Graph(CHAIN_HASH_MAINNET)
    first = import_gossip_store(read_gossip_store(load_gossip_store_file(PART1)), two, NOW)
    assert len(two) < len(one)
    import_gossip_store(read_gossip_store(load_gossip_store_file(PART2), has_version=False), two, NOW)
    assert set(two.channels) == set(one.channels)
    assert first.outcomes["channel_announcement: accepted"] > 0


def test_regtest_store_with_node_announcements(tmp_path: Path) -> None:
    graph = Graph(CHAIN_HASH_REGTEST)
    result = import_gossip_store(read_gossip_store(load_gossip_store_file(SIMPLE)), graph, NOW)
    assert result.live == {"channel_announcement": 1, "node_announcement": 2, "channel_update": 2}
    assert all(d.outcome is Outcome.ACCEPTED for d in result.decisions)
    with GossipStore(tmp_path / "g.sqlite3", CHAIN_HASH_REGTEST) as store:
        store.apply(result.decisions, result.removals)
        channel = store.get_channel(scid("103x1x0"))
        assert channel is not None
        l1 = "022d223620a359a47ff7f7ac447c85c46c923da53389221a0054c11c1e3ca31d59"
        l2 = "0266e4598d1d3c415f572a8488830b60f7e744ed9235eb0b1ba93283b315c03518"
        assert (channel["node_id_1"], channel["node_id_2"]) == (l1, l2)
        half0, half1 = channel["policies"]
        assert half0["source"] == l1 and half1["source"] == l2
        # The policies are the raw updates' fields, read here by hand.
        for record in read_gossip_store(load_gossip_store_file(SIMPLE)):
            if record.type != 258:
                continue
            ts, mflags, cflags, cltv, hmin, base, ppm, hmax = struct.unpack_from(">IBBHQIIQ", record.msg, 2 + 64 + 32 + 8)
            half = channel["policies"][cflags & 1]
            assert (half["timestamp"], half["message_flags"], half["channel_flags"]) == (ts, mflags, cflags)
            assert (half["cltv_expiry_delta"], half["htlc_minimum_msat"], half["htlc_maximum_msat"]) == (cltv, hmin, hmax)
            assert (half["fee_base_msat"], half["fee_proportional_millionths"]) == (base, ppm)
        assert channel["capacity_sat"] == 1_000_000
        nodes = {n["node_id"]: n for n in store.list_nodes()}
        assert set(nodes) == {l1, l2} and all(n["announced"] for n in nodes.values())
        assert "example.com:1236" in nodes[l2]["addresses"]
        assert any(".onion:" in a for a in nodes[l2]["addresses"])


def test_bad_files() -> None:
    with pytest.raises(GossipError, match="version"):
        list(read_gossip_store(b"\x20"))  # major version 1
    with pytest.raises(GossipError, match="version"):
        list(read_gossip_store(b"\x11"))  # minor 17
    with pytest.raises(GossipError, match="empty"):
        list(read_gossip_store(b""))
    with pytest.raises(GossipError, match="cannot read"):
        load_gossip_store_file(GOSSIP / "does-not-exist.xz")
    data = load_gossip_store_file(SIMPLE)
    whole = list(read_gossip_store(data))
    # A store cut mid-record (being written) gives the whole records before the cut.
    assert list(read_gossip_store(data[:-5])) == whole[:-1]


def test_garbage_records_are_counted_not_raised() -> None:
    record = struct.pack(">HHII", 0, 6, 0, 0) + b"\x01\x00abcd"  # a "channel_announcement" of 4 bytes
    result = import_gossip_store(read_gossip_store(b"\x0f" + record), Graph(CHAIN_HASH_MAINNET), NOW)
    assert len(result.malformed) == 1 and not result.decisions


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), version=st.booleans())
def test_any_bytes_read_as_records_or_gossip_error(data: bytes, version: bool) -> None:
    try:
        records = list(read_gossip_store(data, has_version=version))
    except GossipError:
        return
    result = import_gossip_store(records, Graph(CHAIN_HASH_MAINNET), NOW)
    assert result.records == len(records)


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(0, 5000), flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6))
def test_damaged_real_store_never_crashes(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(load_gossip_store_file(SIMPLE)[: cut + 1])
    for pos, value in flips:
        if 0 < pos < len(data):
            data[pos] = value
    try:
        records = list(read_gossip_store(bytes(data)))
    except GossipError:
        return
    result = import_gossip_store(records, Graph(CHAIN_HASH_REGTEST), NOW)
    assert all(d.outcome in (Outcome.ACCEPTED, Outcome.IGNORED, Outcome.REJECTED) for d in result.decisions)
