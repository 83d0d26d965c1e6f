"""Data-loss protection end to end (option_data_loss_protect, BOLT 2): a node
restored from an old copy of its channel store reconnects; the peer's
``channel_reestablish`` proves it is behind; it must not broadcast its (revoked)
commitment, says so in ``listchannels``, and the peer closes with its own.

Two nodes in one process (the channel app on each, the in-memory transport, one
embedded regtest chain, the channel stores on disk).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import trio
from test_channels_app import FUNDING_SAT, PUSH_MSAT, Pair, balances, chain, channels, only_channel, pay, settled, wait_until

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.app import ChannelEvent
from lnpmsg.channels.commands import _print_list as print_channels
from lnpmsg.channels.state import Phase
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running


@pytest.mark.trio
async def test_a_node_restored_from_an_old_store_never_broadcasts_and_waits_for_the_peer(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, network)
        alice = pair.node("alice", True)
        backup = tmp_path / "bob-channels-backup"
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.fund_connect_open(alice, bob)
                await pay(alice, bob, 30_000_000)
                old_commit = only_channel(bob).core.state.local_commit
                assert old_commit is not None
            # Bob stopped: a copy of its channel store, as an old backup would hold it.
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            shutil.copytree(tmp_path / "bob" / "channels", backup)

            bob = pair.node("bob", False)
            async with running(bob):
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
                await pay(alice, bob, 20_000_000)
                await pay(bob, alice, 5_000_000)
                latest = balances(alice)
                assert latest[:2] == (FUNDING_SAT * 1000 - PUSH_MSAT - 45_000_000, PUSH_MSAT + 45_000_000)
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")

            # Bob comes back from the old copy: its commitment is revoked (Alice holds its secret).
            shutil.rmtree(tmp_path / "bob" / "channels")
            shutil.copytree(backup, tmp_path / "bob" / "channels")
            bob = pair.node("bob", False)
            with record_events(alice) as alice_events:
                async with running(bob):
                    restored = only_channel(bob).core.state.local_commit
                    assert restored is not None and restored.number == old_commit.number
                    stale = only_channel(bob).core.latest_commitment_tx()
                    assert stale is not None
                    stale_txid = Tx.parse(stale).txid_hex  # revoked: Alice could take it all
                    with record_events(bob) as bob_events:
                        await bob.connect(alice.addresses[0])
                        await bob_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed")
                    await wait_until(lambda: only_channel(bob).core.state.behind, "bob learns it is behind")
                    # Alice, told by Bob's error, closes with her latest commitment.
                    failed = await alice_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed")
                    assert failed.txid
                    with trio.fail_after(60):
                        while not (mempool := [t[::-1].hex() for t in await trio.to_thread.run_sync(source.core.mempool_txids)]):
                            await trio.sleep(0.05)
                    # The only transaction that spends the funding is Alice's latest commitment.
                    assert mempool == [failed.txid]
                    assert only_channel(alice).phase is Phase.FAILED
                    (listed,) = (await channels(bob).listchannels())["channels"]
                    assert listed["state"] == "awaiting_unilateral" and listed["behind"] is True
                    printed = io.StringIO()
                    with contextlib.redirect_stdout(printed):
                        print_channels(await channels(bob).listchannels())
                    assert "waiting for the peer's commitment" in printed.getvalue()
                    # Bob holds on: his stale commitment never leaves, also not when blocks come
                    # (what may follow Alice's commitment are the monitors' sweeps of its outputs).
                    await source.mine(1)
                    await trio.sleep(0.5)
                    waiting = [t[::-1].hex() for t in await trio.to_thread.run_sync(source.core.mempool_txids)]
                    assert stale_txid not in waiting
                    block = await source.block_at((await source.tip()).height)
                    txids = [tx.txid_hex for tx in _block_txs(block)]
                    assert failed.txid in txids
                    assert stale_txid not in txids and only_channel(bob).core.latest_commitment_tx() is None
            # Restarted once more, Bob still knows it is behind and still waits.
            bob = pair.node("bob", False)
            async with running(bob):
                (listed,) = (await channels(bob).listchannels())["channels"]
                assert listed["state"] == "awaiting_unilateral"


def _block_txs(raw_block: bytes) -> list[Tx]:
    from lnpmsg.bitcoin.block import Block

    return list(Block.parse(raw_block).txs)

