"""The channel core: build a commitment transaction from extensions.

Nothing here names an output kind; see :mod:`lnpmsg.channels.extensions` for
the steps and what each extension contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lnpmsg.bitcoin.fees import fee_for_weight
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut

from .errors import ChannelError
from .extensions import (
    CommitmentContext,
    CommitmentExtension,
    CommitmentOutput,
    OutputSpec,
)
from .spend import InputPlan, SpendPlan

__all__ = ["Commitment", "build_commitment"]


@dataclass(frozen=True, slots=True)
class Commitment:
    """A built commitment transaction and everything derived with it.

    ``plan`` is the unsigned commitment transaction as a ``SpendPlan`` of the
    funding output (sign and finalize through it); ``second_stage`` holds the
    plans of the pre-signed transactions, in commitment output order.
    """

    context: CommitmentContext
    plan: SpendPlan
    outputs: tuple[CommitmentOutput, ...]
    trimmed: tuple[OutputSpec, ...]
    expected_weight: int
    base_fee_sat: int
    second_stage: tuple[SpendPlan, ...]

    @property
    def tx(self) -> Tx:
        """The unsigned commitment transaction."""
        return self.plan.tx

    @property
    def fee_sat(self) -> int:
        """The actual fee: the base fee plus everything trimmed or rounded away."""
        return self.plan.fee_sat

    def output(self, tag: str) -> CommitmentOutput:
        """The output tagged ``tag`` (``ChannelError`` if absent, e.g. trimmed)."""
        for output in self.outputs:
            if output.tag == tag:
                return output
        raise ChannelError(f"the commitment has no output {tag!r}")

    def has_output(self, tag: str) -> bool:
        """Whether an output tagged ``tag`` is present (not trimmed)."""
        return any(output.tag == tag for output in self.outputs)

    def second_stage_for(self, tag: str) -> SpendPlan:
        """The pre-signed transaction spending the output tagged ``tag``."""
        index = self.output(tag).index
        for plan in self.second_stage:
            if plan.tx.inputs[0].prevout.vout == index:
                return plan
        raise ChannelError(f"output {tag!r} has no second-stage transaction")


def _collect(extension: CommitmentExtension, specs: Sequence[OutputSpec]) -> list[OutputSpec]:
    return [replace(spec, extension=extension.name) for spec in specs]


def build_commitment(ctx: CommitmentContext, extensions: Sequence[CommitmentExtension]) -> Commitment:
    """Compose the commitment transaction described by ``ctx`` from ``extensions``."""
    by_name = {ext.name: ext for ext in extensions}
    if len(by_name) != len(extensions):
        raise ChannelError("extension names must be unique")

    frames = [(ext, frame) for ext in extensions if (frame := ext.frame(ctx)) is not None]
    if len(frames) != 1:
        raise ChannelError(f"exactly one extension must supply the transaction frame, got {len(frames)}")
    frame = frames[0][1]

    fixed = [spec for ext in extensions for spec in _collect(ext, ext.fixed_outputs(ctx))]
    locked = sum(spec.locked_msat for spec in fixed)
    if ctx.to_local_msat + ctx.to_remote_msat + locked != ctx.funding_sat * 1000:
        raise ChannelError(
            f"balances ({ctx.to_local_msat} + {ctx.to_remote_msat} msat) and outputs ({locked} msat)"
            f" do not add up to the funding amount ({ctx.funding_sat} sat)"
        )

    weight = sum(ext.base_weight(ctx) for ext in extensions)
    weight += sum(spec.fee_weight for spec in fixed if not spec.trimmed)
    base_fee = fee_for_weight(weight, ctx.feerate_per_kw)
    # Charges pay for outputs (anchors), so the funder must afford them; the fee
    # itself may exceed what is left (BOLT 3 then drops the funder's output).
    charge = sum(ext.funder_charge_sat(ctx) for ext in extensions)
    local_sat = ctx.to_local_msat // 1000
    remote_sat = ctx.to_remote_msat // 1000
    funder_sat = local_sat if ctx.owner_is_funder else remote_sat
    if funder_sat < charge:
        raise ChannelError(f"the funder's {funder_sat} sat cannot pay the {charge} sat its extensions charge")
    funder_sat = max(0, funder_sat - charge - base_fee)
    if ctx.owner_is_funder:
        local_sat = funder_sat
    else:
        remote_sat = funder_sat

    balance = [spec for ext in extensions for spec in _collect(ext, ext.balance_outputs(ctx, local_sat, remote_sat))]
    present = tuple(spec for spec in fixed + balance if not spec.trimmed)
    dependent = [spec for ext in extensions for spec in _collect(ext, ext.dependent_outputs(ctx, present))]
    everything = fixed + balance + dependent
    tags = [spec.tag for spec in everything]
    if len(tags) != len(set(tags)):
        raise ChannelError("output tags must be unique within a commitment")

    chosen = sorted((spec for spec in everything if not spec.trimmed), key=OutputSpec.sort_key)
    if sum(spec.amount_sat for spec in chosen) > ctx.funding_sat:
        raise ChannelError("the outputs exceed the funding amount")
    tx = Tx(
        frame.version,
        (TxIn(frame.outpoint, sequence=frame.sequence),),
        tuple(TxOut(spec.amount_sat, spec.spendable.script_pubkey) for spec in chosen),
        frame.locktime,
    )
    plan = SpendPlan(
        "commitment",
        tx,
        (InputPlan(frame.spendable, frame.path),),
        tuple(spec.spendable for spec in chosen),
    )
    txid = tx.txid
    outputs = tuple(
        CommitmentOutput(index, OutPoint(txid, index), spec)
        for index, spec in enumerate(chosen)
    )
    second_stage = tuple(
        stage for output in outputs for stage in by_name[output.spec.extension].second_stage(ctx, tx, output)
    )
    return Commitment(
        context=ctx,
        plan=plan,
        outputs=outputs,
        trimmed=tuple(spec for spec in everything if spec.trimmed),
        expected_weight=weight,
        base_fee_sat=base_fee,
        second_stage=second_stage,
    )

