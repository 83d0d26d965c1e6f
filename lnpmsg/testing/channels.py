"""Deterministic channel parties for tests of channels and their extensions."""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.channels import ChannelBasepoints
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.shachain import FIRST_INDEX, per_commitment_secret

__all__ = ["Party", "secret"]


def secret(label: str) -> bytes:
    """A private key derived from a label (the same in every run)."""
    return sha256(label.encode())


@dataclass(frozen=True)
class Party:
    """One side's secrets, derived from a name so every run builds the same channel."""

    name: str

    def secret(self, role: str) -> bytes:
        return secret(f"{self.name}/{role}")

    def basepoints(self) -> ChannelBasepoints:
        return ChannelBasepoints(
            funding_pubkey=pubkey_from_privkey(self.secret("funding")),
            revocation_basepoint=pubkey_from_privkey(self.secret("revocation")),
            payment_basepoint=pubkey_from_privkey(self.secret("payment")),
            delayed_payment_basepoint=pubkey_from_privkey(self.secret("delayed")),
            htlc_basepoint=pubkey_from_privkey(self.secret("htlc")),
        )

    def commitment_secret(self, number: int) -> bytes:
        return per_commitment_secret(self.secret("seed"), FIRST_INDEX - number)

    def wallet_script(self) -> bytes:
        """A P2WPKH script of this party's own sweep key."""
        return p2wpkh(pubkey_from_privkey(self.secret("sweep")))
