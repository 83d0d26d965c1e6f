"""Tor v3 onion addresses (sans-IO: no sockets, no Tor needed).

A v3 address is 56 base32 characters (RFC 4648 alphabet, any case) that
decode to 35 bytes::

    public_key (32) || checksum (2) || version (1)
    checksum = SHA3-256(".onion checksum" || public_key || version)[:2]
    version  = 0x03

followed by ``.onion`` when used as a host name (Tor's rend-spec-v3 §6;
BOLT 7 address descriptor type 4 carries the same 35 bytes). Like Tor, the
public key must also be a valid ed25519 point of prime order: an address
that passes the checksum but fails this is refused by Tor (SOCKS reply
0xF6), so it is refused here first.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from lnpmsg.transports.tor.errors import OnionAddressError

__all__ = [
    "ONION_SUFFIX",
    "ONION_V3_LENGTH",
    "ONION_V3_VERSION",
    "OnionAddress",
    "is_onion_host",
    "parse_onion_address",
]

ONION_SUFFIX = ".onion"
#: base32 characters of a v3 service id: 35 bytes * 8 / 5
ONION_V3_LENGTH = 56
ONION_V3_VERSION = 3
_V2_LENGTH = 16
_PUBKEY_LEN = 32
_CHECKSUM_LEN = 2
_CHECKSUM_PREFIX = b".onion checksum"
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


# Ed25519 (RFC 8032 §5.1): Tor refuses an address whose key is not a point
# of the prime-order subgroup, so the same check runs here, before any dial.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_L = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _point_add(a: _Point, b: _Point) -> _Point:
    # unified addition on the twisted Edwards curve (also valid for doubling)
    k_a = (a[1] - a[0]) * (b[1] - b[0]) % _P
    k_b = (a[1] + a[0]) * (b[1] + b[0]) % _P
    k_c = 2 * a[3] * b[3] * _D % _P
    k_d = 2 * a[2] * b[2] % _P
    e, f, g, h = k_b - k_a, k_d - k_c, k_d + k_c, k_b + k_a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode_point(data: bytes) -> _Point | None:
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        return (0, y, 1, 0)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P:
            return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _is_prime_order_point(public_key: bytes) -> bool:
    """True if ``public_key`` decodes to a curve point P with L*P = identity."""
    point = _decode_point(public_key)
    if point is None:
        return False
    result: _Point = (0, 1, 1, 0)
    for bit in bin(_L)[2:]:
        result = _point_add(result, result)
        if bit == "1":
            result = _point_add(result, point)
    return result[0] % _P == 0 and (result[1] - result[2]) % _P == 0


def _checksum(public_key: bytes, version: int) -> bytes:
    return hashlib.sha3_256(_CHECKSUM_PREFIX + public_key + bytes([version])).digest()[:_CHECKSUM_LEN]


@dataclass(frozen=True, slots=True)
class OnionAddress:
    """A valid v3 onion address, built from the service's ed25519 public key."""

    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != _PUBKEY_LEN:
            raise OnionAddressError("a v3 onion address needs a 32-byte ed25519 public key")
        if not _is_prime_order_point(self.public_key):
            raise OnionAddressError(
                "not a valid v3 onion address: its public key is not a valid ed25519 point (Tor refuses it)"
            )

    @classmethod
    def from_public_key(cls, public_key: bytes) -> OnionAddress:
        return cls(bytes(public_key))

    @property
    def raw(self) -> bytes:
        """The 35 bytes ``public_key || checksum || version`` (BOLT 7 descriptor type 4's data)."""
        return self.public_key + _checksum(self.public_key, ONION_V3_VERSION) + bytes([ONION_V3_VERSION])

    @classmethod
    def from_raw(cls, raw: bytes) -> OnionAddress:
        """Inverse of :attr:`raw`; checks the version and the checksum."""
        if len(raw) != _PUBKEY_LEN + _CHECKSUM_LEN + 1:
            raise OnionAddressError(f"a v3 onion address is 35 bytes, got {len(raw)}")
        public_key, checksum, version = raw[:_PUBKEY_LEN], raw[_PUBKEY_LEN:-1], raw[-1]
        if version != ONION_V3_VERSION:
            raise OnionAddressError(f"onion address version is {version}, only version 3 is supported")
        if checksum != _checksum(public_key, version):
            raise OnionAddressError("onion address checksum does not match (a typo, or a truncated/altered address)")
        return cls(public_key)

    @property
    def service_id(self) -> str:
        """The 56 lower-case base32 characters (no ``.onion``), as Tor's control port names services."""
        return base64.b32encode(self.raw).decode("ascii").lower()

    @property
    def hostname(self) -> str:
        """``<service_id>.onion``."""
        return self.service_id + ONION_SUFFIX

    def __str__(self) -> str:
        return self.hostname


def is_onion_host(host: str) -> bool:
    """True if ``host`` is meant as an onion address (ends with ``.onion``), valid or not."""
    return host.lower().rstrip(".").endswith(ONION_SUFFIX)


def parse_onion_address(text: str) -> OnionAddress:
    """Validate a v3 onion address, with or without ``.onion``, in any case.

    Raises :class:`OnionAddressError` naming the first rule broken: length
    (a 16-character v2 address is named as such), alphabet, version,
    checksum.
    """
    if not isinstance(text, str):
        raise OnionAddressError(f"an onion address must be text, not {type(text).__name__}")
    shown = text if len(text) <= 80 else text[:77] + "..."
    name = text.strip().lower()
    name = name.removesuffix(".")
    name = name.removesuffix(ONION_SUFFIX)
    if "." in name:
        raise OnionAddressError(f"{shown!r} is not an onion address: expected <56 base32 characters>.onion, without subdomains")
    if len(name) == _V2_LENGTH and set(name) <= _BASE32:
        raise OnionAddressError(f"{shown!r} is a v2 onion address (16 characters); v2 is no longer supported by Tor, use a v3 (56-character) address")
    if len(name) != ONION_V3_LENGTH:
        raise OnionAddressError(f"{shown!r} is not a v3 onion address: it must have 56 characters before .onion, it has {len(name)}")
    for position, char in enumerate(name):
        if char not in _BASE32:
            raise OnionAddressError(f"{shown!r} is not a v3 onion address: character {char!r} at position {position} is not base32 (a-z, 2-7)")
    return OnionAddress.from_raw(base64.b32decode(name.upper()))
