"""The BOLT-2 messages of interactive transaction construction and channel establishment v2.

``tx_add_input`` .. ``tx_abort`` (types 66-74) and ``open_channel2`` /
``accept_channel2`` (64/65), declared field for field as ``csv/peer_wire.csv``
has them (``tests/test_channels_messages_v2.py`` compares the two). They
live apart from :mod:`.messages` so that a node which does not speak
``option_dual_fund`` registers none of them: :func:`register_dual_fund_messages`
adds them to a registry.

``require_confirmed_inputs`` is an empty TLV record: present or absent is
its whole value, so it is declared as a record of no fields (its value is
``()`` when present).
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.wire import EMPTY_TLV_STREAM, Message, MessageRegistry, TlvSchema, TlvStream, message
from lnpmsg.wire.fields import (
    array_of,
    byte,
    chain_hash,
    channel_id,
    point,
    record,
    rest_bytes,
    s64,
    sha256,
    signature,
    u16,
    u16_prefixed_bytes,
    u32,
    u64,
)

__all__ = [
    "DUAL_FUND_MESSAGES",
    "AcceptChannel2",
    "OpenChannel2",
    "TxAbort",
    "TxAckRbf",
    "TxAddInput",
    "TxAddOutput",
    "TxComplete",
    "TxInitRbf",
    "TxRemoveInput",
    "TxRemoveOutput",
    "TxSignatures",
    "register_dual_fund_messages",
]

_REQUIRE_CONFIRMED_INPUTS = record("require_confirmed_inputs")

TX_ADD_INPUT_TLVS = TlvSchema({0: ("shared_input_txid", sha256)}, name="tx_add_input_tlvs")
TX_SIGNATURES_TLVS = TlvSchema({0: ("shared_input_signature", signature)}, name="tx_signatures_tlvs")
TX_INIT_RBF_TLVS = TlvSchema(
    {0: ("funding_output_contribution", s64), 2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS)},
    name="tx_init_rbf_tlvs",
)
TX_ACK_RBF_TLVS = TlvSchema(
    {0: ("funding_output_contribution", s64), 2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS)},
    name="tx_ack_rbf_tlvs",
)
OPENING_TLVS = TlvSchema(
    {
        0: ("upfront_shutdown_script", rest_bytes),
        1: ("channel_type", rest_bytes),
        2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS),
    },
    name="opening_tlvs",
)
ACCEPT_TLVS = TlvSchema(
    {
        0: ("upfront_shutdown_script", rest_bytes),
        1: ("channel_type", rest_bytes),
        2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS),
    },
    name="accept_tlvs",
)

#: The ``witness`` subtype of ``tx_signatures``: one input's witness in Bitcoin's
#: serialization (a CompactSize count of CompactSize-prefixed items).
WITNESS = record("witness", ("witness_data", u16_prefixed_bytes))

_BASEPOINTS_V2 = (
    ("funding_pubkey", point),
    ("revocation_basepoint", point),
    ("payment_basepoint", point),
    ("delayed_payment_basepoint", point),
    ("htlc_basepoint", point),
    ("first_per_commitment_point", point),
    ("second_per_commitment_point", point),
)


@message(type=66, tlvs=TX_ADD_INPUT_TLVS)
@dataclass(frozen=True, slots=True)
class TxAddInput(Message):
    """One input offered to the transaction, with the whole transaction it spends from."""

    FIELDS = (
        ("channel_id", channel_id),
        ("serial_id", u64),
        ("prevtx", u16_prefixed_bytes),
        ("prevtx_vout", u32),
        ("sequence", u32),
    )
    channel_id: bytes
    serial_id: int
    prevtx: bytes
    prevtx_vout: int
    sequence: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=67)
@dataclass(frozen=True, slots=True)
class TxAddOutput(Message):
    """One output offered to the transaction."""

    FIELDS = (
        ("channel_id", channel_id),
        ("serial_id", u64),
        ("sats", u64),
        ("script", u16_prefixed_bytes),
    )
    channel_id: bytes
    serial_id: int
    sats: int
    script: bytes


@message(type=68)
@dataclass(frozen=True, slots=True)
class TxRemoveInput(Message):
    """Withdraw an input the sender added."""

    FIELDS = (("channel_id", channel_id), ("serial_id", u64))
    channel_id: bytes
    serial_id: int


@message(type=69)
@dataclass(frozen=True, slots=True)
class TxRemoveOutput(Message):
    """Withdraw an output the sender added."""

    FIELDS = (("channel_id", channel_id), ("serial_id", u64))
    channel_id: bytes
    serial_id: int


@message(type=70)
@dataclass(frozen=True, slots=True)
class TxComplete(Message):
    """The sender has nothing more to add; two in a row end the construction."""

    FIELDS = (("channel_id", channel_id),)
    channel_id: bytes


@message(type=71, tlvs=TX_SIGNATURES_TLVS)
@dataclass(frozen=True, slots=True)
class TxSignatures(Message):
    """The witnesses of the sender's inputs, in ``serial_id`` order."""

    FIELDS = (
        ("channel_id", channel_id),
        ("txid", sha256),
        ("witnesses", array_of(WITNESS, u16)),
    )
    channel_id: bytes
    txid: bytes
    witnesses: tuple
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=72, tlvs=TX_INIT_RBF_TLVS)
@dataclass(frozen=True, slots=True)
class TxInitRbf(Message):
    """Propose replacing a completed transaction at a higher feerate."""

    FIELDS = (("channel_id", channel_id), ("locktime", u32), ("feerate", u32))
    channel_id: bytes
    locktime: int
    feerate: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=73, tlvs=TX_ACK_RBF_TLVS)
@dataclass(frozen=True, slots=True)
class TxAckRbf(Message):
    """Accept a replacement."""

    FIELDS = (("channel_id", channel_id),)
    channel_id: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=74)
@dataclass(frozen=True, slots=True)
class TxAbort(Message):
    """Cancel the negotiation (not the channel: that is ``error``)."""

    FIELDS = (("channel_id", channel_id), ("data", u16_prefixed_bytes))
    channel_id: bytes
    data: bytes


@message(type=64, tlvs=OPENING_TLVS)
@dataclass(frozen=True, slots=True)
class OpenChannel2(Message):
    """The initiator proposes a dual-funded channel: feerates, its share, limits, keys."""

    FIELDS = (
        ("chain_hash", chain_hash),
        ("temporary_channel_id", channel_id),
        ("funding_feerate_perkw", u32),
        ("commitment_feerate_perkw", u32),
        ("funding_satoshis", u64),
        ("dust_limit_satoshis", u64),
        ("max_htlc_value_in_flight_msat", u64),
        ("htlc_minimum_msat", u64),
        ("to_self_delay", u16),
        ("max_accepted_htlcs", u16),
        ("locktime", u32),
        *_BASEPOINTS_V2,
        ("channel_flags", byte),
    )
    chain_hash: bytes
    temporary_channel_id: bytes
    funding_feerate_perkw: int
    commitment_feerate_perkw: int
    funding_satoshis: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    htlc_minimum_msat: int
    to_self_delay: int
    max_accepted_htlcs: int
    locktime: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    second_per_commitment_point: bytes
    channel_flags: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=65, tlvs=ACCEPT_TLVS)
@dataclass(frozen=True, slots=True)
class AcceptChannel2(Message):
    """The accepter's share (possibly zero), limits, depth and keys."""

    FIELDS = (
        ("temporary_channel_id", channel_id),
        ("funding_satoshis", u64),
        ("dust_limit_satoshis", u64),
        ("max_htlc_value_in_flight_msat", u64),
        ("htlc_minimum_msat", u64),
        ("minimum_depth", u32),
        ("to_self_delay", u16),
        ("max_accepted_htlcs", u16),
        *_BASEPOINTS_V2,
    )
    temporary_channel_id: bytes
    funding_satoshis: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
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
    second_per_commitment_point: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


DUAL_FUND_MESSAGES: tuple[type[Message], ...] = (
    TxAddInput,
    TxAddOutput,
    TxRemoveInput,
    TxRemoveOutput,
    TxComplete,
    TxSignatures,
    TxInitRbf,
    TxAckRbf,
    TxAbort,
    OpenChannel2,
    AcceptChannel2,
)


def register_dual_fund_messages(registry: MessageRegistry) -> MessageRegistry:
    """Add the interactive-tx and v2 establishment messages to ``registry`` and return it."""
    for cls in DUAL_FUND_MESSAGES:
        registry.register(cls)
    return registry
