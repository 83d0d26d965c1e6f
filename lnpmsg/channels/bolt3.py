"""The BOLT-3 channel as extensions: base (funding, to_local, to_remote), anchors, HTLCs.

``bolt3_extensions(htlcs, anchors=...)`` gives the list for a static_remotekey
channel (``anchors=False``) or an ``option_anchors_zero_fee_htlc_tx`` one.

Tags: ``to_local``, ``to_remote``, ``anchor:local``, ``anchor:remote``,
``htlc:offered:<id>``, ``htlc:received:<id>`` ("offered" from the commitment
owner's view). Spend paths of each output:

- funding: ``funding`` (both funding keys, sorted as the script);
- to_local and HTLC-transaction outputs: ``revocation`` (any time) and
  ``delayed`` (nSequence = to_self_delay);
- to_remote: ``remote`` (nSequence 1 with anchors);
- anchors: ``owner`` (the funding key) and ``anyone`` (after 16 blocks);
- offered HTLC: ``revocation``, ``htlc_timeout`` (the HTLC-timeout
  transaction), ``preimage`` (the other side, with the payment preimage);
- received HTLC: ``revocation``, ``htlc_success`` (the HTLC-success
  transaction), ``timeout`` (the other side, after cltv_expiry).

``Sig.signer`` is ``"local"`` for the owner and ``"remote"`` for the other side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lnpmsg.bitcoin.sighash import SIGHASH_ALL, SIGHASH_ANYONECANPAY, SIGHASH_SINGLE
from lnpmsg.bitcoin.tx import LOCKTIME_THRESHOLD, Tx, TxOut

from .errors import ChannelError
from .extensions import (
    CommitmentContext,
    CommitmentExtension,
    CommitmentOutput,
    OutputSpec,
    TxFrame,
)
from .fees import (
    ANCHOR_OUTPUT_SAT,
    ANCHORS_EXTRA_WEIGHT,
    COMMITMENT_BASE_WEIGHT,
    HTLC_OUTPUT_WEIGHT,
    htlc_success_fee,
    htlc_timeout_fee,
)
from .keys import commitment_locktime_sequence, obscure_commitment_number
from .script import (
    ANCHOR_CSV_DELAY,
    anchor_script,
    funding_script,
    offered_htlc_script,
    received_htlc_script,
    sort_pubkeys,
    to_local_script,
    to_remote_anchor_script,
)
from .spend import Sig, Spendable, SpendPath, SpendPlan, Value, build_spend

__all__ = [
    "LOCAL_ANCHOR",
    "PREIMAGE_SIZE",
    "REMOTE_ANCHOR",
    "TO_LOCAL",
    "TO_REMOTE",
    "AnchorsExtension",
    "BaseExtension",
    "Htlc",
    "HtlcExtension",
    "bolt3_extensions",
    "delayed_output",
    "funding_spendable",
    "htlc_tag",
]

TO_LOCAL = "to_local"
TO_REMOTE = "to_remote"
LOCAL_ANCHOR = "anchor:local"
REMOTE_ANCHOR = "anchor:remote"
#: A payment preimage is 32 bytes (the HTLC scripts check OP_SIZE 32).
PREIMAGE_SIZE = 32
_COMMITMENT_VERSION = 2
_HTLC_TX_VERSION = 2
# HTLC spends by the other side and HTLC transactions need nSequence 1 with anchors (the 1-block CSV).
_ANCHOR_HTLC_SEQUENCE = 1
_REVOKED = b"\x01"


def funding_spendable(funding_sat: int, local_funding_pubkey: bytes, remote_funding_pubkey: bytes) -> Spendable:
    """The 2-of-2 funding output, with its one path ``funding`` (slots ``local_funding``/``remote_funding``)."""
    names = {local_funding_pubkey: ("local_funding", "local"), remote_funding_pubkey: ("remote_funding", "remote")}
    if local_funding_pubkey == remote_funding_pubkey:
        raise ChannelError("the two funding keys must differ")
    first, second = sort_pubkeys(local_funding_pubkey, remote_funding_pubkey)
    path = SpendPath(
        "funding",
        (
            b"",  # CHECKMULTISIG pops one extra item
            Sig(names[first][0], first, signer=names[first][1]),
            Sig(names[second][0], second, signer=names[second][1]),
        ),
    )
    return Spendable.p2wsh(funding_sat, funding_script(local_funding_pubkey, remote_funding_pubkey), (path,))


def delayed_output(amount_sat: int, revocation_pubkey: bytes, to_self_delay: int, local_delayed_pubkey: bytes) -> Spendable:
    """The to_local-style output (also the HTLC transactions' output): ``revocation`` or ``delayed``."""
    return Spendable.p2wsh(
        amount_sat,
        to_local_script(revocation_pubkey, to_self_delay, local_delayed_pubkey),
        (
            SpendPath("revocation", (Sig("revocation", revocation_pubkey, signer="remote"), _REVOKED)),
            SpendPath(
                "delayed", (Sig("local_delayed", local_delayed_pubkey, signer="local"), b""), sequence=to_self_delay
            ),
        ),
    )


def _to_remote(amount_sat: int, remote_pubkey: bytes, *, anchors: bool) -> Spendable:
    sig = Sig("remote_payment", remote_pubkey, signer="remote")
    if anchors:
        path = SpendPath("remote", (sig,), sequence=1)
        return Spendable.p2wsh(amount_sat, to_remote_anchor_script(remote_pubkey), (path,))
    return Spendable.p2wpkh(amount_sat, remote_pubkey, (SpendPath("remote", (sig, remote_pubkey)),))


class BaseExtension(CommitmentExtension):
    """Funding input, locktime/sequence from the obscured commitment number, to_local and to_remote."""

    name = "base"

    def __init__(self, *, anchors: bool = False) -> None:
        self.anchors = anchors

    def frame(self, ctx: CommitmentContext) -> TxFrame:
        """Version 2, the funding input, and the obscured commitment number in locktime and sequence."""
        obscured = obscure_commitment_number(ctx.commitment_number, ctx.obscuring_factor)
        locktime, sequence = commitment_locktime_sequence(obscured)
        funding = funding_spendable(ctx.funding_sat, ctx.keys.local_funding_pubkey, ctx.keys.remote_funding_pubkey)
        return TxFrame(_COMMITMENT_VERSION, locktime, ctx.funding_outpoint, funding, funding.path("funding"), sequence)

    def base_weight(self, ctx: CommitmentContext) -> int:
        """724: the commitment with both balance outputs and no HTLC."""
        return COMMITMENT_BASE_WEIGHT

    def balance_outputs(self, ctx: CommitmentContext, local_sat: int, remote_sat: int) -> Sequence[OutputSpec]:
        """to_local (revocable, delayed) and to_remote, each trimmed below the dust limit."""
        keys = ctx.keys
        to_local = delayed_output(local_sat, keys.revocation_pubkey, ctx.to_self_delay, keys.local_delayed_pubkey)
        to_remote = _to_remote(remote_sat, keys.remote_payment_pubkey, anchors=self.anchors)
        return (
            OutputSpec(TO_LOCAL, to_local, trimmed=local_sat < ctx.dust_limit_sat),
            OutputSpec(TO_REMOTE, to_remote, trimmed=remote_sat < ctx.dust_limit_sat),
        )


def _anchor(funding_pubkey: bytes, signer: str) -> Spendable:
    return Spendable.p2wsh(
        ANCHOR_OUTPUT_SAT,
        anchor_script(funding_pubkey),
        (
            SpendPath("owner", (Sig("funding", funding_pubkey, signer=signer),)),
            SpendPath("anyone", (b"",), sequence=ANCHOR_CSV_DELAY),
        ),
    )


class AnchorsExtension(CommitmentExtension):
    """option_anchors: two 330-sat anchors paid by the funder, each present only if its side has something at stake."""

    name = "anchors"

    def base_weight(self, ctx: CommitmentContext) -> int:
        """400: the anchors (and the P2WSH to_remote) in BOLT 3's 1124 base weight."""
        return ANCHORS_EXTRA_WEIGHT

    def funder_charge_sat(self, ctx: CommitmentContext) -> int:
        """Both anchors' value, whether or not both end up present."""
        return 2 * ANCHOR_OUTPUT_SAT

    def dependent_outputs(self, ctx: CommitmentContext, present: Sequence[OutputSpec]) -> Sequence[OutputSpec]:
        """A side's anchor exists if any output other than the other side's balance does."""
        tags = {spec.tag for spec in present}
        outputs = []
        if tags - {TO_REMOTE}:
            outputs.append(OutputSpec(LOCAL_ANCHOR, _anchor(ctx.keys.local_funding_pubkey, "local")))
        if tags - {TO_LOCAL}:
            outputs.append(OutputSpec(REMOTE_ANCHOR, _anchor(ctx.keys.remote_funding_pubkey, "remote")))
        return outputs


@dataclass(frozen=True, slots=True)
class Htlc:
    """An HTLC in a commitment; ``offered`` is from the commitment owner's view (owner pays)."""

    htlc_id: int
    offered: bool
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int

    def __post_init__(self) -> None:
        if self.amount_msat <= 0:
            raise ChannelError("an HTLC amount must be positive")
        if len(self.payment_hash) != 32:
            raise ChannelError("a payment hash is 32 bytes")
        if not 0 <= self.cltv_expiry < LOCKTIME_THRESHOLD:
            raise ChannelError(f"cltv_expiry {self.cltv_expiry} is not a block height")


def htlc_tag(htlc: Htlc) -> str:
    """The output tag of ``htlc``."""
    return f"htlc:{'offered' if htlc.offered else 'received'}:{htlc.htlc_id}"


class HtlcExtension(CommitmentExtension):
    """Offered and received HTLC outputs and their HTLC-timeout / HTLC-success transactions."""

    name = "htlcs"

    def __init__(self, htlcs: Sequence[Htlc], *, anchors: bool = False) -> None:
        self.htlcs = tuple(htlcs)
        self.anchors = anchors

    def _second_stage_fee(self, ctx: CommitmentContext, htlc: Htlc) -> int:
        if htlc.offered:
            return htlc_timeout_fee(ctx.feerate_per_kw, zero_fee_htlc_tx=self.anchors)
        return htlc_success_fee(ctx.feerate_per_kw, zero_fee_htlc_tx=self.anchors)

    def _spendable(self, ctx: CommitmentContext, htlc: Htlc) -> Spendable:
        keys = ctx.keys
        anchors = self.anchors
        revocation = SpendPath(
            "revocation", (Sig("revocation", keys.revocation_pubkey, signer="remote"), keys.revocation_pubkey)
        )
        second_sighash = SIGHASH_SINGLE | SIGHASH_ANYONECANPAY if anchors else SIGHASH_ALL
        second_sequence = _ANCHOR_HTLC_SEQUENCE if anchors else 0
        claim_sequence = _ANCHOR_HTLC_SEQUENCE if anchors else None
        remote_sig = Sig("remote_htlc", keys.remote_htlc_pubkey, second_sighash, signer="remote")
        local_sig = Sig("local_htlc", keys.local_htlc_pubkey, signer="local")
        claim_sig = Sig("remote_htlc", keys.remote_htlc_pubkey, signer="remote")
        preimage = Value("preimage", PREIMAGE_SIZE)
        if htlc.offered:
            witness_script = offered_htlc_script(
                keys.revocation_pubkey, keys.local_htlc_pubkey, keys.remote_htlc_pubkey, htlc.payment_hash,
                anchors=anchors,
            )  # fmt: skip
            paths = (
                revocation,
                SpendPath(
                    "htlc_timeout",
                    (b"", remote_sig, local_sig, b""),
                    sequence=second_sequence,
                    locktime=htlc.cltv_expiry,
                ),
                SpendPath("preimage", (claim_sig, preimage), sequence=claim_sequence),
            )
        else:
            witness_script = received_htlc_script(
                keys.revocation_pubkey, keys.local_htlc_pubkey, keys.remote_htlc_pubkey, htlc.payment_hash,
                htlc.cltv_expiry, anchors=anchors,
            )  # fmt: skip
            paths = (
                revocation,
                SpendPath("htlc_success", (b"", remote_sig, local_sig, preimage), sequence=second_sequence),
                SpendPath("timeout", (claim_sig, b""), sequence=claim_sequence, locktime=htlc.cltv_expiry),
            )
        return Spendable.p2wsh(htlc.amount_msat // 1000, witness_script, paths)

    def fixed_outputs(self, ctx: CommitmentContext) -> Sequence[OutputSpec]:
        """One output per HTLC, trimmed if its amount minus its second-stage fee is below the dust limit."""
        specs = []
        for htlc in self.htlcs:
            amount_sat = htlc.amount_msat // 1000
            specs.append(
                OutputSpec(
                    htlc_tag(htlc),
                    self._spendable(ctx, htlc),
                    trimmed=amount_sat - self._second_stage_fee(ctx, htlc) < ctx.dust_limit_sat,
                    fee_weight=HTLC_OUTPUT_WEIGHT,
                    tiebreak=htlc.cltv_expiry,
                    value_msat=htlc.amount_msat,
                    payload=htlc,
                )
            )
        return specs

    def second_stage(self, ctx: CommitmentContext, commitment_tx: Tx, output: CommitmentOutput) -> Sequence[SpendPlan]:
        """The HTLC-timeout (offered) or HTLC-success (received) transaction of ``output``."""
        htlc = output.spec.payload
        if not isinstance(htlc, Htlc):
            raise ChannelError(f"output {output.tag!r} carries no HTLC")
        keys = ctx.keys
        amount = output.amount_sat - self._second_stage_fee(ctx, htlc)
        destination = delayed_output(amount, keys.revocation_pubkey, ctx.to_self_delay, keys.local_delayed_pubkey)
        path = "htlc_timeout" if htlc.offered else "htlc_success"
        plan = build_spend(
            [(output.outpoint, output.spendable, path)],
            [TxOut(amount, destination.script_pubkey)],
            label=f"{path}:{htlc.htlc_id}",
            version=_HTLC_TX_VERSION,
            spendables=[destination],
        )
        return (plan,)


def bolt3_extensions(htlcs: Sequence[Htlc] = (), *, anchors: bool = False) -> list[CommitmentExtension]:
    """The extensions of a BOLT-3 channel (static_remotekey, or option_anchors_zero_fee_htlc_tx)."""
    extensions: list[CommitmentExtension] = [BaseExtension(anchors=anchors)]
    if anchors:
        extensions.append(AnchorsExtension())
    extensions.append(HtlcExtension(htlcs, anchors=anchors))
    return extensions
