"""The two-sided update log of BOLT 2 and the commitment contents it produces.

Each side's updates (``update_add_htlc``, fulfil, fail, fail_malformed,
``update_fee``; the wire messages themselves are the log entries) move
through three stages, named from where they stand with the peer:

- our updates: ``proposed`` (sent, in no commitment_signed yet) ->
  ``signed`` (in the commitment_signed we sent, awaiting revoke_and_ack)
  -> ``acked`` (the peer's commitment holds them; ours will when it signs);
- their updates: ``proposed`` (received) -> ``acked`` (in a
  commitment_signed we received and revoked for) -> ``signed`` (in a
  commitment_signed we sent) and then gone: both commitments hold them.

A :class:`CommitSpec` is what a commitment contains, from its owner's view:
HTLCs (``incoming`` to the owner or not), balances, feerate.
:func:`reduce` applies updates to it, the way both sides compute the next
commitment of either of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import ChannelError
from .fees import (
    ANCHOR_OUTPUT_SAT,
    COMMITMENT_BASE_WEIGHT,
    COMMITMENT_BASE_WEIGHT_ANCHORS,
    HTLC_OUTPUT_WEIGHT,
    htlc_success_fee,
    htlc_timeout_fee,
)
from .messages import (
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)

__all__ = [
    "Changes",
    "CommitSpec",
    "DirectedHtlc",
    "Update",
    "commit_fee_sat",
    "funder_charge_sat",
    "reduce",
    "untrimmed_htlcs",
]

Update = UpdateAddHtlc | UpdateFulfillHtlc | UpdateFailHtlc | UpdateFailMalformedHtlc | UpdateFee
_SETTLES = (UpdateFulfillHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc)


@dataclass(frozen=True, slots=True)
class DirectedHtlc:
    """An HTLC in a commitment: ``incoming`` to the commitment's owner, or offered by it."""

    incoming: bool
    add: UpdateAddHtlc


@dataclass(frozen=True, slots=True)
class CommitSpec:
    """The contents of one commitment, from its owner's ("local") view."""

    htlcs: tuple[DirectedHtlc, ...]
    feerate_per_kw: int
    to_local_msat: int
    to_remote_msat: int

    def htlc(self, incoming: bool, htlc_id: int) -> UpdateAddHtlc | None:
        """The HTLC ``htlc_id`` in one direction, or None."""
        for h in self.htlcs:
            if h.incoming == incoming and h.add.id == htlc_id:
                return h.add
        return None

    def flipped(self) -> CommitSpec:
        """The same contents from the other side's view."""
        return CommitSpec(
            tuple(DirectedHtlc(not h.incoming, h.add) for h in self.htlcs),
            self.feerate_per_kw,
            self.to_remote_msat,
            self.to_local_msat,
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """One side's updates in their three stages (see the module docstring)."""

    proposed: tuple[Update, ...] = ()
    signed: tuple[Update, ...] = ()
    acked: tuple[Update, ...] = ()

    def all(self) -> tuple[Update, ...]:
        """Every update not yet in both commitments."""
        return self.proposed + self.signed + self.acked

    def propose(self, update: Update) -> Changes:
        """With ``update`` appended to ``proposed``."""
        return replace(self, proposed=(*self.proposed, update))


def reduce(spec: CommitSpec, owner_updates: Iterable[Update], other_updates: Iterable[Update]) -> CommitSpec:
    """``spec`` after the owner's and the other side's updates (adds, then settles, then fees).

    Raises ChannelError when an update settles an HTLC the spec lacks or a balance goes negative.
    """
    owner = list(owner_updates)
    other = list(other_updates)
    htlcs = {(h.incoming, h.add.id): h for h in spec.htlcs}
    to_local, to_remote = spec.to_local_msat, spec.to_remote_msat
    for incoming, updates in ((False, owner), (True, other)):
        for update in updates:
            if isinstance(update, UpdateAddHtlc):
                htlcs[(incoming, update.id)] = DirectedHtlc(incoming, update)
                if incoming:
                    to_remote -= update.amount_msat
                else:
                    to_local -= update.amount_msat
    for settles_incoming, updates in ((True, owner), (False, other)):
        for update in updates:
            if not isinstance(update, _SETTLES):
                continue
            removed = htlcs.pop((settles_incoming, update.id), None)
            if removed is None:
                raise ChannelError(f"no {'incoming' if settles_incoming else 'outgoing'} HTLC {update.id} to settle")
            amount = removed.add.amount_msat
            fulfilled = isinstance(update, UpdateFulfillHtlc)
            # A fulfil pays the HTLC's receiver; a failure returns it to its offerer.
            if settles_incoming == fulfilled:
                to_local += amount
            else:
                to_remote += amount
    feerate = spec.feerate_per_kw
    for update in owner + other:
        if isinstance(update, UpdateFee):
            feerate = update.feerate_per_kw
    if to_local < 0 or to_remote < 0:
        raise ChannelError("a balance would go negative")
    ordered = tuple(sorted(htlcs.values(), key=lambda h: (h.incoming, h.add.id)))
    return CommitSpec(ordered, feerate, to_local, to_remote)


def untrimmed_htlcs(spec: CommitSpec, dust_limit_sat: int, *, anchors: bool) -> list[DirectedHtlc]:
    """The HTLCs that get an output in the owner's commitment (BOLT 3 trimming)."""
    out = []
    for h in spec.htlcs:
        # Offered by the owner: HTLC-timeout; incoming: HTLC-success.
        if h.incoming:
            fee = htlc_success_fee(spec.feerate_per_kw, zero_fee_htlc_tx=anchors)
        else:
            fee = htlc_timeout_fee(spec.feerate_per_kw, zero_fee_htlc_tx=anchors)
        if h.add.amount_msat // 1000 - fee >= dust_limit_sat:
            out.append(h)
    return out


def commit_fee_sat(spec: CommitSpec, dust_limit_sat: int, *, anchors: bool) -> int:
    """The commitment's fee (BOLT 3 expected weight), paid by the funder."""
    base = COMMITMENT_BASE_WEIGHT_ANCHORS if anchors else COMMITMENT_BASE_WEIGHT
    weight = base + HTLC_OUTPUT_WEIGHT * len(untrimmed_htlcs(spec, dust_limit_sat, anchors=anchors))
    return weight * spec.feerate_per_kw // 1000


def funder_charge_sat(spec: CommitSpec, dust_limit_sat: int, *, anchors: bool) -> int:
    """Everything the funder pays besides HTLCs: the fee, and both anchors."""
    return commit_fee_sat(spec, dust_limit_sat, anchors=anchors) + (2 * ANCHOR_OUTPUT_SAT if anchors else 0)
