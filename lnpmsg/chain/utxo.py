"""lnpmsg's own index of the active chain: unspent outputs, where each
transaction confirmed, and block times for median-time-past (sans-IO).

The kernel keeps its own UTXO set but does not expose it; this index answers
the questions a node and a mempool ask (``gettxout``, "is this input spent",
"how deep is this coin") and follows the kernel's active chain block by block,
with undo data so a reorg can roll it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut
from lnpmsg.chain.errors import ChainError

__all__ = ["MEDIAN_TIME_SPAN", "Coin", "TxLocation", "UtxoIndex"]

#: BIP113: median-time-past is the median of the last 11 block times
MEDIAN_TIME_SPAN = 11


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output and where it confirmed."""

    txout: TxOut
    height: int
    is_coinbase: bool


@dataclass(frozen=True, slots=True)
class TxLocation:
    """Where a transaction sits in the active chain."""

    block_hash: bytes
    height: int
    index: int


@dataclass(frozen=True, slots=True)
class _BlockUndo:
    spent: tuple[tuple[OutPoint, Coin], ...]


class UtxoIndex:
    """The UTXO set and tx index of the active chain, connected block by block."""

    def __init__(self) -> None:
        self.coins: dict[OutPoint, Coin] = {}
        self.txs: dict[bytes, TxLocation] = {}
        self.hashes: list[bytes] = []  # active chain, index = height
        self.times: list[int] = []
        self._undo: list[_BlockUndo] = []

    @property
    def height(self) -> int:
        """Height of the indexed tip (-1 before genesis is connected)."""
        return len(self.hashes) - 1

    @property
    def tip_hash(self) -> bytes:
        return self.hashes[-1]

    def median_time_past(self, height: int | None = None) -> int:
        """BIP113 median time past of the block at ``height`` (default: the tip)."""
        h = self.height if height is None else height
        if h < 0:
            return 0
        window = sorted(self.times[max(0, h - MEDIAN_TIME_SPAN + 1) : h + 1])
        return window[len(window) // 2]

    def connect(self, block: Block) -> None:
        """Apply the next block of the active chain (the caller checked its validity)."""
        height = len(self.hashes)
        if height and block.header.prev_hash != self.hashes[-1]:
            raise ChainError(
                "index: block does not extend the indexed tip", code="index"
            )
        spent: list[tuple[OutPoint, Coin]] = []
        block_hash = block.hash
        for index, tx in enumerate(block.txs):
            # the genesis coinbase is not spendable (Core never adds it to the UTXO set)
            if height == 0:
                break
            if not tx.is_coinbase:
                for txin in tx.inputs:
                    coin = self.coins.pop(txin.prevout, None)
                    if coin is None:
                        raise ChainError(
                            f"index: input {txin.prevout} not in the UTXO index",
                            code="index",
                        )
                    spent.append((txin.prevout, coin))
            self._add_outputs(tx, height, tx.is_coinbase)
            self.txs[tx.txid] = TxLocation(block_hash, height, index)
        self.hashes.append(block_hash)
        self.times.append(block.header.time)
        self._undo.append(_BlockUndo(tuple(spent)))

    def disconnect(self, block: Block) -> None:
        """Roll back the tip block (which must be ``block``)."""
        if not self.hashes or self.hashes[-1] != block.hash:
            raise ChainError(
                "index: disconnecting a block that is not the tip", code="index"
            )
        undo = self._undo.pop()
        for tx in reversed(block.txs):
            for vout, out in enumerate(tx.outputs):
                self.coins.pop(OutPoint(tx.txid, vout), None)
            self.txs.pop(tx.txid, None)
        for outpoint, coin in undo.spent:
            self.coins[outpoint] = coin
        self.hashes.pop()
        self.times.pop()

    def _add_outputs(self, tx: Tx, height: int, coinbase: bool) -> None:
        for vout, out in enumerate(tx.outputs):
            # OP_RETURN outputs are provably unspendable; Core keeps them out of the UTXO set
            if out.script_pubkey[:1] == b"\x6a":
                continue
            self.coins[OutPoint(tx.txid, vout)] = Coin(out, height, coinbase)
