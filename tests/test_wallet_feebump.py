"""The fee bumping arithmetic (lnpmsg.wallet.feebump), sans-IO."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.wallet.feebump import (
    cpfp_child_fee,
    fee_at,
    pays_more,
    rbf_fee,
    sat_per_kvb,
    spend_weight,
    vsize,
)
from lnpmsg.wallet.spend import P2WPKH_INPUT_WEIGHT, P2WPKH_OUTPUT_WEIGHT, TX_OVERHEAD_WEIGHT

P2WPKH = b"\x00\x14" + bytes(20)


def test_units_and_rounding() -> None:
    assert sat_per_kvb(1) == 1000 and sat_per_kvb(2.3) == 2300 and sat_per_kvb(0.0015) == 2
    for bad in (0, -1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ValueError):
            sat_per_kvb(bad)  # type: ignore[arg-type]
    assert vsize(561) == 141 and vsize(560) == 140
    assert fee_at(141, 1000) == 141 and fee_at(141, 1500) == 212  # 211.5 rounded up
    # the same estimate as the wallet's spends
    assert spend_weight(2, [P2WPKH, P2WPKH]) == TX_OVERHEAD_WEIGHT + 2 * P2WPKH_INPUT_WEIGHT + 2 * P2WPKH_OUTPUT_WEIGHT


def test_cpfp_child_fee() -> None:
    # parent 141 vB paying 141 sat (1 sat/vB), child 110 vB, 10 sat/vB for both: 2 510 - 141
    assert cpfp_child_fee(141, 141, 110, 10_000) == 2_369
    with pytest.raises(ValueError, match="already"):
        cpfp_child_fee(1_410, 141, 110, 10_000)  # the parent pays 10 sat/vB itself


def test_rbf_fee() -> None:
    # the rate asked decides when it is well above the old fee plus 1 sat/vB
    assert rbf_fee(141, 141, 141, 10_000) == 1_410
    # just above the old rate: the incremental relay fee decides (rule 4)
    assert rbf_fee(1_000, 141, 141, 7_200) == 1_000 + 141
    with pytest.raises(ValueError, match="already"):
        rbf_fee(1_410, 141, 141, 10_000)


@given(
    parent_fee=st.integers(0, 100_000),
    parent_vsize=st.integers(60, 5_000),
    child_vsize=st.integers(60, 1_000),
    rate=st.integers(1_000, 500_000),
)
def test_cpfp_package_reaches_the_rate(parent_fee: int, parent_vsize: int, child_vsize: int, rate: int) -> None:
    if not pays_more(rate, 1000, parent_fee, parent_vsize):
        return
    child = cpfp_child_fee(parent_fee, parent_vsize, child_vsize, rate)
    total = parent_fee + child
    assert total * 1000 >= rate * (parent_vsize + child_vsize)  # the package pays the rate
    assert (total - 1) * 1000 < rate * (parent_vsize + child_vsize)  # and not a satoshi more
    assert child * 1000 > rate * child_vsize - 1000  # the child alone pays (about) the rate too


@given(
    old_fee=st.integers(0, 100_000),
    old_vsize=st.integers(60, 5_000),
    new_vsize=st.integers(60, 5_000),
    rate=st.integers(1_000, 500_000),
)
def test_rbf_fee_meets_bip125(old_fee: int, old_vsize: int, new_vsize: int, rate: int) -> None:
    if not pays_more(rate, 1000, old_fee, old_vsize):
        return
    fee = rbf_fee(old_fee, old_vsize, new_vsize, rate)
    assert fee >= old_fee + new_vsize  # rules 3 and 4, at 1 sat/vB
    assert pays_more(fee, new_vsize, old_fee, old_vsize)  # rule 6
    assert fee * 1000 >= rate * new_vsize  # the rate asked
