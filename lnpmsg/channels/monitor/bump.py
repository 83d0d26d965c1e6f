"""Fees for on-chain claims: the re-bidding schedule, anchor CPFP and HTLC aggregation (sans-IO).

- :func:`target_feerate`: what a claim should pay, from the current estimate
  and the blocks left before its deadline (a CLTV expiry, or the CSV after
  which a cheater keeps its funds). Far from it, the estimate; within
  :data:`URGENT_BLOCKS` the rate climbs linearly to
  :data:`MAX_FEERATE_MULTIPLIER` times the estimate at the deadline.
- :func:`rebid_feerate`: the next bid for an unconfirmed claim (BIP 125: a
  replacement pays more in total and at least the incremental relay rate on
  its own weight; LDK and Core Lightning step by about 25%).
- :func:`anchor_child`: the CPFP child spending our anchor and a wallet input
  so that commitment + child pay the target package rate.
- :func:`sweep_at_most`: a sweep at a rate, capped so it never pays more than it claims.
- :func:`aggregate_htlc_txs`: option_anchors_zero_fee_htlc_tx HTLC
  transactions (their signatures are SIGHASH_SINGLE|ANYONECANPAY) merged into
  one, with a wallet input paying the fee: input *i* keeps its output *i*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from lnpmsg.bitcoin.tx import OutPoint, TxOut

from ..errors import ChannelError
from ..keys import pubkey_from_privkey
from ..spend import Sig, Spendable, SpendPath, SpendPlan, build_spend

__all__ = [
    "FEERATE_FLOOR_PER_KW",
    "INCREMENTAL_RELAY_FEERATE_PER_KW",
    "MAX_FEERATE_MULTIPLIER",
    "URGENT_BLOCKS",
    "FeeInput",
    "aggregate_htlc_txs",
    "anchor_child",
    "rebid_feerate",
    "sweep_at_most",
    "target_feerate",
]

#: Bitcoin Core's minimum relay fee, 1 sat/vB.
FEERATE_FLOOR_PER_KW = 253
#: BIP 125 rule 4: a replacement pays for its own weight at least at this rate on top.
INCREMENTAL_RELAY_FEERATE_PER_KW = 250
#: Within this many blocks of its deadline a claim starts outbidding the estimate.
URGENT_BLOCKS = 36
#: At its deadline a claim bids this many times the estimate.
MAX_FEERATE_MULTIPLIER = 5
#: A re-bid raises the last bid by at least a quarter.
REBID_STEP_PERCENT = 25


def target_feerate(estimate_per_kw: int, blocks_to_deadline: int | None) -> int:
    """The feerate a claim should pay now (``None``: no deadline, the estimate)."""
    estimate = max(estimate_per_kw, FEERATE_FLOOR_PER_KW)
    if blocks_to_deadline is None or blocks_to_deadline >= URGENT_BLOCKS:
        return estimate
    urgency = URGENT_BLOCKS - max(blocks_to_deadline, 0)
    return estimate + estimate * (MAX_FEERATE_MULTIPLIER - 1) * urgency // URGENT_BLOCKS


def rebid_feerate(last_per_kw: int | None, target_per_kw: int) -> int | None:
    """The feerate of a replacement for a claim that bid ``last_per_kw``, or None to keep it."""
    if last_per_kw is None:
        return target_per_kw
    if target_per_kw <= last_per_kw:
        return None
    step = max(last_per_kw * REBID_STEP_PERCENT // 100, INCREMENTAL_RELAY_FEERATE_PER_KW)
    return max(target_per_kw, last_per_kw + step)


@dataclass(frozen=True)
class FeeInput:
    """A confirmed wallet coin (P2WPKH) lent to pay a child's or an HTLC transaction's fee."""

    outpoint: OutPoint
    amount_sat: int
    privkey: bytes

    @cached_property
    def pubkey(self) -> bytes:
        return pubkey_from_privkey(self.privkey)

    @cached_property
    def spendable(self) -> Spendable:
        """The coin with its one path ``wallet`` (slot ``wallet``)."""
        path = SpendPath("wallet", (Sig("wallet", self.pubkey), self.pubkey))
        return Spendable.p2wpkh(self.amount_sat, self.pubkey, (path,))


def _fee_for(feerate_per_kw: int, weight: int) -> int:
    return feerate_per_kw * weight // 1000


def anchor_child(
    anchor: tuple[OutPoint, Spendable],
    fee_input: FeeInput,
    change_script: bytes,
    *,
    parent_weight: int,
    parent_fee_sat: int,
    package_feerate_per_kw: int,
    dust_limit_sat: int = 546,
) -> SpendPlan:
    """CPFP: spend our anchor (path ``owner``) and ``fee_input`` so the package pays the target rate."""
    spends = [(anchor[0], anchor[1], "owner"), (fee_input.outpoint, fee_input.spendable, "wallet")]
    total = anchor[1].amount_sat + fee_input.amount_sat
    draft = build_spend(spends, [TxOut(total, change_script)], label="anchor_cpfp")
    child_weight = draft.expected_weight()
    fee = max(
        _fee_for(package_feerate_per_kw, parent_weight + child_weight) - parent_fee_sat,
        _fee_for(FEERATE_FLOOR_PER_KW, child_weight),
    )
    if total - fee < dust_limit_sat:
        raise ChannelError(f"anchor_cpfp: a {fee_input.amount_sat} sat input cannot pay a {fee} sat child fee")
    return build_spend(spends, [TxOut(total - fee, change_script)], label="anchor_cpfp")


def aggregate_htlc_txs(
    plans: Sequence[SpendPlan],
    fee_input: FeeInput,
    change_script: bytes,
    *,
    feerate_per_kw: int,
    dust_limit_sat: int = 546,
) -> SpendPlan:
    """Merge zero-fee HTLC transactions sharing one nLockTime into one, paid by ``fee_input``.

    The peer's SIGHASH_SINGLE|ANYONECANPAY signatures still hold: each HTLC
    input keeps its index, its sequence and its output at the same index, and
    version and locktime are unchanged. Our own signatures (SIGHASH_ALL) are
    made over the merged transaction.
    """
    if not plans:
        raise ChannelError("no HTLC transaction to aggregate")
    locktimes = {plan.tx.locktime for plan in plans}
    versions = {plan.tx.version for plan in plans}
    if len(locktimes) != 1 or len(versions) != 1:
        raise ChannelError("only HTLC transactions with one nLockTime and version can be merged")
    spends = []
    outputs = []
    spendables = []
    for plan in plans:
        if len(plan.inputs) != 1 or len(plan.tx.outputs) != 1:
            raise ChannelError(f"{plan.label} is not a one-input one-output HTLC transaction")
        item = plan.inputs[0]
        spends.append((plan.tx.inputs[0].prevout, item.spendable, item.path.name))
        outputs.append(plan.tx.outputs[0])
        spendables.append(plan.spendables[0])
    spends.append((fee_input.outpoint, fee_input.spendable, "wallet"))
    htlc_fees = sum(plan.fee_sat for plan in plans)

    def build(change_sat: int) -> SpendPlan:
        return build_spend(
            spends, [*outputs, TxOut(change_sat, change_script)], label="htlc_aggregate",
            version=plans[0].tx.version, locktime=plans[0].tx.locktime,
            spendables=[*spendables, None],
        )  # fmt: skip

    draft = build(fee_input.amount_sat)
    fee = _fee_for(feerate_per_kw, draft.expected_weight())
    change = fee_input.amount_sat + htlc_fees - fee
    if change < dust_limit_sat:
        raise ChannelError(f"htlc_aggregate: a {fee_input.amount_sat} sat input cannot pay a {fee} sat fee")
    return build(change)


def sweep_at_most(
    spends: Sequence[tuple[OutPoint, Spendable, str]],
    destination_script: bytes,
    feerate_per_kw: int,
    *,
    label: str = "sweep",
    dust_limit_sat: int = 546,
) -> SpendPlan:
    """Spend ``spends`` to one output at ``feerate_per_kw``, or at the highest rate that leaves the
    output above dust: a claim never pays more than it is worth (``ChannelError`` if even the
    relay floor is too much)."""
    total = sum(spendable.amount_sat for _, spendable, _ in spends)
    draft = build_spend(spends, [TxOut(total, destination_script)], label=label)
    weight = draft.expected_weight()
    rate = min(feerate_per_kw, (total - dust_limit_sat) * 1000 // weight)
    if rate < FEERATE_FLOOR_PER_KW:
        raise ChannelError(f"{label}: {total} sat cannot pay the minimum relay fee of a {weight} weight sweep")
    return build_spend(spends, [TxOut(total - _fee_for(rate, weight), destination_script)], label=label)
