"""The coins the wallet holds for its unconfirmed transactions, a mixin of
:class:`~lnpmsg.wallet.wallet.Wallet`: a transaction stored with its reserved coins
before it leaves, its coins released when it is abandoned or the chain rejects it
for good, and the withdrawals not yet confirmed broadcast again at each open. The
bookkeeping itself is :class:`~lnpmsg.wallet.reservations.Reservations`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.wallet.reservations import FINAL_REJECTIONS

if TYPE_CHECKING:
    from lnpmsg.wallet.wallet import Wallet

__all__ = ["Holding"]

log = logging.getLogger("lnpmsg.wallet.wallet")  # (the name its records had before this module was split off)


class Holding:
    """Held transactions and reserved coins for :class:`~lnpmsg.wallet.wallet.Wallet` (see the module docs)."""

    def held_transactions(self: Wallet) -> list[Tx]:
        """The wallet's transactions not yet confirmed whose coins it holds, oldest first."""
        return [h.tx for h in self._held.txs.values()]

    def release(self: Wallet, txid: bytes) -> int:
        """Unreserve the coins held for transaction ``txid`` (abandoned); returns how many.

        Only for a transaction that will never confirm: coins whose spend is
        still waiting in the mempool are refused by the chain when spent again.
        """
        with self._handing_out():
            freed = self._held.release(txid)
        return len(freed)

    def release_outpoint(self: Wallet, outpoint: OutPoint) -> bytes | None:
        """Unreserve one coin; the txid that held it (None: it was not reserved)."""
        with self._handing_out():
            txid = self._held.release_outpoint(outpoint)
        return txid

    def _release_rejected(self: Wallet, txid: bytes) -> int:
        """Free the coins of a transaction the chain rejected, in memory whatever the disk says:
        if the file keeps them reserved, the next open's resubmission is rejected and frees them."""
        freed = self._held.release(txid)
        if freed:
            self._save_chain_change()
        return len(freed)

    def reserved(self: Wallet) -> dict[OutPoint, bytes]:
        """Every reserved coin and the txid of the transaction holding it."""
        return dict(self._held.by_outpoint)

    async def _resubmit(self: Wallet) -> None:
        """After an open: broadcast the withdrawals not yet confirmed again;
        release the coins of those the chain rejects for good."""
        async with self._lock:
            for held in list(self._held.txs.values()):
                if not held.broadcast:
                    continue
                try:
                    await self.source.broadcast(held.tx.raw)
                except ChainError as exc:
                    if any(word in f"{exc.code} {exc.reason}" for word in FINAL_REJECTIONS):
                        freed = self._release_rejected(held.tx.txid)
                        log.warning(
                            "wallet: transaction %s can never confirm (%s): released its %d coin(s)",
                            held.tx.txid_hex, exc.reason, freed,
                        )
                    else:
                        log.warning("wallet: cannot broadcast %s again yet: %s", held.tx.txid_hex, exc.reason)
                else:
                    log.info("wallet: broadcast unconfirmed transaction %s again", held.tx.txid_hex)

    def _hold(self: Wallet, tx: Tx, *, broadcast: bool) -> None:
        with self._handing_out():
            self._held.hold(tx, broadcast=broadcast)
