"""The embedded chain's faucet: regtest coins for anyone who asks.

The faucet's coins sit at P2WSH(OP_TRUE): spending them needs no key
(witness = the one-byte script), which is all a development chain needs. It
spends only its own coinbases (blocks ``mine()`` pays to it) and its own
change; payments to its script by others are left alone.

A request it cannot meet fails before anything changes: the destination is
checked first, then the amount against everything the faucet could raise
(its coins, mature or not, and the coinbases of the blocks one top-up may
mine), so a failed call never mines a block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.fees import fee_for_weight
from lnpmsg.bitcoin.script import OP_TRUE, p2wsh
from lnpmsg.bitcoin.tx import MAX_MONEY, SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.address import script_for_destination
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mining import COINBASE_MATURITY, block_subsidy
from lnpmsg.chain.utxo import Coin

if TYPE_CHECKING:
    from lnpmsg.chain.regtest import RegtestChain

__all__ = ["FAUCET_SCRIPT", "FAUCET_WITNESS_SCRIPT", "MAX_FAUCET_BLOCKS", "faucet_capacity", "faucet_pay"]

#: the faucet's witness script: OP_TRUE, anyone can spend (regtest only)
FAUCET_WITNESS_SCRIPT = bytes([OP_TRUE])
FAUCET_SCRIPT = p2wsh(FAUCET_WITNESS_SCRIPT)
#: blocks mined at most in one faucet top-up (bounds the work one call can cause)
MAX_FAUCET_BLOCKS = 2_000


def faucet_capacity(chain: RegtestChain) -> int:
    """The most the faucet could pay in one call: every coin it owns (mature
    or not) plus the coinbases of the top-up blocks that would mature within
    ``MAX_FAUCET_BLOCKS`` (an upper bound: fees are not counted)."""
    owned = sum(coin.txout.amount_sat for _, coin in _faucet_coins(chain, mature_only=False))
    height = chain.index.height
    future = sum(block_subsidy(height + i) for i in range(1, MAX_FAUCET_BLOCKS - COINBASE_MATURITY + 2))
    return owned + future


def faucet_pay(chain: RegtestChain, destination: str | bytes, amount_sat: int) -> OutPoint:
    """``RegtestChain.faucet``'s work; call with the chain's lock held."""
    script = script_for_destination(destination, chain.network)
    if isinstance(amount_sat, bool) or not isinstance(amount_sat, int) or not 0 < amount_sat <= MAX_MONEY:
        raise ChainError(f"faucet amount out of range: {amount_sat!r}", code="invalid")
    capacity = faucet_capacity(chain)
    if amount_sat + _faucet_fee(chain, 1, script) > capacity:
        raise ChainError(
            f"the faucet cannot raise {amount_sat} sat: at most {capacity} sat in one call "
            f"(its coins and the rewards of {MAX_FAUCET_BLOCKS} more blocks; regtest halves "
            "the block reward every 150 blocks); nothing was mined",
            code="insufficient-funds",
        )
    mined = 0
    while True:
        chosen: list[tuple[OutPoint, Coin]] = []
        total = 0
        for item in _faucet_coins(chain):
            chosen.append(item)
            total += item[1].txout.amount_sat
            fee = _faucet_fee(chain, len(chosen), script)
            if total >= amount_sat + fee:
                return _pay(chain, chosen, total, fee, script, amount_sat)
        if mined >= MAX_FAUCET_BLOCKS:
            # only fees beyond the capacity check's estimate lead here
            raise ChainError(f"the faucet cannot raise {amount_sat} sat", code="insufficient-funds")
        # a new coinbase matures COINBASE_MATURITY blocks later; each
        # block mined also matures one older faucet coinbase
        step = COINBASE_MATURITY if not chosen else 1
        subsidy = max(block_subsidy(chain.index.height + 1), 1)
        wanted = (amount_sat - total) // subsidy + 1
        step = max(step, min(MAX_FAUCET_BLOCKS - mined, wanted))
        chain.mine(step, FAUCET_SCRIPT)
        mined += step


def _faucet_coins(chain: RegtestChain, *, mature_only: bool = True) -> Iterator[tuple[OutPoint, Coin]]:
    """The faucet's unspent coins, lazily: its latest change waiting in the
    mempool first (payments follow one another without a block), then its
    confirmed change and coinbase outputs (mature ones only, by default)."""
    mempool, index = chain.mempool, chain.index
    change = chain._faucet_change
    next_height = index.height + 1
    for entry in reversed(mempool.entries()):
        for vout, out in enumerate(entry.tx.outputs):
            outpoint = OutPoint(entry.tx.txid, vout)
            if outpoint in change and mempool.spender_of(outpoint) is None:
                yield outpoint, Coin(out, next_height, False)
    for outpoint, coin in list(index.coins.items()):
        if coin.txout.script_pubkey != FAUCET_SCRIPT or mempool.spender_of(outpoint) is not None:
            continue
        if outpoint in change or (
            coin.is_coinbase and (not mature_only or next_height - coin.height >= COINBASE_MATURITY)
        ):
            yield outpoint, coin


def _faucet_fee(chain: RegtestChain, n_inputs: int, script: bytes) -> int:
    # version+locktime+counts+marker 10.5 vB; input 41 vB + witness (1+1+1 bytes)/4; outputs
    weight = 42 + n_inputs * (41 * 4 + 3) + 4 * (9 + len(script)) + 4 * (9 + len(FAUCET_SCRIPT))
    return fee_for_weight(weight, chain.feerate_per_kw) + 1


def _pay(
    chain: RegtestChain,
    chosen: list[tuple[OutPoint, Coin]],
    total: int,
    fee: int,
    script: bytes,
    amount: int,
) -> OutPoint:
    outputs = [TxOut(amount, script)]
    change = total - amount - fee
    if change >= 1_000:
        outputs.append(TxOut(change, FAUCET_SCRIPT))
    tx = Tx(
        version=2,
        inputs=tuple(TxIn(op, b"", SEQUENCE_RBF, (FAUCET_WITNESS_SCRIPT,)) for op, _ in chosen),
        outputs=tuple(outputs),
        locktime=0,
    )
    chain.broadcast(tx)
    if len(outputs) > 1:
        chain._faucet_change.add(OutPoint(tx.txid, 1))
    return OutPoint(tx.txid, 0)
