"""Sphinx onion packets (BOLT 4, version 0): construction by the origin node,
peeling by each hop.

The origin node calls :func:`construct_onion` with a session key, the hops'
public keys, their TLV payloads and the associated data (the payment hash);
it keeps the returned shared secrets to read a failure that comes back.
A hop calls :func:`peel_onion` with its node key, the 1366-byte onion and the
same associated data: it gets its payload, its shared secret and either the
onion for the next hop or "final". An onion that cannot be authenticated
raises :class:`~lnpmsg.payments.onion.errors.MalformedOnionError`, carrying
the BADONION code and SHA256 of the onion for ``update_fail_malformed_htlc``;
an authentic one whose framing is broken raises
:class:`~lnpmsg.payments.onion.errors.OnionPayloadError` (``invalid_onion_payload``).

Route blinding is supported on the peeling side: with ``path_key`` (from
``update_add_htlc`` or the previous payload's ``current_path_key``) the node
key is tweaked by ``HMAC256("blinded_node_id", ECDH(path_key, node_key))``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import coincurve

from lnpmsg.payments.onion._crypto import (
    KEY_MU,
    KEY_PAD,
    KEY_RHO,
    blinding_factor,
    chacha20_stream,
    chacha20_xor,
    derive_key,
    ecdh,
)
from lnpmsg.payments.onion.errors import MalformedOnionError, OnionConstructionError, OnionPayloadError
from lnpmsg.payments.onion.failures import (
    InvalidOnionBlinding,
    InvalidOnionHmac,
    InvalidOnionKey,
    InvalidOnionPayload,
    InvalidOnionVersion,
)
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.primitives import bigsize_at, encode_bigsize

__all__ = [
    "HMAC_SIZE",
    "MAX_HOPS",
    "ONION_PACKET_SIZE",
    "ONION_VERSION",
    "ROUTING_INFO_SIZE",
    "BuiltOnion",
    "PeeledOnion",
    "construct_onion",
    "hop_payload_size",
    "next_ephemeral_key",
    "peel_onion",
]

#: the only packet version this node understands
ONION_VERSION = 0
#: ``hop_payloads`` is always this long, whatever the route's length
ROUTING_INFO_SIZE = 1300
HMAC_SIZE = 32
_PUBKEY_SIZE = 33
#: version + public key + HMAC: what a packet holds besides its hop payloads
_HEADER_SIZE = 1 + _PUBKEY_SIZE + HMAC_SIZE
#: version + public key + hop payloads + HMAC
ONION_PACKET_SIZE = _HEADER_SIZE + ROUTING_INFO_SIZE
#: the longest route a sender may build: BOLT 4's maximum route length for TLV payloads (the
#: rounds it asks the origin to decrypt a failure); the 1300 bytes usually bind first
MAX_HOPS = 27
_ZERO_HMAC = bytes(HMAC_SIZE)
_ZERO_PAD = bytes(ROUTING_INFO_SIZE)
_BLINDED_NODE_ID = b"blinded_node_id"
# payload lengths 0 (the legacy format) and 1 are reserved: no TLV payload is that short
_MIN_PAYLOAD = 2


@dataclass(frozen=True, slots=True)
class BuiltOnion:
    """A constructed onion and the per-hop shared secrets the origin keeps to read failures."""

    packet: bytes
    shared_secrets: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PeeledOnion:
    """What a hop learns from an onion.

    ``payload`` is its TLV payload (unparsed, see :mod:`~lnpmsg.payments.onion.payloads`),
    ``shared_secret`` is kept to wrap a failure coming back, and
    ``next_packet`` is the onion to forward, or None when this hop is the final node.
    """

    payload: bytes
    shared_secret: bytes
    next_packet: bytes | None

    @property
    def is_final(self) -> bool:
        """True when this hop is the onion's final node (its next HMAC is all zero)."""
        return self.next_packet is None


def hop_payload_size(payload: bytes) -> int:
    """Bytes a payload takes in ``hop_payloads``: its BigSize length, itself and its HMAC."""
    return len(encode_bigsize(len(payload))) + len(payload) + HMAC_SIZE


def _generate_filler(shared_secrets: Sequence[bytes], sizes: Sequence[int], routing_info_size: int = ROUTING_INFO_SIZE) -> bytes:
    """The bytes every hop but the last appends (obfuscated zeros), as the last hop will see them.

    Hop ``i`` XORs its stream over ``hop_payloads + 1300 zero bytes`` (onion messages: their own
    size); the part of that stream past byte 1300 - (what earlier hops shifted in) becomes the tail.
    """
    filler = b""
    start = routing_info_size
    for secret, size in zip(shared_secrets[:-1], sizes[:-1], strict=False):
        end = routing_info_size + size
        stream = chacha20_stream(derive_key(KEY_RHO, secret), end)
        filler = _xor(filler + bytes(size), stream[start:end])
        start -= size
    return filler


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def construct_onion(
    session_key: bytes,
    hop_pubkeys: Sequence[bytes],
    payloads: Sequence[bytes],
    associated_data: bytes,
    *,
    routing_info_size: int = ROUTING_INFO_SIZE,
    min_payload: int = _MIN_PAYLOAD,
) -> BuiltOnion:
    """Build a version-0 onion for ``hop_pubkeys[0] -> ... -> hop_pubkeys[-1]``.

    ``payloads[i]`` is hop ``i``'s TLV payload (without its length prefix);
    ``associated_data`` is what every hop's HMAC also covers (the payment
    hash for payments). ``session_key`` must be 32 fresh random bytes (the
    caller's CSPRNG): it is the first ephemeral key and seeds the padding.
    ``routing_info_size`` and ``min_payload`` are the payment onion's (1300
    bytes, payloads of 2 bytes or more); an onion message passes its own
    (1300 or 32768, and 0: it has no legacy payload to tell apart).
    ``OnionConstructionError`` if the route is empty, too long, a key is
    invalid or the payloads do not fit in ``routing_info_size`` bytes.
    """
    if len(hop_pubkeys) != len(payloads):
        raise OnionConstructionError(f"{len(hop_pubkeys)} hop keys but {len(payloads)} payloads")
    if not 1 <= len(hop_pubkeys) <= MAX_HOPS:
        raise OnionConstructionError(f"a route has 1 to {MAX_HOPS} hops, not {len(hop_pubkeys)}")
    for payload in payloads:
        if len(payload) < min_payload:
            raise OnionConstructionError(f"a hop payload has at least {min_payload} bytes, not {len(payload)}")
    sizes = [hop_payload_size(p) for p in payloads]
    if sum(sizes) > routing_info_size:
        raise OnionConstructionError(f"the payloads take {sum(sizes)} bytes, more than the onion's {routing_info_size}")
    try:
        ephemeral = coincurve.PrivateKey(session_key)
    except (ValueError, TypeError) as exc:
        raise OnionConstructionError(f"invalid session key: {exc}") from None
    first_pubkey = ephemeral.public_key.format()

    shared_secrets: list[bytes] = []
    for i, hop_pubkey in enumerate(hop_pubkeys):
        try:
            secret = ecdh(ephemeral, hop_pubkey)
        except (ValueError, TypeError) as exc:
            raise OnionConstructionError(f"hop {i}: invalid public key: {exc}") from None
        shared_secrets.append(secret)
        if i + 1 < len(hop_pubkeys):
            factor = blinding_factor(ephemeral.public_key.format(), secret)
            ephemeral = ephemeral.multiply(factor)

    filler = _generate_filler(shared_secrets, sizes, routing_info_size)
    mix = chacha20_stream(derive_key(KEY_PAD, session_key), routing_info_size)
    next_hmac = _ZERO_HMAC
    for i in range(len(hop_pubkeys) - 1, -1, -1):
        secret = shared_secrets[i]
        payload = payloads[i]
        shifted = encode_bigsize(len(payload)) + payload + next_hmac + mix
        mix = chacha20_xor(derive_key(KEY_RHO, secret), shifted[:routing_info_size])
        if i == len(hop_pubkeys) - 1 and filler:
            mix = mix[: routing_info_size - len(filler)] + filler
        next_hmac = hmac.digest(derive_key(KEY_MU, secret), mix + associated_data, "sha256")
    packet = bytes([ONION_VERSION]) + first_pubkey + mix + next_hmac
    return BuiltOnion(packet=packet, shared_secrets=tuple(shared_secrets))


def _blinded_node_key(node_key: coincurve.PrivateKey, path_key: bytes, onion_hash: bytes) -> coincurve.PrivateKey:
    """The node key tweaked for a blinded hop: ``node_key * HMAC256("blinded_node_id", ECDH(path_key, node_key))``."""
    try:
        blinding_ss = ecdh(node_key, path_key)
        return node_key.multiply(hmac.digest(_BLINDED_NODE_ID, blinding_ss, "sha256"))
    except (ValueError, TypeError) as exc:
        raise MalformedOnionError(InvalidOnionBlinding.TYPE, onion_hash, f"unusable path_key: {exc}") from None


def peel_onion(
    node_key: bytes | coincurve.PrivateKey,
    packet: bytes,
    associated_data: bytes,
    *,
    path_key: bytes | None = None,
    routing_info_size: int | None = ROUTING_INFO_SIZE,
    min_payload: int = _MIN_PAYLOAD,
) -> PeeledOnion:
    """Peel one layer of ``packet`` with this hop's node key (BOLT 4 "Onion Decryption").

    A payment onion is 1366 bytes; an onion message passes ``routing_info_size=None``
    (its payloads' size is the packet's length minus 66) and ``min_payload=0``.

    Checks, in the spec's order: the version (``invalid_onion_version``), the
    ephemeral key (``invalid_onion_key``), the HMAC over ``hop_payloads`` and
    ``associated_data`` (``invalid_onion_hmac``, compared in constant time);
    a packet too short for its key or HMAC fails at the first missing field.
    These raise :class:`MalformedOnionError`. Then the payload's framing:
    a bad length, a payload under 2 bytes or one that overruns the packet
    raise :class:`OnionPayloadError` (``invalid_onion_payload``).
    """
    if not isinstance(node_key, coincurve.PrivateKey):
        node_key = coincurve.PrivateKey(node_key)
    packet = bytes(packet)
    onion_hash = hashlib.sha256(packet).digest()
    if not packet or packet[0] != ONION_VERSION:
        found = f"version {packet[0]}" if packet else "an empty packet"
        raise MalformedOnionError(InvalidOnionVersion.TYPE, onion_hash, f"{found}, this node reads version {ONION_VERSION}")
    public_key = packet[1 : 1 + _PUBKEY_SIZE]
    if len(public_key) != _PUBKEY_SIZE or public_key[0] not in (2, 3):
        raise MalformedOnionError(InvalidOnionKey.TYPE, onion_hash, "the ephemeral key is not a compressed point")
    size = len(packet) - _HEADER_SIZE if routing_info_size is None else routing_info_size
    if len(packet) != size + _HEADER_SIZE or size <= 0:
        raise MalformedOnionError(
            InvalidOnionHmac.TYPE, onion_hash, f"a packet of {len(packet)} bytes, not {size + _HEADER_SIZE}: no HMAC to check"
        )
    if path_key is not None:
        node_key = _blinded_node_key(node_key, path_key, onion_hash)
    try:
        secret = ecdh(node_key, public_key)
    except (ValueError, TypeError):
        raise MalformedOnionError(InvalidOnionKey.TYPE, onion_hash, "the ephemeral key is not on secp256k1") from None
    hop_payloads = packet[1 + _PUBKEY_SIZE : 1 + _PUBKEY_SIZE + size]
    expected = hmac.digest(derive_key(KEY_MU, secret), hop_payloads + associated_data, "sha256")
    if not hmac.compare_digest(expected, packet[-HMAC_SIZE:]):
        raise MalformedOnionError(InvalidOnionHmac.TYPE, onion_hash, "the HMAC does not match")

    unwrapped = chacha20_xor(derive_key(KEY_RHO, secret), hop_payloads + (_ZERO_PAD if size == ROUTING_INFO_SIZE else bytes(size)))
    try:
        length, pos = bigsize_at(unwrapped, 0, len(unwrapped))
    except WireError as exc:
        raise _framing_error(secret, f"payload length: {exc}") from None
    if length < min_payload:
        raise _framing_error(secret, f"a payload length of {length} is reserved")
    end = pos + length
    if end + HMAC_SIZE > size:
        raise _framing_error(secret, f"a payload of {length} bytes overruns the onion")
    payload = unwrapped[pos:end]
    next_hmac = unwrapped[end : end + HMAC_SIZE]
    if next_hmac == _ZERO_HMAC:
        return PeeledOnion(payload=payload, shared_secret=secret, next_packet=None)
    next_pubkey = next_ephemeral_key(public_key, secret)
    rest = unwrapped[end + HMAC_SIZE : end + HMAC_SIZE + size]
    next_packet = bytes([ONION_VERSION]) + next_pubkey + rest + next_hmac
    return PeeledOnion(payload=payload, shared_secret=secret, next_packet=next_packet)


def next_ephemeral_key(public_key: bytes, shared_secret: bytes) -> bytes:
    """The ephemeral key of the onion a hop passes on, from its own onion's ``public_key`` and the
    hop's ``shared_secret`` (BOLT 4: the key times SHA256(key || shared secret)); compressed."""
    return coincurve.PublicKey(public_key).multiply(blinding_factor(public_key, shared_secret)).format()


def _framing_error(secret: bytes, reason: str) -> OnionPayloadError:
    return OnionPayloadError(secret, InvalidOnionPayload(type=0, offset=0), reason)
