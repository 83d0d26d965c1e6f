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
    "DEFAULT_PATH_LENGTH",
    "MAX_DUMMY_HOPS",
    "MAX_PATH_LENGTH",
    "BlindedHop",
    "BlindedPath",
    "BlindingError",
    "RecipientData",
    "blinded_node_key",
    "create_blinded_path",
    "decode_blinded_path",
    "decrypt_recipient_data",
    "dummy_hop_count",
    "encode_blinded_path",
    "padded_encrypted_data",
]

#: the hops a blinded path we hand out has at least: the shorter ones end with dummy hops of the
#: recipient's own (BOLT 4 allows them), so a payer or sender cannot tell how far the introduction node is from it
DEFAULT_PATH_LENGTH = 4
#: dummy hops a recipient peels at most in one path (each an ECDH): more is refused, as a loop would be
MAX_DUMMY_HOPS = 7
#: the longest a path of ours is padded to: one hop of ours and every dummy hop
MAX_PATH_LENGTH = MAX_DUMMY_HOPS + 1

_BLINDED_NODE_ID = b"blinded_node_id"
_ZERO_NONCE = bytes(12)
_POINT = 33
#: a ``sciddir_or_pubkey`` that names a channel's end: direction byte (0 or 1) + short channel id
_SCIDDIR = 9


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

    @property
    def introduction_is_node_id(self) -> bool:
        """True when ``first_node_id`` is a node id (33 bytes), False for a ``sciddir`` (9 bytes:
        direction and short channel id, to resolve through the gossip graph)."""
        return len(self.first_node_id) == _POINT

    def encode(self) -> bytes:
        """The ``blinded_path`` subtype's bytes (see :func:`encode_blinded_path`)."""
        return encode_blinded_path(self)


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


def dummy_hop_count(real_hops: int, path_length: int) -> int:
    """The dummy hops that pad a path of ``real_hops`` (the introduction node through the recipient) to
    ``path_length`` hops (0 when it is that long already; never more than :data:`MAX_DUMMY_HOPS`)."""
    return max(0, min(path_length - real_hops, MAX_DUMMY_HOPS))


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


def encode_blinded_path(path: BlindedPath) -> bytes:
    """``blinded_path``: ``first_node_id`` (``sciddir_or_pubkey``), ``first_path_key``, ``num_hops``
    (a byte) and each hop's ``blinded_node_id``, u16 length and ``encrypted_recipient_data``."""
    if len(path.first_node_id) not in (_POINT, _SCIDDIR) or len(path.first_path_key) != _POINT:
        raise BlindingError("a blinded path starts with a 33-byte node id or 9-byte sciddir and a 33-byte path key")
    if not 1 <= len(path.hops) <= 255:
        raise BlindingError(f"a blinded path has 1 to 255 hops, not {len(path.hops)}")
    out = [path.first_node_id, path.first_path_key, bytes([len(path.hops)])]
    for hop in path.hops:
        if len(hop.blinded_node_id) != _POINT or len(hop.encrypted_recipient_data) > 0xFFFF:
            raise BlindingError("a blinded hop has a 33-byte node id and at most 65535 bytes of data")
        out += [hop.blinded_node_id, len(hop.encrypted_recipient_data).to_bytes(2, "big"), hop.encrypted_recipient_data]
    return b"".join(out)


def decode_blinded_path(data: bytes, pos: int = 0) -> tuple[BlindedPath, int]:
    """Parse a ``blinded_path`` at ``data[pos:]``; returns it and where it ends.

    ``BlindingError`` for a truncated path, a first node that is neither a
    sciddir (first byte 0 or 1) nor a point (2 or 3), or no hops. Points are
    checked for their prefix only: the onion's ECDH rejects a point off the curve.
    """
    data = bytes(data)

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise BlindingError(f"blinded_path: truncated in {what}")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    if pos >= len(data):
        raise BlindingError("blinded_path: empty")
    kind = data[pos]
    if kind in (0, 1):
        first = take(_SCIDDIR, "first_node_id")
    elif kind in (2, 3):
        first = take(_POINT, "first_node_id")
    else:
        raise BlindingError(f"blinded_path: first_node_id starts with {kind}, not 0-3")
    path_key = take(_POINT, "first_path_key")
    count = take(1, "num_hops")[0]
    if count == 0:
        raise BlindingError("blinded_path: no hops")
    hops = []
    for _ in range(count):
        node = take(_POINT, "blinded_node_id")
        length = int.from_bytes(take(2, "enclen"), "big")
        hops.append(BlindedHop(blinded_node_id=node, encrypted_recipient_data=take(length, "encrypted_recipient_data")))
    if path_key[0] not in (2, 3) or any(h.blinded_node_id[0] not in (2, 3) for h in hops):
        raise BlindingError("blinded_path: a key is not a compressed point")
    return BlindedPath(first_node_id=first, first_path_key=path_key, hops=tuple(hops)), pos


def padded_encrypted_data(streams: Sequence[TlvStream]) -> list[bytes]:
    """Encode each hop's ``encrypted_data_tlv``, the shorter ones with a ``padding`` record (TLV 1)
    sized so all have one length, as BOLT 4 advises: a sender cannot tell the final hop from
    the others by its size. (Two awkward gaps of 255-256 bytes come out a little short.)
    """
    plain = [ENCRYPTED_DATA_TLVS.encode(s.replace(padding=None)) for s in streams]
    target = max((len(p) for p in plain), default=0)
    if any(target - len(p) == 1 for p in plain):
        target += 2  # a record takes 2 bytes at least: every hop gets one, the longest an empty one
    out = []
    for stream, encoded in zip(streams, plain, strict=True):
        need = target - len(encoded)
        if need:
            pad = need - 2 if need - 2 < 253 else need - 4  # BigSize takes 3 bytes for 253 and more
            encoded = ENCRYPTED_DATA_TLVS.encode(stream.replace(padding=bytes(pad)))
        out.append(encoded)
    return out
