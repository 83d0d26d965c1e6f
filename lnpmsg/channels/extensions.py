"""Generalized channels: commitment transactions composed from extensions.

The channel core (:func:`lnpmsg.channels.commitment.build_commitment`) knows
no output kind. It asks a list of ``CommitmentExtension`` objects, each of
which may contribute to every step of BOLT 3's construction. The standard
BOLT-3 channel is three of them (:mod:`lnpmsg.channels.bolt3`):
``BaseExtension`` (funding input, to_local, to_remote), ``AnchorsExtension``
and ``HtlcExtension``; PTLCs, DLC or eltoo-style outputs plug in the same way.

How the core builds a commitment from ``ctx`` and ``extensions``
-----------------------------------------------------------------
1. ``frame(ctx)``: exactly one extension supplies the transaction frame
   (version, locktime, the input it spends and the path that input uses).
2. ``fixed_outputs(ctx)``: outputs whose amounts the channel state fixes
   (HTLCs, custom outputs). Each ``OutputSpec`` says whether it is
   ``trimmed`` as dust (by the extension's own rule, e.g. amount minus the
   second-stage fee), the ``fee_weight`` it adds when present, the
   ``tiebreak`` for identical outputs, and ``value_msat``, the channel value
   it locks. The core checks conservation:
   ``to_local_msat + to_remote_msat + sum(value_msat) == funding_sat * 1000``.
3. Fee: ``feerate_per_kw * (sum(base_weight(ctx)) + sum(fee_weight of
   untrimmed fixed outputs)) // 1000``. ``sum(funder_charge_sat(ctx))`` (value
   of outputs the funder pays for, e.g. anchors) must fit in the funder's
   balance, else ``ChannelError``; the fee is taken from what is left,
   floored at zero (BOLT 3 then drops the funder's output).
4. ``balance_outputs(ctx, local_sat, remote_sat)``: outputs paying what is
   left of each balance (to_local / to_remote), trimmed by their extension.
5. ``dependent_outputs(ctx, present)``: outputs that exist only given others
   (anchors), seeing every untrimmed output so far.
6. The untrimmed outputs are sorted (amount, scriptPubKey, tiebreak: BIP 69
   with BOLT 3's CLTV rule), stably, and the transaction is built.
7. ``second_stage(ctx, commitment_tx, output)`` is asked, for each output, of
   the extension that made it: pre-signed transactions spending it
   (HTLC-success / HTLC-timeout), as ``SpendPlan``s.

What an extension describes with each output
--------------------------------------------
An ``OutputSpec`` carries a ``tag`` (unique in the commitment, used to find
the output later), its ``Spendable`` (amount, scriptPubKey, witness script,
and named ``SpendPath``s: witness templates whose ``Sig`` slots say which key
signs with which sighash type and which party provides it, plus the
nSequence/nLockTime the path needs), and an optional ``payload`` for the
extension's own use. Signatures required for the commitment itself come from
the frame's path; those for second-stage transactions from their plans; any
later spend (sweeps, penalties, claims) is ``spend.build_spend``/``sweep``
over the output's paths, so a new output kind needs no new signing code.

Extensions may read each other's tags (anchors look for ``to_local`` and
``to_remote``); the core never does.

Writing one (a hash-locked output; see tests/test_channels_extensions.py)::

    class Bonus(CommitmentExtension):
        name = "bonus"

        def fixed_outputs(self, ctx):
            claim = SpendPath("claim", (Sig("claimer", pubkey, signer="remote"), Value("preimage", 32)))
            out = Spendable.p2wsh(amount_sat, witness_script, (claim,))
            return [OutputSpec("bonus", out, trimmed=amount_sat < ctx.dust_limit_sat,
                               fee_weight=172, value_msat=amount_sat * 1000)]

    commitment = build_commitment(ctx, [*bolt3_extensions(htlcs, anchors=True), Bonus()])
    out = commitment.output("bonus")
    plan = sweep([(out.outpoint, out.spendable, "claim")], destination, feerate_per_kw=253)
    tx = plan.finalize({"claimer": plan.sign(0, "claimer", privkey), "preimage": preimage})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lnpmsg.bitcoin.tx import MAX_MONEY, OutPoint, Tx

from .errors import ChannelError
from .keys import MAX_COMMITMENT_NUMBER, CommitmentKeys
from .spend import Spendable, SpendPath, SpendPlan

__all__ = [
    "CommitmentContext",
    "CommitmentExtension",
    "CommitmentOutput",
    "OutputSpec",
    "TxFrame",
]


@dataclass(frozen=True, slots=True)
class CommitmentContext:
    """Everything about one commitment transaction, from its owner's ("local") view.

    Balances are what each side owns outside the fixed outputs (HTLCs are
    already taken out), before the fee. ``dust_limit_sat`` and
    ``to_self_delay`` are the ones that apply to this commitment: the owner's
    dust limit, and the delay the other side imposed on the owner.
    """

    funding_outpoint: OutPoint
    funding_sat: int
    keys: CommitmentKeys
    commitment_number: int
    obscuring_factor: int
    owner_is_funder: bool
    to_local_msat: int
    to_remote_msat: int
    feerate_per_kw: int
    dust_limit_sat: int
    to_self_delay: int

    def __post_init__(self) -> None:
        if not 0 < self.funding_sat <= MAX_MONEY:
            raise ChannelError(f"funding amount {self.funding_sat} out of range")
        if not 0 <= self.commitment_number <= MAX_COMMITMENT_NUMBER:
            raise ChannelError(f"commitment number {self.commitment_number} is not 48 bits")
        if not 0 <= self.obscuring_factor <= MAX_COMMITMENT_NUMBER:
            raise ChannelError("the obscuring factor is 48 bits")
        if self.to_local_msat < 0 or self.to_remote_msat < 0:
            raise ChannelError("balances must not be negative")
        if self.feerate_per_kw < 0 or self.dust_limit_sat < 0:
            raise ChannelError("feerate and dust limit must not be negative")
        if not 0 <= self.to_self_delay <= 0xFFFF:
            raise ChannelError("to_self_delay is a 16-bit block count")


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """An output an extension proposes for the commitment transaction."""

    tag: str
    spendable: Spendable
    trimmed: bool = False
    fee_weight: int = 0
    tiebreak: int = 0
    value_msat: int | None = None
    payload: object = None
    #: filled in by the core: the name of the extension that proposed the output
    extension: str = ""

    @property
    def amount_sat(self) -> int:
        """The output's amount in whole satoshis."""
        return self.spendable.amount_sat

    @property
    def locked_msat(self) -> int:
        """Channel value this output accounts for (``value_msat``, else its amount)."""
        return self.value_msat if self.value_msat is not None else self.spendable.amount_sat * 1000

    def sort_key(self) -> tuple[int, bytes, int]:
        """BIP 69 order plus BOLT 3's tie-break."""
        return (self.spendable.amount_sat, self.spendable.script_pubkey, self.tiebreak)


@dataclass(frozen=True, slots=True)
class CommitmentOutput:
    """An output as placed in the commitment transaction."""

    index: int
    outpoint: OutPoint
    spec: OutputSpec

    @property
    def tag(self) -> str:
        """The tag given by its extension."""
        return self.spec.tag

    @property
    def spendable(self) -> Spendable:
        """Amount, script and spend paths."""
        return self.spec.spendable

    @property
    def amount_sat(self) -> int:
        """The output's amount in satoshis."""
        return self.spec.spendable.amount_sat


@dataclass(frozen=True, slots=True)
class TxFrame:
    """The commitment's version, locktime and single input (what it spends, by which path, with which sequence)."""

    version: int
    locktime: int
    outpoint: OutPoint
    spendable: Spendable
    path: SpendPath
    sequence: int


class CommitmentExtension:
    """One part of a commitment transaction. Override what applies; the defaults add nothing.

    ``name`` must be unique among the extensions of one commitment.
    """

    name: str = "extension"

    def frame(self, ctx: CommitmentContext) -> TxFrame | None:
        """The transaction frame, from exactly one extension (the base)."""
        return None

    def base_weight(self, ctx: CommitmentContext) -> int:
        """Expected weight this extension adds to the fee computation in any case."""
        return 0

    def funder_charge_sat(self, ctx: CommitmentContext) -> int:
        """Satoshis taken from the funder's balance besides the fee (anchors: 2 x 330)."""
        return 0

    def fixed_outputs(self, ctx: CommitmentContext) -> Sequence[OutputSpec]:
        """Outputs whose amounts the channel state fixes (trimmed ones included, marked)."""
        return ()

    def balance_outputs(self, ctx: CommitmentContext, local_sat: int, remote_sat: int) -> Sequence[OutputSpec]:
        """Outputs paying the balances left after the fee and charges."""
        return ()

    def dependent_outputs(self, ctx: CommitmentContext, present: Sequence[OutputSpec]) -> Sequence[OutputSpec]:
        """Outputs that depend on which others exist (``present``: every untrimmed output so far)."""
        return ()

    def second_stage(self, ctx: CommitmentContext, commitment_tx: Tx, output: CommitmentOutput) -> Sequence[SpendPlan]:
        """Pre-signed transactions spending one of this extension's outputs."""
        return ()
