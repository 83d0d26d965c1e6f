"""The BOLT-2 splicing messages: ``splice_init`` (80), ``splice_ack`` (81), ``splice_locked`` (77),
and ``start_batch`` (127), which announces the ``commitment_signed`` of every pending funding.

Declared field for field as ``csv/peer_wire.csv`` has them
(``tests/test_channels_messages_splice.py`` compares the two). Splicing
itself: :mod:`.splice` (the core) and :mod:`.splice_side` (the app). The
interactive-tx messages a splice also uses (``tx_add_input`` with
``shared_input_txid``, ``tx_signatures`` with ``shared_input_signature``) are
in :mod:`.messages_v2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.wire import EMPTY_TLV_STREAM, Message, MessageRegistry, TlvSchema, TlvStream, message
from lnpmsg.wire.fields import channel_id, point, record, s64, sha256, u16, u32

__all__ = ["SPLICE_MESSAGES", "SPLICING_MESSAGES", "SpliceAck", "SpliceInit", "SpliceLocked", "StartBatch", "register_splice_messages"]

#: an empty record: present or absent is its whole value (as in :mod:`.messages_v2`)
_REQUIRE_CONFIRMED_INPUTS = record("require_confirmed_inputs")

SPLICE_INIT_TLVS = TlvSchema({2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS)}, name="splice_init_tlvs")
SPLICE_ACK_TLVS = TlvSchema({2: ("require_confirmed_inputs", _REQUIRE_CONFIRMED_INPUTS)}, name="splice_ack_tlvs")


@message(type=80, tlvs=SPLICE_INIT_TLVS)
@dataclass(frozen=True, slots=True)
class SpliceInit(Message):
    """The quiescence initiator proposes a splice: what it adds (or, negative, takes out), the
    splice transaction's feerate and locktime, the funding key of the new funding output."""

    FIELDS = (
        ("channel_id", channel_id),
        ("funding_contribution_satoshis", s64),
        ("funding_feerate_perkw", u32),
        ("locktime", u32),
        ("funding_pubkey", point),
    )
    channel_id: bytes
    funding_contribution_satoshis: int
    funding_feerate_perkw: int
    locktime: int
    funding_pubkey: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=81, tlvs=SPLICE_ACK_TLVS)
@dataclass(frozen=True, slots=True)
class SpliceAck(Message):
    """The peer accepts the splice: its own contribution (possibly 0) and new funding key."""

    FIELDS = (("channel_id", channel_id), ("funding_contribution_satoshis", s64), ("funding_pubkey", point))
    channel_id: bytes
    funding_contribution_satoshis: int
    funding_pubkey: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=77)
@dataclass(frozen=True, slots=True)
class SpliceLocked(Message):
    """The sender considers the splice transaction ``splice_txid`` deep enough to use."""

    FIELDS = (("channel_id", channel_id), ("splice_txid", sha256))
    channel_id: bytes
    splice_txid: bytes


START_BATCH_TLVS = TlvSchema({1: ("message_type", u16)}, name="start_batch_tlvs")


@message(type=127, tlvs=START_BATCH_TLVS)
@dataclass(frozen=True, slots=True)
class StartBatch(Message):
    """The next ``batch_size`` messages of the channel (``commitment_signed``, ``message_type`` 132)
    are one: a commitment for each pending funding."""

    FIELDS = (("channel_id", channel_id), ("batch_size", u16))
    channel_id: bytes
    batch_size: int
    tlvs: TlvStream = EMPTY_TLV_STREAM


SPLICE_MESSAGES: tuple[type[Message], ...] = (SpliceInit, SpliceAck, SpliceLocked)
#: the splicing messages and start_batch
SPLICING_MESSAGES: tuple[type[Message], ...] = (*SPLICE_MESSAGES, StartBatch)


def register_splice_messages(registry: MessageRegistry) -> MessageRegistry:
    """Add the splicing messages (and start_batch) to ``registry`` and return it."""
    for cls in SPLICING_MESSAGES:
        registry.register(cls)
    return registry
