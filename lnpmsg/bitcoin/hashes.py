"""Bitcoin's hash functions, and the display form of 32-byte hashes.

RIPEMD-160 comes from ``hashlib`` when the OpenSSL build still offers it
(OpenSSL 3 moved it to the "legacy" provider, which many systems do not load);
otherwise a small pure-Python version of the same function is used. Both are
checked against each other in the tests.

Txids and block hashes are kept as 32 bytes in *internal* order, the order
in which they are hashed and serialized (and carried in BOLT messages such as
``funding_txid``). Bitcoin Core and explorers print them reversed:
``hash_to_hex`` / ``hash_from_hex`` convert.
"""

from __future__ import annotations

import hashlib
import struct

from lnpmsg._hex import parse_hex
from lnpmsg.bitcoin.errors import BitcoinError

__all__ = [
    "hash160",
    "hash_from_hex",
    "hash_to_hex",
    "ripemd160",
    "ripemd160_python",
    "sha256",
    "sha256d",
]

_HASH_SIZE = 32


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Double SHA-256: txids, block hashes, merkle nodes, signature hashes."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_from_hex(text: str) -> bytes:
    """A hash in display order (reversed hex, as Bitcoin Core prints it) to internal order."""
    try:
        return parse_hex(text, "a hash", _HASH_SIZE)[::-1]
    except ValueError as exc:
        raise BitcoinError(str(exc)) from None


def hash_to_hex(h: bytes) -> str:
    """An internal-order hash in display order (reversed hex)."""
    return h[::-1].hex()


# --- RIPEMD-160 (Dobbertin, Bosselaers, Preneel 1996), for systems without it in OpenSSL.

_MASK = 0xFFFFFFFF

# Message word order for the left and right lines, rounds 1..5.
_R_LEFT = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
    3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
    1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
    4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13,
)  # fmt: skip
_R_RIGHT = (
    5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
    6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
    15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
    8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
    12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11,
)  # fmt: skip
# Left-rotation amounts.
_S_LEFT = (
    11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
    7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
    11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
    11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
    9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6,
)  # fmt: skip
_S_RIGHT = (
    8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
    9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
    9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
    15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
    8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11,
)  # fmt: skip
_K_LEFT = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_K_RIGHT = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)


def _f(j: int, x: int, y: int, z: int) -> int:
    if j == 0:
        return x ^ y ^ z
    if j == 1:
        return (x & y) | (~x & z)
    if j == 2:
        return (x | ~y) ^ z
    if j == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def _rol(x: int, n: int) -> int:
    x &= _MASK
    return ((x << n) | (x >> (32 - n))) & _MASK


def _compress(h: list[int], block: bytes) -> None:
    x = struct.unpack("<16I", block)
    al, bl, cl, dl, el = h
    ar, br, cr, dr, er = h
    for i in range(80):
        rnd = i >> 4
        t = _rol(al + _f(rnd, bl, cl, dl) + x[_R_LEFT[i]] + _K_LEFT[rnd], _S_LEFT[i]) + el
        al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t & _MASK
        t = _rol(ar + _f(4 - rnd, br, cr, dr) + x[_R_RIGHT[i]] + _K_RIGHT[rnd], _S_RIGHT[i]) + er
        ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t & _MASK
    t = (h[1] + cl + dr) & _MASK
    h[1] = (h[2] + dl + er) & _MASK
    h[2] = (h[3] + el + ar) & _MASK
    h[3] = (h[4] + al + br) & _MASK
    h[4] = (h[0] + bl + cr) & _MASK
    h[0] = t


def ripemd160_python(data: bytes) -> bytes:
    """RIPEMD-160 in pure Python (slow; used only when OpenSSL lacks it)."""
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", 8 * len(data))
    for offset in range(0, len(padded), 64):
        _compress(h, padded[offset : offset + 64])
    return struct.pack("<5I", *h)


def _openssl_ripemd160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


try:
    _openssl_ripemd160(b"")
    _ripemd160 = _openssl_ripemd160
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    _ripemd160 = ripemd160_python


def ripemd160(data: bytes) -> bytes:
    """RIPEMD-160 of ``data``."""
    return _ripemd160(data)


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256: public key hashes (P2WPKH, P2PKH) and BOLT-3 revocation key hashes."""
    return _ripemd160(hashlib.sha256(data).digest())
