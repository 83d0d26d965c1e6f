"""The gossip store on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`): a write
the store does not take changes nothing in it and says why; a node syncing the real
mainnet gossip sample onto a full disk goes on serving its peers and its other apps,
says so once, and its store catches up with the graph once the disk has room again."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.errors import GossipError, GossipStoreWriteError
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.store_backlog import StoreBacklog
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.rpc.peer import PeerRpc
from lnpmsg.testing.disk import DiskFiller, small_disk
from lnpmsg.wire import CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST
from tests.test_gossip_app import PARTS, REGISTRY, address, make, running, stored_raw, until

#: the real mainnet sample (tests/test_gossip_app.py): 87 channels and 4 updates
SAMPLE_MESSAGES = 87 + 4
RETRYING = GossipConfig(flush_interval=0.05, reply_timeout=10.0, store_retry_interval=0.05)


async def _synced(a_node: Any, a: Any, b_node: Any, b: Any, filler: DiskFiller | None = None) -> None:
    """A holds the real sample; B (its disk filled first, with ``filler``) syncs it from A and decides it all."""
    await a.import_cln_store(*PARTS)
    if filler is not None:
        filler.fill()
    await b_node.connect(address(a_node))
    await until(lambda: b.progress()["synced"])
    await b.drain()


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def _node_index(store: GossipStore) -> tuple[int, int]:
    """Rows in the settled node index and in its pending table."""
    return tuple(store._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("node_channels", "node_channels_new"))  # type: ignore[return-value]


def test_a_write_on_a_full_disk_raises_the_disk_error_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lnpmsg.gossip import store_nodes

    # the failing write would settle the node index too: that part must be undone with the rest
    monkeypatch.setattr(store_nodes, "SETTLE_CHANNELS", 50)
    net = SyntheticNetwork(40, 200, CHAIN_HASH_REGTEST)
    graph = Graph(CHAIN_HASH_REGTEST)
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in net.messages()], 1_700_100_000)
    with small_disk(tmp_path / "disk", size_kib=512) as disk:
        store = GossipStore(disk / "gossip.sqlite3", CHAIN_HASH_REGTEST)
        store.apply(decisions[:20])
        before, index_before = store.counts(), _node_index(store)
        assert index_before[0] == 0 and index_before[1] > 0
        filler = DiskFiller(disk)
        filler.fill()
        with pytest.raises(GossipStoreWriteError) as failed:
            store.apply(decisions[20:])
        # The disk's error, not the failed ROLLBACK of a transaction SQLite already rolled back.
        assert "database or disk is full" in str(failed.value) and failed.value.disk_full
        assert {k: v for k, v in store.counts().items() if k != "size_bytes"} == {
            k: v for k, v in before.items() if k != "size_bytes"
        }
        assert _node_index(store) == index_before
        filler.free()
        store.apply(decisions[20:])  # the next write, with room again, goes in whole
        assert store.counts()["channels"] == 200 and store.counts()["updates"] == 400
        assert _node_index(store) == (400, 0)  # settled, with the entries the failed write had
        store.close()
        assert integrity(disk / "gossip.sqlite3") == "ok"


def test_opening_a_store_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=512) as disk:
        GossipStore(disk / "gossip.sqlite3", CHAIN_HASH_REGTEST).close()
        filler = DiskFiller(disk)
        filler.fill()
        # WAL mode needs room for its -shm file even to read: SQLite says only "disk I/O error".
        with pytest.raises(GossipError, match=r"No space left on device \(the disk holding it has \d+ bytes free\): free some space"):
            GossipStore(disk / "gossip.sqlite3", CHAIN_HASH_REGTEST)
        filler.free()
        GossipStore(disk / "gossip.sqlite3", CHAIN_HASH_REGTEST).close()


def test_the_backlog_keeps_writes_in_order_and_drops_only_decisions_past_its_bound() -> None:
    graph = Graph(CHAIN_HASH_REGTEST)
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST)
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in net.messages()], 1_700_100_000)
    removed = graph.remove_channel(net.short_channel_id(0).to_int())
    assert removed is not None
    backlog = StoreBacklog(limit=10, batch_limit=4)
    backlog.hold(decisions[:3], [])
    backlog.hold(decisions[3:4], [removed])  # joins the first write: its removal comes after both
    backlog.hold(decisions[4:6], [])  # after a removal: a write of its own
    assert [(len(d), len(r)) for d, r in backlog.writes] == [(4, 1), (2, 0)]
    assert backlog.hold(decisions[6:], [removed]) == len(decisions) - 10  # past the bound: dropped, the removal kept
    assert backlog.messages == 10 and backlog.dropped == len(decisions) - 10
    assert [(len(d), len(r)) for d, r in backlog.writes] == [(4, 1), (2, 0), (4, 1)]  # 2 + 4 > batch_limit: no join
    while backlog:
        backlog.written()
    assert backlog.messages == 0


async def test_a_node_syncing_onto_a_full_disk_goes_on_and_its_store_catches_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg.gossip")
    with small_disk(tmp_path / "disk", size_kib=1024) as disk:
        path = disk / "gossip.sqlite3"
        a_node, a = make("bitcoin")
        b_node, b = make("bitcoin", path, listen=False, config=RETRYING)
        a_rpc, b_rpc = a_node.mount(PeerRpc()), b_node.mount(PeerRpc())

        @b_rpc.method()
        async def echo(peer: Any, value: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return value

        filler = DiskFiller(disk)
        async with running((a_node, a), (b_node, b)):
            await _synced(a_node, a, b_node, b, filler)
            # The graph took the sample; the store took none of it and holds it for later.
            assert len(b.graph) == 87 and b.graph.update_count == 4
            assert b.store.counts()["channels"] == 0
            stats = await b.gossip_stats()
            assert stats["store_backlog"]["waiting"] == SAMPLE_MESSAGES
            assert "database or disk is full" in stats["store_backlog"]["error"]
            # The node goes on: the peer is served (ping, a query from the store), another app answers.
            b_peer = b_node.peers[a_node.node_id]
            a_peer = a_node.peers[b_node.node_id]
            await b_peer.ping(timeout=10)
            await a_peer.ping(timeout=10)
            assert await a_rpc.call(a_peer, "echo", {"value": "still here"}) == "still here"
            with trio.move_on_after(0.5):  # a few retries fail meanwhile
                await trio.sleep_forever()
            errors = [r for r in caplog.records if r.name == "lnpmsg.gossip" and r.levelno >= logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not per batch or retry
            assert "database or disk is full" in errors[0].getMessage() and "free some space" in errors[0].getMessage()
            # Room again: the next retry writes what waited, byte for byte.
            filler.free()
            with trio.move_on_after(10):
                await until(lambda: b.store_backlog.messages == 0 and not b.store_backlog.failing)
            assert stored_raw(b.store) == stored_raw(a.store) and len(stored_raw(b.store)) == SAMPLE_MESSAGES
            assert any("gossip store writes again" in r.getMessage() for r in caplog.records)
        b.store.close()
        assert integrity(path) == "ok"


async def test_gossip_not_kept_for_a_full_store_is_synced_again_after_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past the backlog's bound, newer gossip is not kept for the store: the store keeps what
    it committed, and after a restart the node asks its peers for the rest again."""
    caplog.set_level(logging.INFO, logger="lnpmsg.gossip")
    small = GossipConfig(flush_interval=0.05, reply_timeout=10.0, store_retry_interval=0.05, store_backlog=30)
    with small_disk(tmp_path / "disk", size_kib=1024) as disk:
        path = disk / "gossip.sqlite3"
        a_node, a = make("bitcoin")
        b_node, b = make("bitcoin", path, listen=False, config=small)
        filler = DiskFiller(disk)
        async with running((a_node, a), (b_node, b)):
            await _synced(a_node, a, b_node, b, filler)
            assert b.store_backlog.messages == 30 and b.store_backlog.dropped == SAMPLE_MESSAGES - 30
            assert sum("backlog full" in r.getMessage() for r in caplog.records) == 1
            filler.free()
            with trio.move_on_after(10):
                await until(lambda: not b.store_backlog.failing)
            assert len(stored_raw(b.store)) == 30
        b.store.close()
        # A restart: the graph is what the store kept; the sync asks the peer for the rest.
        b_node, b = make("bitcoin", path, listen=False, config=small)
        assert len(b.graph) < 87
        a_node, a = make("bitcoin")
        async with running((a_node, a), (b_node, b)):
            await _synced(a_node, a, b_node, b)
            assert stored_raw(b.store) == stored_raw(a.store)
        b.store.close()
        assert integrity(path) == "ok"


async def test_removals_wait_in_order_behind_the_writes_a_full_store_refused(tmp_path: Path) -> None:
    """A channel closed while the store cannot write is deleted after the inserts before it:
    the store never brings it back."""
    with small_disk(tmp_path / "disk", size_kib=1024) as disk:
        path = disk / "gossip.sqlite3"
        b_node, b = make("bitcoin", path, listen=False, config=RETRYING)
        filler = DiskFiller(disk)
        async with running((b_node, b)):
            filler.fill()
            await b.import_cln_store(*PARTS)
            # 92 accepted: the file also announces a channel it then closes (its removal waits too)
            assert b.store_backlog.messages == 92 and len(b.graph) == 87
            closed = next(iter(b.graph.channels))
            assert await b.close_channel(closed)
            await b.drain()
            filler.free()
            with trio.move_on_after(10):
                await until(lambda: not b.store_backlog.failing)
            assert b.store.counts()["channels"] == 86
            assert b.store.channel_announcement(closed) is None
        b.store.close()
        again = GossipApp(GossipStore(path, CHAIN_HASH_MAINNET))
        assert len(again.graph) == 86 and closed not in again.graph.channels
        again.store.close()
