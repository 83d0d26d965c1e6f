"""The monitor's secrets and how it signs with them (sans-IO).

Kept apart from the update stream: the node derives these from its seed and
hands them to the monitor; a watchtower would get only what penalties need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from lnpmsg.bitcoin.tx import Tx

from ..keys import (
    ChannelBasepoints,
    derive_privkey,
    per_commitment_point,
    pubkey_from_privkey,
    revocation_privkey,
)
from ..shachain import FIRST_INDEX, per_commitment_secret
from ..spend import SpendPlan

__all__ = ["MonitorSecrets", "sign_plan"]


@dataclass(frozen=True)
class MonitorSecrets:
    """Our basepoint secrets and per-commitment seed (BOLT 3 key derivation)."""

    funding: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    commitment_seed: bytes

    @cached_property
    def basepoints(self) -> ChannelBasepoints:
        """The public side, as sent in ``open_channel``/``accept_channel``."""
        return ChannelBasepoints(
            funding_pubkey=pubkey_from_privkey(self.funding),
            revocation_basepoint=pubkey_from_privkey(self.revocation_basepoint),
            payment_basepoint=pubkey_from_privkey(self.payment_basepoint),
            delayed_payment_basepoint=pubkey_from_privkey(self.delayed_payment_basepoint),
            htlc_basepoint=pubkey_from_privkey(self.htlc_basepoint),
        )

    def commitment_point(self, commitment_number: int) -> bytes:
        """Our per-commitment point for commitment ``commitment_number``."""
        return per_commitment_point(per_commitment_secret(self.commitment_seed, FIRST_INDEX - commitment_number))

    def keys_for_local(self, point: bytes) -> dict[bytes, bytes]:
        """Every key we sign with on our own commitment at ``point``, by public key."""
        return _by_pubkey(
            self.funding,
            derive_privkey(self.delayed_payment_basepoint, point),
            derive_privkey(self.htlc_basepoint, point),
        )

    def keys_for_remote(self, point: bytes, revealed_secret: bytes | None = None) -> dict[bytes, bytes]:
        """Every key we sign with on their commitment at ``point`` (the revocation key once revealed)."""
        secrets = [self.payment_basepoint, derive_privkey(self.htlc_basepoint, point)]
        if revealed_secret is not None:
            secrets.append(revocation_privkey(self.revocation_basepoint, revealed_secret))
        return _by_pubkey(*secrets)


def _by_pubkey(*secrets: bytes) -> dict[bytes, bytes]:
    return {pubkey_from_privkey(secret): secret for secret in secrets}


def sign_plan(
    plan: SpendPlan,
    keys: Mapping[bytes, bytes],
    values: Mapping[str, bytes] | Sequence[Mapping[str, bytes]] = (),
) -> Tx:
    """Sign every signature slot we hold a key for; the rest (their signatures,
    preimages) come from ``values``: one mapping for all inputs, or one per input."""
    if isinstance(values, Mapping):
        per_input_given: list[Mapping[str, bytes]] = [values] * len(plan.inputs)
    else:
        per_input_given = list(values) or [{}] * len(plan.inputs)
    per_input = []
    for index, item in enumerate(plan.inputs):
        filled = dict(per_input_given[index])
        for sig in item.path.signatures:
            if sig.slot not in filled and sig.pubkey in keys:
                filled[sig.slot] = plan.sign(index, sig.slot, keys[sig.pubkey])
        per_input.append(filled)
    return plan.finalize(per_input)
