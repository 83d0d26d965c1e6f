"""The wallet's state file on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`; the
chain on the ordinary disk): what the wallet hands out (addresses, reserved coins) is on disk
first, so an operation whose write fails changes nothing and says so; what the chain tells it
(coins at new indexes) is never lost for a refused write, which is made again once it fits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lnpmsg.chain.address import address_for_script
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.testing.disk import DiskFiller, small_disk
from lnpmsg.wallet import Wallet, WalletError

#: a P2WPKH address of no wallet here
ELSEWHERE = address_for_script(bytes.fromhex("0014") + bytes([0x11]) * 20, "bcrt")


@pytest.fixture
async def source(tmp_path: Path):
    async with EmbeddedChainSource.open(tmp_path / "chain") as src:
        await src.mine(101)
        yield src


def stored(wallet: Wallet) -> dict:
    return json.loads((wallet.wallet_dir / "wallet.json").read_text())


def receive_address(wallet: Wallet, index: int) -> str:
    return address_for_script(wallet.account.derive(0, index).script_pubkey, wallet.hrp)


async def test_an_operation_whose_write_fails_hands_out_nothing_and_changes_nothing(source: EmbeddedChainSource, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        wallet = await Wallet.open(disk / "w", source)
        for amount in (300_000, 200_000):
            await source.faucet(wallet.new_address(), amount)
        await source.mine(1)
        await wallet.sync()
        before = stored(wallet)
        filler = DiskFiller(disk)
        filler.fill()

        with pytest.raises(WalletError) as failed:
            wallet.new_address()
        assert failed.value.code == "io" and "No space left on device" in failed.value.reason
        # Everything to one address: no change output, so the write that fails is the reservation's.
        with pytest.raises(WalletError) as failed:
            await wallet.withdraw(ELSEWHERE, "all", feerate_per_kw=253)
        assert failed.value.code == "io"
        with pytest.raises(WalletError) as failed:
            await wallet.fund_output(bytes.fromhex("0020") + bytes(32), 100_000, feerate_per_kw=253)
        assert failed.value.code == "io"
        # No coin stays reserved for a transaction nobody got, none was broadcast, the file is as it was.
        assert wallet.reserved() == {} and wallet.held_transactions() == []
        assert wallet.balance() == 500_000 and source.core.mempool_txids() == []
        assert stored(wallet) == before and not list((disk / "w").glob("*.tmp"))

        filler.free()
        # The index the failed call did not hand out is the next one handed out: none is skipped.
        assert wallet.new_address() == receive_address(wallet, 2)
        withdrawal = await wallet.withdraw(ELSEWHERE, "all", feerate_per_kw=253)
        assert set(wallet.reserved()) == {i.prevout for i in withdrawal.tx.inputs}
        assert stored(wallet)["next_index"][0] == 3 and stored(wallet)["reserved"]


async def test_coins_the_chain_brings_while_the_disk_is_full_are_kept_and_written_later(
    source: EmbeddedChainSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg.wallet")
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        wallet = await Wallet.open(disk / "w", source)
        first = wallet.new_address()
        # Addresses this wallet never handed out (its seed, restored elsewhere, did): index 5 and 6.
        await source.faucet(receive_address(wallet, 5), 50_000)
        await source.faucet(receive_address(wallet, 6), 60_000)
        await source.faucet(first, 10_000)
        await source.mine(1)
        filler = DiskFiller(disk)
        filler.fill()

        await wallet.sync()  # a coin at a new index wants a write the disk refuses: the sync goes on
        assert sorted(u.amount_sat for u in wallet.list_funds()) == [10_000, 50_000, 60_000]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
        assert stored(wallet)["next_index"] == [1, 0]
        # An open is a start: on the full disk it is refused, naming the file and what to do, and changes nothing.
        written = stored(wallet)
        with pytest.raises(WalletError) as refused:
            await Wallet.open(disk / "w", source)
        assert refused.value.code == "io" and str(disk / "w" / "wallet.json") in refused.value.reason
        assert "No space left on device" in refused.value.reason and "free some space" in refused.value.reason
        assert stored(wallet) == written and not list((disk / "w").glob("*.tmp"))

        filler.free()
        await wallet.sync()  # no new block: the write the disk refused is made now
        assert stored(wallet)["next_index"] == [7, 0]
        assert any("is written again" in r.getMessage() for r in caplog.records)
        assert wallet.new_address() == receive_address(wallet, 7)
        reopened = await Wallet.open(disk / "w", source)
        assert reopened.balance() == 120_000


async def test_a_new_wallet_on_a_full_disk_leaves_no_seed_behind_and_opens_once_there_is_room(source: EmbeddedChainSource, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        filler = DiskFiller(disk)
        filler.fill()
        with pytest.raises(WalletError) as refused:
            await Wallet.open(disk / "w", source)
        assert refused.value.code == "io" and str(disk / "w" / "seed") in refused.value.reason
        assert "No space left on device" in refused.value.reason and "free some space" in refused.value.reason
        # no seed file at all: an empty one would be "damaged" at the next open
        assert [p.name for p in (disk / "w").iterdir()] == []
        filler.free()
        wallet = await Wallet.open(disk / "w", source)
        assert len((disk / "w" / "seed").read_bytes()) == 32 and wallet.new_address() == receive_address(wallet, 0)
