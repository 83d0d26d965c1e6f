"""The small cryptographic building blocks shared by the handshake and the cipher."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

__all__ = ["KEY_SIZE", "LENGTH_HEADER_SIZE", "MAC_SIZE", "hkdf_pair", "nonce_bytes"]

#: ChaCha20-Poly1305 key and HKDF output half, in bytes.
KEY_SIZE = 32
#: Poly1305 tag appended to every ciphertext, in bytes.
MAC_SIZE = 16
#: A BOLT-8 frame's encrypted big-endian u16 length and its MAC, in bytes.
LENGTH_HEADER_SIZE = 2 + MAC_SIZE

# BOLT 8 follows Noise: 32 zero bits, then the 64-bit counter little-endian.
_NONCE = struct.Struct("<4xQ")


def nonce_bytes(counter: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce for ``counter``."""
    return _NONCE.pack(counter)


def hkdf_pair(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 5869 HKDF-SHA256 with empty info, 64 bytes of output split in two halves.

    BOLT 8 always asks for exactly two 32-byte blocks, so extract-and-expand is
    written out instead of going through a general HKDF object, and each HMAC
    (RFC 2104) over ``hashlib.sha256``: the two expand steps share the key's
    padded states, and the whole costs about half of three ``hmac.digest``
    calls (which look the digest up by name each time). A key rotation of
    the transport cipher runs this every 500 messages.
    """
    inner, outer = _hmac_states(salt)
    inner.update(ikm)
    outer.update(inner.digest())
    inner, outer = _hmac_states(outer.digest())
    first_inner = inner.copy()
    first_inner.update(b"\x01")
    first_outer = outer.copy()
    first_outer.update(first_inner.digest())
    first = first_outer.digest()
    inner.update(first + b"\x02")
    outer.update(inner.digest())
    return first, outer.digest()


# HMAC's inner and outer pads: a key's bytes XORed with 0x36 and 0x5c, by translation.
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))
_SHA256_BLOCK = 64


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC-SHA256's inner and outer padded key (RFC 2104)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_INNER_PAD)), hashlib.sha256(key.translate(_OUTER_PAD))
