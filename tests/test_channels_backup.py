"""Static channel backups (``channels.backup``, ``exportchannelbackup``, ``restorechannels``).

The format (sans-IO): encrypted with a key from the channel seed, a clear error for a damaged or
foreign file. End to end (two nodes in one process, the in-memory transport, the embedded regtest
chain): Bob loses his data dir but for the seed material, restores the backup on a fresh node,
Alice is asked to force-close and Bob's monitor sweeps his balance to his wallet; nothing of Bob's
is ever broadcast. A backup of channels the node still has is refused. Each channel names its
peer's alias from the gossip (not in the blob a peer keeps for us), listed with listchannelbackup
and listchannels; a peer announced after the open or after a restore is named in the next backup.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import channels, only_channel, pay
from test_channels_onchain import Pair, open_channel, only_status, run_until_resolved, wait_until

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.backup import PEER_BLOB_SIZE, BackupEntry, BackupError, close_request, decode_backup, encode_backup, encode_padded, restored_state
from lnpmsg.channels.backup_calls import _write_backup
from lnpmsg.channels.commands import _print_list as print_channels
from lnpmsg.channels.keys import ChannelBasepoints
from lnpmsg.channels.manager import channel_secrets
from lnpmsg.channels.monitor.feed import channel_setup
from lnpmsg.channels.monitor_files import MonitorLog
from lnpmsg.channels.onchain import OnchainWatch
from lnpmsg.channels.rescan import restored_start
from lnpmsg.channels.state import ChannelCore, Phase
from lnpmsg.gossip.app import GossipApp
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import register_gossip_messages
from lnpmsg.gossip.sign import sign_channel_announcement, sign_node_announcement
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.app import ChainAppError
from lnpmsg.wire import CHAIN_HASH_REGTEST, DEFAULT_REGISTRY, ShortChannelId

GOSSIP_REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
_ANNOUNCED_CHANNELS = itertools.count(1)


def _entry(seed: bytes, key: str = "02" + "11" * 32 + "-00112233aabbccdd") -> BackupEntry:
    theirs = channel_secrets(os.urandom(32), "peer").basepoints()
    return BackupEntry(
        key=key, peer_id=bytes.fromhex(key.split("-")[0]), addresses=("mem://7",), channel_id=os.urandom(32),
        funding_outpoint=OutPoint(os.urandom(32), 1), funding_sat=1_000_000, anchors=True, funder=False,
        remote_basepoints=theirs, remote_to_self_delay=144, local_to_self_delay=6, remote_dust_limit_sat=546,
        local_dust_limit_sat=354, short_channel_id=(120 << 40) | (1 << 16) | 1,
    )  # fmt: skip


def test_the_backup_is_encrypted_with_the_seed_and_a_foreign_or_damaged_file_is_refused() -> None:
    seed = os.urandom(32)
    entry = _entry(seed)
    data = encode_backup([entry], seed, os.urandom(12))
    assert decode_backup(data, seed) == [entry]
    # nothing of it in clear: not the peer, not the channel, not the funding
    for secret in (entry.peer_id, entry.channel_id, entry.funding_outpoint.txid):
        assert secret not in data and secret.hex().encode() not in data
    with pytest.raises(BackupError, match="another seed, or it is damaged"):
        decode_backup(data, os.urandom(32))  # another node's
    damaged = bytearray(data)
    damaged[-20] ^= 1
    with pytest.raises(BackupError, match="another seed, or it is damaged"):
        decode_backup(bytes(damaged), seed)
    with pytest.raises(BackupError, match="not an lnpmsg channel backup"):
        decode_backup(b"{\"channels\": []}", seed)
    with pytest.raises(BackupError, match="not an lnpmsg channel backup"):
        decode_backup(data[:20], seed)
    with pytest.raises(BackupError, match="twice"):
        decode_backup(encode_backup([entry, entry], seed, os.urandom(12)), seed)
    # the store finds a channel's peer from its key: a key of another peer is refused
    other_peer = replace(entry, key="02" + "22" * 32 + "-00112233aabbccdd")
    with pytest.raises(BackupError, match="is not <peer id>"):
        decode_backup(encode_backup([other_peer], seed, os.urandom(12)), seed)


def test_an_entry_names_its_peers_alias_and_backups_without_aliases_still_read() -> None:
    """The alias rides in the file's JSON as an optional field (version 1 still): an entry without one
    writes what backups always held, a backup made before aliases reads with none; a bad alias is refused;
    the blob a peer keeps for us leaves aliases out, so as many channels fit as without them."""
    seed = os.urandom(32)
    plain = _entry(seed)
    named = replace(plain, alias="alpha ⚡")
    assert decode_backup(encode_backup([named], seed, os.urandom(12)), seed) == [named]
    assert "alias" not in plain.to_json() and named.to_json() == plain.to_json() | {"alias": "alpha ⚡"}
    # a backup as made before aliases (the same JSON, sealed the same way): read, no alias
    from lnpmsg.channels import backup

    nonce = os.urandom(12)
    older = json.dumps({"version": 1, "channels": [plain.to_json()]}).encode()
    sealed = backup.MAGIC + nonce + backup.ChaCha20Poly1305(backup._key(seed)).encrypt(nonce, older, backup.MAGIC)
    assert decode_backup(sealed, seed) == [plain] and decode_backup(sealed, seed)[0].alias == ""
    for bad in ("x" * 33, 7):
        with pytest.raises(BackupError, match="alias is text of at most 32"):
            decode_backup(encode_backup([replace(plain, alias=bad)], seed, os.urandom(12)), seed)  # type: ignore[arg-type]
    # the peer's blob: no alias, and as many channels as without aliases
    many = [replace(_entry(seed, f"02{'11' * 32}-{i:016x}"), alias="x" * 32) for i in range(200)]
    blob, count = encode_padded(many, seed, os.urandom(12))
    assert len(blob) == PEER_BLOB_SIZE and count == encode_padded([replace(e, alias="") for e in many], seed, os.urandom(12))[1] < 200
    assert decode_backup(blob, seed) == [replace(e, alias="") for e in many[:count]]


def test_a_restored_channel_is_set_up_for_the_monitor_and_never_has_a_commitment_to_broadcast() -> None:
    seed = os.urandom(32)
    entry = _entry(seed)
    core = ChannelCore(channel_secrets(seed, entry.key))
    core.state = restored_state(entry)
    assert core.phase is Phase.FAILED and core.state.behind and core.state.restored
    assert core.latest_commitment_tx() is None
    setup = channel_setup(core, b"\x00\x14" + bytes(20))
    assert setup is not None
    assert setup.local_basepoints == channel_secrets(seed, entry.key).basepoints()
    assert setup.remote_basepoints == entry.remote_basepoints and setup.anchors and not setup.local_is_funder
    # the delay on our outputs is the peer's to_self_delay, the one on the peer's is ours
    assert (setup.local_to_self_delay, setup.remote_to_self_delay) == (144, 6)
    reestablish, error = close_request(entry.channel_id, core.secrets.commitment_point(0))
    assert (reestablish.next_commitment_number, reestablish.next_revocation_number) == (0, 0)
    assert reestablish.your_last_per_commitment_secret == bytes(32) and error.channel_id == entry.channel_id
    assert isinstance(entry.remote_basepoints, ChannelBasepoints)


async def _open_pay_and_export(pair: Pair, alice: Node, bob: Node, channel_type: str, exported: Path) -> tuple[bytes, int]:
    """A channel Alice funds, payments both ways, Bob's backup exported: Bob's channel seed and balance (msat)."""
    bob_channels = pair.tmp / "bob" / "channels"
    await open_channel(pair, alice, bob, channel_type)
    seed = (bob_channels / "channel_seed").read_bytes()
    # rewritten once the funding is known (the fundee's side here), and once the channel is ready: its
    # short channel id (the funding's height, where a restore reads the chain from) is in the file too
    await wait_until(lambda: [e.short_channel_id for e in decode_backup((bob_channels / "channels.backup").read_bytes(), seed)]
                     == [only_channel(bob).core.state.short_channel_id] != [0], "the backup holds the ready channel")  # fmt: skip
    await pay(alice, bob, 30_000_000)
    await pay(bob, alice, 5_000_000)
    bob_msat = only_channel(bob).core.state.local_commit.spec.to_local_msat  # type: ignore[union-attr]
    assert bob_msat == 325_000_000
    result = await channels(bob).exportchannelbackup(str(exported))
    assert result["channels"] == 1 and result["file"] == str(exported)
    assert decode_backup(exported.read_bytes(), channels(bob).manager.seed)[0].addresses == (alice.addresses[0],)  # type: ignore[union-attr]
    return seed, bob_msat


def test_the_backup_file_is_rewritten_only_when_it_changes_and_keeps_the_addresses_learnt(tmp_path: Path) -> None:
    """A start with the channels of the file writes nothing; a change (the short channel id) is
    written, keeping the peer's address the file had though no peer is connected yet."""
    seed = os.urandom(32)
    path = tmp_path / "channels.backup"
    dialed = replace(_entry(seed), addresses=("02" + "11" * 32 + "@127.0.0.1:9735",))
    known = {dialed.key}
    assert _write_backup(path, seed, known, [dialed]) is None
    written = path.read_bytes()
    assert _write_backup(path, seed, known, [replace(dialed, addresses=())]) is None
    assert path.read_bytes() == written  # (a new nonce would have made every byte differ)
    ready = replace(dialed, addresses=(), short_channel_id=110 << 40)
    assert _write_backup(path, seed, known, [ready]) is None
    assert decode_backup(path.read_bytes(), seed) == [replace(ready, addresses=dialed.addresses)]
    # the peer's alias is written when the gossip knows it, and kept when it no longer does
    assert _write_backup(path, seed, known, [replace(ready, alias="alpha")]) is None
    written = path.read_bytes()
    assert _write_backup(path, seed, known, [ready]) is None and path.read_bytes() == written
    assert _write_backup(path, seed, known, [replace(ready, alias="beta")]) is None
    assert decode_backup(path.read_bytes(), seed) == [replace(ready, addresses=dialed.addresses, alias="beta")]
    ready = replace(ready, alias="beta")
    # a file holding a channel the store lacks (the old backup put back on a fresh node) is kept aside
    aside = _write_backup(path, seed, set(), [])
    assert aside is not None and decode_backup(aside.read_bytes(), seed) == [replace(ready, addresses=dialed.addresses)]
    assert decode_backup(path.read_bytes(), seed) == []


@asynccontextmanager
async def _chain_and_alice(tmp: Path) -> AsyncIterator[tuple[EmbeddedChainSource, Pair, Node]]:
    """A regtest chain with spendable coins, and Alice (who listens; not running yet)."""
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp, MemoryNetwork())
        yield source, pair, pair.node("alice", True)


def _lose_channels(bob_channels: Path, seed: bytes) -> None:
    """Bob loses his data dir but for the seed material (the node key, the wallet, the channel seed)."""
    shutil.rmtree(bob_channels)
    bob_channels.mkdir()
    (bob_channels / "channel_seed").write_bytes(seed)


@pytest.mark.trio
async def test_a_restored_channel_is_read_from_its_funding_only_when_the_funding_is_not_unspent(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        entry = _entry(os.urandom(32))  # its funding (120) is not an unspent output of this chain
        state = restored_state(entry)
        assert await restored_start(source, state, 150) == 120
        assert await restored_start(source, state, 100) == 100  # never after where it would read anyway
        # a backup made before the funding confirmed: no height to read from
        assert await restored_start(source, replace(state, short_channel_id=0), 150) == 150
        assert await restored_start(source, replace(state, restored=False), 150) == 150
        coinbase = Block.parse(await source.block_at(1)).txs[0]
        unspent = replace(state, funding_outpoint=OutPoint(coinbase.txid, 0))
        assert await source.get_txout(unspent.funding_outpoint) is not None
        assert await restored_start(source, unspent, 150) == 150


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
async def test_a_node_that_lost_its_data_dir_gets_its_balance_back_from_the_backup(tmp_path: Path, channel_type: str) -> None:
    async with _chain_and_alice(tmp_path) as (source, pair, alice):
        bob_channels = tmp_path / "bob" / "channels"
        exported = tmp_path / "safe" / "bob.backup"
        exported.parent.mkdir()
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                seed, bob_msat = await _open_pay_and_export(pair, alice, bob, channel_type, exported)
                # the node still has the channel: a restore is refused, and changes nothing
                with pytest.raises(ChainAppError, match="exist on this node"):
                    await channels(bob).restorechannels(file=str(exported))
                with pytest.raises(ChainAppError, match="another seed"):
                    foreign = await channels(alice).exportchannelbackup()
                    await channels(bob).restorechannels(backup=foreign["backup"])
                damaged = tmp_path / "damaged.backup"
                good = exported.read_bytes()
                damaged.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
                with pytest.raises(ChainAppError, match="or it is damaged"):
                    await channels(bob).restorechannels(file=str(damaged))
                with pytest.raises(ParamsError, match="absolute path"):
                    await channels(bob).restorechannels(file="damaged.backup")
                assert only_channel(bob).phase is Phase.NORMAL
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            _lose_channels(bob_channels, seed)
            shutil.copy(exported, bob_channels / "channels.backup")  # the old backup put back in place
            bob = pair.node("bob", False)
            async with running(bob):
                assert (await channels(bob).listchannels())["channels"] == []
                # the fresh node does not overwrite the only copy of a backup with channels it lacks
                await wait_until(lambda: any(bob_channels.glob("channels.backup.*.old")), "the old backup kept aside")
                await wait_until(lambda: (bob_channels / "channels.backup").exists(), "the new backup written")
                (aside,) = bob_channels.glob("channels.backup.*.old")
                assert aside.read_bytes() == exported.read_bytes()
                assert decode_backup((bob_channels / "channels.backup").read_bytes(), seed) == []
                before = pair.wallet_sat(bob)
                restored = await channels(bob).restorechannels(file=str(exported))
                (listed,) = restored["channels"]
                assert listed["state"] == "restored_awaiting_close" and listed["restored"]
                # Bob dials Alice (the backup knows where), asks her to close; she goes on chain
                await wait_until(lambda: only_channel(alice).phase is Phase.FAILED, "alice goes on chain")
                assert only_channel(bob).core.latest_commitment_tx() is None
                with pytest.raises(ChainAppError):
                    await channels(bob).closechannel(listed["channel_id"], force=True)
                await run_until_resolved(pair, bob)
                await pair.mine(1, alice, bob)  # (static_remotekey: the sweep of to_remote to a wallet address)
                status = only_status(bob)
                assert status["commitment"]["kind"] == "theirs_unknown"
                # the commitment on chain is Alice's latest (nothing of Bob's was broadcast)
                alice_status = channels(alice).onchain.status(only_channel(alice))  # type: ignore[union-attr]
                assert alice_status is not None and alice_status["commitment"]["kind"] == "ours"
                assert status["commitment"]["txid"] == alice_status["commitment"]["txid"]
                gained = pair.wallet_sat(bob) - before
                assert bob_msat // 1000 - 10_000 < gained <= bob_msat // 1000, gained
                # the backup rewritten on the restore still holds the channel (and is refused again)
                with pytest.raises(ChainAppError, match="exist on this node"):
                    await channels(bob).restorechannels(file=str(bob_channels / "channels.backup"))
            # restarted, Bob still knows the restored channel (from its snapshot) and that it is resolved
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.mine(1, bob)  # (the monitor's status comes with the first block it follows)
                (listed,) = (await channels(bob).listchannels())["channels"]
                assert listed["state"] == "restored_awaiting_close" and listed["onchain"]["commitment"]["kind"] == "theirs_unknown"
                assert not channels(bob).awaiting_close(only_channel(bob))


@pytest.mark.trio
@pytest.mark.parametrize(
    ("channel_type", "restart", "late"), [("static_remotekey", False, False), ("anchors", True, False), ("static_remotekey", False, True)],
    ids=["static_remotekey", "anchors-restart", "static_remotekey-monitors_follow_late"],
)
async def test_a_peer_commitment_mined_before_the_restore_is_found_and_swept(
    tmp_path: Path, channel_type: str, restart: bool, late: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob goes silent, Alice force-closes and her commitment is buried before Bob restores: Bob's
    monitor reads the chain from the funding, finds it, sweeps his balance and stops dialing Alice
    (who never comes back); ``restart``: Bob stops right after the restore and reads it at start;
    ``late``: the restore comes before Bob's monitors follow the chain (a node just started, its
    chain subscription opened at the tip: what happens on a loaded machine), yet the restored
    monitor reads from the funding. Only the restore's scan is logged as one (a new channel's
    monitor reads one block again, quietly)."""
    caplog.set_level("INFO", logger="lnpmsg.channels.rescan")

    def scans() -> list[str]:
        return [r.getMessage() for r in caplog.records if "its funding is spent" in r.getMessage()]

    async with _chain_and_alice(tmp_path) as (source, pair, alice):
        bob_channels = tmp_path / "bob" / "channels"
        exported = tmp_path / "bob.backup"
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                seed, bob_msat = await _open_pay_and_export(pair, alice, bob, channel_type, exported)
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            await channels(alice).closechannel(only_channel(alice).channel_id.hex(), force=True)
            await pair.mine(4, alice)  # her commitment, and more blocks on it
            alice_status = channels(alice).onchain.status(only_channel(alice))  # type: ignore[union-attr]
            assert alice_status is not None and alice_status["commitment"]["kind"] == "ours"
        assert scans() == []  # the new channel's funding was never spent before its monitor read the chain
        _lose_channels(bob_channels, seed)

        async def found_and_swept(bob: Node) -> None:
            await wait_until(lambda: (channels(bob).onchain.status(only_channel(bob)) or {}).get("state", "open") != "open",  # type: ignore[union-attr]
                             "bob finds alice's commitment")  # fmt: skip
            status = only_status(bob)
            assert status["commitment"]["kind"] == "theirs_unknown"
            assert status["commitment"]["txid"] == alice_status["commitment"]["txid"]
            reconnector = channels(bob).reconnector
            assert reconnector is not None and not reconnector.wants(alice.node_id)  # no more dialing Alice
            await run_until_resolved(pair, bob)
            await pair.mine(1, bob)  # (static_remotekey: the sweep of to_remote to a wallet address)
            gained = pair.wallet_sat(bob) - before
            assert bob_msat // 1000 - 10_000 < gained <= bob_msat // 1000, gained

        if late:
            follow = OnchainWatch.follow

            async def follow_late(watch: OnchainWatch, sub: Any) -> None:
                await restored.wait()
                await follow(watch, sub)

            restored = trio.Event()
            monkeypatch.setattr(OnchainWatch, "follow", follow_late)
        bob = pair.node("bob", False)
        async with running(bob):
            before = pair.wallet_sat(bob)
            await channels(bob).restorechannels(file=str(exported))
            if late:
                restored.set()
            if not restart:
                await found_and_swept(bob)
                assert len(scans()) == 1, scans()
        if restart:  # right after the restore (the scan may not have begun): the restarted node reads from the funding
            (mon,) = (bob_channels / "monitors").glob("*.mon")
            written = MonitorLog(mon)
            assert written.start_height == decode_backup(exported.read_bytes(), seed)[0].short_channel_id >> 40 > 0
            # even from a log that starts after the spend (a restore by a version that read from the restore on)
            mon.unlink()
            MonitorLog(mon).begin((await source.tip()).height)
            MonitorLog(mon).append(written.updates)
            bob = pair.node("bob", False)
            async with running(bob):
                await found_and_swept(bob)


def _announced(peer: NodeKey, alias: str) -> list[bytes]:
    """PEER's node_announcement with ALIAS, after a public channel of PEER's to another node (the
    gossip keeps nodes that have a channel)."""
    other = NodeKey.generate()
    scid = ShortChannelId(100, next(_ANNOUNCED_CHANNELS), 0)
    channel = sign_channel_announcement(peer.secret, other.secret, os.urandom(32), os.urandom(32), scid, CHAIN_HASH_REGTEST)
    return [channel.encode(), sign_node_announcement(peer.secret, int(time.time()), alias=alias).encode()]


def _gossip_knowing(path: Path, peer: NodeKey | None = None, alias: str = "") -> GossipApp:
    """A gossip app whose store holds PEER's node_announcement with ALIAS (empty without PEER)."""
    store = GossipStore(path, CHAIN_HASH_REGTEST)
    if peer is not None:
        now = int(time.time())
        decisions = Graph(CHAIN_HASH_REGTEST).process_many([(GOSSIP_REGISTRY.decode(m), m) for m in _announced(peer, alias)], now)
        assert all(d.accepted for d in decisions)
        store.apply(decisions)
    return GossipApp(store)


async def _gossip_hears(node: Node, peer: NodeKey, alias: str) -> None:
    """NODE's gossip app accepts PEER's node_announcement with ALIAS (as from a peer: checked, stored, published)."""
    gossip = node.apps["gossip"]
    await gossip.add_own([GOSSIP_REGISTRY.decode(m) for m in _announced(peer, alias)])  # type: ignore[attr-defined]
    await gossip.drain()  # type: ignore[attr-defined]


@pytest.mark.trio
async def test_a_backup_names_each_peer_by_its_alias_and_lists_its_channels_before_a_restore(tmp_path: Path) -> None:
    """Bob's gossip knows Alice as "alpha": his backup names her so, listchannelbackup shows it (for the
    node's backup and a file), and so do listchannels and a restore on a fresh node without gossip;
    Alice, without gossip, names no alias."""
    async with _chain_and_alice(tmp_path) as (source, pair, alice):
        bob_channels = tmp_path / "bob" / "channels"
        backup_file = bob_channels / "channels.backup"
        exported = tmp_path / "bob.backup"
        async with running(alice):
            bob = pair.node("bob", False)
            bob.mount(_gossip_knowing(tmp_path / "bob-gossip.sqlite3", pair.keys["alice"], "alpha"))
            async with running(bob):
                await open_channel(pair, alice, bob, "anchors")
                seed = (bob_channels / "channel_seed").read_bytes()
                await wait_until(lambda: backup_file.exists() and [e.alias for e in decode_backup(backup_file.read_bytes(), seed)] == ["alpha"],
                                 "the backup names alice")  # fmt: skip
                (listed,) = (await channels(bob).listchannelbackup())["channels"]
                channel = only_channel(bob)
                (shown,) = (await channels(bob).listchannels(peer_id=alice.node_id.hex().upper()))["channels"]
                assert shown["peer_alias"] == "alpha" and shown["channel_id"] == channel.channel_id.hex()
                assert (await channels(bob).listchannels(peer_id=bob.node_id.hex()))["channels"] == []
                assert [c["peer_alias"] for c in (await channels(alice).listchannels())["channels"]] == [None]
                assert listed["alias"] == "alpha" and listed["peer_id"] == alice.node_id.hex() and listed["on_this_node"]
                assert listed["channel_id"] == channel.channel_id.hex() and listed["capacity_sat"] == channel.core.state.funding_sat
                assert listed["short_channel_id"] == str(ShortChannelId.from_int(channel.core.state.short_channel_id))
                await channels(bob).exportchannelbackup(str(exported))
                assert (await channels(bob).listchannelbackup(file=str(exported)))["channels"] == [listed]
                assert [e.alias for e in decode_backup(exported.read_bytes(), seed)] == ["alpha"]
                (theirs,) = (await channels(alice).listchannelbackup())["channels"]
                assert theirs["alias"] is None and theirs["peer_id"] == bob.node_id.hex()
                with pytest.raises(ChainAppError, match="another seed"):
                    await channels(alice).listchannelbackup(file=str(exported))
                with pytest.raises(ParamsError, match="one of the two"):
                    await channels(bob).listchannelbackup(backup="00", file=str(exported))
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            _lose_channels(bob_channels, seed)
            bob = pair.node("bob", False)
            async with running(bob):
                assert (await channels(bob).listchannelbackup(file=str(exported)))["channels"] == [listed | {"on_this_node": False}]
                (restored,) = (await channels(bob).restorechannels(file=str(exported)))["channels"]
                assert restored["alias"] == "alpha" and restored["restored"] and restored["channel_id"] == listed["channel_id"]
                assert (await channels(bob).listchannelbackup(file=str(exported)))["channels"] == [listed]


@pytest.mark.trio
async def test_a_peer_announced_after_an_open_or_a_restore_is_named_in_the_backup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bob's gossip knows nothing of Alice yet: another node's announcement makes the listener count
    Bob's channel peers (none) before the open; Alice announces "alpha" after it and the backup and
    listchannels name her; a cooperative close takes her out of that count. On a fresh node without
    gossip, the channel restored from the backup made before the close keeps "alpha" in the next
    backup, and Alice's new alias, heard later, rewrites it."""
    async with _chain_and_alice(tmp_path) as (source, pair, alice):
        bob_channels = tmp_path / "bob" / "channels"
        backup_file = bob_channels / "channels.backup"
        seed = b""

        def backup_names() -> list[str]:
            return [e.alias for e in decode_backup(backup_file.read_bytes(), seed)] if backup_file.exists() else []

        async def listed_alias(node: Node) -> str | None:
            (shown,) = (await channels(node).listchannels())["channels"]
            return shown["peer_alias"]  # type: ignore[no-any-return]

        async with running(alice):
            bob = pair.node("bob", False)
            bob.mount(_gossip_knowing(tmp_path / "bob-gossip.sqlite3"))
            async with running(bob):
                await _gossip_hears(bob, NodeKey.generate(), "carol")
                assert channels(bob)._channel_peers == set()  # counted before the open
                await open_channel(pair, alice, bob, "anchors")
                seed = (bob_channels / "channel_seed").read_bytes()
                await wait_until(lambda: backup_names() == [""], "the backup holds the channel, no alias known")
                assert await listed_alias(bob) is None
                await _gossip_hears(bob, pair.keys["alice"], "alpha")
                await wait_until(lambda: backup_names() == ["alpha"], "alice's announcement after the open names her")
                assert await listed_alias(bob) == "alpha"
                capsys.readouterr()
                print_channels(await channels(bob).listchannels())
                assert f"peer {alice.node_id.hex()[:16]}... (alpha)  " in capsys.readouterr().out.splitlines()[0]
                named = backup_file.read_bytes()
                # a cooperative close takes Alice out of the peers the listener looks for
                assert channels(bob)._backed_up_peers() == {alice.node_id}
                assert (await channels(bob).closechannel(only_channel(bob).channel_id.hex()))["state"] == "closed"
                assert channels(bob)._backed_up_peers() == set()
            await wait_until(lambda: bob.node_id not in alice.peers, "alice sees bob go")
            _lose_channels(bob_channels, seed)
            bob = pair.node("bob", False)
            bob.mount(_gossip_knowing(tmp_path / "bob-gossip-fresh.sqlite3"))
            async with running(bob):
                await _gossip_hears(bob, NodeKey.generate(), "carol")
                (restored,) = (await channels(bob).restorechannels(backup=named.hex()))["channels"]
                assert restored["alias"] == "alpha"
                assert backup_names() == ["alpha"] and await listed_alias(bob) == "alpha"  # the restored backup's
                await _gossip_hears(bob, pair.keys["alice"], "alpha two")
                await wait_until(lambda: backup_names() == ["alpha two"], "alice's new alias, heard after the restore")
                assert await listed_alias(bob) == "alpha two"


def test_listchannelbackup_and_restorechannels_print_each_peers_alias(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``lnpmsg listchannelbackup [FILE]`` asks for the node's backup or the file's; the text names each
    peer by its alias (escaped when it would move the cursor), and so does a restore's."""
    from lnpmsg.channels import commands
    from lnpmsg.cli import build_parser

    def request(*argv: str) -> tuple[str, dict[str, object]]:
        method, params, _ = commands._request(build_parser().parse_args(list(argv)))
        return method, params

    assert request("listchannelbackup") == ("channels.listchannelbackup", {})
    assert request("listchannelbackup", str(tmp_path / "safe.backup")) == ("channels.listchannelbackup", {"file": str(tmp_path / "safe.backup")})
    peer = "02" + "11" * 32
    listed = {"channel_id": "ab" * 32, "peer_id": peer, "alias": "alpha", "funding_outpoint": "cd" * 32 + ":1", "capacity_sat": 1_000_000,
              "short_channel_id": "120x1x1", "addresses": ["mem://7"], "on_this_node": False}  # fmt: skip
    commands._print_backup({"channels": [listed, listed | {"alias": None, "on_this_node": True, "short_channel_id": None, "addresses": []}]})
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{'ab' * 32}  1000000 sat with {peer} (alpha)", f"    funding {'cd' * 32}:1, short channel id 120x1x1, addresses mem://7",
                   f"{'ab' * 32}  1000000 sat with {peer}, on this node", f"    funding {'cd' * 32}:1, short channel id -, addresses -"]  # fmt: skip
    commands._print_backup({"channels": []})
    assert capsys.readouterr().out == "no channels in the backup\n"
    commands._print_restored({"channels": [{"channel_id": "ab" * 32, "peer_id": peer, "alias": "evil\n\x1b[2J"},
                                           {"channel_id": "ef" * 32, "peer_id": peer, "alias": None}]})  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out == [f"channel {'ab' * 32} with {peer} ('evil\\n\\x1b[2J') restored: the peer is asked to force-close",
                   f"channel {'ef' * 32} with {peer} restored: the peer is asked to force-close"]  # fmt: skip
