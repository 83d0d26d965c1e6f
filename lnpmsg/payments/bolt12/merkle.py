"""BOLT 12 signatures: the Merkle root of a TLV stream and BIP 340 signatures over it.

Every record outside the signature range (240-1000) is a leaf, H("LnLeaf",
record), paired with a nonce leaf H("LnNonce" || first record, type); pairs
and then branches combine as H("LnBranch", lesser || greater), the tree
deepest on its lowest records when the count is not a power of two. A
signature field ``f`` of message ``m`` signs H("lightning" || m || f, root).
"""

from __future__ import annotations

import hashlib

import coincurve

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.primitives import bigsize_at

__all__ = ["SIGNATURE_TYPES", "merkle_root", "sign", "signature_digest", "split_records", "tagged_hash", "verify"]

#: the types of signature records: outside the Merkle tree
SIGNATURE_TYPES = range(240, 1001)


def tagged_hash(tag: bytes, msg: bytes) -> bytes:
    """BIP 340's H(tag, msg) = SHA256(SHA256(tag) || SHA256(tag) || msg)."""
    t = hashlib.sha256(tag).digest()
    return hashlib.sha256(t + t + msg).digest()


def split_records(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """The records of a TLV stream as ``(type, type bytes, whole record bytes)``, in order.
    :class:`Bolt12Error` (``malformed``) for a stream that is not one."""
    out = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            start = pos
            kind, pos = bigsize_at(data, pos, end)
            type_end = pos
            length, pos = bigsize_at(data, pos, end)
            if pos + length > end:
                raise Bolt12Error(f"TLV type {kind}: length {length} runs past the data", "malformed")
            pos += length
            out.append((kind, data[start:type_end], data[start:pos]))
    except WireError as exc:
        raise Bolt12Error(f"TLV stream: {exc}", "malformed") from None
    return out


def _branch(a: bytes, b: bytes) -> bytes:
    return tagged_hash(b"LnBranch", min(a, b) + max(a, b))


def merkle_root(data: bytes) -> bytes:
    """The Merkle root of TLV stream ``data`` (its signature records left out)."""
    records = [r for r in split_records(data) if r[0] not in SIGNATURE_TYPES]
    if not records:
        raise Bolt12Error("no records to sign", "malformed")
    nonce_tag = b"LnNonce" + records[0][2]
    level = [_branch(tagged_hash(b"LnLeaf", whole), tagged_hash(nonce_tag, type_bytes)) for _, type_bytes, whole in records]
    while len(level) > 1:
        # pairs from the start; an odd one out waits for the next level (deepest on the lowest leaves)
        level = [_branch(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def signature_digest(message_name: str, field_name: str, root: bytes) -> bytes:
    """H("lightning" || message name || field name, root): what the BIP 340 signature signs."""
    return tagged_hash(b"lightning" + message_name.encode() + field_name.encode(), root)


def sign(message_name: str, data: bytes, secret: bytes, field_name: str = "signature", aux: bytes | None = None) -> bytes:
    """The BIP 340 signature of TLV stream ``data`` (message ``message_name``) by ``secret``."""
    digest = signature_digest(message_name, field_name, merkle_root(data))
    return coincurve.PrivateKey(secret).sign_schnorr(digest, aux if aux is not None else b"")


def verify(message_name: str, data: bytes, signature: bytes, public_key: bytes, field_name: str = "signature") -> bool:
    """Whether ``signature`` signs TLV stream ``data`` by the key ``public_key`` (33 bytes; its x coordinate)."""
    try:
        key = coincurve.PublicKeyXOnly(public_key[1:])
        return bool(key.verify(signature, signature_digest(message_name, field_name, merkle_root(data))))
    except (ValueError, TypeError):
        return False
