"""Route blinding (BOLT 4 "Route Blinding"): blinded paths made by a
recipient, and what each node inside one derives to read its
``encrypted_recipient_data`` and find the next path key.

The recipient calls :func:`create_blinded_path` with an ephemeral key, the
real node ids and each node's ``encrypted_data_tlv`` bytes; a node on the path
calls :func:`decrypt_recipient_data` with its node key and the path key it was
given (then peels the onion with ``peel_onion(..., path_key=...)``).
Problems raise :class:`BlindingError`; a node turns any error inside a
blinded route into ``invalid_onion_blinding``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.payments.onion._crypto import KEY_RHO, derive_key, ecdh
from lnpmsg.payments.onion.errors import OnionError
from lnpmsg.payments.onion.payloads import ENCRYPTED_DATA_TLVS
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.tlv import TlvStream

__all__ = [
    "BlindedHop",
    "BlindedPath",
    "BlindingError",
    "RecipientData",
    "blinded_node_key",
    "create_blinded_path",
    "decrypt_recipient_data",
]

_BLINDED_NODE_ID = b"blinded_node_id"
_ZERO_NONCE = bytes(12)


class BlindingError(OnionError):
    """A blinded hop's data that cannot be used (bad key, undecryptable or invalid ``encrypted_data_tlv``)."""


@dataclass(frozen=True, slots=True)
class BlindedHop:
    """One hop of a blinded path: the blinded node id and its encrypted data."""

    blinded_node_id: bytes
    encrypted_recipient_data: bytes


@dataclass(frozen=True, slots=True)
class BlindedPath:
    """A blinded path as a recipient hands it out (``first_node_id`` is the introduction node)."""

    first_node_id: bytes
    first_path_key: bytes
    hops: tuple[BlindedHop, ...]


@dataclass(frozen=True, slots=True)
class RecipientData:
    """What a node inside a blinded path learns: its ``encrypted_data_tlv`` and the next path key."""

    data: TlvStream
    next_path_key: bytes


def _blinding(shared_secret: bytes) -> bytes:
    return hmac.digest(_BLINDED_NODE_ID, shared_secret, "sha256")


def create_blinded_path(session_key: bytes, node_ids: Sequence[bytes], encrypted_data_tlvs: Sequence[bytes]) -> BlindedPath:
    """Blind ``node_ids`` (the introduction node first, the recipient last).

    ``encrypted_data_tlvs[i]`` is node ``i``'s ``encrypted_data_tlv`` stream,
    already encoded (padding, ``short_channel_id``, ``payment_relay``...).
    ``session_key`` is 32 random bytes (``e_0``). ``BlindingError`` for a bad key.
    """
    if len(node_ids) != len(encrypted_data_tlvs) or not node_ids:
        raise BlindingError(f"{len(node_ids)} node ids but {len(encrypted_data_tlvs)} encrypted data; need one each, at least one")
    try:
        ephemeral = coincurve.PrivateKey(session_key)
        first_path_key = ephemeral.public_key.format()
        hops = []
        for node_id, data in zip(node_ids, encrypted_data_tlvs, strict=True):
            path_key = ephemeral.public_key.format()
            secret = ecdh(ephemeral, node_id)
            blinded = coincurve.PublicKey(node_id).multiply(_blinding(secret)).format()
            encrypted = ChaCha20Poly1305(derive_key(KEY_RHO, secret)).encrypt(_ZERO_NONCE, bytes(data), None)
            hops.append(BlindedHop(blinded_node_id=blinded, encrypted_recipient_data=encrypted))
            ephemeral = ephemeral.multiply(hashlib.sha256(path_key + secret).digest())
    except (ValueError, TypeError) as exc:
        raise BlindingError(f"cannot blind this path: {exc}") from None
    return BlindedPath(first_node_id=bytes(node_ids[0]), first_path_key=first_path_key, hops=tuple(hops))


def blinded_node_key(node_key: bytes | coincurve.PrivateKey, path_key: bytes) -> coincurve.PrivateKey:
    """This node's private key for its blinded id: ``HMAC256("blinded_node_id", ECDH(path_key, k)) * k``."""
    if not isinstance(node_key, coincurve.PrivateKey):
        node_key = coincurve.PrivateKey(node_key)
    try:
        return node_key.multiply(_blinding(ecdh(node_key, path_key)))
    except (ValueError, TypeError) as exc:
        raise BlindingError(f"unusable path key: {exc}") from None


def decrypt_recipient_data(node_key: bytes | coincurve.PrivateKey, path_key: bytes, encrypted_recipient_data: bytes) -> RecipientData:
    """Decrypt and parse this node's ``encrypted_recipient_data``; derive the next path key
    (``next_path_key_override`` when present, else ``SHA256(E || ss) * E``)."""
    if not isinstance(node_key, coincurve.PrivateKey):
        node_key = coincurve.PrivateKey(node_key)
    try:
        secret = ecdh(node_key, path_key)
    except (ValueError, TypeError) as exc:
        raise BlindingError(f"unusable path key: {exc}") from None
    try:
        plain = ChaCha20Poly1305(derive_key(KEY_RHO, secret)).decrypt(_ZERO_NONCE, bytes(encrypted_recipient_data), None)
    except InvalidTag:
        raise BlindingError("encrypted_recipient_data does not decrypt with this path key") from None
    try:
        data = ENCRYPTED_DATA_TLVS.decode_stream(plain)
    except WireError as exc:
        raise BlindingError(f"encrypted_data_tlv: {exc}") from None
    override = data.get("next_path_key_override")
    if override is not None:
        next_path_key = override
    else:
        next_path_key = coincurve.PublicKey(path_key).multiply(hashlib.sha256(path_key + secret).digest()).format()
    return RecipientData(data=data, next_path_key=next_path_key)
