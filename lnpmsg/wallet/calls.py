"""The wallet's balance and release calls of the chain app (``chain.getbalance``,
``chain.releasecoins``), and the app's error type."""

from __future__ import annotations

from typing import Any

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.wallet import Balances, Wallet

__all__ = ["ChainAppError", "balances_result", "channel_fundings", "release_coins"]


class ChainAppError(Exception):
    """A chain or wallet call failed, or the app could not start.

    ``details`` become the control error's ``data`` (``error``: the kind of
    failure, ``code``, amounts...).
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


def channel_fundings(channels: Any) -> dict[bytes, bytes | None]:
    """The funding transactions of the channels app's channels: txid -> the raw transaction if the
    channel holds it (the funder's, a dual-funded one's), else None. A channel's funding txid is
    fixed once the peer signed for it (its commitments spend it): never to be replaced.
    ``channels``: the mounted channels app, or None (a chain app used without channels)."""
    manager = getattr(channels, "manager", None)
    if manager is None:
        return {}
    found: dict[bytes, bytes | None] = {}
    for channel in manager.channels.values():
        s = channel.core.state
        if s.funding_outpoint is not None:
            found[s.funding_outpoint.txid] = s.funding_tx
    return found


def balances_result(b: Balances) -> dict[str, int]:
    """``chain.getbalance``'s result."""
    return {
        "confirmed_sat": b.confirmed_sat,
        "unconfirmed_sat": b.unconfirmed_sat,
        "immature_sat": b.immature_sat,
        "reserved_sat": b.reserved_sat,
        "spendable_sat": b.spendable_sat,
        "total_sat": b.total_sat,
    }


def release_coins(wallet: Wallet, txid: str | None, outpoint: str | None, everything: bool) -> dict[str, Any]:
    """``chain.releasecoins``: free the coins held for ``txid``, one ``outpoint``, or all."""
    if sum((txid is not None, outpoint is not None, bool(everything))) != 1:
        raise ParamsError("give exactly one of txid, outpoint or all=true")
    reserved = wallet.reserved()
    if outpoint is not None:
        try:
            chosen = [OutPoint.from_str(outpoint)]
        except (BitcoinError, TypeError, AttributeError):
            raise ParamsError(f"outpoint is TXID:VOUT, got {outpoint!r}") from None
        if chosen[0] not in reserved:
            raise ChainAppError(f"{outpoint} is not reserved", {"error": "WalletError", "code": "not-reserved"})
    elif txid is not None:
        try:
            holder = hash_from_hex(txid)
        except BitcoinError:
            raise ParamsError(f"txid is 64 hex digits, got {txid!r}") from None
        chosen = [op for op, h in reserved.items() if h == holder]
        if not chosen:
            raise ChainAppError(f"no coins are reserved for {txid}", {"error": "WalletError", "code": "not-reserved"})
    else:
        chosen = list(reserved)
    released = []
    for op in chosen:
        by = wallet.release_outpoint(op)
        if by is not None:
            released.append({"outpoint": str(op), "reserved_by": hash_to_hex(by)})
    return {"released": released}
