"""Failure onions (BOLT 4 "Returning Errors"): made by the failing hop,
re-wrapped by every hop on the way back, read by the origin node.

The failing hop builds ``hmac || u16 failure_len || failuremsg || u16 pad_len || pad``
(``failure_len + pad_len`` at least 256 so the length of the message is
hidden), HMACs it with its ``um`` key and XORs it with its ``ammag`` stream
(:func:`create_failure_onion`). Each hop back XORs its own ``ammag`` stream
over it (:func:`wrap_failure_onion`). The origin node peels the streams hop
by hop until one hop's ``um`` HMAC matches: that hop is the failing one
(:func:`decrypt_failure_onion`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from lnpmsg.payments.onion._crypto import KEY_AMMAG, KEY_UM, chacha20_xor, derive_key
from lnpmsg.payments.onion.errors import FailureOnionError
from lnpmsg.payments.onion.failures import Failure, UnknownFailure, decode_failure
from lnpmsg.wire.errors import WireError

__all__ = [
    "FAILURE_PAD_SIZE",
    "MAX_FAILURE_ROUNDS",
    "AttributedFailure",
    "create_failure_onion",
    "decrypt_failure_onion",
    "failure_packet",
    "wrap_failure_onion",
]

#: ``failure_len + pad_len`` is padded to at least this (BOLT 4: at least 256, SHOULD be exactly 256)
FAILURE_PAD_SIZE = 256
#: the origin decrypts this many rounds whatever the failing hop's position, so the
#: time it takes does not tell a retried hop where it sits (BOLT 4: 27, the longest route)
MAX_FAILURE_ROUNDS = 27
_HMAC_SIZE = 32
_LEN_SIZE = 2
_MIN_PACKET = _HMAC_SIZE + 2 * _LEN_SIZE
_MAX_U16 = 0xFFFF
# the fixed keys of the dummy rounds once the failing hop is found
_DUMMY_SECRET = bytes(32)


@dataclass(frozen=True, slots=True)
class AttributedFailure:
    """A failure onion read by the origin node.

    ``hop_index`` is the failing hop's position in the route (0 = the first
    hop after the origin); ``failure`` is its decoded message, or None when
    the hop sent bytes that are no failure message at all (its HMAC matched,
    so the hop itself is to blame); ``message`` is the raw ``failuremsg``.
    """

    hop_index: int
    failure: Failure | UnknownFailure | None
    message: bytes


def _failure_bytes(failure: Failure | UnknownFailure | bytes) -> bytes:
    if isinstance(failure, bytes | bytearray):
        return bytes(failure)
    return failure.encode()


def create_failure_onion(
    shared_secret: bytes, failure: Failure | UnknownFailure | bytes, *, pad_to: int = FAILURE_PAD_SIZE
) -> bytes:
    """The failing hop's reply: ``failure`` padded, HMACed with ``um`` and obfuscated with ``ammag``.

    ``shared_secret`` is the one :func:`~lnpmsg.payments.onion.sphinx.peel_onion`
    gave for the HTLC being failed. ``ValueError`` if the message cannot fit a u16 length.
    """
    return wrap_failure_onion(shared_secret, failure_packet(shared_secret, failure, pad_to=pad_to))


def failure_packet(shared_secret: bytes, failure: Failure | UnknownFailure | bytes, *, pad_to: int = FAILURE_PAD_SIZE) -> bytes:
    """The failing hop's return packet before obfuscation: ``hmac || failure_len || failuremsg || pad_len || pad``.

    (What its attribution data's HMACs cover; :func:`create_failure_onion` is this, obfuscated.)
    """
    message = _failure_bytes(failure)
    if len(message) > _MAX_U16:
        raise ValueError(f"a failure message of {len(message)} bytes does not fit its u16 length")
    pad_len = max(0, pad_to - len(message))
    body = len(message).to_bytes(2, "big") + message + pad_len.to_bytes(2, "big") + bytes(pad_len)
    return hmac.digest(derive_key(KEY_UM, shared_secret), body, "sha256") + body


def wrap_failure_onion(shared_secret: bytes, packet: bytes) -> bytes:
    """One hop's obfuscation of a failure onion on its way back (XOR with its ``ammag`` stream)."""
    return chacha20_xor(derive_key(KEY_AMMAG, shared_secret), bytes(packet))


def _parse_body(packet: bytes) -> bytes | None:
    """``failuremsg`` from a deobfuscated packet whose HMAC matched, or None if its lengths are broken."""
    failure_len = int.from_bytes(packet[_HMAC_SIZE : _HMAC_SIZE + _LEN_SIZE], "big")
    start = _HMAC_SIZE + _LEN_SIZE
    if start + failure_len + _LEN_SIZE > len(packet):
        return None
    return packet[start : start + failure_len]


def decrypt_failure_onion(shared_secrets: Sequence[bytes], packet: bytes) -> AttributedFailure:
    """Find which hop failed and why, from the origin's shared secrets (one per hop, in route order).

    ``FailureOnionError`` when the packet is too short or no hop's HMAC
    matches (a hop on the way back garbled it: the sender may blame the
    first hop it could not verify, i.e. any of them).
    """
    packet = bytes(packet)
    if len(packet) < _MIN_PACKET:
        raise FailureOnionError(f"a failure onion of {len(packet)} bytes is shorter than its {_MIN_PACKET}-byte minimum")
    found: AttributedFailure | None = None
    rounds = max(MAX_FAILURE_ROUNDS, len(shared_secrets))
    for index in range(rounds):
        real = found is None and index < len(shared_secrets)
        secret = shared_secrets[index] if real else _DUMMY_SECRET
        packet = wrap_failure_onion(secret, packet)
        mac = hmac.digest(derive_key(KEY_UM, secret), packet[_HMAC_SIZE:], "sha256")
        if real and hmac.compare_digest(mac, packet[:_HMAC_SIZE]):
            message = _parse_body(packet)
            failure: Failure | UnknownFailure | None = None
            if message is not None:
                try:
                    failure = decode_failure(message)
                except WireError:
                    failure = None
            found = AttributedFailure(hop_index=index, failure=failure, message=message or b"")
    if found is None:
        raise FailureOnionError(f"no hop of the {len(shared_secrets)}-hop route sent this failure (no HMAC matches)")
    return found
