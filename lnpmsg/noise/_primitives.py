"""The small cryptographic building blocks shared by the handshake and the cipher."""

from __future__ import annotations

import struct
from hashlib import sha256

__all__ = ["FRAME_OVERHEAD", "KEY_ROTATION_INTERVAL", "KEY_SIZE", "LENGTH_HEADER_SIZE", "MAC_SIZE", "NONCES", "hkdf_pair", "nonce_bytes"]

#: ChaCha20-Poly1305 key and HKDF output half, in bytes.
KEY_SIZE = 32
#: Poly1305 tag appended to every ciphertext, in bytes.
MAC_SIZE = 16
#: A BOLT-8 frame's encrypted big-endian u16 length and its MAC, in bytes.
LENGTH_HEADER_SIZE = 2 + MAC_SIZE
#: Bytes a frame adds to its message: the length header and the body's MAC.
FRAME_OVERHEAD = LENGTH_HEADER_SIZE + MAC_SIZE
#: A key is replaced once its nonce reaches this value (BOLT 8: every 500 messages).
KEY_ROTATION_INTERVAL = 1000

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
    calls (which look the digest up by name each time). The padded states
    are made inline, not by a helper: every handshake runs this four times,
    and a key rotation of the transport cipher every 500 messages.
    """
    if len(salt) > _SHA256_BLOCK:
        salt = sha256(salt).digest()  # RFC 2104: a key longer than a block is hashed first
    salt = salt.ljust(_SHA256_BLOCK, b"\0")
    inner, outer = sha256(salt.translate(_INNER_PAD)), sha256(salt.translate(_OUTER_PAD))
    inner.update(ikm)
    outer.update(inner.digest())
    # The pseudo-random key is a 32-byte digest: padded, never hashed.
    prk = outer.digest().ljust(_SHA256_BLOCK, b"\0")
    inner, outer = sha256(prk.translate(_INNER_PAD)), sha256(prk.translate(_OUTER_PAD))
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


#: Every nonce a transport key can ever use, so the hot path indexes instead of packing.
NONCES = tuple(nonce_bytes(counter) for counter in range(KEY_ROTATION_INTERVAL))
