"""Fee bumping arithmetic (sans-IO): sizes, CPFP child fees, BIP 125 replacement fees.

Fee rates here are **sat per 1000 virtual bytes** (sat/kvB, Bitcoin Core's
unit): 1 sat/vB = 1000 sat/kvB = 250 sat/kw. The user gives sat/vB
(``lnpmsg bumpfee --feerate``), possibly fractional; ``sat_per_kvb``
turns it into an integer so that every fee is exact, and every fee is
rounded up, so a transaction's real rate is never below the one asked for.
Sizes of transactions the wallet signs are estimated with maximum-size
signatures (``lnpmsg.wallet.spend``): the real size is at most the estimate.

- **CPFP**: a child spending an output of an unconfirmed parent pays for
  both: ``child_fee = ceil(rate x (parent_vsize + child_vsize)) -
  parent_fee``. A miner taking the package gets ``rate`` over its size.
  The asked rate must be above the parent's own (else the child would pay
  for nothing), which also gives the child a rate above the asked one.
- **RBF** (BIP 125 as Bitcoin Core checks it): the replacement's fee is at
  least the replaced one's plus the incremental relay fee (1 sat/vB) for
  the replacement's size (rules 3 and 4), its rate above the replaced one's
  (rule 6): ``max(ceil(rate x vsize), old_fee + vsize)`` with ``rate``
  above the old rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from lnpmsg.wallet.spend import P2WPKH_INPUT_WEIGHT, TX_OVERHEAD_WEIGHT

__all__ = [
    "INCREMENTAL_RELAY_SAT_PER_KVB",
    "cpfp_child_fee",
    "fee_at",
    "pays_more",
    "feerate_sat_per_vb",
    "rbf_fee",
    "sat_per_kvb",
    "spend_weight",
    "vsize",
]

#: Bitcoin Core's incremental relay fee (BIP 125 rule 4), 1 sat/vB
INCREMENTAL_RELAY_SAT_PER_KVB = 1000


def sat_per_kvb(sat_per_vbyte: float) -> int:
    """sat/vB (as a user gives it) to whole sat/kvB, rounded up; ValueError if not positive and finite."""
    if not isinstance(sat_per_vbyte, (int, float)) or isinstance(sat_per_vbyte, bool):
        raise ValueError(f"a fee rate is a number of sat/vB, got {sat_per_vbyte!r}")
    if not math.isfinite(sat_per_vbyte) or sat_per_vbyte <= 0:
        raise ValueError(f"a fee rate must be positive, got {sat_per_vbyte} sat/vB")
    # 1e-9: a decimal like 2.3 is 2.2999999999999998 in binary, not 2301 sat/kvB
    return math.ceil(sat_per_vbyte * 1000 - 1e-9)


def vsize(weight: int) -> int:
    """Virtual size of ``weight`` weight units (BIP 141: rounded up)."""
    return -(-weight // 4)


def fee_at(size_vb: int, rate_sat_per_kvb: int) -> int:
    """The fee of ``size_vb`` virtual bytes at ``rate_sat_per_kvb``, rounded up."""
    return -(-size_vb * rate_sat_per_kvb // 1000)


def feerate_sat_per_vb(fee_sat: int, size_vb: int) -> float:
    """A fee over a size, in sat/vB (for display: compare rates with :func:`pays_more`)."""
    return fee_sat / size_vb


def pays_more(fee_a: int, size_a: int, fee_b: int, size_b: int) -> bool:
    """Whether ``fee_a / size_a`` is above ``fee_b / size_b``, exactly."""
    return fee_a * size_b > fee_b * size_a


def spend_weight(n_p2wpkh_inputs: int, output_scripts: Iterable[bytes]) -> int:
    """The estimated weight of a transaction of the wallet: ``n`` P2WPKH inputs, these outputs."""
    outputs = sum(4 * (8 + 1 + len(script)) for script in output_scripts)
    return TX_OVERHEAD_WEIGHT + n_p2wpkh_inputs * P2WPKH_INPUT_WEIGHT + outputs


def cpfp_child_fee(parent_fee: int, parent_vsize: int, child_vsize: int, rate_sat_per_kvb: int) -> int:
    """The child's fee so that parent and child together pay ``rate_sat_per_kvb``.

    ValueError when the parent alone pays that rate already (nothing to bump).
    """
    if not pays_more(rate_sat_per_kvb, 1000, parent_fee, parent_vsize):
        raise ValueError(
            f"the parent pays {feerate_sat_per_vb(parent_fee, parent_vsize):.3f} sat/vB already, "
            f"not less than {rate_sat_per_kvb / 1000:g} sat/vB"
        )
    return fee_at(parent_vsize + child_vsize, rate_sat_per_kvb) - parent_fee


def rbf_fee(old_fee: int, old_vsize: int, new_vsize: int, rate_sat_per_kvb: int) -> int:
    """The least fee of a replacement of ``new_vsize`` vB at ``rate_sat_per_kvb`` that BIP 125 accepts.

    ValueError when the rate is not above the replaced transaction's (rule 6).
    """
    if not pays_more(rate_sat_per_kvb, 1000, old_fee, old_vsize):
        raise ValueError(
            f"the transaction pays {feerate_sat_per_vb(old_fee, old_vsize):.3f} sat/vB already, "
            f"not less than {rate_sat_per_kvb / 1000:g} sat/vB"
        )
    fee = max(fee_at(new_vsize, rate_sat_per_kvb), old_fee + fee_at(new_vsize, INCREMENTAL_RELAY_SAT_PER_KVB))
    # rule 6 on the exact sizes: the rounding up above never leaves it at the old rate
    while not pays_more(fee, new_vsize, old_fee, old_vsize):
        fee += 1
    return fee
