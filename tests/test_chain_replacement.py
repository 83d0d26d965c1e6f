"""BIP 125 replacement in the embedded chain's mempool (lnpmsg.chain.replacement): each rule on a
real regtest chain (P2WSH(OP_TRUE) spends of the faucet, so no signing), the mempool file after a
replacement, and the rules' arithmetic alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT, RegtestChain
from lnpmsg.chain.rpc_calls import ChainRpcCalls
from lnpmsg.chain.rpc_methods import RPC_VERIFY_REJECTED, RpcError
from lnpmsg.chain.replacement import MAX_REPLACEMENT_CANDIDATES, Conflict, check_replacement, signals_rbf

RBF = 0xFFFFFFFD
FINAL = 0xFFFFFFFE


def spend(outpoints: list[OutPoint], amounts: list[int], sequence: int = RBF) -> Tx:
    """Spend faucet-script outputs to faucet-script outputs of ``amounts``."""
    inputs = tuple(TxIn(op, b"", sequence, (FAUCET_WITNESS_SCRIPT,)) for op in outpoints)
    return Tx(2, inputs, tuple(TxOut(a, FAUCET_SCRIPT) for a in amounts))


@pytest.fixture
def chain(tmp_path: Path):
    with RegtestChain(tmp_path / "chain") as c:
        c.mine(101)
        yield c


def coin(chain: RegtestChain, amount: int = 100_000) -> OutPoint:
    outpoint = chain.faucet(FAUCET_SCRIPT, amount)
    chain.mine(1)
    return outpoint


def test_a_replacement_evicts_the_original_and_its_descendants(chain: RegtestChain, tmp_path: Path) -> None:
    a = coin(chain)
    original = spend([a], [99_000])  # 1 000 sat fee
    child = spend([original.outpoint(0)], [98_500])  # 500 sat
    chain.broadcast(original)
    chain.broadcast(child)
    # rule 3 counts the descendant's fee: 1 500 + its own size are needed
    with pytest.raises(ChainError) as info:
        chain.broadcast(spend([a], [100_000 - 1_400]))
    assert info.value.code == "insufficient fee" and "less fees than conflicting txs" in info.value.reason
    replacement = spend([a], [100_000 - 1_500 - 100])
    with pytest.raises(ChainError) as info:  # rule 4: 100 sat more is less than its ~100 vB at 1 sat/vB
        chain.broadcast(spend([a], [100_000 - 1_500 - 50]))
    assert info.value.code == "insufficient fee" and "not enough additional fees to relay" in info.value.reason
    assert replacement.vsize <= 100
    chain.broadcast(replacement)
    assert chain.mempool_txids() == [replacement.txid]
    # the file holds the mempool as it is now (a reopen does not bring the evicted ones back)
    chain.close()
    with RegtestChain(tmp_path / "chain") as reopened:
        assert reopened.mempool_txids() == [replacement.txid]
        reopened.mine(1)
        assert reopened.find_transaction(replacement.txid)[1] == reopened.height  # type: ignore[index]
        assert reopened.find_transaction(original.txid) is None


def test_rule_6_the_rate_must_rise_and_signalling_is_needed(chain: RegtestChain) -> None:
    a, b = coin(chain), coin(chain)
    big = spend([a, b], [197_000])  # 3 000 sat
    chain.broadcast(big)
    # more fee than rules 3 and 4 ask, but spread over more outputs: a lower rate (rule 6)
    bulky = spend([a], [20_000] * 4 + [100_000 - 80_000 - 3_300])
    assert 3_300 >= 3_000 + bulky.vsize and 3_300 * big.vsize < 3_000 * bulky.vsize
    with pytest.raises(ChainError) as info:
        chain.broadcast(bulky)
    assert info.value.code == "insufficient fee" and "new feerate" in info.value.reason
    assert chain.mempool_txids() == [big.txid]
    c = coin(chain)
    plain = spend([c], [99_000], sequence=FINAL)
    chain.broadcast(plain)
    assert not signals_rbf(plain)
    with pytest.raises(ChainError) as info:
        chain.broadcast(spend([c], [90_000]))
    assert info.value.code == "txn-mempool-conflict" and "does not signal" in info.value.reason


def test_no_new_unconfirmed_inputs_and_not_spending_what_it_evicts(chain: RegtestChain) -> None:
    a, b, c = coin(chain), coin(chain), coin(chain)
    original = spend([a], [50_000, 49_000])
    chain.broadcast(original)
    other = spend([b], [99_000])
    chain.broadcast(other)
    with pytest.raises(ChainError) as info:  # rule 2: other's output is unconfirmed and new
        chain.broadcast(spend([a, other.outpoint(0)], [150_000]))
    assert info.value.code == "replacement-adds-unconfirmed"
    with pytest.raises(ChainError) as info:  # the same for an output of what it evicts (as Core: rule 2 first)
        chain.broadcast(spend([a, original.outpoint(1)], [90_000]))
    assert info.value.code == "replacement-adds-unconfirmed"
    child = spend([original.outpoint(0)], [49_000])
    chain.broadcast(child)
    with pytest.raises(ChainError) as info:  # a parent of a conflict (child) that it also evicts
        chain.broadcast(spend([a, original.outpoint(0)], [140_000]))
    assert info.value.code == "bad-txns-spends-conflicting-tx"
    # a confirmed new input is fine
    chain.broadcast(spend([a, c], [190_000]))
    assert original.txid not in chain.mempool_txids() and other.txid in chain.mempool_txids()


def test_at_most_100_evicted(chain: RegtestChain) -> None:
    a = coin(chain, 1_000_000)
    fan = spend([a], [9_000] * (MAX_REPLACEMENT_CANDIDATES))
    chain.broadcast(fan)
    for vout in range(MAX_REPLACEMENT_CANDIDATES):
        chain.broadcast(spend([fan.outpoint(vout)], [8_000]))
    with pytest.raises(ChainError) as info:  # 101 transactions to evict
        chain.broadcast(spend([a], [500_000]))
    assert info.value.code == "too many potential replacements"
    assert len(chain.mempool_txids()) == MAX_REPLACEMENT_CANDIDATES + 1


def test_the_rules_alone() -> None:
    op = OutPoint(bytes(range(32)), 0)
    old = spend([op], [90_000])
    new = spend([op], [80_000])
    check_replacement(new, 20_000, [Conflict(old, 10_000, True)], lambda txid: False)
    with pytest.raises(ChainError) as info:  # the same rate: refused (strictly higher needed)
        check_replacement(new, 10_000, [Conflict(old, 10_000, True)], lambda txid: False)
    assert "new feerate" in info.value.reason
    with pytest.raises(ChainError) as info:  # the rate rises, but not by the incremental relay fee
        check_replacement(new, 10_000 + new.vsize - 1, [Conflict(old, 10_000, True)], lambda txid: False)
    assert "not enough additional fees" in info.value.reason
    check_replacement(new, 10_000 + new.vsize, [Conflict(old, 10_000, True)], lambda txid: False)
    # a descendant that does not signal does not matter: only direct conflicts must
    child = spend([old.outpoint(0)], [89_000], sequence=FINAL)
    check_replacement(new, 12_000 + new.vsize, [Conflict(old, 10_000, True), Conflict(child, 1_000, False)], lambda t: False)


def test_replacement_over_the_json_rpc_methods(chain: RegtestChain) -> None:
    """sendrawtransaction replaces as a broadcast does; a refusal is Core's -26 with its reason."""
    rpc = ChainRpcCalls(chain)
    a = coin(chain)
    original = spend([a], [99_000])
    assert rpc.sendrawtransaction(original.raw.hex()) == original.txid_hex
    with pytest.raises(RpcError) as info:
        rpc.sendrawtransaction(spend([a], [99_000 - 10]).raw.hex())
    assert info.value.code == RPC_VERIFY_REJECTED and info.value.message.startswith("insufficient fee (rejecting replacement")
    better = spend([a], [97_000])
    assert rpc.testmempoolaccept([better.raw.hex()])[0]["allowed"] is True  # a dry run: nothing replaced yet
    child = spend([better.outpoint(0)], [96_000])
    package = rpc.testmempoolaccept([better.raw.hex(), child.raw.hex()])  # no replacement in a package, as Core
    assert package[0]["allowed"] is False and package[0]["reject-reason"] == "bip125-replacement-disallowed"
    assert chain.mempool_txids() == [original.txid]
    assert rpc.sendrawtransaction(better.raw.hex()) == better.txid_hex
    assert rpc.getrawmempool() == [better.txid_hex]
