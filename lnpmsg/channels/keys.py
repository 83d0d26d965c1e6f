"""BOLT-3 key derivation: per-commitment points, derived keys, revocation keys,
and the obscured commitment number.

Keys are 33-byte compressed secp256k1 points and 32-byte secrets; the curve
arithmetic is libsecp256k1's, through coincurve.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve

from lnpmsg.bitcoin.ecdsa import parse_pubkey
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import sha256

from .errors import ChannelError

__all__ = [
    "CURVE_ORDER",
    "MAX_COMMITMENT_NUMBER",
    "ChannelBasepoints",
    "CommitmentKeys",
    "check_pubkey",
    "commitment_locktime_sequence",
    "commitment_number_from_locktime_sequence",
    "commitment_obscuring_factor",
    "derive_privkey",
    "derive_pubkey",
    "obscure_commitment_number",
    "per_commitment_point",
    "pubkey_from_privkey",
    "revocation_privkey",
    "revocation_pubkey",
]

#: The order n of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Commitment numbers are 48 bits (BOLT 3: they are split over locktime and sequence).
MAX_COMMITMENT_NUMBER = (1 << 48) - 1

_SECRET_SIZE = 32


def _pubkey(data: bytes) -> coincurve.PublicKey:
    try:
        return parse_pubkey(data)
    except BitcoinError as exc:
        raise ChannelError(str(exc)) from exc


def _scalar(data: bytes) -> int:
    if not isinstance(data, bytes | bytearray) or len(data) != _SECRET_SIZE:
        raise ChannelError(f"a secret must be {_SECRET_SIZE} bytes")
    value = int.from_bytes(data, "big")
    if not 0 < value < CURVE_ORDER:
        raise ChannelError("a secret must be in [1, n-1]")
    return value


def _secret_bytes(value: int) -> bytes:
    value %= CURVE_ORDER
    if value == 0:
        raise ChannelError("the derived secret is zero")
    return value.to_bytes(_SECRET_SIZE, "big")


def check_pubkey(data: bytes) -> bytes:
    """Return ``data`` if it is a valid compressed public key, else raise ``ChannelError``."""
    _pubkey(data)
    return bytes(data)


def pubkey_from_privkey(secret: bytes) -> bytes:
    """The compressed public key ``secret * G``."""
    _scalar(secret)
    return coincurve.PrivateKey(bytes(secret)).public_key.format(compressed=True)


def per_commitment_point(per_commitment_secret: bytes) -> bytes:
    """``per_commitment_secret * G``."""
    return pubkey_from_privkey(per_commitment_secret)


def _tweak(per_commitment_point: bytes, basepoint: bytes) -> bytes:
    return sha256(per_commitment_point + basepoint)


def derive_pubkey(basepoint: bytes, per_commitment_point: bytes) -> bytes:
    """``basepoint + SHA256(per_commitment_point || basepoint) * G`` (localpubkey, htlcpubkey, delayedpubkey)."""
    base = _pubkey(basepoint)
    _pubkey(per_commitment_point)
    tweak = _tweak(bytes(per_commitment_point), bytes(basepoint))
    try:
        return base.add(tweak).format(compressed=True)
    except ValueError as exc:  # the sum is the point at infinity: astronomically unlikely
        raise ChannelError("derived public key is the point at infinity") from exc


def derive_privkey(basepoint_secret: bytes, per_commitment_point: bytes) -> bytes:
    """``basepoint_secret + SHA256(per_commitment_point || basepoint)``, the secret of :func:`derive_pubkey`."""
    secret = _scalar(basepoint_secret)
    basepoint = pubkey_from_privkey(basepoint_secret)
    _pubkey(per_commitment_point)
    tweak = int.from_bytes(_tweak(bytes(per_commitment_point), basepoint), "big")
    return _secret_bytes(secret + tweak)


def _revocation_tweaks(revocation_basepoint: bytes, per_commitment_point: bytes) -> tuple[bytes, bytes]:
    return (
        sha256(revocation_basepoint + per_commitment_point),
        sha256(per_commitment_point + revocation_basepoint),
    )


def revocation_pubkey(revocation_basepoint: bytes, per_commitment_point: bytes) -> bytes:
    """``revocation_basepoint * SHA256(revocation_basepoint || per_commitment_point)
    + per_commitment_point * SHA256(per_commitment_point || revocation_basepoint)``."""
    base = _pubkey(revocation_basepoint)
    point = _pubkey(per_commitment_point)
    base_tweak, point_tweak = _revocation_tweaks(bytes(revocation_basepoint), bytes(per_commitment_point))
    try:
        total = coincurve.PublicKey.combine_keys([base.multiply(base_tweak), point.multiply(point_tweak)])
    except ValueError as exc:
        raise ChannelError("revocation public key is the point at infinity") from exc
    return total.format(compressed=True)


def revocation_privkey(revocation_basepoint_secret: bytes, per_commitment_secret: bytes) -> bytes:
    """The secret of :func:`revocation_pubkey`, once the per-commitment secret is revealed."""
    base_secret = _scalar(revocation_basepoint_secret)
    point_secret = _scalar(per_commitment_secret)
    base_tweak, point_tweak = _revocation_tweaks(
        pubkey_from_privkey(revocation_basepoint_secret), per_commitment_point(per_commitment_secret)
    )
    return _secret_bytes(
        base_secret * int.from_bytes(base_tweak, "big") + point_secret * int.from_bytes(point_tweak, "big")
    )


def commitment_obscuring_factor(opener_payment_basepoint: bytes, accepter_payment_basepoint: bytes) -> int:
    """Lower 48 bits of ``SHA256(payment_basepoint of open_channel || of accept_channel)``."""
    _pubkey(opener_payment_basepoint)
    _pubkey(accepter_payment_basepoint)
    digest = sha256(bytes(opener_payment_basepoint) + bytes(accepter_payment_basepoint))
    return int.from_bytes(digest[-6:], "big")


def obscure_commitment_number(commitment_number: int, obscuring_factor: int) -> int:
    """The 48-bit commitment number XOR the obscuring factor."""
    if not 0 <= commitment_number <= MAX_COMMITMENT_NUMBER:
        raise ChannelError(f"commitment number {commitment_number} is not a 48-bit value")
    return (commitment_number ^ obscuring_factor) & MAX_COMMITMENT_NUMBER


def commitment_locktime_sequence(obscured_commitment_number: int) -> tuple[int, int]:
    """The commitment transaction's (locktime, input sequence) for an obscured commitment number.

    locktime: 0x20 then the lower 24 bits; sequence: 0x80 then the upper 24 bits.
    """
    low = obscured_commitment_number & 0xFFFFFF
    high = (obscured_commitment_number >> 24) & 0xFFFFFF
    return (0x20 << 24) | low, (0x80 << 24) | high


def commitment_number_from_locktime_sequence(locktime: int, sequence: int, obscuring_factor: int) -> int:
    """Recover the commitment number from a commitment transaction seen on chain."""
    if locktime >> 24 != 0x20 or sequence >> 24 != 0x80:
        raise ChannelError("not a commitment transaction's locktime/sequence")
    obscured = ((sequence & 0xFFFFFF) << 24) | (locktime & 0xFFFFFF)
    return obscured ^ (obscuring_factor & MAX_COMMITMENT_NUMBER)


@dataclass(frozen=True, slots=True)
class ChannelBasepoints:
    """One side's static channel keys, as sent in ``open_channel``/``accept_channel``."""

    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes

    def __post_init__(self) -> None:
        for name in ("funding_pubkey", "revocation_basepoint", "payment_basepoint",
                     "delayed_payment_basepoint", "htlc_basepoint"):  # fmt: skip
            check_pubkey(getattr(self, name))


@dataclass(frozen=True, slots=True)
class CommitmentKeys:
    """The keys of one commitment transaction, seen from its owner ("local").

    ``remote_payment_pubkey`` is the other side's ``payment_basepoint`` itself
    (option_static_remotekey: the to_remote output never changes key).
    """

    per_commitment_point: bytes
    revocation_pubkey: bytes
    local_delayed_pubkey: bytes
    local_htlc_pubkey: bytes
    remote_htlc_pubkey: bytes
    remote_payment_pubkey: bytes
    local_funding_pubkey: bytes
    remote_funding_pubkey: bytes

    def __post_init__(self) -> None:
        for name in self.__slots__:
            check_pubkey(getattr(self, name))

    @classmethod
    def derive(
        cls, per_commitment_point: bytes, owner: ChannelBasepoints, other: ChannelBasepoints
    ) -> CommitmentKeys:
        """Keys of the commitment owned by ``owner`` at ``per_commitment_point`` (the owner's point)."""
        check_pubkey(per_commitment_point)
        return cls(
            per_commitment_point=bytes(per_commitment_point),
            revocation_pubkey=revocation_pubkey(other.revocation_basepoint, per_commitment_point),
            local_delayed_pubkey=derive_pubkey(owner.delayed_payment_basepoint, per_commitment_point),
            local_htlc_pubkey=derive_pubkey(owner.htlc_basepoint, per_commitment_point),
            remote_htlc_pubkey=derive_pubkey(other.htlc_basepoint, per_commitment_point),
            remote_payment_pubkey=other.payment_basepoint,
            local_funding_pubkey=owner.funding_pubkey,
            remote_funding_pubkey=other.funding_pubkey,
        )
