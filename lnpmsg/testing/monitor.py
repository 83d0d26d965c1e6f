"""A two-party channel for channel-monitor tests and benchmarks: the records each
side's monitor gets, and what each side can sign (deterministic keys)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lnpmsg.bitcoin.ecdsa import der_to_compact
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.channels import Commitment, CommitmentContext, CommitmentKeys, Htlc, bolt3_extensions, build_commitment
from lnpmsg.channels.keys import commitment_obscuring_factor, derive_privkey, per_commitment_point
from lnpmsg.channels.monitor import (
    ChannelSetup,
    LocalCommitment,
    MonitorSecrets,
    MonitorUpdate,
    RemoteCommitment,
    RemoteRevocation,
)
from lnpmsg.channels.monitor.signer import sign_plan
from lnpmsg.channels.spend import SpendPlan

from .channels import Party

__all__ = ["ALICE", "BOB", "ChannelKit", "State", "secrets_of"]

ALICE = Party("alice")  # the funder
BOB = Party("bob")


def secrets_of(party: Party) -> MonitorSecrets:
    """The monitor secrets of ``party`` (the same keys :class:`Party` derives)."""
    return MonitorSecrets(
        funding=party.secret("funding"),
        revocation_basepoint=party.secret("revocation"),
        payment_basepoint=party.secret("payment"),
        delayed_payment_basepoint=party.secret("delayed"),
        htlc_basepoint=party.secret("htlc"),
        commitment_seed=party.secret("seed"),
    )


@dataclass(frozen=True)
class State:
    """A channel state from Alice's view: balances and HTLCs (``offered``: Alice pays)."""

    alice_msat: int
    bob_msat: int
    htlcs: tuple[Htlc, ...] = ()

    def seen_by(self, owner: Party) -> tuple[int, int, tuple[Htlc, ...]]:
        if owner == ALICE:
            return self.alice_msat, self.bob_msat, self.htlcs
        return self.bob_msat, self.alice_msat, tuple(replace(h, offered=not h.offered) for h in self.htlcs)


def _other(party: Party) -> Party:
    return BOB if party == ALICE else ALICE


def _compact(signature: bytes) -> bytes:
    return der_to_compact(signature[:-1])


@dataclass
class ChannelKit:
    """Alice (funder) and Bob's channel at ``funding``; ``to_self_delay`` applies to both sides."""

    funding: OutPoint
    funding_sat: int
    anchors: bool
    to_self_delay: int = 10
    dust_limit_sat: int = 546
    feerate_per_kw: int = 2_500

    def setup(self, me: Party) -> ChannelSetup:
        other = _other(me)
        return ChannelSetup(
            funding_outpoint=self.funding,
            funding_sat=self.funding_sat,
            anchors=self.anchors,
            local_is_funder=me == ALICE,
            local_basepoints=me.basepoints(),
            remote_basepoints=other.basepoints(),
            local_to_self_delay=self.to_self_delay,
            remote_to_self_delay=self.to_self_delay,
            local_dust_limit_sat=self.dust_limit_sat,
            remote_dust_limit_sat=self.dust_limit_sat,
            obscuring_factor=commitment_obscuring_factor(
                ALICE.basepoints().payment_basepoint, BOB.basepoints().payment_basepoint
            ),
            destination_script=me.wallet_script(),
        )

    def commitment(self, owner: Party, number: int, state: State) -> Commitment:
        mine, theirs, htlcs = state.seen_by(owner)
        point = per_commitment_point(owner.commitment_secret(number))
        ctx = CommitmentContext(
            funding_outpoint=self.funding, funding_sat=self.funding_sat,
            keys=CommitmentKeys.derive(point, owner.basepoints(), _other(owner).basepoints()),
            commitment_number=number, obscuring_factor=self.setup(ALICE).obscuring_factor,
            owner_is_funder=owner == ALICE, to_local_msat=mine, to_remote_msat=theirs,
            feerate_per_kw=self.feerate_per_kw, dust_limit_sat=self.dust_limit_sat, to_self_delay=self.to_self_delay,
        )  # fmt: skip
        return build_commitment(ctx, bolt3_extensions(htlcs, anchors=self.anchors))

    def _keys(self, party: Party, owner: Party, number: int) -> dict[bytes, bytes]:
        point = per_commitment_point(owner.commitment_secret(number))
        secrets = secrets_of(party)
        if party == owner:
            return secrets.keys_for_local(point)
        return secrets.keys_for_remote(point) | {party.basepoints().funding_pubkey: party.secret("funding")}

    def local_record(self, me: Party, number: int, state: State) -> LocalCommitment:
        """``me``'s commitment ``number``, signed by the other side as ``commitment_signed`` carries it."""
        other = _other(me)
        commitment = self.commitment(me, number, state)
        point = commitment.context.keys.per_commitment_point
        htlc_key = derive_privkey(other.secret("htlc"), point)
        mine, theirs, htlcs = state.seen_by(me)
        return LocalCommitment(
            commitment_number=number, to_local_msat=mine, to_remote_msat=theirs,
            feerate_per_kw=self.feerate_per_kw, htlcs=htlcs,
            commitment_signature=_compact(commitment.plan.sign(0, "remote_funding", other.secret("funding"))),
            htlc_signatures=tuple(_compact(plan.sign(0, "remote_htlc", htlc_key)) for plan in commitment.second_stage),
        )  # fmt: skip

    def remote_record(self, me: Party, number: int, state: State) -> RemoteCommitment:
        """The other side's commitment ``number`` as ``me`` signed it."""
        other = _other(me)
        theirs, mine, htlcs = state.seen_by(other)
        return RemoteCommitment(
            number, per_commitment_point(other.commitment_secret(number)), theirs, mine, self.feerate_per_kw, htlcs
        )

    def revocation(self, me: Party, number: int) -> RemoteRevocation:
        """The other side revoking its commitment ``number``."""
        return RemoteRevocation(number, _other(me).commitment_secret(number))

    def updates(self, me: Party, records: Sequence[object]) -> list[MonitorUpdate]:
        """``ChannelSetup`` then ``records``, numbered."""
        return [MonitorUpdate(i, r) for i, r in enumerate([self.setup(me), *records])]  # type: ignore[arg-type]

    def signed_commitment(self, owner: Party, number: int, state: State) -> Tx:
        """``owner``'s commitment with both signatures: what ``owner`` broadcasts."""
        commitment = self.commitment(owner, number, state)
        keys = self._keys(owner, owner, number) | self._keys(_other(owner), owner, number)
        return sign_plan(commitment.plan, keys)

    def sign_as(self, party: Party, owner: Party, number: int, plan: SpendPlan, **values: bytes) -> Tx:
        """Sign a spend of ``owner``'s commitment ``number`` with every key ``party`` and the other side hold
        (a test playing the peer: e.g. the owner's HTLC transaction, which the other side pre-signed)."""
        keys = self._keys(party, owner, number) | self._keys(_other(party), owner, number)
        return sign_plan(plan, keys, values)
