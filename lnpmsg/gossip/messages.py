"""The BOLT-7 messages, declared with the :mod:`lnpmsg.wire` mechanism.

Gossip (``channel_announcement``, ``node_announcement``, ``channel_update``)
is signed over its exact bytes, including any fields a later version of the
spec appends. So those three end with an ``extension`` field holding the
bytes after the known fields: ``decode(raw).encode() == raw`` always, and a
signature check may use either. A decoded one keeps its bytes
(:class:`SignedGossip`): ``encode`` gives them back without encoding again.

``node_announcement.addresses`` is kept as the raw descriptor bytes: a
descriptor we cannot read (a bad Tor checksum, a new type) must not make the
whole, validly signed message undecodable. :attr:`NodeAnnouncement.address_list`
reads them leniently (BOLT 7: ignore from the first descriptor we do not know).

Encoded arrays (``encoded_short_ids``, ``encoded_query_flags``,
``encoded_timestamps``) start with an encoding byte: 0 is the plain array;
1 is zlib, which BOLT 7 now forbids: it is decoded (within
:data:`MAX_ZLIB_DECOMPRESSED` bytes, so a zlib bomb costs nothing) and never
written: re-encoding always writes type 0.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from lnpmsg.gossip.addresses import check_addresses, parse_addresses
from lnpmsg.wire import (
    EMPTY_TLV_STREAM,
    Address,
    Features,
    Message,
    MessageRegistry,
    ShortChannelId,
    TlvSchema,
    TlvStream,
    UnknownAddr,
    WireError,
    message,
)
from lnpmsg.wire.fields import (
    ArrayOf,
    Field,
    array_of,
    bigsize,
    byte,
    chain_hash,
    channel_id,
    fixed_bytes,
    point,
    record,
    rest_bytes,
    short_channel_id,
    signature,
    u16,
    u16_prefixed_bytes,
    u32,
    u64,
)

__all__ = [
    "ENCODING_UNCOMPRESSED",
    "ENCODING_ZLIB",
    "GOSSIP_MESSAGES",
    "MAX_ZLIB_DECOMPRESSED",
    "QUERY_FLAG_ANNOUNCEMENT",
    "QUERY_FLAG_NODE_1",
    "QUERY_FLAG_NODE_2",
    "QUERY_FLAG_UPDATE_1",
    "QUERY_FLAG_UPDATE_2",
    "QUERY_OPTION_CHECKSUMS",
    "QUERY_OPTION_TIMESTAMPS",
    "AnnouncementSignatures",
    "ChannelAnnouncement",
    "ChannelUpdate",
    "EncodedArray",
    "GossipTimestampFilter",
    "NodeAnnouncement",
    "QueryChannelRange",
    "QueryShortChannelIds",
    "ReplyChannelRange",
    "ReplyShortChannelIdsEnd",
    "SignedGossip",
    "channel_update_checksums",
    "channel_update_timestamps",
    "check_addresses",
    "parse_addresses",
    "register_gossip_messages",
]

ENCODING_UNCOMPRESSED = 0
ENCODING_ZLIB = 1
#: A zlib-encoded array may inflate to at most this. A whole message holds at
#: most ~8,190 plain short channel ids (65 KB); senders that used zlib kept to
#: 8,000 ids a message, so 4x the plain maximum is generous, and bounds the
#: memory a zlib bomb (a few bytes inflating to gigabytes) can take.
MAX_ZLIB_DECOMPRESSED = 4 * 65536

#: query_short_channel_ids ``query_flags`` bits (BOLT 7)
QUERY_FLAG_ANNOUNCEMENT = 1
QUERY_FLAG_UPDATE_1 = 2
QUERY_FLAG_UPDATE_2 = 4
QUERY_FLAG_NODE_1 = 8
QUERY_FLAG_NODE_2 = 16
#: query_channel_range ``query_option_flags`` bits
QUERY_OPTION_TIMESTAMPS = 1
QUERY_OPTION_CHECKSUMS = 2

_U64 = struct.Struct(">Q")
M = TypeVar("M", bound=Message)


def _inflate(data: bytes, what: str) -> bytes:
    """zlib-decompress ``data``, refusing more than :data:`MAX_ZLIB_DECOMPRESSED` bytes out."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_ZLIB_DECOMPRESSED + 1)
    except zlib.error as exc:
        raise WireError(f"{what}: bad zlib data: {exc}") from None
    if len(out) > MAX_ZLIB_DECOMPRESSED or inflater.unconsumed_tail:
        raise WireError(f"{what}: zlib data inflates past {MAX_ZLIB_DECOMPRESSED} bytes (refused)")
    if not inflater.eof:
        raise WireError(f"{what}: truncated zlib data")
    return out


class EncodedArray(Field):
    """An ``encoding_type`` byte and an array of ``element`` (BOLT 7 "encoded_" arrays).

    With a ``prefix`` (``u16``) the whole thing sits after a byte length (the
    message body's ``len`` + ``encoded_short_ids``); without one it reads to
    the end (a TLV value). Decodes to a tuple of elements; encodes type 0.
    An empty length (no encoding byte at all) decodes as an empty array.
    """

    def __init__(self, name: str, element: Field, prefix: Field | None = None) -> None:
        if element.greedy:
            raise ValueError(f"EncodedArray: {element.name} reads to the end, so it cannot repeat")
        self.name = name
        self.element = element
        self.prefix = prefix
        self.greedy = prefix is None
        self._array: ArrayOf = array_of(element, ...)
        self._scids = element is short_channel_id

    def _decode_body(self, data: bytes, pos: int, end: int) -> tuple[Any, ...]:
        if pos >= end:
            return ()
        kind = data[pos]
        if kind == ENCODING_UNCOMPRESSED:
            body, start, stop = data, pos + 1, end
        elif kind == ENCODING_ZLIB:
            body = _inflate(data[pos + 1 : end], self.name)
            start, stop = 0, len(body)
        else:
            raise WireError(f"{self.name}: unknown encoding type {kind}")
        if self._scids:
            n, left = divmod(stop - start, 8)
            if left:
                raise WireError(f"{self.name}: {stop - start} bytes is not a whole number of short_channel_ids")
            from_int = ShortChannelId.from_int
            return tuple([from_int(v) for v in struct.unpack_from(f">{n}Q", body, start)])
        try:
            values, _ = self._array.unpack(body, start, stop)
        except WireError as exc:
            raise WireError(f"{self.name}: {exc}") from None
        return values

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[Any, ...], int]:
        if self.prefix is not None:
            n, pos = self.prefix.unpack(data, pos, end)
            if pos + n > end:
                raise WireError(f"{self.name}: truncated (length {n}, {end - pos} byte(s) left)")
            end = pos + n
        return self._decode_body(data, pos, end), end

    def validate(self, value: Any) -> tuple[Any, ...]:
        return self._array.validate(value)

    def encode(self, value: Any) -> bytes:
        values = self.validate(value)
        if self._scids:
            body = struct.pack(f">{len(values)}Q", *[v.to_int() for v in values])
        else:
            body = b"".join(map(self.element.encode, values))
        out = bytes((ENCODING_UNCOMPRESSED,)) + body
        if self.prefix is None:
            return out
        return self.prefix.encode(len(out)) + out


channel_update_timestamps = record("channel_update_timestamps", ("timestamp_node_id_1", u32), ("timestamp_node_id_2", u32))
channel_update_checksums = record("channel_update_checksums", ("checksum_node_id_1", u32), ("checksum_node_id_2", u32))

encoded_short_ids = EncodedArray("encoded_short_ids", short_channel_id, u16)

QUERY_SHORT_CHANNEL_IDS_TLVS = TlvSchema(
    {1: ("query_flags", EncodedArray("encoded_query_flags", bigsize))},
    name="query_short_channel_ids_tlvs",
)
QUERY_CHANNEL_RANGE_TLVS = TlvSchema({1: ("query_option", bigsize)}, name="query_channel_range_tlvs")
REPLY_CHANNEL_RANGE_TLVS = TlvSchema(
    {
        1: ("timestamps", EncodedArray("encoded_timestamps", channel_update_timestamps)),
        3: ("checksums", array_of(channel_update_checksums, ...)),
    },
    name="reply_channel_range_tlvs",
)

# ----------------------------------------------------------------- helpers


def _features_names(data: bytes) -> list[str]:
    return Features.from_bytes(data).describe()


def _address_json(addr: Address) -> dict[str, Any]:
    if isinstance(addr, UnknownAddr):
        return {"type": f"unknown-{addr.type}", "data": addr.data.hex()}
    names = {1: "ipv4", 2: "ipv6", 3: "torv2", 4: "torv3", 5: "dns"}
    return {"type": names[addr.TYPE], "address": str(addr), "host": addr.host, "port": addr.port}


def _alias_text(alias: bytes) -> str:
    return alias.rstrip(b"\x00").decode("utf-8", errors="replace")


# ----------------------------------------------------------------- gossip


class SignedGossip(Message):
    """A signed gossip message that keeps the bytes it was decoded from (see :func:`_keeps_its_bytes`)."""

    # Not a dataclass field: invisible to ``==``, ``repr``, ``dataclasses.replace`` and
    # pickling, so a message built or changed any other way has it unset.
    __slots__ = ("_raw",)


_set_raw = SignedGossip.__dict__["_raw"].__set__


def _keeps_its_bytes(cls: type[M]) -> type[M]:
    """A decoded message keeps its bytes, and :meth:`encode` gives them back.

    Gossip is signed over its exact bytes, so the node needs them for every
    message it takes (signature digests, the store, relays): decoding gives the
    same fields, and the codec rebuilds the same bytes (``decode(raw).encode() ==
    raw``), so keeping them saves encoding each message again. Only a whole
    message decoded from ``bytes`` (immutable) of this type keeps them; a message
    built any other way (``dataclasses.replace`` included) is encoded as before.
    """
    unpack = cls._unpack
    encode = cls.encode
    header = cls.TYPE.to_bytes(2, "big")

    def _unpack(data: bytes, pos: int, end: int) -> M:
        decoded = unpack(data, pos, end)
        if pos == 2 and end == len(data) and type(data) is bytes and data.startswith(header):
            _set_raw(decoded, data)
        return decoded  # type: ignore[no-any-return]

    def encode_kept(self: M) -> bytes:
        try:
            return self._raw  # type: ignore[attr-defined,no-any-return]
        except AttributeError:
            return encode(self)

    _unpack.__qualname__ = f"{cls.__name__}._unpack"
    encode_kept.__qualname__ = f"{cls.__name__}.encode"
    encode_kept.__doc__ = encode.__doc__
    cls._unpack = staticmethod(_unpack)  # type: ignore[assignment]
    cls.encode = encode_kept  # type: ignore[method-assign]
    return cls


@_keeps_its_bytes
@message(type=256)
@dataclass(frozen=True, slots=True)
class ChannelAnnouncement(SignedGossip):
    """A channel between ``node_id_1`` < ``node_id_2``, funded by ``bitcoin_key_1`` + ``bitcoin_key_2``.

    Signed four times over the bytes after the signatures (double SHA-256).
    """

    FIELDS = (
        ("node_signature_1", signature),
        ("node_signature_2", signature),
        ("bitcoin_signature_1", signature),
        ("bitcoin_signature_2", signature),
        ("features", u16_prefixed_bytes),
        ("chain_hash", chain_hash),
        ("short_channel_id", short_channel_id),
        ("node_id_1", point),
        ("node_id_2", point),
        ("bitcoin_key_1", point),
        ("bitcoin_key_2", point),
        ("extension", rest_bytes),
    )
    node_signature_1: bytes
    node_signature_2: bytes
    bitcoin_signature_1: bytes
    bitcoin_signature_2: bytes
    features: bytes
    chain_hash: bytes
    short_channel_id: ShortChannelId
    node_id_1: bytes
    node_id_2: bytes
    bitcoin_key_1: bytes
    bitcoin_key_2: bytes
    extension: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (bytes as hex, the id as ``BLOCKxTXxOUT``)."""
        return {
            "type": "channel_announcement",
            "short_channel_id": str(self.short_channel_id),
            "chain_hash": self.chain_hash.hex(),
            "node_id_1": self.node_id_1.hex(),
            "node_id_2": self.node_id_2.hex(),
            "bitcoin_key_1": self.bitcoin_key_1.hex(),
            "bitcoin_key_2": self.bitcoin_key_2.hex(),
            "features": self.features.hex(),
            "feature_names": _features_names(self.features),
            "node_signature_1": self.node_signature_1.hex(),
            "node_signature_2": self.node_signature_2.hex(),
            "bitcoin_signature_1": self.bitcoin_signature_1.hex(),
            "bitcoin_signature_2": self.bitcoin_signature_2.hex(),
            "extension": self.extension.hex(),
        }


@_keeps_its_bytes
@message(type=257)
@dataclass(frozen=True, slots=True)
class NodeAnnouncement(SignedGossip):
    """A node's features, alias, colour and addresses, signed by ``node_id``."""

    FIELDS = (
        ("signature", signature),
        ("features", u16_prefixed_bytes),
        ("timestamp", u32),
        ("node_id", point),
        ("rgb_color", fixed_bytes(3, "rgb_color")),
        ("alias", fixed_bytes(32, "alias")),
        ("addresses", u16_prefixed_bytes),
        ("extension", rest_bytes),
    )
    signature: bytes
    features: bytes
    timestamp: int
    node_id: bytes
    rgb_color: bytes
    alias: bytes
    addresses: bytes = b""
    extension: bytes = b""

    @property
    def address_list(self) -> tuple[Address, ...]:
        """The address descriptors (read leniently: see :func:`parse_addresses`)."""
        return parse_addresses(self.addresses)[0]

    @property
    def alias_text(self) -> str:
        """The alias as text (trailing zero bytes dropped, bad UTF-8 replaced)."""
        return _alias_text(self.alias)

    def to_dict(self) -> dict[str, Any]:
        addresses, problem = parse_addresses(self.addresses)
        out: dict[str, Any] = {
            "type": "node_announcement",
            "node_id": self.node_id.hex(),
            "timestamp": self.timestamp,
            "alias": self.alias_text,
            "rgb_color": self.rgb_color.hex(),
            "features": self.features.hex(),
            "feature_names": _features_names(self.features),
            "addresses": [_address_json(a) for a in addresses],
            "signature": self.signature.hex(),
            "extension": self.extension.hex(),
        }
        if problem is not None:
            out["address_error"] = problem
        return out


@_keeps_its_bytes
@message(type=258)
@dataclass(frozen=True, slots=True)
class ChannelUpdate(SignedGossip):
    """One direction's forwarding policy of a channel, signed by that side's node."""

    FIELDS = (
        ("signature", signature),
        ("chain_hash", chain_hash),
        ("short_channel_id", short_channel_id),
        ("timestamp", u32),
        ("message_flags", byte),
        ("channel_flags", byte),
        ("cltv_expiry_delta", u16),
        ("htlc_minimum_msat", u64),
        ("fee_base_msat", u32),
        ("fee_proportional_millionths", u32),
        ("htlc_maximum_msat", u64),
        ("extension", rest_bytes),
    )
    signature: bytes
    chain_hash: bytes
    short_channel_id: ShortChannelId
    timestamp: int
    message_flags: int
    channel_flags: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int
    extension: bytes = b""

    @property
    def direction(self) -> int:
        """0: from ``node_id_1`` (signed by it); 1: from ``node_id_2``."""
        return self.channel_flags & 1

    @property
    def disabled(self) -> bool:
        return bool(self.channel_flags & 2)

    @property
    def dont_forward(self) -> bool:
        """Meant for the channel peer only: never relayed."""
        return bool(self.message_flags & 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "channel_update",
            "short_channel_id": str(self.short_channel_id),
            "chain_hash": self.chain_hash.hex(),
            "timestamp": self.timestamp,
            "direction": self.direction,
            "disabled": self.disabled,
            "message_flags": self.message_flags,
            "channel_flags": self.channel_flags,
            "cltv_expiry_delta": self.cltv_expiry_delta,
            "htlc_minimum_msat": self.htlc_minimum_msat,
            "htlc_maximum_msat": self.htlc_maximum_msat,
            "fee_base_msat": self.fee_base_msat,
            "fee_proportional_millionths": self.fee_proportional_millionths,
            "signature": self.signature.hex(),
            "extension": self.extension.hex(),
        }


@message(type=259)
@dataclass(frozen=True, slots=True)
class AnnouncementSignatures(Message):
    """A channel peer's two signatures for the channel_announcement (a direct message, not gossip)."""

    FIELDS = (
        ("channel_id", channel_id),
        ("short_channel_id", short_channel_id),
        ("node_signature", signature),
        ("bitcoin_signature", signature),
    )
    channel_id: bytes
    short_channel_id: ShortChannelId
    node_signature: bytes
    bitcoin_signature: bytes


# ----------------------------------------------------------------- queries


@message(type=261, tlvs=QUERY_SHORT_CHANNEL_IDS_TLVS)
@dataclass(frozen=True, slots=True)
class QueryShortChannelIds(Message):
    """Asks for the announcements and updates of some channels (``query_flags``: one per id)."""

    FIELDS = (("chain_hash", chain_hash), ("short_channel_ids", encoded_short_ids))
    chain_hash: bytes
    short_channel_ids: tuple[ShortChannelId, ...]
    tlvs: TlvStream = EMPTY_TLV_STREAM

    @property
    def query_flags(self) -> tuple[int, ...] | None:
        return self.tlvs.get("query_flags")  # type: ignore[no-any-return]


@message(type=262)
@dataclass(frozen=True, slots=True)
class ReplyShortChannelIdsEnd(Message):
    """Ends the reply to a query_short_channel_ids (``full_information``: 1 when the sender keeps that chain)."""

    FIELDS = (("chain_hash", chain_hash), ("full_information", byte))
    chain_hash: bytes
    full_information: int


@message(type=263, tlvs=QUERY_CHANNEL_RANGE_TLVS)
@dataclass(frozen=True, slots=True)
class QueryChannelRange(Message):
    """Asks for the channel ids of blocks ``first_blocknum`` .. ``+ number_of_blocks``."""

    FIELDS = (("chain_hash", chain_hash), ("first_blocknum", u32), ("number_of_blocks", u32))
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    tlvs: TlvStream = EMPTY_TLV_STREAM

    @property
    def query_option(self) -> int:
        return self.tlvs.get("query_option", 0)  # type: ignore[no-any-return]

    @property
    def end_blocknum(self) -> int:
        """One past the last block asked for."""
        return self.first_blocknum + self.number_of_blocks


@message(type=264, tlvs=REPLY_CHANNEL_RANGE_TLVS)
@dataclass(frozen=True, slots=True)
class ReplyChannelRange(Message):
    """One part of the answer to a query_channel_range."""

    FIELDS = (
        ("chain_hash", chain_hash),
        ("first_blocknum", u32),
        ("number_of_blocks", u32),
        ("sync_complete", byte),
        ("short_channel_ids", encoded_short_ids),
    )
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    sync_complete: int
    short_channel_ids: tuple[ShortChannelId, ...]
    tlvs: TlvStream = EMPTY_TLV_STREAM

    @property
    def timestamps(self) -> tuple[Any, ...] | None:
        """``channel_update_timestamps`` records, one per id, when the sender gave them."""
        return self.tlvs.get("timestamps")  # type: ignore[no-any-return]

    @property
    def checksums(self) -> tuple[Any, ...] | None:
        return self.tlvs.get("checksums")  # type: ignore[no-any-return]

    @property
    def end_blocknum(self) -> int:
        return self.first_blocknum + self.number_of_blocks


@message(type=265)
@dataclass(frozen=True, slots=True)
class GossipTimestampFilter(Message):
    """Asks for gossip with ``first_timestamp <= timestamp < first_timestamp + timestamp_range``."""

    FIELDS = (("chain_hash", chain_hash), ("first_timestamp", u32), ("timestamp_range", u32))
    chain_hash: bytes
    first_timestamp: int
    timestamp_range: int

    def matches(self, timestamp: int) -> bool:
        return self.first_timestamp <= timestamp < self.first_timestamp + self.timestamp_range


#: Every BOLT-7 message class, by type.
GOSSIP_MESSAGES: tuple[type[Message], ...] = (
    ChannelAnnouncement,
    NodeAnnouncement,
    ChannelUpdate,
    AnnouncementSignatures,
    QueryShortChannelIds,
    ReplyShortChannelIdsEnd,
    QueryChannelRange,
    ReplyChannelRange,
    GossipTimestampFilter,
)


def register_gossip_messages(registry: MessageRegistry) -> MessageRegistry:
    """Add the BOLT-7 messages to ``registry`` (e.g. ``node.registry``) and return it."""
    for cls in GOSSIP_MESSAGES:
        registry.register(cls)
    return registry

