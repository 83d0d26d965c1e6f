"""The BOLT-2 messages (channel establishment v1, normal operation, reestablish, close).

Declared with :mod:`lnpmsg.wire`'s ``@message`` mechanism, field for field as
``csv/peer_wire.csv`` has them (``tests/test_channels_messages.py`` compares
the two). ``update_add_htlc`` carries its 1366-byte onion opaquely: the
payment layer decodes it. TLV streams follow 02-peer-protocol.md, including
the records the csv leaves out (``update_add_htlc_tlvs`` and
``channel_reestablish_tlvs`` are there without their message line; the
``attribution_data`` of fulfil/fail is only in the markdown).

Nothing is registered by importing this module: add the messages to a
registry with :func:`register_channel_messages` (the channel app owns them).
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.wire import (
    EMPTY_TLV_STREAM,
    Features,
    Message,
    MessageRegistry,
    TlvSchema,
    TlvStream,
    message,
)
from lnpmsg.wire.fields import (
    array_of,
    byte,
    chain_hash,
    channel_id,
    fixed_bytes,
    point,
    record,
    rest_bytes,
    sha256,
    short_channel_id,
    signature,
    u16,
    u16_prefixed_bytes,
    u32,
    u64,
)

__all__ = [
    "CHANNEL_MESSAGES",
    "ONION_PACKET_SIZE",
    "AcceptChannel",
    "ChannelReady",
    "ChannelReestablish",
    "ClosingComplete",
    "ClosingSig",
    "ClosingSigned",
    "CommitmentSigned",
    "FundingCreated",
    "FundingSigned",
    "OpenChannel",
    "RevokeAndAck",
    "Shutdown",
    "Stfu",
    "UpdateAddHtlc",
    "UpdateFailHtlc",
    "UpdateFailMalformedHtlc",
    "UpdateFee",
    "UpdateFulfillHtlc",
    "channel_type_features",
    "register_channel_messages",
]

#: ``onion_routing_packet`` is always 1366 bytes (BOLT 4: version, key, 1300-byte payload, HMAC).
ONION_PACKET_SIZE = 1366
#: ``channel_flags`` bit 0: announce the channel.
CHANNEL_FLAG_ANNOUNCE = 1

OPEN_CHANNEL_TLVS = TlvSchema(
    {0: ("upfront_shutdown_script", rest_bytes), 1: ("channel_type", rest_bytes)}, name="open_channel_tlvs"
)
ACCEPT_CHANNEL_TLVS = TlvSchema(
    {0: ("upfront_shutdown_script", rest_bytes), 1: ("channel_type", rest_bytes)}, name="accept_channel_tlvs"
)
CHANNEL_READY_TLVS = TlvSchema({1: ("short_channel_id", short_channel_id)}, name="channel_ready_tlvs")
CLOSING_SIGNED_TLVS = TlvSchema(
    {1: ("fee_range", record("fee_range", ("min_fee_satoshis", u64), ("max_fee_satoshis", u64)))},
    name="closing_signed_tlvs",
)
CLOSING_TLVS = TlvSchema(
    {
        1: ("closer_output_only", signature),
        2: ("closee_output_only", signature),
        3: ("closer_and_closee_outputs", signature),
    },
    name="closing_tlvs",
)
UPDATE_ADD_HTLC_TLVS = TlvSchema({0: ("blinded_path", point)}, name="update_add_htlc_tlvs")
_ATTRIBUTION_DATA = record(
    "attribution_data", ("htlc_hold_times", array_of(u32, 20)), ("truncated_hmacs", fixed_bytes(210 * 4))
)
UPDATE_FULFILL_HTLC_TLVS = TlvSchema({1: ("attribution_data", _ATTRIBUTION_DATA)}, name="update_fulfill_htlc_tlvs")
UPDATE_FAIL_HTLC_TLVS = TlvSchema({1: ("attribution_data", _ATTRIBUTION_DATA)}, name="update_fail_htlc_tlvs")
COMMITMENT_SIGNED_TLVS = TlvSchema({1: ("funding_txid", sha256)}, name="commitment_signed_tlvs")
CHANNEL_REESTABLISH_TLVS = TlvSchema(
    {
        1: ("next_funding", record("next_funding", ("next_funding_txid", sha256), ("retransmit_flags", byte))),
        5: (
            "my_current_funding_locked",
            record("my_current_funding_locked", ("my_current_funding_locked_txid", sha256), ("retransmit_flags", byte)),
        ),
    },
    name="channel_reestablish_tlvs",
)

_BASEPOINTS = (
    ("funding_pubkey", point),
    ("revocation_basepoint", point),
    ("payment_basepoint", point),
    ("delayed_payment_basepoint", point),
    ("htlc_basepoint", point),
    ("first_per_commitment_point", point),
)


def channel_type_features(tlvs: TlvStream) -> Features | None:
    """The ``channel_type`` TLV of open/accept_channel as features, or None when absent."""
    raw = tlvs.get("channel_type")
    return None if raw is None else Features.from_bytes(raw)


@message(type=32, tlvs=OPEN_CHANNEL_TLVS)
@dataclass(frozen=True, slots=True)
class OpenChannel(Message):
    """The funder proposes a channel: amounts, its limits, its keys."""

    FIELDS = (
        ("chain_hash", chain_hash),
        ("temporary_channel_id", fixed_bytes(32)),
        ("funding_satoshis", u64),
        ("push_msat", u64),
        ("dust_limit_satoshis", u64),
        ("max_htlc_value_in_flight_msat", u64),
        ("channel_reserve_satoshis", u64),
        ("htlc_minimum_msat", u64),
        ("feerate_per_kw", u32),
        ("to_self_delay", u16),
        ("max_accepted_htlcs", u16),
        *_BASEPOINTS,
        ("channel_flags", byte),
    )
    chain_hash: bytes
    temporary_channel_id: bytes
    funding_satoshis: int
    push_msat: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_satoshis: int
    htlc_minimum_msat: int
    feerate_per_kw: int
    to_self_delay: int
    max_accepted_htlcs: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    channel_flags: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=33, tlvs=ACCEPT_CHANNEL_TLVS)
@dataclass(frozen=True, slots=True)
class AcceptChannel(Message):
    """The fundee accepts: its limits, its keys, the depth it waits for."""

    FIELDS = (
        ("temporary_channel_id", fixed_bytes(32)),
        ("dust_limit_satoshis", u64),
        ("max_htlc_value_in_flight_msat", u64),
        ("channel_reserve_satoshis", u64),
        ("htlc_minimum_msat", u64),
        ("minimum_depth", u32),
        ("to_self_delay", u16),
        ("max_accepted_htlcs", u16),
        *_BASEPOINTS,
    )
    temporary_channel_id: bytes
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_satoshis: int
    htlc_minimum_msat: int
    minimum_depth: int
    to_self_delay: int
    max_accepted_htlcs: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=34)
@dataclass(frozen=True, slots=True)
class FundingCreated(Message):
    """The funder names the funding outpoint and signs the fundee's first commitment."""

    FIELDS = (
        ("temporary_channel_id", fixed_bytes(32)),
        ("funding_txid", sha256),
        ("funding_output_index", u16),
        ("signature", signature),
    )
    temporary_channel_id: bytes
    funding_txid: bytes
    funding_output_index: int
    signature: bytes


@message(type=35)
@dataclass(frozen=True, slots=True)
class FundingSigned(Message):
    """The fundee signs the funder's first commitment (the funder may now broadcast)."""

    FIELDS = (("channel_id", channel_id), ("signature", signature))
    channel_id: bytes
    signature: bytes


@message(type=36, tlvs=CHANNEL_READY_TLVS)
@dataclass(frozen=True, slots=True)
class ChannelReady(Message):
    """The funding transaction is deep enough; here is my second per-commitment point."""

    FIELDS = (("channel_id", channel_id), ("second_per_commitment_point", point))
    channel_id: bytes
    second_per_commitment_point: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=38)
@dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """Begin closing: no new HTLCs; pay me to ``scriptpubkey``."""

    FIELDS = (("channel_id", channel_id), ("scriptpubkey", u16_prefixed_bytes))
    channel_id: bytes
    scriptpubkey: bytes


@message(type=39, tlvs=CLOSING_SIGNED_TLVS)
@dataclass(frozen=True, slots=True)
class ClosingSigned(Message):
    """A closing fee proposal with my signature of the closing transaction at that fee."""

    FIELDS = (("channel_id", channel_id), ("fee_satoshis", u64), ("signature", signature))
    channel_id: bytes
    fee_satoshis: int
    signature: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=40, tlvs=CLOSING_TLVS)
@dataclass(frozen=True, slots=True)
class ClosingComplete(Message):
    """option_simple_close: the closer's transaction, paying ``fee_satoshis`` itself, signed."""

    FIELDS = (
        ("channel_id", channel_id),
        ("closer_scriptpubkey", u16_prefixed_bytes),
        ("closee_scriptpubkey", u16_prefixed_bytes),
        ("fee_satoshis", u64),
        ("locktime", u32),
    )
    channel_id: bytes
    closer_scriptpubkey: bytes
    closee_scriptpubkey: bytes
    fee_satoshis: int
    locktime: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=41, tlvs=CLOSING_TLVS)
@dataclass(frozen=True, slots=True)
class ClosingSig(Message):
    """option_simple_close: the closee's signature of one of the closer's variants."""

    FIELDS = (
        ("channel_id", channel_id),
        ("closer_scriptpubkey", u16_prefixed_bytes),
        ("closee_scriptpubkey", u16_prefixed_bytes),
        ("fee_satoshis", u64),
        ("locktime", u32),
    )
    channel_id: bytes
    closer_scriptpubkey: bytes
    closee_scriptpubkey: bytes
    fee_satoshis: int
    locktime: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=128, tlvs=UPDATE_ADD_HTLC_TLVS)
@dataclass(frozen=True, slots=True)
class UpdateAddHtlc(Message):
    """Offer an HTLC; the onion is carried as its 1366 opaque bytes."""

    FIELDS = (
        ("channel_id", channel_id),
        ("id", u64),
        ("amount_msat", u64),
        ("payment_hash", sha256),
        ("cltv_expiry", u32),
        ("onion_routing_packet", fixed_bytes(ONION_PACKET_SIZE)),
    )
    channel_id: bytes
    id: int
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int
    onion_routing_packet: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=130, tlvs=UPDATE_FULFILL_HTLC_TLVS)
@dataclass(frozen=True, slots=True)
class UpdateFulfillHtlc(Message):
    """Settle an HTLC with its preimage."""

    FIELDS = (("channel_id", channel_id), ("id", u64), ("payment_preimage", fixed_bytes(32)))
    channel_id: bytes
    id: int
    payment_preimage: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=131, tlvs=UPDATE_FAIL_HTLC_TLVS)
@dataclass(frozen=True, slots=True)
class UpdateFailHtlc(Message):
    """Fail an HTLC; ``reason`` is the encrypted BOLT-4 failure, opaque here."""

    FIELDS = (("channel_id", channel_id), ("id", u64), ("reason", u16_prefixed_bytes))
    channel_id: bytes
    id: int
    reason: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=135)
@dataclass(frozen=True, slots=True)
class UpdateFailMalformedHtlc(Message):
    """Fail an HTLC whose onion we could not parse (``failure_code`` has the BADONION bit)."""

    FIELDS = (("channel_id", channel_id), ("id", u64), ("sha256_of_onion", sha256), ("failure_code", u16))
    channel_id: bytes
    id: int
    sha256_of_onion: bytes
    failure_code: int


@message(type=132, tlvs=COMMITMENT_SIGNED_TLVS)
@dataclass(frozen=True, slots=True)
class CommitmentSigned(Message):
    """My signature of your next commitment, and of each of its HTLC transactions (output order)."""

    FIELDS = (("channel_id", channel_id), ("signature", signature), ("htlc_signature", array_of(signature, u16)))
    channel_id: bytes
    signature: bytes
    htlc_signature: tuple[bytes, ...] = ()
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=133)
@dataclass(frozen=True, slots=True)
class RevokeAndAck(Message):
    """Revoke my previous commitment (its secret) and give the point after my current one."""

    FIELDS = (
        ("channel_id", channel_id),
        ("per_commitment_secret", fixed_bytes(32)),
        ("next_per_commitment_point", point),
    )
    channel_id: bytes
    per_commitment_secret: bytes
    next_per_commitment_point: bytes


@message(type=134)
@dataclass(frozen=True, slots=True)
class UpdateFee(Message):
    """The funder changes the commitment feerate."""

    FIELDS = (("channel_id", channel_id), ("feerate_per_kw", u32))
    channel_id: bytes
    feerate_per_kw: int


@message(type=136, tlvs=CHANNEL_REESTABLISH_TLVS)
@dataclass(frozen=True, slots=True)
class ChannelReestablish(Message):
    """After a reconnection: where each side's commitments stand, with data-loss-protect proof."""

    FIELDS = (
        ("channel_id", channel_id),
        ("next_commitment_number", u64),
        ("next_revocation_number", u64),
        ("your_last_per_commitment_secret", fixed_bytes(32)),
        ("my_current_per_commitment_point", point),
    )
    channel_id: bytes
    next_commitment_number: int
    next_revocation_number: int
    your_last_per_commitment_secret: bytes
    my_current_per_commitment_point: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=2)
@dataclass(frozen=True, slots=True)
class Stfu(Message):
    """Quiescence ("SomeThing Fundamental is Underway"): the sender sends no more updates;
    ``initiator`` is 1 unless it answers the peer's ``stfu``."""

    FIELDS = (("channel_id", channel_id), ("initiator", byte))
    channel_id: bytes
    initiator: int


CHANNEL_MESSAGES: tuple[type[Message], ...] = (
    OpenChannel,
    AcceptChannel,
    FundingCreated,
    FundingSigned,
    ChannelReady,
    Shutdown,
    ClosingSigned,
    ClosingComplete,
    ClosingSig,
    UpdateAddHtlc,
    UpdateFulfillHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    CommitmentSigned,
    RevokeAndAck,
    UpdateFee,
    ChannelReestablish,
    Stfu,
)


def register_channel_messages(registry: MessageRegistry) -> MessageRegistry:
    """Add the BOLT-2 messages to ``registry`` and return it."""
    for cls in CHANNEL_MESSAGES:
        registry.register(cls)
    return registry
