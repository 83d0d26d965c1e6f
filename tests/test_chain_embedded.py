"""The embedded chain as a trio ChainSource: subscriptions, watch events
(confirmed, spent, reorged out), broadcast errors. Real kernel throughout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from lnpmsg.bitcoin.tx import Tx, TxIn, TxOut
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    OutputConfirmed,
    OutputSpent,
    ReorgedOut,
)
from lnpmsg.chain.follow import ChainFollower
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT
from lnpmsg.chain.source import Subscription, catch_up

WATCHED = b"\x00\x20" + b"\x77" * 32


async def next_of(sub: Subscription, kind: type, limit: int = 50) -> ChainEvent:
    """The next event of ``kind`` (skipping others), within a time limit."""
    with trio.fail_after(10):
        for _ in range(limit):
            event = await sub.receive()
            if isinstance(event, kind):
                return event
    raise AssertionError(f"no {kind.__name__}")


def spend_faucet_output(outpoint_tx: Tx, vout: int) -> Tx:
    out = outpoint_tx.outputs[vout]
    return Tx(
        2,
        (TxIn(outpoint_tx.outpoint(vout), b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),),
        (TxOut(out.amount_sat - 1_000, FAUCET_SCRIPT),),
    )


async def test_watch_outpoint_confirmed_spent_and_reorged_out(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        async with source.subscribe() as sub:
            # pay the watched script, and watch that exact output as a channel would its funding
            outpoint = await source.faucet(FAUCET_SCRIPT, 250_000)
            await sub.watch_outpoint(outpoint)
            (b1,) = await source.mine(1)
            confirmed = await next_of(sub, OutputConfirmed)
            assert isinstance(confirmed, OutputConfirmed)
            assert confirmed.outpoint == outpoint and confirmed.block_hash == b1
            assert confirmed.txout.amount_sat == 250_000
            connected = await next_of(sub, BlockConnected)
            assert isinstance(connected, BlockConnected) and connected.block_hash == b1

            found = source.core.find_transaction(outpoint.txid)
            assert found is not None
            spender = spend_faucet_output(found[0], outpoint.vout)
            assert await source.broadcast(spender.raw) == spender.txid
            fork_parent = (await source.tip()).block_hash
            (b2,) = await source.mine(1)
            spent = await next_of(sub, OutputSpent)
            assert isinstance(spent, OutputSpent)
            assert spent.spending_tx.txid == spender.txid and spent.block_hash == b2

            # a longer branch without the spend: the spend is reorged out
            await trio.to_thread.run_sync(
                lambda: source.core.mine(2, parent=fork_parent)
            )
            undone = await next_of(sub, ReorgedOut)
            assert isinstance(undone, ReorgedOut) and undone.event == spent
            gone = await next_of(sub, BlockDisconnected)
            assert isinstance(gone, BlockDisconnected) and gone.block_hash == b2
            # the spend went back to the mempool; the next block confirms it again
            await source.mine(1)
            again = await next_of(sub, OutputSpent)
            assert (
                isinstance(again, OutputSpent)
                and again.spending_tx.txid == spender.txid
            )


async def test_rescan_reports_history(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        await source.faucet(WATCHED, 10_000)
        await source.mine(1)
        height = (await source.tip()).height
        async with source.subscribe() as sub:
            await sub.watch_script(WATCHED, since_height=height)
            event = await next_of(sub, OutputConfirmed)
            assert isinstance(event, OutputConfirmed) and event.height == height
            assert event.txout.script_pubkey == WATCHED


async def test_subscribe_from_height_replays_blocks(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        hashes = await source.mine(5)
        async with source.subscribe(start_height=3) as sub:
            seen = [await next_of(sub, BlockConnected) for _ in range(3)]
            assert [e.block_hash for e in seen] == hashes[2:]  # type: ignore[union-attr]


async def test_catch_up_and_wait_for_new_tip(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(3)
        follower = ChainFollower()
        events = await catch_up(source, follower)
        assert [e.height for e in events if isinstance(e, BlockConnected)] == [
            0,
            1,
            2,
            3,
        ]
        tip = await source.tip()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.mine, 1)
            with trio.fail_after(10):
                new = await source.wait_for_new_tip(tip.block_hash)
        assert new.height == tip.height + 1
        assert await source.block_hash(99) is None
        assert (await source.block_at(1))[:4] == (0x20000000).to_bytes(4, "little")


async def test_broadcast_errors_carry_reasons(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        with pytest.raises(ChainError) as info:
            await source.broadcast(b"\x02\x00\x00")
        assert info.value.code == "malformed"
        outpoint = await source.faucet(FAUCET_SCRIPT, 20_000)
        await source.mine(1)
        found = source.core.find_transaction(outpoint.txid)
        assert found is not None
        signalling = spend_faucet_output(found[0], 0)
        # a does not signal BIP 125 replaceability: b, paying more, is refused all the same
        a = Tx(2, (replace(signalling.inputs[0], sequence=0xFFFFFFFE),), signalling.outputs)
        b = Tx(2, a.inputs, (TxOut(5_000, FAUCET_SCRIPT),))
        await source.broadcast(a.raw)
        with pytest.raises(ChainError) as info:
            await source.broadcast(b.raw)
        assert info.value.code == "txn-mempool-conflict"
        assert await source.estimate_feerate(2) >= 253
        result = await source.submit_transactions_in_block([b])
        assert (
            result.accepted
        )  # a block may hold what the mempool refused: the kernel decides
        assert (
            a.txid not in source.core.mempool_txids()
        )  # the conflict left the mempool


async def test_reorg_of_the_block_a_subscription_started_from(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(3)
        start = await source.tip()
        parent = await source.block_hash(start.height - 1)
        assert parent is not None
        async with source.subscribe() as sub:
            fork = await trio.to_thread.run_sync(
                lambda: source.core.mine(2, parent=parent)
            )
            gone = await next_of(sub, BlockDisconnected)
            assert (
                isinstance(gone, BlockDisconnected)
                and gone.block_hash == start.block_hash
            )
            first = await next_of(sub, BlockConnected)
            second = await next_of(sub, BlockConnected)
            assert [first.block_hash, second.block_hash] == fork  # type: ignore[union-attr]
