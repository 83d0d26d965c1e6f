"""Fee bumping of the wallet's unconfirmed transactions on the embedded regtest chain: CPFP of a
withdrawal's change, RBF of a withdrawal (the replacement mined, the balance right), each refusal,
reservations freed by a refused broadcast, persistence before the broadcast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lnpmsg.bitcoin.tx import SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT
from lnpmsg.wallet import InsufficientFunds, Wallet, WalletError

from test_wallet_wallet import funded_wallet


@pytest.fixture
async def source(tmp_path: Path):
    async with EmbeddedChainSource.open(tmp_path / "chain") as src:
        await src.mine(101)
        yield src


def _waiting(source: EmbeddedChainSource) -> dict[bytes, int]:
    """txid -> fee of the mempool's transactions."""
    _, entries = source.core.mempool_snapshot()
    return {tx.txid: fee for tx, fee in entries}


async def _external(source: EmbeddedChainSource, tmp_path: Path) -> str:
    other = await Wallet.open(tmp_path / "other", source)
    return other.new_address()


def refuse_broadcasts(
    monkeypatch: pytest.MonkeyPatch, source: EmbeddedChainSource, wallet_file: Path, refusal: ChainError
) -> list[dict[str, object]]:
    """Every broadcast through ``source`` refused with ``refusal``; the list it returns gets the
    wallet file as it stands at each attempt (what was persisted before the send)."""
    seen: list[dict[str, object]] = []

    async def refuse(raw: bytes) -> bytes:
        seen.append(json.loads(wallet_file.read_text()))
        raise refusal

    monkeypatch.setattr(source, "broadcast", refuse)
    return seen


async def test_cpfp_of_a_withdrawal_change(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000)
    sent = await wallet.withdraw(await _external(source, tmp_path), 100_000, feerate_per_kw=253)
    parent_rate = sent.fee_sat / sent.tx.vsize
    assert parent_rate < 1.5
    bump = await wallet.bump_cpfp(sent.txid, 10)
    child = bump.tx
    assert [i.prevout.txid for i in child.inputs] == [sent.txid]  # the change of the withdrawal
    assert len(child.outputs) == 1 and child.outputs[0].script_pubkey in wallet._scripts
    waiting = _waiting(source)
    assert waiting[child.txid] == bump.fee_sat and waiting[sent.txid] == sent.fee_sat
    package_rate = (bump.fee_sat + sent.fee_sat) / (child.vsize + sent.tx.vsize)
    assert 10 <= package_rate < 10.2  # the package reaches the rate asked, not much more
    result = bump.result()
    assert result["package_fee_sat"] == bump.fee_sat + sent.fee_sat and result["parent_txid"] == sent.tx.txid_hex
    assert result["package_feerate_sat_per_vb"] >= 10
    # the child is held (written before it left), its output is the wallet's unconfirmed change
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    assert child.txid_hex in state["held"] and state["reserved"][str(child.inputs[0].prevout)] == child.txid.hex()
    balances = wallet.balances()
    assert balances.unconfirmed_sat == child.outputs[0].amount_sat and balances.confirmed_sat == 0
    # bumped again: that change is spent already
    with pytest.raises(WalletError) as info:
        await wallet.bump_cpfp(sent.txid, 20)
    assert info.value.code == "spent" and child.txid_hex in info.value.reason
    await source.mine(1)
    await wallet.sync()
    assert wallet.reserved() == {} and wallet.held_transactions() == []
    assert wallet.balance() == 300_000 - 100_000 - sent.fee_sat - bump.fee_sat
    with pytest.raises(WalletError) as info:
        await wallet.bump_cpfp(sent.txid, 20)
    assert info.value.code == "confirmed"


async def test_cpfp_adds_coins_when_the_change_cannot_pay(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 100_600, 50_000)
    address = await _external(source, tmp_path)
    sent = await wallet.withdraw(address, 100_000, feerate_per_kw=253)
    (change,) = [o for o in sent.tx.outputs if o.script_pubkey in wallet._scripts]
    assert change.amount_sat < 50_000  # took the 50 000 coin with the other, or a small change
    bump = await wallet.bump_cpfp(sent.txid, 100)
    assert len(bump.tx.inputs) == 2 and bump.fee_sat > change.amount_sat  # the 50 000 coin helps
    assert bump.tx.txid in _waiting(source)


async def test_cpfp_refusals(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 200_000)
    address = await _external(source, tmp_path)
    everything = await wallet.withdraw(address, "all", feerate_per_kw=253)
    with pytest.raises(WalletError) as info:  # nothing of ours in it
        await wallet.bump_cpfp(everything.txid, 5)
    assert info.value.code == "no-own-output"
    with pytest.raises(WalletError) as info:
        await wallet.bump_cpfp(bytes(32), 5)
    assert info.value.code == "unknown"
    with pytest.raises(WalletError) as info:
        await wallet.bump_cpfp(everything.txid, 0)
    assert info.value.code == "invalid"
    await source.mine(1)
    await wallet.sync()

    wallet2 = await funded_wallet(source, tmp_path / "w2", 10_000)
    sent = await wallet2.withdraw(address, 9_000, feerate_per_kw=1_000)  # 4 sat/vB (a little more: signatures are shorter)
    with pytest.raises(WalletError) as info:  # not above the parent's rate
        await wallet2.bump_cpfp(sent.txid, 3.9)
    assert info.value.code == "feerate" and "higher rate" in info.value.reason
    (change,) = [o for o in sent.tx.outputs if o.script_pubkey in wallet2._scripts]
    with pytest.raises(WalletError) as info:  # the change cannot pay the child, and no other coin
        await wallet2.bump_cpfp(sent.txid, 50)
    assert info.value.code == "dust" and "dust" in info.value.reason
    assert wallet2.reserved() == {o: sent.txid for o in (i.prevout for i in sent.tx.inputs)}
    assert wallet2.balances().unconfirmed_sat == change.amount_sat  # nothing was reserved by the refusals


async def test_a_refused_cpfp_frees_its_coins(source: EmbeddedChainSource, tmp_path: Path, monkeypatch) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000)
    sent = await wallet.withdraw(await _external(source, tmp_path), 100_000, feerate_per_kw=253)
    before = wallet.reserved()
    # persist, then send: the child is on disk when the broadcast happens
    seen = refuse_broadcasts(monkeypatch, source, tmp_path / "w" / "wallet.json", ChainError("mempool full", code="mempool-full"))
    with pytest.raises(WalletError) as info:
        await wallet.bump_cpfp(sent.txid, 10)
    assert info.value.code == "rejected" and "mempool full" in info.value.reason
    assert len(seen[0]["held"]) == 2  # type: ignore[arg-type]
    assert wallet.reserved() == before and len(wallet.held_transactions()) == 1
    assert json.loads((tmp_path / "w" / "wallet.json").read_text())["reserved"] == {str(k): v.hex() for k, v in before.items()}


async def test_rbf_of_a_withdrawal(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000)
    address = await _external(source, tmp_path)
    sent = await wallet.withdraw(address, 100_000, feerate_per_kw=253)
    old_change = next(o for o in sent.tx.outputs if o.script_pubkey in wallet._scripts)
    assert wallet.balances().unconfirmed_sat == old_change.amount_sat
    bump = await wallet.bump_rbf(sent.txid, 12.5)
    new = bump.tx
    assert {i.prevout for i in new.inputs} == {i.prevout for i in sent.tx.inputs}
    paid = [o for o in new.outputs if o.script_pubkey not in wallet._scripts]
    assert [(o.amount_sat, o.script_pubkey) for o in paid] == [
        (o.amount_sat, o.script_pubkey) for o in sent.tx.outputs if o.script_pubkey not in wallet._scripts
    ]
    assert bump.fee_sat / new.vsize >= 12.5 and bump.fee_sat >= sent.fee_sat + new.vsize
    waiting = _waiting(source)
    assert sent.txid not in waiting and waiting[new.txid] == bump.fee_sat  # the mempool replaced it
    new_change = next(o for o in new.outputs if o.script_pubkey in wallet._scripts)
    assert new_change.script_pubkey == old_change.script_pubkey  # the change shrank
    assert new_change.amount_sat == old_change.amount_sat - (bump.fee_sat - sent.fee_sat)
    # the original's change counts no more; the replacement's does
    assert wallet.balances().unconfirmed_sat == new_change.amount_sat
    assert [tx.txid for tx in wallet.held_transactions()] == [new.txid]
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    assert list(state["held"]) == [new.txid_hex] and set(state["reserved"].values()) == {new.txid.hex()}
    assert bump.result()["replaced_txid"] == sent.tx.txid_hex
    # a restart broadcasts the replacement again, not the original
    reopened = await Wallet.open(tmp_path / "w", source)
    assert [tx.txid for tx in reopened.held_transactions()] == [new.txid]
    await source.mine(1)
    await wallet.sync()
    assert wallet.balance() == 300_000 - 100_000 - bump.fee_sat
    assert wallet.balances().unconfirmed_sat == 0 and wallet.reserved() == {}
    assert OutPoint(sent.txid, 0) not in {u.outpoint for u in wallet.list_funds()}
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(new.txid, 20)
    assert info.value.code == "confirmed"


async def test_rbf_drops_a_change_gone_dust_or_adds_a_confirmed_coin(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 101_000, 80_000)
    address = await _external(source, tmp_path)
    sent = await wallet.withdraw(address, 100_000, feerate_per_kw=253)
    assert len(sent.tx.inputs) == 1  # the 101 000 coin alone, a change of under 1 000 sat
    bump = await wallet.bump_rbf(sent.txid, 30)
    assert len(bump.tx.inputs) == 2  # the 80 000 coin added
    assert sum(o.amount_sat for o in bump.tx.outputs if o.script_pubkey not in wallet._scripts) == 100_000
    assert bump.tx.txid in _waiting(source) and sent.txid not in _waiting(source)
    again = await wallet.bump_rbf(bump.tx.txid, 40)  # a replacement is the wallet's spend: replaced in turn
    assert {i.prevout for i in again.tx.inputs} == {i.prevout for i in bump.tx.inputs}
    assert list(_waiting(source)) == [again.tx.txid] and again.result()["replaced_fee_sat"] == bump.fee_sat
    await source.mine(1)
    await wallet.sync()
    assert wallet.balance() == 181_000 - 100_000 - again.fee_sat


async def test_rbf_refusals(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 300_000, 200_000)
    address = await _external(source, tmp_path)
    funded = await wallet.fund_output(b"\x00\x20" + bytes(range(32)), 100_000, feerate_per_kw=253)
    await source.broadcast(funded.tx.raw)  # as the channel app does
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(funded.tx.txid, 10)
    assert info.value.code == "channel" and "CPFP" in info.value.reason
    sent = await wallet.withdraw(address, 50_000, feerate_per_kw=1_000)
    with pytest.raises(WalletError) as info:  # the channel app names it a funding
        await wallet.bump_rbf(sent.txid, 10, channel_txids={sent.txid})
    assert info.value.code == "channel"
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(sent.txid, 3.9)  # below its own rate
    assert info.value.code == "feerate"
    child = await wallet.bump_cpfp(sent.txid, 6)
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(sent.txid, 10)  # the child would be evicted
    assert info.value.code == "has-descendants" and child.tx.txid_hex in info.value.reason
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(bytes(32), 10)
    assert info.value.code == "unknown"
    assert {tx.txid for tx in wallet.held_transactions()} == {funded.tx.txid, sent.txid, child.tx.txid}


async def test_rbf_needing_more_than_the_wallet_has(source: EmbeddedChainSource, tmp_path: Path) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 100_000)
    sent = await wallet.withdraw(await _external(source, tmp_path), "all", feerate_per_kw=253)
    with pytest.raises(InsufficientFunds):
        await wallet.bump_rbf(sent.txid, 5)  # the recipient's amount is kept: no coin to pay more
    assert [tx.txid for tx in wallet.held_transactions()] == [sent.txid]


async def test_a_refused_rbf_gives_the_original_its_coins_back(source: EmbeddedChainSource, tmp_path: Path, monkeypatch) -> None:
    wallet = await funded_wallet(source, tmp_path / "w", 101_000, 80_000)
    sent = await wallet.withdraw(await _external(source, tmp_path), 100_000, feerate_per_kw=253)
    before = (wallet.reserved(), wallet.balances())
    refusal = ChainError("insufficient fee: rejecting replacement", code="insufficient fee")
    seen = refuse_broadcasts(monkeypatch, source, tmp_path / "w" / "wallet.json", refusal)
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(sent.txid, 30)
    assert info.value.code == "rejected"
    assert sent.tx.txid_hex not in seen[0]["held"] and len(seen[0]["held"]) == 1  # type: ignore[operator,arg-type]
    assert (wallet.reserved(), wallet.balances()) == before  # the added coin is free again
    assert [tx.txid for tx in wallet.held_transactions()] == [sent.txid]
    state = json.loads((tmp_path / "w" / "wallet.json").read_text())
    assert list(state["held"]) == [sent.tx.txid_hex]


async def test_the_replaced_withdrawal_confirming_after_all(source: EmbeddedChainSource, tmp_path: Path) -> None:
    """A miner took the original: the wallet counts its change and forgets the replacement and its added coin."""
    wallet = await funded_wallet(source, tmp_path / "w", 101_000, 80_000)
    sent = await wallet.withdraw(await _external(source, tmp_path), 100_000, feerate_per_kw=253)
    bump = await wallet.bump_rbf(sent.txid, 30)
    assert len(bump.tx.inputs) == 2
    result = await source.submit_transactions_in_block([sent.tx])
    assert result.accepted, result.reason
    await wallet.sync()
    assert wallet.reserved() == {} and wallet.held_transactions() == []
    assert wallet.balance() == 181_000 - 100_000 - sent.fee_sat


async def test_rbf_refuses_a_transaction_with_inputs_not_the_wallets(source: EmbeddedChainSource, tmp_path: Path) -> None:
    """A spend of a wallet coin together with someone else's (as a channel's claim with a fee input
    lent by the wallet) comes back held after a reorg: CPFP only, never replaced by the wallet."""
    wallet = await funded_wallet(source, tmp_path / "w", 100_000)
    (coin,) = wallet.list_funds()
    theirs = await source.faucet(FAUCET_SCRIPT, 50_000)
    await source.mine(1)
    unsigned = Tx(
        2,
        (TxIn(coin.outpoint, b"", SEQUENCE_RBF), TxIn(theirs, b"", SEQUENCE_RBF, (FAUCET_WITNESS_SCRIPT,))),
        (TxOut(149_000, FAUCET_SCRIPT),),
    )
    (witness,) = wallet.sign_inputs(unsigned, [0])
    tx = unsigned.with_witness(0, witness)
    await source.broadcast(tx.raw)
    (mined,) = await source.mine(1)
    await wallet.sync()
    await trio.to_thread.run_sync(source.core.invalidate_block, mined)  # back to the mempool
    await wallet.sync()
    assert [t.txid for t in wallet.held_transactions()] == [tx.txid]  # our coin's spend, held again
    with pytest.raises(WalletError) as info:
        await wallet.bump_rbf(tx.txid, 20)
    assert info.value.code == "not-ours" and "input 1" in info.value.reason
