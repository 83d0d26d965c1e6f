"""Coin selection (sans-IO).

Algorithm, in the order tried:

1. **Branch and bound** for a changeless spend: a depth-first search over
   the coins sorted by *effective value* (amount minus the fee to spend it)
   for a subset whose effective value lands in ``[target, target +
   cost_of_change]``, where ``cost_of_change`` is the fee of creating and
   later spending a change output. Among hits the smallest excess wins (the
   excess goes to the fee). The search stops after ``BNB_MAX_TRIES`` steps
   and looks only at the ``BNB_MAX_CANDIDATES`` largest coins.
2. **Largest first** otherwise: take coins by decreasing effective value
   until amount + fee (with a change output) is covered; the rest is change.
   If change would be below the dust limit, it is dropped into the fee.

Fees are ``ceil(weight * feerate_per_kw / 1000)`` over the estimated weight;
signatures are counted at their maximum size, so the real fee rate is never
below the one asked for. Coins whose effective value is not positive are
never chosen (they cost more than they bring).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from lnpmsg.wallet.errors import InsufficientFunds, WalletError

__all__ = [
    "BNB_MAX_CANDIDATES",
    "BNB_MAX_TRIES",
    "Candidate",
    "Selection",
    "fee_ceil",
    "select_all",
    "select_coins",
]

#: search steps before branch and bound gives up (bounds CPU per spend)
BNB_MAX_TRIES = 100_000
#: coins the search considers (keeps recursion shallow and the search bounded)
BNB_MAX_CANDIDATES = 200


def fee_ceil(weight: int, feerate_per_kw: int) -> int:
    """Fee of ``weight`` weight units, rounded up."""
    return -(-weight * feerate_per_kw // 1000)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A spendable coin: an opaque key (its outpoint), amount, and the weight of the input spending it."""

    key: Hashable
    amount_sat: int
    input_weight: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The coins to spend, the fee, and the change (0: no change output)."""

    chosen: tuple[Candidate, ...]
    fee_sat: int
    change_sat: int
    algorithm: str

    @property
    def total_in_sat(self) -> int:
        return sum(c.amount_sat for c in self.chosen)


def _effective(c: Candidate, feerate: int) -> int:
    return c.amount_sat - fee_ceil(c.input_weight, feerate)


def select_coins(
    candidates: Sequence[Candidate],
    target_sat: int,
    base_weight: int,
    change_weight: int,
    change_spend_weight: int,
    feerate_per_kw: int,
    dust_limit_sat: int,
) -> Selection:
    """Pick coins paying ``target_sat`` plus the fee.

    ``base_weight``: the transaction without inputs and without change
    (version, locktime, counts, segwit marker, the paid outputs).
    ``change_weight``: one change output. ``change_spend_weight``: the input
    that will spend the change later (part of the cost of making change).
    """
    if target_sat <= 0:
        raise WalletError(f"amount must be positive, got {target_sat}", code="invalid")
    if feerate_per_kw < 0:
        raise WalletError(f"negative fee rate {feerate_per_kw}", code="invalid")
    usable = [c for c in candidates if _effective(c, feerate_per_kw) > 0]
    usable.sort(key=lambda c: _effective(c, feerate_per_kw), reverse=True)
    available = sum(c.amount_sat for c in candidates)
    base_fee = fee_ceil(base_weight, feerate_per_kw)
    needed = target_sat + base_fee
    cost_of_change = fee_ceil(change_weight + change_spend_weight, feerate_per_kw)

    found = _branch_and_bound(
        usable[:BNB_MAX_CANDIDATES], needed, needed + cost_of_change, feerate_per_kw
    )
    if found is not None:
        total = sum(c.amount_sat for c in found)
        return Selection(tuple(found), total - target_sat, 0, "branch-and-bound")

    with_change_fee = fee_ceil(base_weight + change_weight, feerate_per_kw)
    chosen: list[Candidate] = []
    total_ev = 0
    for coin in usable:
        chosen.append(coin)
        total_ev += _effective(coin, feerate_per_kw)
        change = total_ev - target_sat - with_change_fee
        if change >= dust_limit_sat:
            input_fees = sum(fee_ceil(c.input_weight, feerate_per_kw) for c in chosen)
            return Selection(
                tuple(chosen), with_change_fee + input_fees, change, "largest-first"
            )
    if total_ev >= needed:
        # no room for a change output above dust: the remainder pays the fee
        total = sum(c.amount_sat for c in chosen)
        return Selection(tuple(chosen), total - target_sat, 0, "largest-first")
    raise InsufficientFunds(target_sat + max(base_fee, 0), available)


def select_all(
    candidates: Sequence[Candidate],
    base_weight: int,
    feerate_per_kw: int,
    dust_limit_sat: int,
) -> Selection:
    """Spend every coin worth spending, no change (``withdraw(..., "all")``)."""
    usable = [c for c in candidates if _effective(c, feerate_per_kw) > 0]
    if not usable:
        raise InsufficientFunds(
            dust_limit_sat,
            sum(c.amount_sat for c in candidates),
            " (nothing worth spending)",
        )
    fee = fee_ceil(base_weight + sum(c.input_weight for c in usable), feerate_per_kw)
    total = sum(c.amount_sat for c in usable)
    if total - fee < dust_limit_sat:
        raise InsufficientFunds(
            fee + dust_limit_sat, total, " (the fee would eat it all)"
        )
    return Selection(tuple(usable), fee, 0, "all")


def _branch_and_bound(
    coins: list[Candidate], low: int, high: int, feerate: int
) -> list[Candidate] | None:
    values = [_effective(c, feerate) for c in coins]
    remaining = [0] * (len(values) + 1)
    for i in range(len(values) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + values[i]
    best: list[int] | None = None
    best_excess = high - low + 1
    tries = 0
    picked: list[int] = []

    def search(i: int, total: int) -> bool:
        """Returns False once the try budget is spent."""
        nonlocal best, best_excess, tries
        tries += 1
        if tries > BNB_MAX_TRIES:
            return False
        if total > high:
            return True
        if total >= low:
            if total - low < best_excess:
                best, best_excess = list(picked), total - low
            return True
        if i == len(values) or total + remaining[i] < low:
            return True
        picked.append(i)
        keep_going = search(i + 1, total + values[i])
        picked.pop()
        if not keep_going or best_excess == 0:
            return keep_going
        # skipping a coin equal to the one just skipped explores the same sums again
        j = i + 1
        while j < len(values) and values[j] == values[i]:
            j += 1
        return search(j, total)

    search(0, 0)
    return None if best is None else [coins[i] for i in best]
