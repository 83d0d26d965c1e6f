"""Coin selection (sans-IO): changeless when possible, fees never short."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.wallet.coinselect import Candidate, fee_ceil, select_all, select_coins
from lnpmsg.wallet.errors import InsufficientFunds, WalletError

IN_W, OUT_W, BASE_W = 272, 124, 42 + 124
DUST = 294


def coins(*amounts: int) -> list[Candidate]:
    return [Candidate(i, a, IN_W) for i, a in enumerate(amounts)]


def test_exact_match_needs_no_change() -> None:
    feerate = 1_000
    target = 50_000
    exact = target + fee_ceil(BASE_W + IN_W, feerate)
    sel = select_coins(
        coins(10_000, exact, 200_000), target, BASE_W, OUT_W, IN_W, feerate, DUST
    )
    assert sel.algorithm == "branch-and-bound" and sel.change_sat == 0
    assert [c.amount_sat for c in sel.chosen] == [exact]
    assert sel.fee_sat == exact - target


def test_largest_first_with_change() -> None:
    sel = select_coins(
        coins(10_000, 30_000, 500_000), 100_000, BASE_W, OUT_W, IN_W, 500, DUST
    )
    assert sel.algorithm == "largest-first" and [c.amount_sat for c in sel.chosen] == [
        500_000
    ]
    weight = BASE_W + OUT_W + IN_W
    assert sel.fee_sat == fee_ceil(weight - IN_W, 500) + fee_ceil(IN_W, 500)
    assert sel.total_in_sat == 100_000 + sel.fee_sat + sel.change_sat


def test_insufficient_funds_says_how_much() -> None:
    with pytest.raises(InsufficientFunds) as info:
        select_coins(coins(1_000, 2_000), 10_000, BASE_W, OUT_W, IN_W, 253, DUST)
    assert info.value.available_sat == 3_000 and info.value.needed_sat > 10_000
    assert "insufficient funds" in info.value.reason


def test_uneconomic_coins_are_skipped() -> None:
    # at 100 sat/vB a 272-weight input costs 6800 sat: a 5000 sat coin is worth nothing
    with pytest.raises(InsufficientFunds):
        select_coins(
            coins(5_000, 5_000, 5_000), 1_000, BASE_W, OUT_W, IN_W, 25_000, DUST
        )


def test_select_all_and_bad_arguments() -> None:
    sel = select_all(coins(10_000, 20_000), BASE_W, 1_000, DUST)
    assert sel.change_sat == 0 and sel.fee_sat == fee_ceil(BASE_W + 2 * IN_W, 1_000)
    with pytest.raises(InsufficientFunds):
        select_all(coins(300), BASE_W, 1_000, DUST)
    with pytest.raises(WalletError):
        select_coins(coins(10_000), 0, BASE_W, OUT_W, IN_W, 253, DUST)
    with pytest.raises(WalletError):
        select_coins(coins(10_000), 10, BASE_W, OUT_W, IN_W, -1, DUST)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 10_000_000), min_size=0, max_size=40),
    st.integers(1, 20_000_000),
    st.integers(0, 50_000),
)
def test_selection_invariants(amounts: list[int], target: int, feerate: int) -> None:
    try:
        sel = select_coins(coins(*amounts), target, BASE_W, OUT_W, IN_W, feerate, DUST)
    except InsufficientFunds:
        return
    weight = (
        BASE_W
        + sum(c.input_weight for c in sel.chosen)
        + (OUT_W if sel.change_sat else 0)
    )
    # the fee covers the rate over the estimated weight, and value is conserved
    assert sel.fee_sat >= fee_ceil(weight, feerate)
    assert sel.total_in_sat == target + sel.fee_sat + sel.change_sat
    assert sel.change_sat == 0 or sel.change_sat >= DUST
    assert len({c.key for c in sel.chosen}) == len(sel.chosen)
