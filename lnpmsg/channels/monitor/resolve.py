"""What to claim when a commitment transaction confirms (BOLT 5), as data (sans-IO).

:func:`resolve_commitment` recognises the transaction that spent the funding
output and lists, per output, a :class:`Claim`: how we spend it (an outpoint,
its spend path, keys and witness values, or our pre-signed HTLC transaction),
from which block, and by which deadline. Outputs that are the peer's to take
are tracked too (``claimable=False``) so that their spends teach us preimages.

- our commitment: ``to_local`` after our delay; HTLC-success (preimage known)
  and HTLC-timeout (after expiry) transactions, whose outputs are claimed
  after the delay (:func:`second_stage_claims`);
- their current or previous commitment: our ``to_remote`` (static_remotekey:
  reported as the wallet's; anchors: after 1 block), their offered HTLCs with
  the preimage, ours after expiry;
- their revoked commitment: every output with the revocation key, one
  ``penalty`` group, and the outputs of their HTLC transactions if they got
  there first;
- an older commitment of ours (we revoked it): its ``to_local`` after our
  delay, unless the peer takes it first with the revocation key (its HTLCs
  are not rebuilt: we keep no older state of ours);
- a commitment newer than we know (data loss): our ``to_remote`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wpkh, p2wsh
from lnpmsg.bitcoin.tx import OutPoint, Tx

from ..bolt3 import TO_LOCAL, TO_REMOTE, Htlc, bolt3_extensions, htlc_tag
from ..commitment import Commitment, build_commitment
from ..errors import ChannelError
from ..extensions import CommitmentContext, CommitmentOutput
from ..keys import CommitmentKeys, commitment_number_from_locktime_sequence
from ..script import to_local_script, to_remote_anchor_script
from ..spend import Sig, Spendable, SpendPath, SpendPlan
from .events import CommitmentKind
from .signer import MonitorSecrets
from .updates import ChannelSetup, LocalCommitment, RemoteCommitment

__all__ = [
    "OFFERED_TIMEOUT_GRACE",
    "Claim",
    "Resolution",
    "extract_preimage",
    "local_commitment",
    "remote_commitment",
    "resolve_commitment",
    "second_stage_claims",
]

#: Without an upstream deadline, an HTLC we offered should be timed out within this many blocks of its expiry.
OFFERED_TIMEOUT_GRACE = 12
#: A penalty must confirm before the cheater's delay ends.
PENALTY_GROUP = "penalty"


@dataclass(frozen=True)
class Claim:
    """One output to resolve, and how.

    ``earliest`` is the first block height that may include the spend (CSV
    and CLTV applied); ``deadline`` the height by which it must confirm
    (``None``: no race). Claims of one ``group`` share a transaction.
    ``presigned``: our HTLC transaction (the peer's signature in ``values``),
    spent as is. ``claimable=False``: the peer's to take; watched only, and
    forgotten once ``expires`` is buried.
    """

    key: str
    outpoint: OutPoint
    spendable: Spendable
    path: str
    earliest: int
    deadline: int | None
    group: str
    what: str
    keys: Mapping[bytes, bytes] = field(default_factory=dict, repr=False)
    values: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    presigned: SpendPlan | None = None
    htlc: Htlc | None = None
    #: the HTLC's direction from our view (we paid it)
    we_offered: bool = False
    claimable: bool = True
    expires: int | None = None


@dataclass
class Resolution:
    """A recognised commitment on chain and the claims on its outputs."""

    kind: CommitmentKind
    number: int
    txid: bytes
    height: int
    claims: list[Claim]
    #: outputs already ours: (outpoint, amount, script)
    to_wallet: list[tuple[OutPoint, int, bytes]]
    #: script of the commitment's delayed outputs (to_local and every HTLC transaction's output)
    delayed_script: bytes | None = None
    delayed_keys: Mapping[bytes, bytes] = field(default_factory=dict, repr=False)
    keys: CommitmentKeys | None = None
    to_self_delay: int = 0


def _context(setup: ChannelSetup, *, ours: bool, number: int, keys: CommitmentKeys,
             to_local_msat: int, to_remote_msat: int, feerate: int) -> CommitmentContext:  # fmt: skip
    return CommitmentContext(
        funding_outpoint=setup.funding_outpoint,
        funding_sat=setup.funding_sat,
        keys=keys,
        commitment_number=number,
        obscuring_factor=setup.obscuring_factor,
        owner_is_funder=setup.local_is_funder == ours,
        to_local_msat=to_local_msat,
        to_remote_msat=to_remote_msat,
        feerate_per_kw=feerate,
        dust_limit_sat=setup.local_dust_limit_sat if ours else setup.remote_dust_limit_sat,
        to_self_delay=setup.local_to_self_delay if ours else setup.remote_to_self_delay,
    )


def local_commitment(setup: ChannelSetup, secrets: MonitorSecrets, record: LocalCommitment) -> Commitment:
    """Our commitment of ``record``, unsigned (its plan holds every second-stage transaction)."""
    point = secrets.commitment_point(record.commitment_number)
    keys = CommitmentKeys.derive(point, setup.local_basepoints, setup.remote_basepoints)
    ctx = _context(setup, ours=True, number=record.commitment_number, keys=keys,
                   to_local_msat=record.to_local_msat, to_remote_msat=record.to_remote_msat,
                   feerate=record.feerate_per_kw)  # fmt: skip
    return build_commitment(ctx, bolt3_extensions(record.htlcs, anchors=setup.anchors))


def remote_commitment(setup: ChannelSetup, record: RemoteCommitment) -> Commitment:
    """Their commitment of ``record`` (owner: them), unsigned."""
    keys = CommitmentKeys.derive(record.per_commitment_point, setup.remote_basepoints, setup.local_basepoints)
    ctx = _context(setup, ours=False, number=record.commitment_number, keys=keys,
                   to_local_msat=record.to_local_msat, to_remote_msat=record.to_remote_msat,
                   feerate=record.feerate_per_kw)  # fmt: skip
    return build_commitment(ctx, bolt3_extensions(record.htlcs, anchors=setup.anchors))


def extract_preimage(witness: tuple[bytes, ...], payment_hash: bytes) -> bytes | None:
    """The preimage of ``payment_hash`` if a spend's witness carries it (HTLC-success, or a direct claim)."""
    for item in witness:
        if len(item) == 32 and sha256(item) == payment_hash:
            return bytes(item)
    return None


def commitment_number_of(tx: Tx, setup: ChannelSetup) -> int | None:
    """The commitment number hidden in a commitment's locktime and sequence (None: no commitment)."""
    if len(tx.inputs) != 1:
        return None
    try:
        return commitment_number_from_locktime_sequence(tx.locktime, tx.inputs[0].sequence, setup.obscuring_factor)
    except ChannelError:
        return None


def _htlc_claim(
    out: CommitmentOutput, htlc: Htlc, we_offered: bool, keys: Mapping[bytes, bytes], path: str, earliest: int,
    deadline: int | None, group: str, *, values: Mapping[str, bytes] | None = None,
    presigned: SpendPlan | None = None,
) -> Claim:  # fmt: skip
    """Our claim on an HTLC output: the timeout of one we offered, the success of one we received."""
    what = f"{'htlc_timeout' if we_offered else 'htlc_success'}:{htlc.htlc_id}"
    return Claim(htlc_tag(htlc), out.outpoint, out.spendable, path, earliest, deadline, group, what, keys,
                 dict(values or {}), presigned, htlc, we_offered)  # fmt: skip


def _watch(out: CommitmentOutput, htlc: Htlc, we_offered: bool, keys: Mapping[bytes, bytes], path: str) -> Claim:
    """An HTLC output that is the peer's to take (we lack the preimage): watched for what its spend reveals."""
    return Claim(htlc_tag(htlc), out.outpoint, out.spendable, path, 0, None, "", "watch", keys, {}, None, htlc,
                 we_offered, claimable=False, expires=htlc.cltv_expiry)  # fmt: skip


def _csv(setup: ChannelSetup) -> int:
    """BOLT 3: with anchors every non-anchor output of a commitment waits one block."""
    return 1 if setup.anchors else 0


def _ours(setup: ChannelSetup, secrets: MonitorSecrets, commitment: Commitment, record: LocalCommitment,
          height: int, preimages: Mapping[bytes, bytes], upstream: Mapping[int, int]) -> Resolution:  # fmt: skip
    keys = secrets.keys_for_local(commitment.context.keys.per_commitment_point)
    delay = setup.local_to_self_delay
    claims = []
    if commitment.has_output(TO_LOCAL):
        out = commitment.output(TO_LOCAL)
        claims.append(Claim("to_local", out.outpoint, out.spendable, "delayed", height + delay, None,
                            "to_local", "to_local", keys))  # fmt: skip
    htlc_plans = {plan.tx.inputs[0].prevout: (i, plan) for i, plan in enumerate(commitment.second_stage)}
    for out in commitment.outputs:
        htlc = out.spec.payload
        if not isinstance(htlc, Htlc):
            continue
        index, plan = htlc_plans[out.outpoint]
        values = {"remote_htlc": record.htlc_signatures[index]}
        # anchors: HTLC transactions sharing a locktime are merged into one paid by a wallet input
        group = f"htlc_tx:locktime:{plan.tx.locktime}" if setup.anchors else f"htlc_tx:{htlc_tag(htlc)}"
        if htlc.offered:
            deadline = upstream.get(htlc.htlc_id, htlc.cltv_expiry + OFFERED_TIMEOUT_GRACE)
            earliest = max(htlc.cltv_expiry + 1, height + _csv(setup))
            claims.append(_htlc_claim(out, htlc, True, keys, "htlc_timeout", earliest, deadline, group,
                                      values=values, presigned=plan))  # fmt: skip
        elif htlc.payment_hash in preimages:
            values["preimage"] = preimages[htlc.payment_hash]
            claims.append(_htlc_claim(out, htlc, False, keys, "htlc_success", height + _csv(setup),
                                      htlc.cltv_expiry, group, values=values, presigned=plan))  # fmt: skip
        else:
            claims.append(_watch(out, htlc, False, keys, "htlc_success"))
    ckeys = commitment.context.keys
    return Resolution(
        CommitmentKind.OURS, record.commitment_number, commitment.tx.txid, height, claims, [],
        p2wsh(to_local_script(ckeys.revocation_pubkey, delay, ckeys.local_delayed_pubkey)), keys, ckeys, delay,
    )  # fmt: skip


def _to_remote_claim(setup: ChannelSetup, outpoint: OutPoint, amount: int, height: int,
                     keys: Mapping[bytes, bytes]) -> Claim:  # fmt: skip
    """Our to_remote with anchors: our payment basepoint's key after one block."""
    pubkey = setup.local_basepoints.payment_basepoint
    path = SpendPath("remote", (Sig("remote_payment", pubkey, signer="remote"),), sequence=1)
    spendable = Spendable.p2wsh(amount, to_remote_anchor_script(pubkey), (path,))
    return Claim("to_remote", outpoint, spendable, "remote", height + 1, None, "to_remote", "to_remote", keys)


def _theirs(setup: ChannelSetup, secrets: MonitorSecrets, commitment: Commitment, kind: CommitmentKind,
            number: int, height: int, preimages: Mapping[bytes, bytes], upstream: Mapping[int, int],
            revealed: bytes | None) -> Resolution:  # fmt: skip
    ckeys = commitment.context.keys
    keys = secrets.keys_for_remote(ckeys.per_commitment_point, revealed)
    delay = setup.remote_to_self_delay
    claims: list[Claim] = []
    to_wallet = []
    for out in commitment.outputs:
        htlc = out.spec.payload
        if out.tag == TO_REMOTE:
            if setup.anchors:
                claims.append(_to_remote_claim(setup, out.outpoint, out.amount_sat, height, keys))
            else:
                to_wallet.append((out.outpoint, out.amount_sat, out.spendable.script_pubkey))
        elif revealed is not None and any(p.name == "revocation" for p in out.spendable.paths):
            claims.append(Claim(f"penalty:{out.tag}", out.outpoint, out.spendable, "revocation", height,
                                height + delay, PENALTY_GROUP, f"penalty:{out.tag}", keys,
                                htlc=htlc if isinstance(htlc, Htlc) else None,
                                we_offered=isinstance(htlc, Htlc) and not htlc.offered))  # fmt: skip
        elif isinstance(htlc, Htlc):
            earliest = height + _csv(setup)
            group = f"claim:{htlc_tag(htlc)}"
            if not htlc.offered:  # we offered it: ours after its expiry
                deadline = upstream.get(htlc.htlc_id, htlc.cltv_expiry + OFFERED_TIMEOUT_GRACE)
                claims.append(_htlc_claim(out, htlc, True, keys, "timeout", max(earliest, htlc.cltv_expiry + 1),
                                          deadline, group))  # fmt: skip
            elif htlc.payment_hash in preimages:
                claims.append(_htlc_claim(out, htlc, False, keys, "preimage", earliest, htlc.cltv_expiry, group,
                                          values={"preimage": preimages[htlc.payment_hash]}))  # fmt: skip
            else:
                claims.append(_watch(out, htlc, False, keys, "preimage"))
    return Resolution(
        kind, number, commitment.tx.txid, height, claims, to_wallet,
        p2wsh(to_local_script(ckeys.revocation_pubkey, delay, ckeys.local_delayed_pubkey)), keys, ckeys, delay,
    )  # fmt: skip


def _unknown_theirs(setup: ChannelSetup, secrets: MonitorSecrets, tx: Tx, number: int, height: int) -> Resolution:
    """A commitment of theirs we cannot rebuild: only our to_remote is recognisable (static_remotekey)."""
    payment = setup.local_basepoints.payment_basepoint
    keys = {payment: secrets.payment_basepoint}
    claims = []
    to_wallet = []
    for vout, out in enumerate(tx.outputs):
        if out.script_pubkey == p2wpkh(payment) and not setup.anchors:
            to_wallet.append((tx.outpoint(vout), out.amount_sat, out.script_pubkey))
        elif out.script_pubkey == p2wsh(to_remote_anchor_script(payment)) and setup.anchors:
            claims.append(_to_remote_claim(setup, tx.outpoint(vout), out.amount_sat, height, keys))
    return Resolution(CommitmentKind.THEIRS_UNKNOWN, number, tx.txid, height, claims, to_wallet)


def _ours_revoked(setup: ChannelSetup, secrets: MonitorSecrets, tx: Tx, number: int, height: int) -> Resolution | None:
    """Our revoked commitment ``number``, known by its outputs: our to_local (its script needs only our
    point for ``number``) or the peer's to_remote. None if ``tx`` has neither."""
    point = secrets.commitment_point(number)
    ckeys = CommitmentKeys.derive(point, setup.local_basepoints, setup.remote_basepoints)
    delay = setup.local_to_self_delay
    witness = to_local_script(ckeys.revocation_pubkey, delay, ckeys.local_delayed_pubkey)
    payment = setup.remote_basepoints.payment_basepoint
    their_output = p2wsh(to_remote_anchor_script(payment)) if setup.anchors else p2wpkh(payment)
    claims = []
    for vout, out in enumerate(tx.outputs):
        if out.script_pubkey == p2wsh(witness):
            # the peer holds the revocation key and should take it at once; if it does not, it is ours
            path = SpendPath("delayed", (Sig("local_delayed", ckeys.local_delayed_pubkey, signer="local"), b""),
                             sequence=delay)  # fmt: skip
            spendable = Spendable.p2wsh(out.amount_sat, witness, (path,))
            claims.append(Claim("to_local", tx.outpoint(vout), spendable, "delayed", height + delay, None,
                                "to_local", "to_local", secrets.keys_for_local(point)))  # fmt: skip
    if not claims and all(out.script_pubkey != their_output for out in tx.outputs):
        return None
    return Resolution(CommitmentKind.OURS_REVOKED, number, tx.txid, height, claims, [])


def resolve_commitment(
    tx: Tx,
    height: int,
    *,
    setup: ChannelSetup,
    secrets: MonitorSecrets,
    local: tuple[LocalCommitment, Commitment] | None,
    remote: Mapping[int, tuple[RemoteCommitment, Commitment]],
    latest_remote: int | None,
    revealed: Mapping[int, bytes],
    preimages: Mapping[bytes, bytes],
    upstream: Mapping[int, int],
    revoked_below: int = 0,
) -> Resolution | None:
    """Recognise ``tx`` (it spends the funding output) and list its claims; None for a
    transaction that is no commitment (a cooperative close). Our commitments numbered below
    ``revoked_below`` are revoked."""
    number = commitment_number_of(tx, setup)
    if number is None:
        return None
    txid = tx.txid
    if local is not None and local[0].commitment_number == number and local[1].tx.txid == txid:
        return _ours(setup, secrets, local[1], local[0], height, preimages, upstream)
    if number in remote and remote[number][1].tx.txid == txid:
        secret = revealed.get(number)
        if secret is not None:
            kind = CommitmentKind.REVOKED
        elif number == latest_remote:
            kind = CommitmentKind.THEIRS_CURRENT
        else:
            kind = CommitmentKind.THEIRS_PREVIOUS
        return _theirs(setup, secrets, remote[number][1], kind, number, height, preimages, upstream, secret)
    if number < revoked_below:
        ours = _ours_revoked(setup, secrets, tx, number, height)
        if ours is not None:
            return ours
    return _unknown_theirs(setup, secrets, tx, number, height)


def second_stage_claims(resolution: Resolution, spent: Claim, tx: Tx, input_index: int, height: int) -> list[Claim]:
    """Claims on a transaction that spent HTLC output ``spent`` (our HTLC transaction's
    delayed output, or the revocable output of theirs on a revoked commitment)."""
    if spent.htlc is None or resolution.delayed_script is None or input_index >= len(tx.outputs):
        return []
    out = tx.outputs[input_index]
    if out.script_pubkey != resolution.delayed_script or resolution.keys is None:
        return []
    ckeys = resolution.keys
    witness = to_local_script(ckeys.revocation_pubkey, resolution.to_self_delay, ckeys.local_delayed_pubkey)
    delay = resolution.to_self_delay
    outpoint = tx.outpoint(input_index)
    if resolution.kind is CommitmentKind.OURS:
        path = SpendPath("delayed", (Sig("local_delayed", ckeys.local_delayed_pubkey, signer="local"), b""),
                         sequence=delay)  # fmt: skip
        spendable = Spendable.p2wsh(out.amount_sat, witness, (path,))
        return [Claim(f"second:{outpoint}", outpoint, spendable, "delayed", height + delay, None,
                      f"second:{outpoint}", f"{spent.what}:delayed", resolution.delayed_keys)]  # fmt: skip
    if resolution.kind is CommitmentKind.REVOKED:
        path = SpendPath("revocation", (Sig("revocation", ckeys.revocation_pubkey, signer="remote"), b"\x01"))
        spendable = Spendable.p2wsh(out.amount_sat, witness, (path,))
        return [Claim(f"penalty:{outpoint}", outpoint, spendable, "revocation", height, height + delay,
                      PENALTY_GROUP, f"penalty:second:{spent.htlc.htlc_id}", resolution.delayed_keys)]  # fmt: skip
    return []
