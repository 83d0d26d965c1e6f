"""Fees from weights. Fee rates are satoshis per 1000 weight units (sat/kw),
the unit of BOLT 2/3 ``feerate_per_kw``: 1 sat/vB = 250 sat/kw."""

from __future__ import annotations

from lnpmsg.bitcoin.errors import BitcoinError

__all__ = ["fee_for_weight"]


def fee_for_weight(weight: int, feerate_per_kw: int) -> int:
    """The fee of ``weight`` weight units at ``feerate_per_kw``, rounded down (as BOLT 3 computes it)."""
    if weight < 0 or feerate_per_kw < 0:
        raise BitcoinError(f"weight and fee rate must not be negative: {weight}, {feerate_per_kw}")
    return weight * feerate_per_kw // 1000
