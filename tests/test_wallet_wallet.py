"""The on-chain wallet over the embedded chain: every spend it signs is mined
and accepted by the real consensus engine (libbitcoinkernel)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from embit import bip39

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.fees import fee_for_weight
from lnpmsg.chain.address import address_for_script, script_for_address
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.wallet import InsufficientFunds, Wallet, WalletError
from lnpmsg.wallet.keys import SEED_FILE, Account

# BIP84's own test vector (bips/bip-0084.mediawiki: "Test vectors"); BIP84 is not in ../shared
BIP84_MNEMONIC = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
BIP84_FIRST_RECEIVE = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
BIP84_FIRST_CHANGE = "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"


@pytest.fixture
async def source(tmp_path: Path):
    async with EmbeddedChainSource.open(tmp_path / "chain") as src:
        await src.mine(101)
        yield src


async def funded_wallet(
    source: EmbeddedChainSource, path: Path, *amounts: int
) -> Wallet:
    wallet = await Wallet.open(path, source)
    for amount in amounts:
        await source.faucet(wallet.new_address(), amount)
    await source.mine(1)
    await wallet.sync()
    return wallet


def test_bip84_vector() -> None:
    account = Account(bip39.mnemonic_to_seed(BIP84_MNEMONIC), "bc")
    assert (
        address_for_script(account.derive(0, 0).script_pubkey, "bc")
        == BIP84_FIRST_RECEIVE
    )
    assert (
        address_for_script(account.derive(1, 0).script_pubkey, "bc")
        == BIP84_FIRST_CHANGE
    )


async def test_seed_created_private_and_reused(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await Wallet.open(tmp_path / "w", source)
    seed = tmp_path / "w" / SEED_FILE
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600 and len(seed.read_bytes()) == 32
    first = wallet.new_address()
    assert first.startswith("bcrt1q")
    again = await Wallet.open(tmp_path / "w", source)
    assert again.new_address() != first  # the index survived
    assert again.account.xpub == wallet.account.xpub
    os.chmod(seed, 0o644)
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "w", source)
    assert info.value.code == "permissions"
    os.chmod(seed, 0o600)
    seed.write_bytes(b"short")
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "w", source)
    assert info.value.code == "corrupt"
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "none", source, create=False)
    assert info.value.code == "missing"


async def test_faucet_funds_seen_and_withdraw_accepted(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    alice = await funded_wallet(source, tmp_path / "alice", 1_000_000, 250_000)
    funds = alice.list_funds()
    assert sorted(u.amount_sat for u in funds) == [250_000, 1_000_000]
    assert all(
        u.spendable and u.confirmations == 1 and u.address.startswith("bcrt1q")
        for u in funds
    )
    assert alice.balance() == 1_250_000

    bob = await Wallet.open(tmp_path / "bob", source)
    tip = await source.tip()
    withdrawal = await alice.withdraw(bob.new_address(), 300_000, feerate_per_kw=1_000)
    assert withdrawal.fee_sat >= fee_for_weight(withdrawal.tx.weight, 1_000)
    (block_hash,) = await source.mine(1)
    # the kernel connected the block holding the wallet's signed transaction
    assert (await source.tip()).height == tip.height + 1
    assert withdrawal.txid in [
        tx.txid for tx in Block.parse(await source.block(block_hash)).txs
    ]
    await alice.sync()
    await bob.sync()
    assert bob.balance() == 300_000
    assert alice.balance() == 1_250_000 - 300_000 - withdrawal.fee_sat
    # change went to the change chain
    assert any(u.key_path.startswith("1/") for u in alice.list_funds())

    everything = await bob.withdraw(alice.new_address(), "all", feerate_per_kw=500)
    assert everything.amount_sat == 300_000 - everything.fee_sat
    await source.mine(1)
    await bob.sync()
    await alice.sync()
    assert bob.balance() == 0 and bob.list_funds() == []
    assert alice.balance() == 1_250_000 - withdrawal.fee_sat - everything.fee_sat


async def test_insufficient_funds_and_bad_requests(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 50_000)
    target = wallet.new_address()
    with pytest.raises(InsufficientFunds) as info:
        await wallet.withdraw(target, 60_000, feerate_per_kw=253)
    assert (
        info.value.available_sat == 50_000 and "insufficient funds" in info.value.reason
    )
    with pytest.raises(InsufficientFunds):
        await wallet.withdraw(
            target, 50_000, feerate_per_kw=253
        )  # the fee does not fit
    with pytest.raises(WalletError) as werr:
        await wallet.withdraw(target, 100, feerate_per_kw=253)
    assert werr.value.code == "dust"
    with pytest.raises(WalletError) as werr:
        await wallet.withdraw("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 10_000)
    assert werr.value.code == "invalid"
    empty = await Wallet.open(tmp_path / "empty", source)
    with pytest.raises(InsufficientFunds):
        await empty.withdraw(target, "all")
    assert wallet.balance() == 50_000  # nothing was spent or reserved


async def test_fund_output_reserves_then_kernel_accepts(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 400_000, 400_000)
    funding_script = b"\x00\x20" + bytes(range(32))  # a channel's P2WSH funding output
    funded = await wallet.fund_output(funding_script, 500_000, feerate_per_kw=2_000)
    assert funded.tx.outputs[funded.output_index].script_pubkey == funding_script
    assert funded.tx.outputs[funded.output_index].amount_sat == 500_000
    assert wallet.balance() == 0  # both coins are held for the funding transaction
    assert funded.tx.txid not in source.core.mempool_txids()
    result = await source.submit_transactions_in_block([funded.tx])
    assert result.accepted, result.reason
    await wallet.sync()
    info = await source.get_txout(funded.outpoint)
    assert info is not None and info.txout.amount_sat == 500_000
    assert wallet.balance() == 800_000 - 500_000 - funded.fee_sat
    assert all(u.reserved_by is None for u in wallet.list_funds())


async def test_release_and_rejected_broadcast(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 200_000)
    funded = await wallet.fund_output(
        b"\x00\x20" + b"\x01" * 32, 100_000, feerate_per_kw=1_000
    )
    await source.broadcast(funded.tx.raw)
    assert (
        wallet.release(funded.tx.txid) == 1
    )  # a mistaken release: the coin is spent in the mempool
    with pytest.raises(WalletError) as info:
        await wallet.withdraw(wallet.new_address(), 50_000, feerate_per_kw=1_000)
    # the same coin spent at the same rate: no BIP 125 replacement of the mempool's transaction
    assert info.value.code == "rejected" and "rejecting replacement" in info.value.reason
    assert (
        wallet.balance() == 200_000
    )  # the failed withdrawal released what it reserved
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    assert state["reserved"] == {}


async def test_restart_recovers_coins_from_chain(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 70_000, 80_000)
    before = wallet.list_funds()
    reopened = await Wallet.open(tmp_path / "w", source)
    assert reopened.list_funds() == before


async def test_reorg_removes_and_restores_coins(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await Wallet.open(tmp_path / "w", source)
    parent = (await source.tip()).block_hash
    await source.faucet(wallet.new_address(), 90_000)
    await source.mine(1)
    await wallet.sync()
    assert wallet.balance() == 90_000
    source.core.mine(2, parent=parent)  # a longer branch without the payment
    await wallet.sync()
    assert wallet.balance() == 0
    await source.mine(1)  # the payment returned to the mempool; confirmed again
    await wallet.sync()
    assert wallet.balance() == 90_000


async def test_mined_coins_mature_after_100_blocks(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await Wallet.open(tmp_path / "w", source)
    await source.mine(1, wallet.new_address())
    await wallet.sync()
    (coin,) = wallet.list_funds()
    assert coin.is_coinbase and not coin.spendable and wallet.balance() == 0
    await source.mine(99)
    await wallet.sync()
    assert wallet.balance() == coin.amount_sat
    withdrawal = await wallet.withdraw(
        wallet.new_address(), 1_000_000, feerate_per_kw=253
    )
    await source.mine(1)
    assert await source.get_txout(withdrawal.tx.outpoint(0)) is not None


async def test_wallet_refuses_other_network(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    await Wallet.open(tmp_path / "w", source)
    state_path = tmp_path / "w" / "wallet.json"
    state = json.loads(state_path.read_text())
    state["network"] = "bc"
    state_path.write_text(json.dumps(state))
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "w", source)
    assert info.value.code == "network"
    state_path.write_text("{not json")
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "w", source)
    assert info.value.code == "corrupt"
    assert (
        script_for_address(address_for_script(b"\x00\x14" + b"\x01" * 20))
        == b"\x00\x14" + b"\x01" * 20
    )


async def test_own_unconfirmed_change_is_spent_before_a_block(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 500_000)
    bob = await Wallet.open(tmp_path / "bob", source)
    first = await wallet.withdraw(bob.new_address(), 100_000, feerate_per_kw=1_000)
    change = 500_000 - 100_000 - first.fee_sat
    balances = wallet.balances()
    assert (balances.confirmed_sat, balances.unconfirmed_sat, balances.reserved_sat) == (0, change, 0)
    (pending,) = [u for u in wallet.list_funds() if not u.confirmed]
    assert pending.confirmations == 0 and pending.spendable and pending.amount_sat == change
    # a second withdrawal spends that change, waiting in the mempool behind the first
    second = await wallet.withdraw(bob.new_address(), 150_000, feerate_per_kw=1_000)
    assert second.tx.inputs[0].prevout == pending.outpoint
    assert source.core.mempool_txids() == [first.txid, second.txid]
    await source.mine(1)
    await wallet.sync()
    await bob.sync()
    assert bob.balance() == 250_000
    assert wallet.balance() == 500_000 - 250_000 - first.fee_sat - second.fee_sat
    assert wallet.balances().unconfirmed_sat == 0 and wallet.held_transactions() == []
    assert json.loads((tmp_path / "w" / "wallet.json").read_text())["held"] == {}


class _CrashBeforeBroadcast(BaseException):
    """Stands for the process dying between the reservation's write and the broadcast."""


async def test_crash_between_reservation_and_broadcast_sends_it_at_next_open(
    source: EmbeddedChainSource, tmp_path: Path, monkeypatch
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000)
    target = wallet.new_address()

    async def crash(raw: bytes) -> bytes:
        raise _CrashBeforeBroadcast

    monkeypatch.setattr(source, "broadcast", crash)
    with pytest.raises(_CrashBeforeBroadcast):
        await wallet.withdraw(target, 120_000, feerate_per_kw=1_000)
    monkeypatch.undo()
    assert source.core.mempool_txids() == []  # it never left
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    (txid_hex,) = state["held"]
    # the next process opens the wallet: the withdrawal leaves now
    reopened = await Wallet.open(tmp_path / "w", source)
    assert [t.hex() for t in source.core.mempool_txids()] == [bytes.fromhex(txid_hex)[::-1].hex()]
    await source.mine(1)
    await reopened.sync()
    assert reopened.reserved() == {} and reopened.held_transactions() == []
    assert 300_000 - 1_000 < reopened.balance() < 300_000  # all ours again, less the fee


async def test_a_held_withdrawal_that_can_never_confirm_is_released_at_open(
    source: EmbeddedChainSource, tmp_path: Path, monkeypatch, caplog
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000)
    other = await Wallet.open(tmp_path / "other", source)

    async def crash(raw: bytes) -> bytes:
        raise _CrashBeforeBroadcast

    monkeypatch.setattr(source, "broadcast", crash)
    with pytest.raises(_CrashBeforeBroadcast):
        await wallet.withdraw(other.new_address(), 120_000, feerate_per_kw=1_000)
    monkeypatch.undo()
    # a copy of the wallet (same seed, without the held transaction) spends the coin otherwise
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / SEED_FILE).write_bytes((tmp_path / "w" / SEED_FILE).read_bytes())
    os.chmod(copy / SEED_FILE, 0o600)
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    (copy / "wallet.json").write_text(json.dumps({**state, "reserved": {}, "held": {}}))
    twin = await Wallet.open(copy, source)
    spent_elsewhere = await twin.withdraw(other.new_address(), 50_000, feerate_per_kw=1_000)
    # waiting in the mempool: the held withdrawal conflicts with it
    reopened = await Wallet.open(tmp_path / "w", source)
    assert reopened.reserved() == {} and reopened.held_transactions() == []
    # (the twin's spend pays the same rate: the held one cannot replace it, BIP 125)
    assert any("can never confirm" in r.getMessage() and "rejecting replacement" in r.getMessage() for r in caplog.records)
    await source.mine(1)
    await reopened.sync()
    assert reopened.balance() == 300_000 - 50_000 - spent_elsewhere.fee_sat
    # a held transaction whose coins were spent on the chain meanwhile leaves quietly
    assert json.loads((tmp_path / "w" / "wallet.json").read_text())["held"] == {}


async def test_release_one_outpoint(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 100_000, 200_000)
    funded = await wallet.fund_output(b"\x00\x20" + b"\x03" * 32, 250_000, feerate_per_kw=1_000)
    assert wallet.balances().reserved_sat == 300_000
    first = funded.tx.inputs[0].prevout
    assert wallet.release_outpoint(first) == funded.tx.txid
    assert wallet.release_outpoint(first) is None
    assert wallet.balances().reserved_sat == 300_000 - wallet.balances().confirmed_sat
    reopened = await Wallet.open(tmp_path / "w", source)
    assert list(reopened.reserved()) == [funded.tx.inputs[1].prevout]
    assert [t.txid for t in reopened.held_transactions()] == [funded.tx.txid]


async def test_damaged_state_says_what_to_do_and_the_seed_recovers_every_coin(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 70_000, 80_000)
    await source.mine(5)
    state_path = tmp_path / "w" / "wallet.json"
    state_path.write_text("{garbage")
    with pytest.raises(WalletError) as info:
        await Wallet.open(tmp_path / "w", source)
    assert info.value.code == "corrupt" and str(state_path) in info.value.reason
    assert "move wallet.json aside" in info.value.reason
    state_path.rename(tmp_path / "w" / "wallet.json.bad")
    recovered = await Wallet.open(tmp_path / "w", source)
    assert recovered.balance() == 150_000 == wallet.balance()
    assert recovered.new_address() not in {u.address for u in recovered.list_funds()}


async def test_a_withdrawal_reorged_out_is_held_again(
    source: EmbeddedChainSource, tmp_path: Path
) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 400_000)
    parent = (await source.tip()).block_hash
    sent = await wallet.withdraw(wallet.new_address(), 100_000, feerate_per_kw=1_000)
    await source.mine(1)
    await wallet.sync()
    assert wallet.balance() == 400_000 - sent.fee_sat and wallet.held_transactions() == []
    source.core.mine(2, parent=parent)  # a longer branch without the withdrawal
    await wallet.sync()
    assert sent.txid in source.core.mempool_txids()  # the chain put it back
    assert [t.txid for t in wallet.held_transactions()] == [sent.txid]
    b = wallet.balances()
    assert (b.confirmed_sat, b.unconfirmed_sat) == (0, 400_000 - sent.fee_sat)
    await source.mine(1)
    await wallet.sync()
    assert wallet.balance() == 400_000 - sent.fee_sat and wallet.reserved() == {}
