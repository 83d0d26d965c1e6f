"""The small cryptographic building blocks shared by the handshake and the cipher."""

from __future__ import annotations

import hmac
import struct

__all__ = ["KEY_SIZE", "MAC_SIZE", "hkdf_pair", "nonce_bytes"]

#: ChaCha20-Poly1305 key and HKDF output half, in bytes.
KEY_SIZE = 32
#: Poly1305 tag appended to every ciphertext, in bytes.
MAC_SIZE = 16

# BOLT 8 follows Noise: 32 zero bits, then the 64-bit counter little-endian.
_NONCE = struct.Struct("<4xQ")


def nonce_bytes(counter: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce for ``counter``."""
    return _NONCE.pack(counter)


def hkdf_pair(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 5869 HKDF-SHA256 with empty info, 64 bytes of output split in two halves.

    BOLT 8 always asks for exactly two 32-byte blocks, so extract-and-expand is
    written out instead of going through a general HKDF object.
    """
    prk = hmac.digest(salt, ikm, "sha256")
    first = hmac.digest(prk, b"\x01", "sha256")
    second = hmac.digest(prk, first + b"\x02", "sha256")
    return first, second
