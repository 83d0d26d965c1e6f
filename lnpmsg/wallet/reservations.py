"""Coins the wallet holds for its own transactions, and those transactions.

A transaction the wallet signs reserves its inputs *and* is stored with the
reservation, in the same write of ``wallet.json``, before it is broadcast or
handed out. So after a crash at any point the wallet knows both what it
holds and why:

- a withdrawal (``broadcast=True``) is broadcast again when the wallet opens
  (Bitcoin Core's wallet resubmits its transactions the same way): one that
  had left is already known to the chain, one that had not leaves now; if
  the chain rejects it for good (its inputs are spent by another
  transaction or gone), its coins are released;
- a funding transaction (``broadcast=False``, from ``fund_output``) belongs
  to its caller (a channel): it stays reserved until its inputs are spent on
  the chain or the caller, or the user (``lnpmsg releasecoins``), releases it.

A held transaction leaves when none of its inputs is reserved any more
(spent on the chain by it, or released), or at once when another
transaction spends one of its inputs on the chain (it can never confirm:
a replaced one, a double spend). Until then the outputs of a broadcast
one that pay the wallet are *unconfirmed own coins*,
trusted and spendable like Bitcoin Core's wallet spends its own change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut

__all__ = ["FINAL_REJECTIONS", "HeldTx", "Reservations"]

#: reject reasons (codes, or words in the reason) after which a held transaction
#: can never confirm: its inputs are spent by another transaction or do not exist
FINAL_REJECTIONS = (
    "missingorspent", "mempool-conflict", "missing-inputs", "Missing inputs", "already spent",
    # a conflicting mempool transaction it cannot replace (BIP 125): as final as a plain conflict
    "rejecting replacement",
)


@dataclass(frozen=True, slots=True)
class HeldTx:
    """A transaction of the wallet not yet confirmed; ``broadcast``: the wallet sent it."""

    tx: Tx
    broadcast: bool


class Reservations:
    """Reserved outpoints (outpoint -> txid of the transaction holding it) and held transactions."""

    def __init__(self) -> None:
        self.by_outpoint: dict[OutPoint, bytes] = {}
        self.txs: dict[bytes, HeldTx] = {}

    @classmethod
    def from_state(cls, reserved: Any, held: Any) -> Reservations:
        """Load from ``wallet.json``'s ``reserved`` and ``held``; ValueError/TypeError if malformed."""
        if not isinstance(reserved, dict) or not isinstance(held, dict):
            raise TypeError("reserved and held must be objects")
        out = cls()
        for op, txid in reserved.items():
            out.by_outpoint[OutPoint.from_str(op)] = bytes.fromhex(txid)
        for txid_hex, entry in held.items():
            tx = Tx.parse(bytes.fromhex(entry["tx"]))
            if tx.txid_hex != txid_hex:
                raise ValueError(f"held transaction {txid_hex} does not match its bytes")
            out.txs[tx.txid] = HeldTx(tx, bool(entry["broadcast"]))
        return out

    def state(self) -> dict[str, Any]:
        return {
            "reserved": {str(op): txid.hex() for op, txid in self.by_outpoint.items()},
            "held": {h.tx.txid_hex: {"tx": h.tx.raw.hex(), "broadcast": h.broadcast} for h in self.txs.values()},
        }

    def __contains__(self, outpoint: object) -> bool:
        return outpoint in self.by_outpoint

    def holder(self, outpoint: OutPoint) -> bytes | None:
        return self.by_outpoint.get(outpoint)

    def hold(self, tx: Tx, *, broadcast: bool) -> None:
        for txin in tx.inputs:
            self.by_outpoint[txin.prevout] = tx.txid
        self.txs[tx.txid] = HeldTx(tx, broadcast)

    def release(self, txid: bytes) -> list[OutPoint]:
        """Free the coins held for ``txid`` and forget it; the outpoints freed."""
        freed = [op for op, holder in self.by_outpoint.items() if holder == txid]
        for op in freed:
            del self.by_outpoint[op]
        self.txs.pop(txid, None)
        return freed

    def release_outpoint(self, outpoint: OutPoint) -> bytes | None:
        """Free one coin; the txid that held it (forgotten once it holds nothing)."""
        txid = self.by_outpoint.pop(outpoint, None)
        if txid is not None:
            self._forget_if_empty(txid)
        return txid

    def spent(self, outpoint: OutPoint, spender: bytes | None = None) -> bool:
        """A reserved coin was spent on the chain (by transaction ``spender``); True if anything changed.

        Spent by another transaction than the one holding it (a replaced one that a miner took
        after all, a double spend), the holder can never confirm: all its coins are freed (the
        coins a replacement added too), and it is forgotten.
        """
        holder = self.by_outpoint.get(outpoint)
        if holder is None:
            return False
        if spender is not None and spender != holder:
            self.release(holder)
        else:
            self.release_outpoint(outpoint)
        return True

    def _forget_if_empty(self, txid: bytes) -> None:
        if txid not in self.by_outpoint.values():
            self.txs.pop(txid, None)

    def unconfirmed_outputs(self, ours: set[bytes] | dict[bytes, Any]) -> list[tuple[OutPoint, TxOut]]:
        """Outputs of broadcast held transactions paying a script in ``ours``."""
        return [
            (OutPoint(h.tx.txid, vout), out)
            for h in self.txs.values()
            if h.broadcast
            for vout, out in enumerate(h.tx.outputs)
            if out.script_pubkey in ours
        ]
