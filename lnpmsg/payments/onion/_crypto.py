"""The Sphinx building blocks of BOLT 4: key derivation, the ChaCha20 stream,
ECDH shared secrets and the blinding of ephemeral keys.

Everything is a pure function of its inputs (no randomness, no I/O): the
session key is chosen by the caller.
"""

from __future__ import annotations

import hashlib
import hmac

import coincurve
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = [
    "KEY_AMMAG",
    "KEY_MU",
    "KEY_PAD",
    "KEY_RHO",
    "KEY_UM",
    "blinding_factor",
    "chacha20_stream",
    "chacha20_xor",
    "derive_key",
    "ecdh",
]

#: key types of BOLT 4 "Key Generation" (no trailing NUL byte)
KEY_RHO = b"rho"
KEY_MU = b"mu"
KEY_UM = b"um"
KEY_PAD = b"pad"
KEY_AMMAG = b"ammag"

# ChaCha20 as BOLT 4 uses it: a 96-bit zero nonce and a block counter that starts
# at 0; `cryptography` takes the 32-bit counter (little-endian) and nonce as one
# 16-byte value.
_ZERO_NONCE = bytes(16)


def derive_key(key_type: bytes, secret: bytes) -> bytes:
    """HMAC-SHA256 keyed by ``key_type`` (``rho``, ``mu``, ``um``, ``pad``, ``ammag``) over a 32-byte secret."""
    return hmac.digest(key_type, secret, "sha256")


def chacha20_xor(key: bytes, data: bytes) -> bytes:
    """``data`` XOR the ChaCha20 stream of ``key`` (encrypting with ChaCha20 is exactly that XOR)."""
    return Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor().update(data)


def chacha20_stream(key: bytes, length: int) -> bytes:
    """The first ``length`` bytes of the ChaCha20 stream of ``key`` (the pseudo-random byte stream)."""
    return chacha20_xor(key, bytes(length))


def ecdh(private_key: coincurve.PrivateKey, public_key: bytes) -> bytes:
    """The shared secret: SHA256 of the compressed point ``private_key * public_key``.

    libsecp256k1's default ECDH hash is exactly that; ``ValueError`` if
    ``public_key`` is not a valid point.
    """
    return private_key.ecdh(public_key)


def blinding_factor(public_key: bytes, shared_secret: bytes) -> bytes:
    """SHA256(``public_key`` || ``shared_secret``): how an ephemeral key is blinded for the next hop."""
    return hashlib.sha256(public_key + shared_secret).digest()
