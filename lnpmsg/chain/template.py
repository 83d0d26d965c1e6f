"""What the embedded chain needs to know before it builds a block (sans-IO):
the parent's height and its last block times (for the new block's time,
which consensus wants above the median of the last eleven), and the fees a
coinbase may claim for a given list of transactions.

``lnpmsg.chain.mining`` then assembles the block; the kernel judges it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.utxo import MEDIAN_TIME_SPAN, UtxoIndex

__all__ = ["ancestry", "claimable_fees", "next_block_time"]


def ancestry(index: UtxoIndex, block_hash: bytes, parsed: Callable[[bytes], Block]) -> tuple[int, list[int]]:
    """Height of ``block_hash`` and the times of it and its last ancestors
    (up to ``MEDIAN_TIME_SPAN``, oldest first).

    A block off the active chain is walked back through ``parsed`` (a block
    by hash) to where its branch joins the index.
    """
    if block_hash == index.tip_hash:
        return index.height, index.times[-MEDIAN_TIME_SPAN:]
    times: list[int] = []
    current = block_hash
    walked = 0
    while True:
        try:
            position = index.hashes.index(current)
        except ValueError:
            position = -1
        if position >= 0:
            times = index.times[max(0, position - MEDIAN_TIME_SPAN + 1) : position + 1] + times
            return position + walked, times[-MEDIAN_TIME_SPAN:]
        header = parsed(current).header
        times.insert(0, header.time)
        current = header.prev_hash
        walked += 1


def next_block_time(parent_times: Sequence[int], now: float) -> int:
    """A child's time: ``now``, but at least the median of its parent's last
    times + 1, as consensus requires."""
    window = sorted(parent_times[-MEDIAN_TIME_SPAN:])
    return max(window[len(window) // 2] + 1, int(now))


def claimable_fees(index: UtxoIndex, txs: Sequence[Tx]) -> int:
    """The fees a coinbase may claim for ``txs`` (in block order): inputs the
    index cannot price, and negative fees, count as zero, so the block fails
    (if it does) for the transactions' own fault, not the coinbase's."""
    outputs: dict[OutPoint, int] = {}
    total = 0
    for tx in txs:
        value_in = 0
        for txin in tx.inputs:
            coin = index.coins.get(txin.prevout)
            amount = coin.txout.amount_sat if coin else outputs.get(txin.prevout)
            if amount is None:
                value_in = -1
                break
            value_in += amount
        if value_in >= 0:
            total += max(0, value_in - sum(o.amount_sat for o in tx.outputs))
        for vout, out in enumerate(tx.outputs):
            outputs[OutPoint(tx.txid, vout)] = out.amount_sat
    return total
