"""The SQLite gossip store: what is kept, byte for byte, across restarts; reads for queries and the API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from lnpmsg.gossip.checksum import channel_update_checksum, crc32c
from lnpmsg.gossip.errors import GossipError
from lnpmsg.gossip.graph import Graph
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
from lnpmsg.gossip.sign import sign_channel_announcement
from lnpmsg.gossip.store import AsyncGossipStore, GossipStore
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.wire import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    DEFAULT_REGISTRY,
    ShortChannelId,
)

CHAIN = CHAIN_HASH_REGTEST
NOW = 1_700_100_000
NET = SyntheticNetwork(6, 12, CHAIN)
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
ALL = QUERY_FLAG_ANNOUNCEMENT | QUERY_FLAG_UPDATE_1 | QUERY_FLAG_UPDATE_2 | QUERY_FLAG_NODE_1 | QUERY_FLAG_NODE_2


def filled(path: str | Path) -> tuple[GossipStore, Graph, list[bytes]]:
    store = GossipStore(path, CHAIN)
    graph = Graph(CHAIN)
    messages = list(NET.messages())
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in messages], NOW)
    assert all(d.accepted for d in decisions)
    store.apply(decisions)
    return store, graph, messages


def test_restart_keeps_everything_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "gossip.sqlite3"
    store, graph, messages = filled(path)
    store.close()
    with GossipStore(path, CHAIN) as again:
        assert again.counts()["channels"] == 12
        reloaded = Graph(CHAIN)
        again.load_into(reloaded)
        assert set(reloaded.channels) == set(graph.channels)
        assert {k: c.update_ts for k, c in reloaded.channels.items()} == {k: c.update_ts for k, c in graph.channels.items()}
        assert {k: n.timestamp for k, n in reloaded.nodes.items()} == {k: n.timestamp for k, n in graph.nodes.items()}
        stored = set()
        for scid in reloaded.channels:
            stored.add(again.channel_announcement(scid))
            stored.update(u for u in again.channel_updates(scid) if u)
        for node_id in reloaded.nodes:
            stored.add(again.node_announcement(node_id))
        assert stored == set(messages)
    # WAL mode, as asked.
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_store_belongs_to_one_chain(tmp_path: Path) -> None:
    GossipStore(tmp_path / "g", CHAIN).close()
    with pytest.raises(GossipError, match="chain"):
        GossipStore(tmp_path / "g", CHAIN_HASH_MAINNET)
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(GossipError):
        GossipStore(tmp_path / "junk", CHAIN)


def test_query_reply_order_and_dedupe() -> None:
    store, graph, _ = filled(":memory:")
    ids = graph.sorted_channels()[:3]
    reply = store.query_reply([(s, ALL) for s in ids])
    types = [REGISTRY.decode(r) for r in reply]
    # Per channel: announcement, updates, then node announcements not sent before in this reply.
    seen_nodes: set[bytes] = set()
    i = 0
    for scid in ids:
        ann = types[i]
        assert isinstance(ann, ChannelAnnouncement) and ann.short_channel_id.to_int() == scid
        i += 1
        while i < len(types) and isinstance(types[i], ChannelUpdate):
            assert types[i].short_channel_id.to_int() == scid
            i += 1
        while i < len(types) and isinstance(types[i], NodeAnnouncement):
            assert types[i].node_id not in seen_nodes and types[i].node_id in (ann.node_id_1, ann.node_id_2)
            seen_nodes.add(types[i].node_id)
            i += 1
    assert i == len(types)
    # Flags select: only direction 2's update; unknown ids give nothing.
    only = store.query_reply([(ids[0], QUERY_FLAG_UPDATE_2), (ShortChannelId(1, 1, 1).to_int(), ALL)])
    assert len(only) == 1 and REGISTRY.decode(only[0]).channel_flags & 1 == 1


def test_time_range_pages() -> None:
    store, _, messages = filled(":memory:")
    out, cursor = [], None
    while True:
        page, cursor = store.time_range_page(0, 2**32, cursor, limit=5)
        out.extend(page)
        if cursor is None:
            break
    assert sorted(out) == sorted(messages)
    # An announcement always right before the updates that carry it.
    for i, raw in enumerate(out):
        if raw[:2] == b"\x01\x02":
            scid = REGISTRY.decode(raw).short_channel_id
            j = i
            while out[j][:2] == b"\x01\x02":
                j -= 1
            assert REGISTRY.decode(out[j]).short_channel_id == scid
    # Only what falls in the range: updates of channel 0 are at base_timestamp + 0 and + 1.
    page, cursor = store.time_range_page(NET.base_timestamp + 1, NET.base_timestamp + 2)
    kinds = [REGISTRY.decode(r) for r in page]
    assert any(isinstance(k, ChannelUpdate) and k.timestamp == NET.base_timestamp + 1 for k in kinds)
    assert all(getattr(k, "timestamp", NET.base_timestamp + 1) in (NET.base_timestamp + 1,) for k in kinds)


def test_listing_and_lookup() -> None:
    store, _, _ = filled(":memory:")
    channels = store.list_channels(limit=100)
    assert len(channels) == 12
    first = channels[0]
    assert first["policies"][0]["source"] == first["node_id_1"]
    page = store.list_channels(after=ShortChannelId.parse(channels[4]["short_channel_id"]).to_int(), limit=3)
    assert [c["short_channel_id"] for c in page] == [c["short_channel_id"] for c in channels[5:8]]
    node_id = bytes.fromhex(first["node_id_1"])
    mine = store.list_channels(node_id)
    assert mine and all(first["node_id_1"] in (c["node_id_1"], c["node_id_2"]) for c in mine)
    node = store.get_node(node_id)
    assert node is not None and node["announced"] and node["alias"].startswith("synthetic-")
    assert node["addresses"] and set(node["channels"]) == {c["short_channel_id"] for c in mine}
    assert store.get_node(b"\x02" * 33) is None
    assert store.get_channel(ShortChannelId(1, 1, 1).to_int()) is None
    nodes = store.list_nodes(limit=100)
    assert len(nodes) == 6 and [n["node_id"] for n in nodes] == sorted(n["node_id"] for n in nodes)


def _node_index_truth(store: GossipStore) -> dict[bytes, list[str]]:
    """Each node's channels, read from the channels table itself (no index)."""
    out: dict[bytes, list[str]] = {}
    for c in store.list_channels(limit=1000):
        for side in ("node_id_1", "node_id_2"):
            out.setdefault(bytes.fromhex(c[side]), []).append(c["short_channel_id"])
    return out


def _check_node_index(store: GossipStore) -> None:
    truth = _node_index_truth(store)
    assert [n["node_id"] for n in store.list_nodes(limit=1000)] == sorted(n.hex() for n in truth)
    after, paged = None, []
    while page := store.list_nodes(after=after, limit=2):
        paged += [n["node_id"] for n in page]
        after = bytes.fromhex(page[-1]["node_id"])
    assert paged == sorted(n.hex() for n in truth)
    for node_id, scids in truth.items():
        assert [c["short_channel_id"] for c in store.list_channels(node_id)] == scids
        node = store.get_node(node_id)
        assert node is not None and node["channels"] == scids
        # pages through one node's channels, from just after the last one seen
        got, after_scid = [], None
        while page := store.list_channels(node_id, after=after_scid, limit=1):
            got.append(page[0]["short_channel_id"])
            after_scid = ShortChannelId.parse(got[-1]).to_int()
        assert got == scids


def test_node_index_pending_and_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels by node are found whether their entries wait in node_channels_new or were
    settled into node_channels, across restarts, and leave with their channel."""
    from lnpmsg.gossip import store_nodes

    monkeypatch.setattr(store_nodes, "SETTLE_CHANNELS", 5)
    path = tmp_path / "gossip.sqlite3"
    store = GossipStore(path, CHAIN)
    graph = Graph(CHAIN)
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in NET.messages()], NOW)
    sizes = []
    for i in range(0, len(decisions), 4):  # a channel's three messages, and sometimes a node's
        store.apply(decisions[i : i + 4])
        sizes.append(tuple(store._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("node_channels", "node_channels_new")))
        _check_node_index(store)
    assert any(settled and pending for settled, pending in sizes)  # both kinds at once, at some point
    store.close()
    with GossipStore(path, CHAIN) as again:
        _check_node_index(again)
        # removals take a channel out of the index, settled or pending
        pending = [r[0] + (1 << 63) for r in again._db.execute("SELECT scid FROM node_channels_new ORDER BY scid")]
        settled = [r[0] + (1 << 63) for r in again._db.execute("SELECT DISTINCT scid FROM node_channels ORDER BY scid")]
        assert pending and settled
        gone = [graph.remove_channel(scid, "closed") for scid in (pending[0], settled[0], settled[-1])]
        again.apply([], [g for g in gone if g is not None])
        assert len(_node_index_truth(again)) and sum(map(len, _node_index_truth(again).values())) == 2 * (12 - 3)
        _check_node_index(again)


def test_version_1_store_is_migrated(tmp_path: Path) -> None:
    """A store of schema version 1 (channels indexed by node id, nodes WITHOUT ROWID) opens as
    version 2: its channels found by node, its nodes kept byte for byte, its old indexes gone."""
    path = tmp_path / "gossip.sqlite3"
    store, graph, _ = filled(path)
    truth = _node_index_truth(store)
    announced = {n: store.node_announcement(n) for n in graph.nodes}
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "DROP TABLE node_channels; DROP TABLE node_channels_new;"
        " CREATE INDEX channels_node_1 ON channels (node_id_1); CREATE INDEX channels_node_2 ON channels (node_id_2);"
        " CREATE TABLE nodes_v1 (node_id BLOB PRIMARY KEY, timestamp INTEGER NOT NULL, features BLOB NOT NULL,"
        " alias BLOB NOT NULL, rgb_color BLOB NOT NULL, addresses BLOB NOT NULL, raw BLOB NOT NULL) WITHOUT ROWID;"
        " INSERT INTO nodes_v1 SELECT node_id, timestamp, features, alias, rgb_color, addresses, raw FROM nodes;"
        " DROP TABLE nodes; ALTER TABLE nodes_v1 RENAME TO nodes; CREATE INDEX nodes_timestamp ON nodes (timestamp);"
        " CREATE INDEX updates_timestamp ON updates (timestamp);"
        " UPDATE meta SET value = 1 WHERE key = 'schema_version';"
    )
    db.close()
    with GossipStore(path, CHAIN) as again:
        assert _node_index_truth(again) == truth
        _check_node_index(again)
        assert all(announced.values()) and {n: again.node_announcement(n) for n in announced} == announced
        schema = dict(again._db.execute("SELECT name, sql FROM sqlite_schema"))
        assert not schema.keys() & {"channels_node_1", "channels_node_2", "updates_timestamp", "nodes_v1", "nodes_v2"}
        assert {"nodes_node_id", "nodes_timestamp"} <= schema.keys() and "WITHOUT ROWID" not in schema["nodes"]
        assert again._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == 2
        assert again._db.execute("SELECT COUNT(*) FROM node_channels").fetchone()[0] == 2 * again.counts()["channels"]


def test_removals_delete_rows() -> None:
    store, graph, _ = filled(":memory:")
    removed = graph.prune(NOW + 10**8)
    assert len(removed) == 12
    store.apply([], removed)
    counts = store.counts()
    assert (counts["channels"], counts["updates"], counts["node_announcements"]) == (0, 0, 0)


def test_huge_short_channel_ids_fit() -> None:
    """Block heights use 3 bytes: ids above 2**63 must still store and sort."""
    store = GossipStore(":memory:", CHAIN)
    graph = Graph(CHAIN)
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    for block in (5, 2**24 - 1):
        ann = sign_channel_announcement(*keys, ShortChannelId(block, 0, 0), CHAIN)
        store.apply([graph.process(ann, now=NOW)])
    listed = [c["short_channel_id"] for c in store.list_channels()]
    assert listed == ["5x0x0", f"{2**24 - 1}x0x0"]
    assert store.list_channels(after=ShortChannelId(2**24 - 1, 0, 0).to_int()) == []
    assert store.channel_announcement(ShortChannelId(2**24 - 1, 0, 0).to_int()) is not None


def test_checksums() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    store, graph, _ = filled(":memory:")
    scid = graph.sorted_channels()[0]
    raw1, raw2 = store.channel_updates(scid)
    sums = store.update_checksums([scid])
    assert sums[scid] == (channel_update_checksum(raw1), channel_update_checksum(raw2))
    # Signature and timestamp do not count.
    changed = raw1[:2] + bytes(64) + raw1[66:106] + b"\xff\xff\xff\xff" + raw1[110:]
    assert channel_update_checksum(changed) == channel_update_checksum(raw1)


async def test_async_store_runs_off_the_event_loop() -> None:
    store, _, _ = filled(":memory:")
    astore = AsyncGossipStore(store)
    results = []

    async def read() -> None:
        results.append(await astore.run(store.list_channels, limit=5))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(read)
    assert len(results) == 4 and all(len(r) == 5 for r in results)
    assert await astore.query_reply([]) == []


async def test_queued_writes_share_a_transaction_and_keep_their_order() -> None:
    """The app's writer puts writes that queued up into one transaction, but never past a
    removal (a transaction inserts before it deletes) or a barrier."""
    from lnpmsg.gossip.app import GossipApp

    graph = Graph(CHAIN)
    messages = list(NET.messages())
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in messages], NOW)
    announcements = [d for d in decisions if d.kind == "channel_announcement"]
    first, second, rest = announcements[0], announcements[1], announcements[2:]
    removed = graph.remove_channel(first.message.short_channel_id.to_int(), "closed")
    assert removed is not None
    store = GossipStore(":memory:", CHAIN)
    app = GossipApp(store)
    calls: list[tuple[int, int]] = []
    apply = store.apply

    def spy(decisions, removals=()):  # type: ignore[no-untyped-def]
        calls.append((len(decisions), len(removals)))
        return apply(decisions, removals)

    store.apply = spy  # type: ignore[method-assign]
    done = trio.Event()
    for item in (
        ("write", [first], ()),
        ("write", [second], [removed]),  # first is deleted after both are inserted
        ("write", [first], ()),  # ... and written again after the delete
        ("write", rest, ()),
        ("barrier", done),
        ("write", [second], ()),
    ):
        app._writes_send.send_nowait(item)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app._writer_loop)
        await done.wait()
        assert calls == [(2, 1), (1 + len(rest), 0)]
        nursery.cancel_scope.cancel()
    assert store.counts()["channels"] == len(announcements)
