"""Spending a commitment's outputs, and closing the channel cooperatively.

Sweeps are thin: each picks outputs of a ``Commitment`` (or of an HTLC
transaction's plan) and a path name, and hands them to ``spend.sweep``. The
fee is ``feerate_per_kw`` on the signed weight with 73-byte signatures.

- ``to_local_sweep``: the owner, after ``to_self_delay`` blocks (path ``delayed``).
- ``second_stage_sweep``: the owner, an HTLC transaction's output after the delay.
- ``penalty_sweep``: the other side, every revocable output of a revoked
  commitment at once (path ``revocation``; signed with the revocation privkey).
- ``second_stage_penalty``: the other side, outputs of revoked HTLC transactions.
- ``htlc_claim``: the other side, an HTLC output directly (preimage for an
  HTLC the owner offered, timeout for one it received).
- ``to_remote_sweep``: the other side, its to_remote output.
- ``legacy_closing_tx`` / ``closing_tx``: cooperative close without /
  with ``option_simple_close``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lnpmsg.bitcoin.script import is_op_return
from lnpmsg.bitcoin.tx import SEQUENCE_FINAL, SEQUENCE_RBF, OutPoint, TxOut

from .bolt3 import TO_LOCAL, TO_REMOTE, Htlc, funding_spendable
from .commitment import Commitment
from .errors import ChannelError
from .spend import SpendPlan, build_spend, sweep

__all__ = [
    "DEFAULT_SWEEP_DUST_LIMIT",
    "closing_tx",
    "htlc_claim",
    "legacy_closing_tx",
    "penalty_sweep",
    "second_stage_penalty",
    "second_stage_sweep",
    "to_local_sweep",
    "to_remote_sweep",
]

#: Sweeps refuse to create an output below this (the P2PKH dust threshold covers every standard script).
DEFAULT_SWEEP_DUST_LIMIT = 546


def to_local_sweep(
    commitment: Commitment, destination_script: bytes, *, feerate_per_kw: int,
    dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """The owner's spend of to_local once ``to_self_delay`` blocks have passed (slot ``local_delayed``)."""
    output = commitment.output(TO_LOCAL)
    return sweep(
        [(output.outpoint, output.spendable, "delayed")], destination_script,
        feerate_per_kw=feerate_per_kw, label="to_local_sweep", dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def to_remote_sweep(
    commitment: Commitment, destination_script: bytes, *, feerate_per_kw: int,
    dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """The other side's spend of its to_remote output (slot ``remote_payment``)."""
    output = commitment.output(TO_REMOTE)
    return sweep(
        [(output.outpoint, output.spendable, "remote")], destination_script,
        feerate_per_kw=feerate_per_kw, label="to_remote_sweep", dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def penalty_sweep(
    commitment: Commitment, destination_script: bytes, *, feerate_per_kw: int,
    tags: Sequence[str] | None = None, dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """Claim every output with a ``revocation`` path (or those in ``tags``) of a revoked commitment.

    Each input has one slot, ``revocation``, signed with
    ``keys.revocation_privkey(revocation_basepoint_secret, per_commitment_secret)``.
    """
    chosen = [
        output for output in commitment.outputs
        if (tags is None or output.tag in tags) and any(p.name == "revocation" for p in output.spendable.paths)
    ]  # fmt: skip
    if not chosen:
        raise ChannelError("no revocable output to claim")
    return sweep(
        [(output.outpoint, output.spendable, "revocation") for output in chosen], destination_script,
        feerate_per_kw=feerate_per_kw, label="penalty", dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def second_stage_sweep(
    htlc_tx: SpendPlan, destination_script: bytes, *, feerate_per_kw: int,
    dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """The owner's spend of an HTLC-success/timeout output after ``to_self_delay`` (slot ``local_delayed``)."""
    spendable = htlc_tx.spendables[0]
    if spendable is None:
        raise ChannelError(f"{htlc_tx.label} has no known output to sweep")
    return sweep(
        [(htlc_tx.tx.outpoint(0), spendable, "delayed")], destination_script,
        feerate_per_kw=feerate_per_kw, label=f"{htlc_tx.label}:sweep", dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def second_stage_penalty(
    htlc_txs: Sequence[SpendPlan], destination_script: bytes, *, feerate_per_kw: int,
    dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """Claim the outputs of HTLC transactions of a revoked commitment (slot ``revocation``)."""
    spends = []
    for plan in htlc_txs:
        spendable = plan.spendables[0]
        if spendable is None:
            raise ChannelError(f"{plan.label} has no known output")
        spends.append((plan.tx.outpoint(0), spendable, "revocation"))
    if not spends:
        raise ChannelError("no HTLC transaction to claim")
    return sweep(
        spends, destination_script, feerate_per_kw=feerate_per_kw, label="htlc_penalty",
        dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def htlc_claim(
    commitment: Commitment, tag: str, destination_script: bytes, *, feerate_per_kw: int,
    dust_limit_sat: int = DEFAULT_SWEEP_DUST_LIMIT,
) -> SpendPlan:  # fmt: skip
    """The other side's direct spend of the HTLC output ``tag`` (slot ``remote_htlc``).

    An HTLC the owner offered is claimed with the payment preimage (value
    ``preimage``); one the owner received, after its ``cltv_expiry``.
    """
    output = commitment.output(tag)
    htlc = output.spec.payload
    if not isinstance(htlc, Htlc):
        raise ChannelError(f"output {tag!r} is not an HTLC")
    path = "preimage" if htlc.offered else "timeout"
    return sweep(
        [(output.outpoint, output.spendable, path)], destination_script,
        feerate_per_kw=feerate_per_kw, label=f"htlc_claim:{tag}", dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def _check_balances(funding_sat: int, first_msat: int, second_msat: int) -> None:
    if first_msat < 0 or second_msat < 0 or first_msat + second_msat != funding_sat * 1000:
        raise ChannelError("closing balances must add up to the funding amount")


def legacy_closing_tx(
    funding_outpoint: OutPoint,
    funding_sat: int,
    *,
    local_funding_pubkey: bytes,
    remote_funding_pubkey: bytes,
    local_script: bytes,
    remote_script: bytes,
    to_local_msat: int,
    to_remote_msat: int,
    fee_sat: int,
    local_is_funder: bool,
    dust_limit_sat: int,
) -> SpendPlan:
    """The closing transaction of ``closing_signed`` (no option_simple_close).

    Amounts are rounded down, the funder pays ``fee_sat``, outputs below
    ``dust_limit_sat`` (the signer's own) are left out, outputs are BIP-69 sorted.
    """
    _check_balances(funding_sat, to_local_msat, to_remote_msat)
    local_sat = to_local_msat // 1000
    remote_sat = to_remote_msat // 1000
    if local_is_funder:
        local_sat -= fee_sat
    else:
        remote_sat -= fee_sat
    if min(local_sat, remote_sat) < 0 or fee_sat < 0:
        raise ChannelError("the funder cannot pay the closing fee")
    outputs = [TxOut(amount, spk) for amount, spk in ((local_sat, local_script), (remote_sat, remote_script))
               if amount >= dust_limit_sat]  # fmt: skip
    if not outputs:
        raise ChannelError("a closing transaction needs at least one output above the dust limit")
    return _closing_plan(funding_outpoint, funding_sat, local_funding_pubkey, remote_funding_pubkey,
                         outputs, SEQUENCE_FINAL, 0, "legacy_closing")  # fmt: skip


def closing_tx(
    funding_outpoint: OutPoint,
    funding_sat: int,
    *,
    local_funding_pubkey: bytes,
    remote_funding_pubkey: bytes,
    closer_script: bytes | None,
    closee_script: bytes | None,
    closer_msat: int,
    closee_msat: int,
    fee_sat: int,
    locktime: int,
) -> SpendPlan:
    """The closing transaction of ``closing_complete`` / ``closing_sig`` (option_simple_close).

    The closer pays ``fee_sat``; a ``None`` script omits that side's output;
    an OP_RETURN output gets amount zero. Sequence 0xFFFFFFFD, BIP-69 order.
    """
    _check_balances(funding_sat, closer_msat, closee_msat)
    closer_sat = closer_msat // 1000 - fee_sat
    if closer_sat < 0 or fee_sat < 0:
        raise ChannelError("the closer cannot pay the closing fee")
    outputs = []
    for spk, amount in ((closer_script, closer_sat), (closee_script, closee_msat // 1000)):
        if spk is not None:
            outputs.append(TxOut(0 if is_op_return(spk) else amount, spk))
    if not outputs:
        raise ChannelError("a closing transaction needs at least one output")
    return _closing_plan(funding_outpoint, funding_sat, local_funding_pubkey, remote_funding_pubkey,
                         outputs, SEQUENCE_RBF, locktime, "closing")  # fmt: skip


def _closing_plan(
    funding_outpoint: OutPoint,
    funding_sat: int,
    local_funding_pubkey: bytes,
    remote_funding_pubkey: bytes,
    outputs: list[TxOut],
    sequence: int,
    locktime: int,
    label: str,
) -> SpendPlan:
    funding = funding_spendable(funding_sat, local_funding_pubkey, remote_funding_pubkey)
    ordered = sorted(outputs, key=lambda out: (out.amount_sat, out.script_pubkey))
    return build_spend(
        [(funding_outpoint, funding, "funding")], ordered, label=label, locktime=locktime, sequence=sequence
    )
