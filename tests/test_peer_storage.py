"""BOLT 1 peer storage (``option_provide_storage``), joined to the static channel backups.

Sans-IO: the padded blob (exactly 65531 bytes, a peer's channels first), the write schedule (one
write per peer a minute, the latest wins) and the 2016-block retention; the store on disk. End to
end (two nodes in one process, the in-memory transport, the embedded regtest chain): Bob's backup
is kept by Alice; Bob loses his data dir but for the seed material, reconnects, gets Alice's
``peer_storage_retrieval`` and restores from it -- never given a backup file -- Alice force-closes
and Bob's wallet gets his balance.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import channels, only_channel, pay
from test_channels_backup import _entry, _lose_channels
from test_channels_onchain import TO_SELF_DELAY, Pair, open_channel, only_status, run_until_resolved, wait_until

from lnpmsg.app import App
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.commands import _print_peer_storage
from lnpmsg.channels.commands import _request as _channel_request
from lnpmsg.channels.backup import PEER_BLOB_SIZE, decode_backup, encode_backup, encode_padded
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.peer_storage import PeerStorageApp
from lnpmsg.channels.peer_storage_store import BlobStore, StoredBlob, WriteSchedule, retention
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wire import Features, Init, PeerStorage, PeerStorageRetrieval

PEER_A = "02" + "11" * 32
PEER_B = "03" + "22" * 32


def test_the_messages_round_trip_and_carry_at_most_a_u16_length() -> None:
    blob = os.urandom(PEER_BLOB_SIZE)
    for cls, number in ((PeerStorage, 7), (PeerStorageRetrieval, 9)):
        data = cls(blob=blob).encode()
        assert data[:2] == number.to_bytes(2, "big") and data[2:4] == PEER_BLOB_SIZE.to_bytes(2, "big")
        assert cls.decode(data) == cls(blob=blob)
    assert Features.from_bits([43]).supports("option_provide_storage")


def test_the_blob_is_padded_to_65531_bytes_with_the_peers_channels_first() -> None:
    seed = os.urandom(32)
    theirs = [_entry(seed, f"{PEER_B}-{i:016x}") for i in range(2)]
    others = [_entry(seed, f"{PEER_A}-{i:016x}") for i in range(200)]
    blob, count = encode_padded(theirs + others, seed, os.urandom(12))
    assert len(blob) == PEER_BLOB_SIZE
    held = decode_backup(blob, seed)
    assert 2 < count < 202 and held == (theirs + others)[:count]  # the rest did not fit
    small, one = encode_padded(theirs[:1], seed, os.urandom(12))
    assert len(small) == PEER_BLOB_SIZE and one == 1 and decode_backup(small, seed) == theirs[:1]
    # the size says nothing; the unpadded form is the channels.backup one (and much shorter)
    assert len(encode_backup(theirs[:1], seed, os.urandom(12))) < 2000


def test_writes_are_one_a_minute_per_peer_and_the_latest_blob_wins() -> None:
    schedule = WriteSchedule(60)
    a, b = bytes.fromhex(PEER_A), bytes.fromhex(PEER_B)
    assert schedule.offer(a, b"1", 100.0) == 0 and schedule.take(a, 100.0) == b"1"
    assert schedule.offer(a, b"2", 110.0) == 50.0  # written at 160
    assert schedule.offer(a, b"3", 120.0) is None  # replaces the waiting one
    assert schedule.offer(b, b"x", 120.0) == 0  # per peer
    assert schedule.take(a, 160.0) == b"3" and schedule.take(a, 160.0) is None
    assert schedule.offer(a, b"4", 300.0) == 0


def test_a_blob_is_kept_2016_blocks_after_the_last_channel_closed() -> None:
    a, b = bytes.fromhex(PEER_A), bytes.fromhex(PEER_B)
    stored = {a: StoredBlob(10, 1.0), b: StoredBlob(10, 1.0, closed_at=500)}
    assert retention(stored, {a, b}, 600) == ({b: 0}, [])  # b has a channel again
    assert retention(stored, set(), 600) == ({a: 600}, [])
    assert retention(stored, set(), 500 + 2015) == ({a: 2515}, [])
    assert retention(stored, {a}, 500 + 2016) == ({}, [b])


def test_the_store_keeps_one_blob_per_peer_across_restarts(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "theirs")
    assert store.load() == {}
    a = bytes.fromhex(PEER_A)
    store.write(a, b"old", 5.0)
    store.write(a, b"new" * 100, 7.0)
    (tmp_path / "theirs" / "not-a-peer").write_bytes(b"x")
    assert BlobStore(tmp_path / "theirs").load() == {a: StoredBlob(300, 7.0)}
    store.mark_closed(a, 900)
    assert store.load()[a].closed_at == 900 and store.read(a) == b"new" * 100
    assert (tmp_path / "theirs" / PEER_A).stat().st_mode & 0o077 == 0
    store.delete(a)
    assert store.load() == {} and store.read(a) is None


class StoragePair(Pair):
    """Nodes with peer storage, mounted before the channel app (its retrieval leaves before channel_reestablish)."""

    def node(self, name: str, listen: bool, recover: bool = False) -> Node:  # type: ignore[override]
        config = ChannelConfig(minimum_depth=1, to_self_delay=TO_SELF_DELAY)
        node = Node(self.keys[name], NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
                    transports={"mem": self.network.transport()})  # fmt: skip
        node.mount(ChainApp(self.tmp / name / "wallet", source=self.source))
        node.mount(PeerStorageApp(self.tmp / name / "peer_storage", recover=recover, write_interval=0.5, check_after=0.5))
        node.mount(ChannelsApp(self.tmp / name / "channels", config=config))
        return node


def storage(node: Node) -> PeerStorageApp:
    return node.apps["peer_storage"]  # type: ignore[return-value]


def _held_for(node: Node, peer: Node, seed: bytes) -> list:
    blob = storage(node).theirs.read(peer.node_id)
    return decode_backup(blob, seed) if blob is not None else []


@pytest.mark.trio
@pytest.mark.parametrize("recover", [False, True], ids=["command", "automatic"])
async def test_a_node_that_lost_its_data_dir_restores_from_its_peers_storage(tmp_path: Path, recover: bool) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = StoragePair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        bob_channels = tmp_path / "bob" / "channels"
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await open_channel(pair, alice, bob, "anchors")
                seed = (bob_channels / "channel_seed").read_bytes()
                assert storage(alice).supports(alice.peers[bob.node_id])
                # Alice keeps Bob's backup (the ready channel, its short channel id known), padded
                scid = only_channel(bob).core.state.short_channel_id
                await wait_until(lambda: [e.short_channel_id for e in _held_for(alice, bob, seed)] == [scid], "alice holds bob's backup")
                assert len(storage(alice).theirs.read(bob.node_id) or b"") == PEER_BLOB_SIZE
                alice_seed = channels(alice).manager.seed  # type: ignore[union-attr]
                await wait_until(lambda: len(_held_for(bob, alice, alice_seed)) == 1, "bob holds alice's backup")
                await pay(alice, bob, 30_000_000)
                bob_msat = only_channel(bob).core.state.local_commit.spec.to_local_msat  # type: ignore[union-attr]
                listed = await storage(alice).listpeerstorage()
                (held,) = listed["held_for_peers"]
                assert held["peer_id"] == bob.node_id.hex() and held["size"] == PEER_BLOB_SIZE and held["channel_open"]
                # a foreign blob returned to Bob is ignored: the connection stays, Bob resends his own
                stored_at = storage(alice).held[bob.node_id].received
                await storage(alice).send(bob.node_id, PeerStorageRetrieval(blob=os.urandom(100)))
                await wait_until(lambda: storage(alice).held[bob.node_id].received > stored_at, "bob resends his backup")
                assert [e.short_channel_id for e in _held_for(alice, bob, seed)] == [scid]
                await pay(alice, bob, 1_000_000)  # (the link still works)
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            _lose_channels(bob_channels, seed)
            shutil.rmtree(tmp_path / "bob" / "peer_storage")
            bob = pair.node("bob", False, recover=recover)
            async with running(bob):
                assert (await channels(bob).listchannels())["channels"] == []
                if not recover:
                    with pytest.raises(ParamsError, match="no peer returned"):
                        await storage(bob).restorechannels()
                before = pair.wallet_sat(bob)
                await bob.connect(alice.addresses[0])  # (Bob knows Alice's address, not the channel)
                await wait_until(lambda: bool(storage(bob).kept), "alice returned bob's backup")
                if recover:
                    await wait_until(lambda: bool(channels(bob).manager.channels), "restored as it arrived")  # type: ignore[union-attr]
                else:
                    (by,) = (await storage(bob).listpeerstorage())["held_by_peers"]
                    assert by["peer_id"] == alice.node_id.hex() and by["channels_lacking"] == 1
                    (restored,) = (await storage(bob).restorechannels())["channels"]
                    assert restored["state"] == "restored_awaiting_close"
                await wait_until(lambda: only_channel(alice).phase is Phase.FAILED, "alice goes on chain")
                assert only_channel(bob).core.latest_commitment_tx() is None
                await run_until_resolved(pair, bob)
                await pair.mine(1, alice, bob)
                assert only_status(bob)["commitment"]["kind"] == "theirs_unknown"
                gained = pair.wallet_sat(bob) - before
                assert bob_msat // 1000 - 10_000 < gained <= bob_msat // 1000 + 1000, gained


@pytest.mark.trio
async def test_a_peer_without_a_channel_is_not_stored_and_a_retrieval_follows_init(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = StoragePair(source, tmp_path, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await bob.connect(alice.addresses[0])
            await storage(bob).send(alice.node_id, PeerStorage(blob=b"no channel"))
            await trio.sleep(0.3)
            assert storage(alice).held == {} and not any((tmp_path / "alice" / "peer_storage" / "theirs").iterdir())
        # a blob on disk (kept from before) is sent after init on the next connection; not ours: Bob ignores it
        BlobStore(tmp_path / "alice" / "peer_storage" / "theirs").write(bob.node_id, b"kept", 1.0)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: alice.node_id in storage(bob)._retrieved, "alice's retrieval")
            assert storage(bob).kept == {} and bob.peers[alice.node_id].is_ready


class _ChannelsStandIn(App):
    """What the peer storage app reads of the channel app, with no channel app running: it sends nothing of ours."""

    def __init__(self) -> None:
        super().__init__("channels")
        self.backup_watchers: list = []
        self.manager: object | None = None


async def _retrieval(raw: RawPeer) -> bytes:
    """The blob of the first peer_storage_retrieval the raw peer gets."""
    while True:
        data = await raw.receive()
        if data[:2] == (9).to_bytes(2, "big"):
            return PeerStorageRetrieval.decode(data).blob


@pytest.mark.trio
async def test_the_provider_writes_a_peers_blob_once_a_minute_the_latest_wins_and_keeps_it_2016_blocks(tmp_path: Path, mock_clock: Any) -> None:
    """Virtual time over a real TCP connection (the clock jumps only when nothing moves for 50 ms);
    which peers have a channel is the test's (no chain here)."""
    mock_clock.autojump_threshold = 0.05
    key = NodeKey.generate()

    open_peers = {key.node_id}

    class Provider(PeerStorageApp):
        def _with_channel(self) -> set[bytes]:
            return set(open_peers)

    alice = make_node(listen=True)
    provider = alice.mount(Provider(tmp_path / "ps"))
    alice.mount(_ChannelsStandIn())
    path = tmp_path / "ps" / "theirs" / key.node_id.hex()
    async with running(alice):
        raw = await RawPeer.connect(alice.listen_addresses[0], alice.node_id, key)
        await raw.exchange_init(Init(features=Features.from_bits([43]).to_bytes()))
        t0 = trio.current_time()
        await raw.send(PeerStorage(blob=b"first"))
        await wait_until(lambda: path.exists(), "the first blob written at once")
        assert BlobStore(path.parent).read(key.node_id) == b"first"
        await raw.send(PeerStorage(blob=b"second"))
        await raw.send(PeerStorage(blob=b"third"))
        await trio.sleep(58 - (trio.current_time() - t0))
        assert BlobStore(path.parent).read(key.node_id) == b"first" and provider.schedule.pending == {key.node_id: b"third"}
        await trio.sleep(3)
        assert BlobStore(path.parent).read(key.node_id) == b"third" and provider.schedule.pending == {}
        await raw.aclose()
        # the next connection gets the latest blob right after init
        raw = await RawPeer.connect(alice.listen_addresses[0], alice.node_id, key)
        await raw.exchange_init(Init(features=Features.from_bits([43]).to_bytes()))
        with trio.fail_after(5):
            assert await _retrieval(raw) == b"third"
        await raw.aclose()
    # and after a restart of the node; kept 2016 blocks after the last channel closed, then deleted
    alice = Node(alice.key, alice.config)
    provider = alice.mount(Provider(tmp_path / "ps"))
    stand_in = alice.mount(_ChannelsStandIn())
    async with running(alice):
        raw = await RawPeer.connect(alice.listen_addresses[0], alice.node_id, key)
        await raw.exchange_init(Init(features=Features().to_bytes()))
        with trio.fail_after(5):
            assert await _retrieval(raw) == b"third"
        await raw.aclose()
        stand_in.manager = object()  # (the channel app is running; its channels are open_peers)
        open_peers.clear()
        await provider._retain(1000)
        assert BlobStore(path.parent).load()[key.node_id].closed_at == 1000
        await provider._retain(1000 + 2015)
        assert path.exists() and provider.held[key.node_id].closed_at == 1000
        await provider._retain(1000 + 2016)
        assert not path.exists() and provider.held == {}


def test_the_commands_call_the_peer_storage_app_and_print_sizes_not_contents(capsys: pytest.CaptureFixture[str]) -> None:
    from lnpmsg.cli import main

    assert main(["--data-dir", "/nonexistent", "restorechannels"]) == 2
    assert "give a FILE or --from-peers" in capsys.readouterr().err
    parser_args = type("Args", (), {"command": "restorechannels", "from_peers": True, "file": None})()
    method, params, _ = _channel_request(parser_args)  # type: ignore[arg-type]
    assert (method, params) == ("peer_storage.restorechannels", {})
    listed = {"provides": True,
              "held_for_peers": [{"peer_id": PEER_A, "size": 65531, "received": 1700000000, "channel_open": False,
                                  "closed_at_height": 812, "update_waiting": True}],
              "held_by_peers": [{"peer_id": PEER_B, "size": 65531, "received": 1700000001, "channels": 2, "channels_lacking": 1}]}  # fmt: skip
    _print_peer_storage(listed)
    out = capsys.readouterr().out
    assert f"for {PEER_A}: 65531 bytes" in out and "no channel since height 812" in out and "an update waiting" in out
    assert f"by  {PEER_B}" in out and "1 this node lacks (lnpmsg restorechannels --from-peers)" in out


@pytest.mark.trio
async def test_a_malformed_peer_storage_closes_that_connection_only_and_an_oversize_blob_cannot_be_sent(tmp_path: Path) -> None:
    """A ``peer_storage`` whose length runs past the message fails the connection (the node's rule for
    any malformed message, logged with the reason); nothing is stored and the node goes on. A blob over
    65531 bytes does not fit in a BOLT 8 message (65535 bytes, type and length included)."""
    alice = make_node(listen=True)
    alice.mount(PeerStorageApp(tmp_path / "ps"))
    alice.mount(_ChannelsStandIn())
    async with running(alice):
        raw = await RawPeer.connect(alice.listen_addresses[0], alice.node_id)
        await raw.exchange_init(Init(features=Features().to_bytes()))
        await raw.send(b"\x00\x07\xff\xff\x00")
        await raw.receive_until_closed()
        await raw.aclose()
        await wait_until(lambda: alice.peers == {}, "the peer gone")
        assert storage(alice).held == {}
        assert len(PeerStorage(blob=bytes(PEER_BLOB_SIZE)).encode()) == 65535
        raw = await RawPeer.connect(alice.listen_addresses[0], alice.node_id)  # (the node still serves)
        await raw.exchange_init(Init(features=Features().to_bytes()))
        await raw.aclose()
