"""Onion messages (BOLT 4 "Onion Messages") as a sans-IO core: build one
along a path, peel one as a receiving node.

Sending, :func:`build_onion_message`: the sender knows some node ids (its
peer first) and a destination, a node id or a :class:`BlindedPath` someone
handed out. Every onion message is blinded: the sender blinds the node ids it
knows itself (each hop's ``encrypted_data_tlv`` names the next node) and
joins the destination's blinded path with ``next_path_key_override``. The
final hop's ``onionmsg_tlv`` carries a ``reply_path`` (2), the
``encrypted_recipient_data`` (4) and the application's records (types 64 and
up, at most one: BOLT 4 has the reader ignore more).

Receiving, :func:`peel_onion_message`: the node's key, the ``path_key`` and
the packet of an ``onion_message`` give a :class:`Forward` (to a node id or
a short channel id, with the next ``path_key`` and packet) or a
:class:`Delivery` (the records, ``path_id``, the reply path). Anything BOLT 4
says to ignore raises :class:`OnionMessageIgnored` with the reason: the
caller drops the message (no error goes back for onion messages).

Randomness comes in as arguments (``session_key``, ``blinding_key``):
nothing here reads a clock, a socket or the OS's random source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lnpmsg.payments.onion.blinding import (
    BlindedHop,
    BlindedPath,
    BlindingError,
    create_blinded_path,
    decode_blinded_path,
    decrypt_recipient_data,
    encode_blinded_path,
    padded_encrypted_data,
)
from lnpmsg.payments.onion.errors import OnionError
from lnpmsg.payments.onion.payloads import ENCRYPTED_DATA_TLVS
from lnpmsg.payments.onion.sphinx import MAX_HOPS, ROUTING_INFO_SIZE, construct_onion, hop_payload_size, peel_onion
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.primitives import ShortChannelId, bigsize_at
from lnpmsg.wire.tlv import TlvStream

__all__ = [
    "BIG_PAYLOADS_SIZE",
    "FINAL_TLV_MIN",
    "MAX_PACKET_SIZE",
    "ONION_MESSAGE_TYPE",
    "BlindedPath",
    "Delivery",
    "Forward",
    "OnionMessageError",
    "OnionMessageIgnored",
    "OutgoingOnionMessage",
    "blinded_path_to",
    "build_onion_message",
    "peel_onion_message",
]

#: BOLT 1 message type of ``onion_message``
ONION_MESSAGE_TYPE = 513
#: the larger payload size BOLT 4 recommends (32834-byte packets): a message that does not fit in
#: 1300 bytes takes this one fixed size, so sizes tell an observer little
BIG_PAYLOADS_SIZE = 32768
#: the largest packet this node peels: the ``u16`` length allows 65535, but larger than the
#: recommended sizes only serves a flood
MAX_PACKET_SIZE = BIG_PAYLOADS_SIZE + 66
#: record types from here up are the final hop's application payloads
FINAL_TLV_MIN = 64
_REPLY_PATH = 2
_ENCRYPTED_DATA = 4


class OnionMessageError(OnionError):
    """An onion message this node cannot build (bad keys, too long a path or payload)."""


class OnionMessageIgnored(OnionError):
    """An incoming onion message BOLT 4 says to ignore; ``str()`` says why (for a debug log)."""


@dataclass(frozen=True, slots=True)
class OutgoingOnionMessage:
    """An ``onion_message`` ready to send: to ``first_node_id`` (a peer), with its ``path_key``."""

    first_node_id: bytes
    path_key: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """A message to pass on: to the peer ``next_node_id``, or over our channel ``next_short_channel_id``."""

    next_node_id: bytes | None
    next_short_channel_id: ShortChannelId | None
    path_key: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message for this node.

    ``records`` are the final hop's application records (types >= 64, as
    received), ``path_id`` the one in our ``encrypted_data_tlv`` (None when
    the path had none: then nobody can tell a reply from a new message),
    ``reply_path`` where an answer goes, ``unknown_odd`` the other odd records.
    """

    records: Mapping[int, bytes]
    path_id: bytes | None
    reply_path: BlindedPath | None
    unknown_odd: Mapping[int, bytes] = field(default_factory=dict)


# ------------------------------------------------------------------ the TLVs


def _tlv(records: Mapping[int, bytes]) -> bytes:
    """An ``onionmsg_tlv`` from raw records (ascending types, as TLV streams require)."""
    out = bytearray()
    for kind in sorted(records):
        value = records[kind]
        out += _bigsize(kind) + _bigsize(len(value)) + value
    return bytes(out)


def _bigsize(value: int) -> bytes:
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "big")
    if value <= 0xFFFFFFFF:
        return b"\xfe" + value.to_bytes(4, "big")
    return b"\xff" + value.to_bytes(8, "big")


def _records(payload: bytes) -> dict[int, bytes]:
    """Parse a TLV stream into raw records: types strictly ascending, lengths within the payload."""
    records: dict[int, bytes] = {}
    pos, end, last = 0, len(payload), -1
    try:
        while pos < end:
            kind, pos = bigsize_at(payload, pos, end)
            length, pos = bigsize_at(payload, pos, end)
            if kind <= last:
                raise OnionMessageIgnored(f"onionmsg_tlv: type {kind} after {last} (not ascending)")
            if pos + length > end:
                raise OnionMessageIgnored(f"onionmsg_tlv: record {kind} overruns the payload")
            records[kind] = payload[pos : pos + length]
            pos += length
            last = kind
    except WireError as exc:
        raise OnionMessageIgnored(f"onionmsg_tlv: {exc}") from None
    return records


# ------------------------------------------------------------------ sending


def blinded_path_to(
    blinding_key: bytes, node_ids: Sequence[bytes], *, path_id: bytes | None = None, first_scids: Sequence[ShortChannelId | None] = ()
) -> BlindedPath:
    """A blinded path over ``node_ids`` (the introduction node first, the recipient last): each
    hop's data names the next node (or, where ``first_scids[i]`` is given, its channel to it);
    the recipient's holds ``path_id``. All padded to one length. Our own reply paths use it."""
    streams = []
    for i in range(len(node_ids)):
        if i + 1 == len(node_ids):
            streams.append(ENCRYPTED_DATA_TLVS.stream(path_id=path_id))
        elif i < len(first_scids) and first_scids[i] is not None:
            streams.append(ENCRYPTED_DATA_TLVS.stream(short_channel_id=first_scids[i]))
        else:
            streams.append(ENCRYPTED_DATA_TLVS.stream(next_node_id=node_ids[i + 1]))
    try:
        return create_blinded_path(blinding_key, node_ids, padded_encrypted_data(streams))
    except (BlindingError, WireError) as exc:
        raise OnionMessageError(f"cannot blind the path: {exc}") from None


def build_onion_message(
    session_key: bytes,
    blinding_key: bytes,
    via: Sequence[bytes],
    destination: bytes | BlindedPath,
    records: Mapping[int, bytes],
    *,
    reply_path: BlindedPath | None = None,
) -> OutgoingOnionMessage:
    """Build an onion message: through ``via`` (node ids, our peer first; may be empty) to
    ``destination`` (a node id, or a blinded path whose introduction node is a node id).

    ``records`` are the final hop's application records (types >= 64; an odd
    type below is carried too, as BOLT 4's test vector does);
    ``session_key`` (Sphinx) and ``blinding_key`` (our blinded hops) are 32
    fresh random bytes each. The packet is 1366 bytes when the payloads fit
    in 1300, else 32834. ``OnionMessageError`` for what cannot be built.
    """
    for kind in records:
        if kind < FINAL_TLV_MIN and (not kind & 1 or kind in (_REPLY_PATH, _ENCRYPTED_DATA)):
            raise OnionMessageError(f"record type {kind}: the final hop's own records are types {FINAL_TLV_MIN} and up (or odd ones)")
    if isinstance(destination, BlindedPath):
        if not destination.introduction_is_node_id:
            raise OnionMessageError("the blinded path's introduction node is a sciddir: resolve it to a node id first")
        tail: tuple[BlindedHop, ...] = destination.hops
        if via:
            ours = _blinded_prefix(blinding_key, via, destination)
            hops, first, path_key = ours.hops + tail, ours.first_node_id, ours.first_path_key
        else:
            hops, first, path_key = tail, destination.first_node_id, destination.first_path_key
    else:
        ours = blinded_path_to(blinding_key, [*via, destination])
        hops, first, path_key = ours.hops, ours.first_node_id, ours.first_path_key
    if len(hops) > MAX_HOPS:
        raise OnionMessageError(f"a path of {len(hops)} hops: at most {MAX_HOPS}")
    payloads = [_tlv({_ENCRYPTED_DATA: h.encrypted_recipient_data}) for h in hops[:-1]]
    final = dict(records)
    final[_ENCRYPTED_DATA] = hops[-1].encrypted_recipient_data
    if reply_path is not None:
        try:
            final[_REPLY_PATH] = encode_blinded_path(reply_path)
        except BlindingError as exc:
            raise OnionMessageError(f"reply path: {exc}") from None
    payloads.append(_tlv(final))
    used = sum(hop_payload_size(p) for p in payloads)
    if used > BIG_PAYLOADS_SIZE:
        raise OnionMessageError(f"the payloads take {used} bytes, more than an onion message's {BIG_PAYLOADS_SIZE}")
    size = ROUTING_INFO_SIZE if used <= ROUTING_INFO_SIZE else BIG_PAYLOADS_SIZE
    try:
        built = construct_onion(session_key, [h.blinded_node_id for h in hops], payloads, b"", routing_info_size=size, min_payload=0)
    except OnionError as exc:
        raise OnionMessageError(str(exc)) from None
    return OutgoingOnionMessage(first_node_id=bytes(first), path_key=path_key, packet=built.packet)


def _blinded_prefix(blinding_key: bytes, via: Sequence[bytes], destination: BlindedPath) -> BlindedPath:
    """Our blinded hops up to a blinded path's introduction node: the last one's data names it and
    hands over its path key (``next_path_key_override``), joining the two paths."""
    streams = [ENCRYPTED_DATA_TLVS.stream(next_node_id=n) for n in via[1:]]
    streams.append(ENCRYPTED_DATA_TLVS.stream(next_node_id=destination.first_node_id, next_path_key_override=destination.first_path_key))
    try:
        return create_blinded_path(blinding_key, via, padded_encrypted_data(streams))
    except (BlindingError, WireError) as exc:
        raise OnionMessageError(f"cannot blind the path: {exc}") from None


# ------------------------------------------------------------------ receiving


def peel_onion_message(node_key: bytes | object, path_key: bytes, packet: bytes) -> Forward | Delivery:
    """Peel an incoming ``onion_message`` (BOLT 4 reader rules); ``OnionMessageIgnored`` for any
    message to drop: a bad size, version, key or HMAC, a broken ``onionmsg_tlv``, an unknown even
    record below 64, undecryptable or invalid ``encrypted_data_tlv``, ``allowed_features`` (we use
    none of the features it could allow, and know none it could list), a forward with extra
    records, a ``path_id`` or no next hop, a delivery with more than one application record."""
    if len(packet) > MAX_PACKET_SIZE:
        raise OnionMessageIgnored(f"a packet of {len(packet)} bytes, more than {MAX_PACKET_SIZE}")
    try:
        peeled = peel_onion(node_key, packet, b"", path_key=path_key, routing_info_size=None, min_payload=0)  # type: ignore[arg-type]
    except OnionError as exc:
        raise OnionMessageIgnored(f"onion: {exc}") from None
    records = _records(peeled.payload)
    for kind in records:
        if not kind & 1 and kind not in (_REPLY_PATH, _ENCRYPTED_DATA) and kind < FINAL_TLV_MIN:
            raise OnionMessageIgnored(f"onionmsg_tlv: unknown even type {kind}")
    encrypted = records.get(_ENCRYPTED_DATA)
    if encrypted is None:
        raise OnionMessageIgnored("onionmsg_tlv: no encrypted_recipient_data (every onion message is blinded)")
    try:
        recipient = decrypt_recipient_data(node_key, path_key, encrypted)  # type: ignore[arg-type]
    except BlindingError as exc:
        raise OnionMessageIgnored(f"encrypted_recipient_data: {exc}") from None
    data: TlvStream = recipient.data
    if data.get("allowed_features") is not None and any(data["allowed_features"]):
        raise OnionMessageIgnored("encrypted_data_tlv: allowed_features lists features this node does not know")
    if data.get("payment_relay") is not None or data.get("payment_constraints") is not None:
        raise OnionMessageIgnored("encrypted_data_tlv: payment_relay/payment_constraints in an onion message")
    if peeled.next_packet is not None:
        if set(records) != {_ENCRYPTED_DATA}:
            raise OnionMessageIgnored(f"a forward with records {sorted(records)}: only encrypted_recipient_data is allowed")
        if data.get("path_id") is not None:
            raise OnionMessageIgnored("a forward whose encrypted_data_tlv has a path_id")
        next_node, scid = data.get("next_node_id"), data.get("short_channel_id")
        if next_node is None and scid is None:
            raise OnionMessageIgnored("a forward with neither next_node_id nor short_channel_id")
        return Forward(next_node_id=next_node, next_short_channel_id=None if next_node is not None else scid,
                       path_key=recipient.next_path_key, packet=peeled.next_packet)  # fmt: skip
    payloads = {k: v for k, v in records.items() if k >= FINAL_TLV_MIN}
    if len(payloads) > 1:
        raise OnionMessageIgnored(f"{len(payloads)} payload records {sorted(payloads)}: at most one")
    reply = None
    if _REPLY_PATH in records:
        try:
            reply, end = decode_blinded_path(records[_REPLY_PATH])
        except BlindingError as exc:
            raise OnionMessageIgnored(f"reply_path: {exc}") from None
        if end != len(records[_REPLY_PATH]):
            raise OnionMessageIgnored("reply_path: bytes after the path")
    odd = {k: v for k, v in records.items() if k < FINAL_TLV_MIN and k not in (_REPLY_PATH, _ENCRYPTED_DATA)}
    return Delivery(records=payloads, path_id=data.get("path_id"), reply_path=reply, unknown_odd=odd)
