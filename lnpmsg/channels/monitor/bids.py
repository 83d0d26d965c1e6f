"""The channel monitor's claims on the chain and their fee bids (sans-IO).

Which claim transactions :class:`~.core.ChannelMonitor` offers for the next
block and at what feerate: claims batched by group (penalties near their
deadline alone), re-bid as deadlines approach, HTLC transactions merged and
paid by a wallet input (anchors), and the CPFP child through our anchor while
our commitment waits to confirm. A mixin: these methods read the monitor's
state, which :mod:`.core` owns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.tx import OutPoint, Tx

from ..bolt3 import LOCAL_ANCHOR
from ..errors import ChannelError
from .bump import (
    FeeInput,
    aggregate_htlc_txs,
    anchor_child,
    rebid_feerate,
    sweep_at_most,
    target_feerate,
)
from .events import MonitorEvent, NeedFeeInput
from .resolve import OFFERED_TIMEOUT_GRACE, PENALTY_GROUP, Claim
from .signer import MonitorSecrets, sign_plan

if TYPE_CHECKING:
    from ..commitment import Commitment
    from .updates import ChannelSetup, LocalCommitment

__all__ = ["PENALTY_SECURITY_DELAY", "Bid", "ClaimBids"]

#: the monitor's logger (lnpmsg.channels.monitor.core), whichever of its modules logs
logger = logging.getLogger("lnpmsg.channels.monitor.core")

#: BOLT 5 (anchors): this close to a penalty's deadline each revoked output is claimed on its own.
PENALTY_SECURITY_DELAY = 18
_SWEEP_DUST_LIMIT = 546
_NO_REBID = 1 << 62


@dataclass
class Bid:
    """One group's claim transactions as offered, and the feerate they bid."""

    inputs: tuple[OutPoint, ...]
    feerate: int
    txs: tuple[Tx, ...]
    fee_input: FeeInput | None = None


class ClaimBids:
    """The claims-and-bids half of :class:`~.core.ChannelMonitor` (its state lives there)."""

    # the monitor's state these methods use (set by ChannelMonitor.__init__)
    secrets: MonitorSecrets
    _height: int | None
    _feerate: int
    _pending: list[Claim]
    _bids: dict[str, Bid]
    _fee_inputs: dict[str, FeeInput]
    _requested: set[str]
    _force_close: bool
    _funding_spend: tuple[int, Tx] | None
    _local: LocalCommitment | None
    _preimages: dict[bytes, bytes]
    _learned: dict[bytes, bytes]
    _upstream: dict[int, int]

    if TYPE_CHECKING:

        @property
        def setup(self) -> ChannelSetup: ...

        def _commitment(self, ours: bool, number: int) -> Commitment: ...

        def signed_local_commitment(self) -> Tx: ...

    def _rebid(self) -> list[MonitorEvent]:
        assert self._height is not None
        next_block = self._height + 1
        groups: dict[str, list[Claim]] = {}
        for claim in self._pending:
            if claim.earliest <= next_block:
                groups.setdefault(self._group_of(claim, next_block), []).append(claim)
        for stale in set(self._bids) - set(groups) - {"anchor"}:
            del self._bids[stale]
        requests: list[MonitorEvent] = []
        for group, claims in groups.items():
            claims.sort(key=lambda c: (c.outpoint.txid, c.outpoint.vout))
            deadlines = [c.deadline for c in claims if c.deadline is not None]
            target = target_feerate(self._feerate, min(deadlines) - next_block if deadlines else None)
            inputs = tuple(c.outpoint for c in claims)
            bid = self._bids.get(group)
            if bid is not None and bid.inputs == inputs:
                rate = rebid_feerate(bid.feerate, target)
                if rate is None:
                    continue
            else:
                rate = target if bid is None else max(target, bid.feerate)
            try:
                built = self._build(group, claims, rate, requests)
            except ChannelError as exc:  # e.g. an output worth less than its fee: nothing to gain
                logger.warning("channel monitor %s: cannot claim %s: %s", self.setup.funding_outpoint, group, exc)
                continue
            self._bids[group] = built
        requests.extend(self._anchor_bid())
        return requests

    def _group_of(self, claim: Claim, next_block: int) -> str:
        """Claims batch by group, except (BOLT 5, anchors) penalties close to their deadline:
        each alone, so that a pinned HTLC-transaction output cannot hold back the rest."""
        if (
            claim.group == PENALTY_GROUP
            and self.setup.anchors
            and claim.deadline is not None
            and claim.deadline - next_block <= PENALTY_SECURITY_DELAY
        ):
            return f"{PENALTY_GROUP}:{claim.outpoint}"
        return claim.group

    def _build(self, group: str, claims: list[Claim], rate: int, requests: list[MonitorEvent]) -> Bid:
        inputs = tuple(c.outpoint for c in claims)
        keys: dict[bytes, bytes] = {}
        for claim in claims:
            keys.update(claim.keys)
        plans = [c.presigned for c in claims if c.presigned is not None]
        if plans:
            fee_input = self._fee_inputs.get(group)
            if self.setup.anchors and fee_input is not None:
                # zero-fee HTLC transactions sharing a locktime, merged and paid by one wallet input
                plan = aggregate_htlc_txs(plans, fee_input, self.setup.destination_script, feerate_per_kw=rate)
                keys[fee_input.pubkey] = fee_input.privkey
                values = [dict(c.values) for c in claims] + [{}]
                return Bid(inputs, rate, (sign_plan(plan, keys, values),), fee_input)
            if self.setup.anchors and group not in self._requested:
                self._requested.add(group)
                weight = sum(p.expected_weight() for p in plans) + 300
                requests.append(NeedFeeInput(group, rate * weight // 1000 + _SWEEP_DUST_LIMIT, rate))
            # as signed: the peer's signature fixes their fee (zero with anchors: package relay or a fee input)
            txs = tuple(sign_plan(c.presigned, c.keys, c.values) for c in claims if c.presigned is not None)
            return Bid(inputs, _NO_REBID, txs)
        spends = [(c.outpoint, c.spendable, c.path) for c in claims]
        plan = sweep_at_most(spends, self.setup.destination_script, rate, label=group)
        return Bid(inputs, rate, (sign_plan(plan, keys, [dict(c.values) for c in claims]),))

    def _anchor_bid(self) -> list[MonitorEvent]:
        if not self._force_close or self._funding_spend is not None or self._local is None:
            self._bids.pop("anchor", None)
            return []
        if not self.setup.anchors:
            return []
        # the commitment must confirm in time for its HTLCs to be resolved: their deadlines drive the bid
        assert self._height is not None
        known = self._preimages.keys() | self._learned.keys()
        deadlines = [
            self._upstream.get(h.htlc_id, h.cltv_expiry + OFFERED_TIMEOUT_GRACE) if h.offered else h.cltv_expiry
            for h in self._local.htlcs
            if h.offered or h.payment_hash in known
        ]
        target = target_feerate(self._feerate, min(deadlines) - self._height - 1 if deadlines else None)
        if self._local.feerate_per_kw >= target:
            return []
        commitment = self._commitment(True, self._local.commitment_number)
        fee_input = self._fee_inputs.get("anchor")
        if fee_input is None:
            if "anchor" in self._requested:
                return []
            self._requested.add("anchor")
            amount = target * (commitment.expected_weight + 800) // 1000 + _SWEEP_DUST_LIMIT
            return [NeedFeeInput("anchor", amount, target)]
        bid = self._bids.get("anchor")
        rate = rebid_feerate(bid.feerate if bid is not None else None, target)
        if rate is None:
            return []
        anchor = commitment.output(LOCAL_ANCHOR)
        signed = self.signed_local_commitment()
        child = anchor_child(
            (anchor.outpoint, anchor.spendable), fee_input, self.setup.destination_script,
            parent_weight=signed.weight, parent_fee_sat=commitment.fee_sat, package_feerate_per_kw=rate,
        )  # fmt: skip
        keys = self.secrets.keys_for_local(commitment.context.keys.per_commitment_point)
        keys[fee_input.pubkey] = fee_input.privkey
        self._bids["anchor"] = Bid((anchor.outpoint,), rate, (sign_plan(child, keys),), fee_input)
        return []
