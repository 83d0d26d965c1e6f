"""Build, sign and check both sides' commitment transactions with the BOLT-3 extensions.

:class:`ChannelKeys` holds what does not change in a channel (both sides'
basepoints, the funding outpoint, who funded, the channel type, the
delays and dust limits); :func:`build` turns a :class:`CommitSpec` into a
:class:`~lnpmsg.channels.commitment.Commitment` for either owner. Signatures
travel as 64-byte compact ones, as BOLT 2 carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.bitcoin.ecdsa import der_to_compact
from lnpmsg.bitcoin.tx import OutPoint, Tx

from .bolt3 import Htlc, bolt3_extensions
from .commitment import Commitment, build_commitment
from .errors import RemoteFault
from .extensions import CommitmentContext
from .keys import (
    ChannelBasepoints,
    CommitmentKeys,
    commitment_obscuring_factor,
    derive_privkey,
)
from .params import ChannelSecrets
from .updates import CommitSpec

__all__ = ["ChannelKeys", "build", "compact_signature", "finalize_local", "sign_remote", "verify_local"]


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    """The fixed facts both commitments are built from, from our view."""

    local: ChannelBasepoints
    remote: ChannelBasepoints
    funding_outpoint: OutPoint
    funding_sat: int
    local_is_funder: bool
    anchors: bool
    #: the delay each side's own outputs wait: the other side chose it
    local_to_self_delay: int
    remote_to_self_delay: int
    local_dust_limit_sat: int
    remote_dust_limit_sat: int

    @property
    def obscuring_factor(self) -> int:
        """From the funder's and the fundee's payment basepoints."""
        funder, fundee = (self.local, self.remote) if self.local_is_funder else (self.remote, self.local)
        return commitment_obscuring_factor(funder.payment_basepoint, fundee.payment_basepoint)


def build(keys: ChannelKeys, spec: CommitSpec, number: int, point: bytes, *, local: bool) -> Commitment:
    """Our (``local``) or the peer's commitment ``number`` at its owner's per-commitment ``point``."""
    owner, other = (keys.local, keys.remote) if local else (keys.remote, keys.local)
    ctx = CommitmentContext(
        funding_outpoint=keys.funding_outpoint,
        funding_sat=keys.funding_sat,
        keys=CommitmentKeys.derive(point, owner, other),
        commitment_number=number,
        obscuring_factor=keys.obscuring_factor,
        owner_is_funder=keys.local_is_funder == local,
        to_local_msat=spec.to_local_msat,
        to_remote_msat=spec.to_remote_msat,
        feerate_per_kw=spec.feerate_per_kw,
        dust_limit_sat=keys.local_dust_limit_sat if local else keys.remote_dust_limit_sat,
        to_self_delay=keys.local_to_self_delay if local else keys.remote_to_self_delay,
    )
    htlcs = [
        Htlc(h.add.id, not h.incoming, h.add.amount_msat, h.add.payment_hash, h.add.cltv_expiry) for h in spec.htlcs
    ]
    return build_commitment(ctx, bolt3_extensions(htlcs, anchors=keys.anchors))


def compact_signature(signature: bytes) -> bytes:
    """A DER signature with its sighash byte, as the 64 compact bytes BOLT messages carry."""
    return der_to_compact(signature[:-1])


def sign_remote(commitment: Commitment, secrets: ChannelSecrets) -> tuple[bytes, tuple[bytes, ...]]:
    """Our signatures of the peer's commitment: the funding input, then each HTLC transaction."""
    signature = compact_signature(commitment.plan.sign(0, "remote_funding", secrets.funding_privkey))
    htlc_key = derive_privkey(secrets.htlc_basepoint_secret, commitment.context.keys.per_commitment_point)
    htlc_sigs = tuple(compact_signature(plan.sign(0, "remote_htlc", htlc_key)) for plan in commitment.second_stage)
    return signature, htlc_sigs


def verify_local(commitment: Commitment, signature: bytes, htlc_signatures: tuple[bytes, ...]) -> None:
    """Check the peer's signatures of our commitment; a bad one is a :class:`RemoteFault`."""
    if not commitment.plan.verify(0, "remote_funding", signature):
        raise RemoteFault("commitment signature does not verify")
    if len(htlc_signatures) != len(commitment.second_stage):
        raise RemoteFault(
            f"{len(htlc_signatures)} HTLC signatures for {len(commitment.second_stage)} untrimmed HTLC outputs"
        )
    for index, (plan, sig) in enumerate(zip(commitment.second_stage, htlc_signatures, strict=True)):
        if not plan.verify(0, "remote_htlc", sig):
            raise RemoteFault(f"HTLC signature {index} does not verify")


def finalize_local(commitment: Commitment, secrets: ChannelSecrets, remote_signature: bytes) -> Tx:
    """Our commitment, signed by both: what we broadcast to close unilaterally."""
    ours = commitment.plan.sign(0, "local_funding", secrets.funding_privkey)
    return commitment.plan.finalize({"local_funding": ours, "remote_funding": remote_signature})
