"""secp256k1 keys and ECDSA signatures (libsecp256k1 through coincurve):
public key checks, signing with RFC 6979 nonces and low S, verification,
and the DER <-> compact (``r || s``, as BOLT messages carry them) forms."""

from __future__ import annotations

import functools

import coincurve
from coincurve._libsecp256k1 import ffi  # type: ignore[import-not-found]

from lnpmsg.bitcoin.encoding import Reader
from lnpmsg.bitcoin.errors import BitcoinError

__all__ = [
    "PUBKEY_SIZE",
    "check_pubkey",
    "compact_to_der",
    "der_to_compact",
    "parse_pubkey",
    "private_key",
    "sign_digest",
    "verify_digest",
]

#: compressed public keys only: what segwit v0 standardness and BOLT 3 use
PUBKEY_SIZE = 33
_SECRET_SIZE = 32
_DIGEST_SIZE = 32
#: DER byte holding R's length: 0x30 <total> 0x02 <len(R)>
_DER_R_LENGTH_AT = 3
#: R is "low" (below 2^255) when it needs no 33rd byte to stay positive
_LOW_R_SIZE = 32
#: extra-entropy rounds tried for a low R; each succeeds with probability 1/2
_MAX_LOW_R_TRIES = 256
#: parsed public keys remembered: a commitment with 483 HTLCs checks a handful of
#: keys thousands of times (every script and signature slot names one)
_PUBKEY_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_PUBKEY_CACHE_SIZE)
def _parse_valid_pubkey(data: bytes) -> coincurve.PublicKey:
    # coincurve keys are immutable (tweaks return new keys), so one object may be shared
    return coincurve.PublicKey(data)


def parse_pubkey(data: bytes) -> coincurve.PublicKey:
    """A compressed secp256k1 public key as a coincurve object (``BitcoinError`` if not a valid point)."""
    if not isinstance(data, (bytes, bytearray)) or len(data) != PUBKEY_SIZE:
        raise BitcoinError(f"a public key must be {PUBKEY_SIZE} bytes (compressed)")
    try:
        return _parse_valid_pubkey(bytes(data))
    except ValueError as exc:
        raise BitcoinError(f"not a valid secp256k1 point: {bytes(data).hex()}") from exc


def check_pubkey(data: bytes) -> bytes:
    """``data`` if it is a valid compressed public key, else ``BitcoinError``."""
    parse_pubkey(data)
    return bytes(data)


def private_key(secret: bytes) -> coincurve.PrivateKey:
    """A 32-byte secret key as a coincurve object, its public key computed (``BitcoinError`` if not in [1, n-1])."""
    # coincurve would left-pad a short secret with zeros: refuse it instead
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != _SECRET_SIZE:
        raise BitcoinError(f"a private key is {_SECRET_SIZE} bytes")
    try:
        return coincurve.PrivateKey(bytes(secret))
    except (ValueError, TypeError) as exc:
        raise BitcoinError("invalid private key") from exc


def sign_digest(privkey: bytes | coincurve.PrivateKey, digest: bytes, *, low_r: bool = False) -> bytes:
    """A DER signature of a 32-byte digest (deterministic RFC 6979 nonce, low S).

    ``privkey`` is the 32-byte secret, or a ``private_key()`` already made
    (which saves deriving its public key again when signing many digests).

    ``low_r`` grinds the nonce (RFC 6979 extra entropy 1, 2, ...) until R is
    below 2^255, as Bitcoin Core's wallet does: with S low too, the signature
    is then at most 70 bytes, which is what size-based fee estimates may
    assume. Off, the signature is plain RFC 6979, as in the BOLT-3 vectors.
    """
    if len(digest) != _DIGEST_SIZE:
        raise BitcoinError("a signature hash is 32 bytes")
    key = privkey if isinstance(privkey, coincurve.PrivateKey) else private_key(privkey)
    try:
        signature = key.sign(digest, hasher=None)
        counter = 0
        while low_r and signature[_DER_R_LENGTH_AT] > _LOW_R_SIZE and counter < _MAX_LOW_R_TRIES:
            counter += 1
            entropy = ffi.new("unsigned char[32]", counter.to_bytes(32, "little"))
            signature = key.sign(digest, hasher=None, custom_nonce=(ffi.NULL, entropy))
    except ValueError as exc:  # libsecp256k1 found no nonce: not expected to happen
        raise BitcoinError(f"signing failed: {exc}") from exc
    return bytes(signature)


def verify_digest(pubkey: bytes, der_signature: bytes, digest: bytes) -> bool:
    """Whether ``der_signature`` is a valid strict-DER, low-S signature of ``digest`` by ``pubkey``."""
    try:
        compact = der_to_compact(der_signature)
        key = coincurve.PublicKey(bytes(pubkey))
        return bool(key.verify(compact_to_der(compact), digest, hasher=None))
    except (BitcoinError, ValueError, TypeError):
        return False


def _der_int(reader: Reader) -> int:
    if reader.take(1) != b"\x02":
        raise BitcoinError("DER: expected an integer")
    size = reader.u8()
    if not 1 <= size <= 33:
        raise BitcoinError("DER: bad integer length")
    raw = reader.take(size)
    if raw[0] & 0x80:
        raise BitcoinError("DER: negative integer")
    if size > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise BitcoinError("DER: integer not minimally encoded")
    return int.from_bytes(raw, "big")


def der_to_compact(der_signature: bytes) -> bytes:
    """The 64-byte ``r || s`` form of a strict-DER signature."""
    reader = Reader(der_signature, "signature")
    if reader.take(1) != b"\x30" or reader.u8() != len(reader.data) - 2:
        raise BitcoinError("DER: bad sequence header")
    r = _der_int(reader)
    s = _der_int(reader)
    reader.end("signature")
    if r >= 1 << 256 or s >= 1 << 256:
        raise BitcoinError("DER: integer too large")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _der_encode_int(value: int) -> bytes:
    raw = value.to_bytes(32, "big").lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def compact_to_der(compact: bytes) -> bytes:
    """The strict-DER form of a 64-byte ``r || s`` signature."""
    if len(compact) != 64:
        raise BitcoinError("a compact signature is 64 bytes")
    body = _der_encode_int(int.from_bytes(compact[:32], "big")) + _der_encode_int(int.from_bytes(compact[32:], "big"))
    return b"\x30" + bytes([len(body)]) + body
