"""The Electrum server's index (sans-IO): history order, status hashes, unspent
outputs, balances, the mempool layer, reorgs, merkle branches."""

from __future__ import annotations

import random

import pytest

from lnpmsg.bitcoin.block import Block, merkle_root
from lnpmsg.bitcoin.hashes import hash_to_hex, sha256, sha256d
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.electrum.index import (
    ElectrumIndex,
    IndexMismatch,
    merkle_branch,
    script_hash,
    scripthash_from_hex,
    scripthash_to_hex,
)
from lnpmsg.chain.mining import block_subsidy, build_block

A, B, C, D = (bytes([0x00, 0x14]) + bytes([n]) * 20 for n in (1, 2, 3, 4))
SH_A, SH_B, SH_C, SH_D = map(script_hash, (A, B, C, D))


def spend(prevout: OutPoint, *outputs: tuple[bytes, int]) -> Tx:
    return Tx(2, (TxIn(prevout, b"", 0xFFFFFFFD, (b"\x01",)),), tuple(TxOut(v, s) for s, v in outputs))


class Chain:
    """Blocks built by hand on a regtest genesis (no kernel: the index trusts its caller)."""

    def __init__(self) -> None:
        self.blocks: list[Block] = [build_block(b"\x00" * 32, 0, 1_700_000_000, A, [], 0)]

    def next(self, payout: bytes, txs: list[Tx] = (), parent: int | None = None) -> Block:  # type: ignore[assignment]
        base = self.blocks[-1] if parent is None else self.blocks[parent]
        height = (len(self.blocks) if parent is None else parent + 1)
        block = build_block(base.hash, height, 1_700_000_000 + height, payout, list(txs), 0, extra_nonce=len(self.blocks))
        return block


def status_of(items: list[tuple[bytes, int]]) -> str:
    return sha256("".join(f"{hash_to_hex(t)}:{h}:" for t, h in items).encode()).hex()


@pytest.fixture
def setup() -> tuple[ElectrumIndex, Chain, Block, Block, Tx]:
    index, chain = ElectrumIndex(), Chain()
    index.connect(chain.blocks[0])
    b1 = chain.next(A)
    chain.blocks.append(b1)
    index.connect(b1)
    coinbase = b1.txs[0]
    tx1 = spend(OutPoint(coinbase.txid, 0), (B, 1_000_000_000), (A, block_subsidy(1) - 1_000_000_000 - 500))
    b2 = chain.next(B, [tx1])
    chain.blocks.append(b2)
    index.connect(b2)
    return index, chain, b1, b2, tx1


def test_confirmed_history_by_height_and_position(setup) -> None:
    index, _, b1, b2, tx1 = setup
    assert [(i.txid, i.height) for i in index.history(SH_A)] == [(b1.txs[0].txid, 1), (tx1.txid, 2)]
    # B: the coinbase of block 2 (position 0), then tx1 (position 1)
    assert [(i.txid, i.height) for i in index.history(SH_B)] == [(b2.txs[0].txid, 2), (tx1.txid, 2)]
    assert index.status(SH_B) == status_of([(b2.txs[0].txid, 2), (tx1.txid, 2)])
    assert index.status(SH_D) is None
    assert index.history(sha256(b"nothing")) == []


def test_mempool_heights_fees_and_status(setup) -> None:
    index, _, _, _, tx1 = setup
    tx2 = spend(OutPoint(tx1.txid, 0), (C, 999_000_000))
    tx3 = spend(OutPoint(tx2.txid, 0), (D, 998_000_000))
    changed = index.set_mempool([(tx2, 1_000_000), (tx3, 1_000_000)])
    assert changed == {SH_B, SH_C, SH_D}
    history_c = index.history(SH_C)
    assert [(i.txid, i.height, i.fee) for i in history_c] == [(tx2.txid, 0, 1_000_000), (tx3.txid, -1, 1_000_000)]
    assert history_c[0].as_json() == {"height": 0, "tx_hash": tx2.txid_hex, "fee": 1_000_000}
    assert index.status(SH_C) == status_of([(tx2.txid, 0), (tx3.txid, -1)])
    # B's confirmed output is spent by a waiting transaction
    assert index.unspent(SH_B)[0].txid != tx1.txid
    assert index.balance(SH_B) == (block_subsidy(2) + 1_000_000_000, -1_000_000_000)
    assert index.balance(SH_D) == (0, 998_000_000)
    assert [u.as_json() for u in index.unspent(SH_D)] == [
        {"tx_hash": tx3.txid_hex, "tx_pos": 0, "height": 0, "value": 998_000_000}]
    assert index.unspent(SH_C) == []  # created and spent while waiting
    # the parent confirms: the child's height becomes 0, C's status changes
    before = index.status(SH_C)
    assert index.set_mempool([(tx3, 1_000_000)]) >= {SH_C, SH_D}
    assert [(i.txid, i.height) for i in index.mempool_history(SH_D)] == [(tx3.txid, 0)]
    assert index.status(SH_C) != before


def test_reorg_restores_history_and_outputs(setup) -> None:
    index, chain, b1, b2, tx1 = setup
    statuses = {sh: index.status(sh) for sh in (SH_A, SH_B)}
    unspent_a = index.unspent(SH_A)
    b3 = chain.next(C)
    chain.blocks.append(b3)
    index.connect(b3)
    assert index.disconnect() == {SH_C}
    assert index.disconnect() == {SH_A, SH_B}
    assert index.height == 1 and index.tip_hash == b1.hash
    assert [i.txid for i in index.history(SH_A)] == [b1.txs[0].txid]
    assert index.history(SH_B) == [] and index.status(SH_B) is None
    assert [(u.txid, u.height) for u in index.unspent(SH_A)] == [(b1.txs[0].txid, 1)]
    # tx1 returns to the mempool, then confirms again in a competing block
    index.set_mempool([(tx1, 500)])
    assert [(i.height, i.fee) for i in index.history(SH_B)] == [(0, 500)]
    index.connect(b2)
    assert index.set_mempool([]) == {SH_A, SH_B}
    assert {sh: index.status(sh) for sh in (SH_A, SH_B)} == statuses
    assert index.unspent(SH_A) == unspent_a


def test_connect_refuses_a_block_that_does_not_extend_the_tip(setup) -> None:
    index, chain, *_ = setup
    with pytest.raises(IndexMismatch):
        index.connect(chain.next(C, parent=0))


def test_fee_histogram_rates_fall_strictly(setup) -> None:
    index, _, _, _, tx1 = setup
    assert index.fee_histogram() == []
    tx2 = spend(OutPoint(tx1.txid, 0), (C, 999_000_000))
    tx3 = spend(OutPoint(tx1.txid, 1), (D, 1_000))
    index.set_mempool([(tx2, tx2.vsize * 10), (tx3, tx3.vsize * 2)])
    assert index.fee_histogram(bin_vsize=1) == [[10.0, tx2.vsize], [2.0, tx3.vsize]]
    assert index.fee_histogram() == [[2.0, tx2.vsize + tx3.vsize]]


def test_scripthash_hex_is_reversed() -> None:
    sh = script_hash(A)
    assert scripthash_to_hex(sh) == sh[::-1].hex()
    assert scripthash_from_hex(scripthash_to_hex(sh)) == sh
    for bad in ("00", "zz" * 32, 5):
        with pytest.raises((ValueError, TypeError)):
            scripthash_from_hex(bad)  # type: ignore[arg-type]


def fold(leaf: bytes, branch: list[bytes], index: int) -> bytes:
    """Walk a merkle branch up to the root, as a light client does."""
    node = leaf
    for sibling in branch:
        node = sha256d(sibling + node) if index & 1 else sha256d(node + sibling)
        index >>= 1
    return node


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 100])
def test_merkle_branches_fold_to_bitcoins_merkle_root(n: int) -> None:
    rng = random.Random(n)
    hashes = [rng.randbytes(32) for _ in range(n)]
    root = merkle_root(hashes)
    for i in range(n):
        branch, got_root = merkle_branch(hashes, i)
        assert got_root == root
        assert fold(hashes[i], branch, i) == root
    with pytest.raises(ValueError):
        merkle_branch(hashes, n)
