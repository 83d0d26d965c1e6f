"""BOLT-2 messages: declarations against csv/peer_wire.csv (parsed, not retyped),
round trips, the csv's own codec agreeing with ours, and fuzzed payloads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import peer_wire
from wire_strategies import messages

from lnpmsg.channels.messages import (
    CHANNEL_MESSAGES,
    ONION_PACKET_SIZE,
    ClosingSigned,
    CommitmentSigned,
    OpenChannel,
    UpdateAddHtlc,
    channel_type_features,
    register_channel_messages,
)
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    Features,
    MessageRegistry,
    TlvSchema,
    TlvStream,
    WireError,
)
from lnpmsg.wire import fields as F
from lnpmsg.wire.fields import Field

CSV = peer_wire()


def by_csv_name(declared: Any) -> dict[str, Any]:
    """Each declared message class by the name the csv gives its type."""
    return {name: cls for cls in declared for name, t in CSV.message_types.items() if t == cls.TYPE}


BY_NAME = by_csv_name(CHANNEL_MESSAGES)
# The csv lists these streams without the message line that would attach them.
DETACHED_TLVS = {"update_add_htlc": "update_add_htlc_tlvs", "channel_reestablish": "channel_reestablish_tlvs"}
REGISTRY = register_channel_messages(DEFAULT_REGISTRY.copy())


def same_field(ours: Field, theirs: Field) -> bool:
    """Whether two field types read and write the same bytes (structurally)."""
    if ours is theirs:
        return True
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, F.IntField | F.Point | F.ShortChannelIdField):
        return ours.fmt == theirs.fmt
    if isinstance(ours, F.FixedBytes):
        return ours.size == theirs.size
    if isinstance(ours, F.PrefixedBytes):
        return ours.prefix is theirs.prefix  # type: ignore[attr-defined]
    if isinstance(ours, F.ArrayOf):
        count, other = ours.count, theirs.count  # type: ignore[attr-defined]
        same_count = count == other if isinstance(count, int) else (count is other or same_field(count, other))  # type: ignore[arg-type]
        return same_count and same_field(ours.element, theirs.element)  # type: ignore[attr-defined]
    if isinstance(ours, F.RecordField):
        pairs = list(zip(ours.fields, theirs.fields, strict=False))  # type: ignore[attr-defined]
        return len(ours.fields) == len(theirs.fields) and all(  # type: ignore[attr-defined]
            a[0] == b[0] and same_field(a[1], b[1]) for a, b in pairs
        )
    return isinstance(ours, F.RestBytes)


def same_schema(ours: TlvSchema, theirs: TlvSchema) -> None:
    for tlv_type, (name, field) in theirs.records.items():
        assert tlv_type in ours.records, f"{ours.name} lacks the csv record {tlv_type} ({name})"
        our_name, our_field = ours.records[tlv_type]
        assert our_name == name
        assert same_field(our_field, field), f"{ours.name}.{name}: {our_field!r} vs csv {field!r}"


def test_every_bolt2_message_is_declared() -> None:
    wanted = {
        "open_channel", "accept_channel", "funding_created", "funding_signed", "channel_ready",
        "shutdown", "closing_signed", "closing_complete", "closing_sig", "update_add_htlc",
        "update_fulfill_htlc", "update_fail_htlc", "update_fail_malformed_htlc",
        "commitment_signed", "revoke_and_ack", "update_fee", "channel_reestablish", "stfu",
    }  # fmt: skip
    assert set(BY_NAME) == wanted
    assert len(CHANNEL_MESSAGES) == len(wanted)


def assert_fields_as_in_csv(cls: Any, name: str) -> Any:
    """``cls`` has the csv's type number and fields (names and codecs, in order); the csv's TLV schema."""
    msg_type, fields, schema = CSV.message_declaration(name)
    assert cls.TYPE == msg_type
    assert [n for n, _ in cls.FIELDS] == [n for n, _ in fields]
    for (field_name, ours), (_, theirs) in zip(cls.FIELDS, fields, strict=True):
        assert same_field(ours, theirs), f"{name}.{field_name}: {ours!r} vs csv {theirs!r}"
    return schema


def assert_declared_as_in_csv(cls: Any, name: str, registry: MessageRegistry) -> None:
    """Fields and TLV stream as the csv declares them (records: nothing beyond the csv), and
    the class registered for its type (for message sets whose streams the csv attaches)."""
    schema = assert_fields_as_in_csv(cls, name)
    if schema is None:
        assert cls.TLVS is None
    else:
        assert cls.TLVS is not None
        same_schema(cls.TLVS, schema)
        # and nothing beyond the csv (the markdown adds none to these streams)
        assert set(cls.TLVS.records) == set(schema.records)
    assert registry.get(cls.TYPE) is cls


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_fields_match_the_csv(name: str) -> None:
    cls = BY_NAME[name]
    schema = assert_fields_as_in_csv(cls, name)
    if name in DETACHED_TLVS:
        schema = CSV.tlv_schema(DETACHED_TLVS[name])
    if schema is None:
        assert cls.TLVS is None or not CSV.tlv_records.get(f"{name}_tlvs")
    else:
        assert cls.TLVS is not None
        same_schema(cls.TLVS, schema)
    assert REGISTRY.get(cls.TYPE) is cls


@pytest.mark.parametrize("name", sorted(BY_NAME))
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_round_trip_and_csv_codec_agree(name: str, data: st.DataObject) -> None:
    msg = data.draw(messages(BY_NAME[name]))
    assert_round_trips(msg, REGISTRY)
    assert_csv_codec_agrees(msg, CSV.message_class(name), field_values(msg))


def assert_round_trips(msg: Any, registry: MessageRegistry) -> None:
    """``msg`` decodes from its encoding to itself, and that encodes again to the same bytes."""
    encoded = msg.encode()
    assert registry.decode(encoded) == msg
    assert registry.decode(encoded).encode() == encoded


def field_values(msg: Any) -> dict[str, Any]:
    """``msg``'s fields by name (what the csv's declaration of the message is built from)."""
    return {n: getattr(msg, n) for n, _ in type(msg).FIELDS}


def assert_csv_codec_agrees(msg: Any, from_csv: Any, values: dict[str, Any]) -> None:
    """The csv's own declaration (``from_csv``) writes ``msg``'s bytes from the same field ``values``
    (in the csv's shapes) and TLV records."""
    encoded, tlvs = msg.encode(), type(msg).TLVS
    if from_csv.TLVS is None:
        assert from_csv(**values).encode() + (b"" if tlvs is None else tlvs.encode(msg.tlvs)) == encoded
    else:
        stream = TlvStream(dict(msg.tlvs), unknown=msg.tlvs.unknown)
        assert from_csv(**values, tlvs=_retype(stream, from_csv.TLVS)).encode() == encoded


def _retype(stream: TlvStream, schema: TlvSchema | None) -> TlvStream:
    """Our record values in the csv schema's shapes (records become the csv's namedtuples)."""
    assert schema is not None
    out = {}
    for name, value in stream.items():
        field = schema.records[schema.types[name]][1]
        out[name] = field.type._make(value) if isinstance(field, F.RecordField) else value
    return TlvStream(out, unknown=stream.unknown)


@pytest.mark.parametrize("cls", CHANNEL_MESSAGES, ids=lambda c: c.__name__)
@settings(deadline=None, max_examples=40)
@given(garbage=st.binary(max_size=1600))
def test_garbage_payloads_fail_cleanly_or_round_trip(cls: type, garbage: bytes) -> None:
    assert_garbage_fails_cleanly_or_round_trips(cls, garbage)


def assert_garbage_fails_cleanly_or_round_trips(cls: Any, garbage: bytes) -> None:
    """A payload of ``cls`` either fails with WireError or decodes to a message that encodes it again."""
    try:
        decoded = cls.decode_payload(garbage)
    except WireError:
        return
    if cls.TLVS is None:
        # BOLT 1: a message without a TLV extension ignores what follows its fields
        assert garbage.startswith(decoded.encode()[2:])
    else:
        assert decoded.encode()[2:] == garbage


def test_onion_is_exactly_1366_bytes() -> None:
    base = {"channel_id": bytes(32), "id": 0, "amount_msat": 1, "payment_hash": bytes(32), "cltv_expiry": 1}
    add = UpdateAddHtlc(**base, onion_routing_packet=bytes(ONION_PACKET_SIZE))
    assert len(add.encode()) == 2 + 32 + 8 + 8 + 32 + 4 + 1366
    with pytest.raises(WireError):
        UpdateAddHtlc(**base, onion_routing_packet=bytes(1365))
    with pytest.raises(WireError):
        UpdateAddHtlc.decode(add.encode()[:-1])


def test_closing_signed_fee_range_and_channel_type() -> None:
    msg = ClosingSigned(
        channel_id=bytes(32), fee_satoshis=500, signature=bytes(64),
        tlvs=ClosingSigned.tlv_stream(fee_range={"min_fee_satoshis": 250, "max_fee_satoshis": 900}),
    )  # fmt: skip
    raw = msg.encode()
    assert raw.endswith(bytes.fromhex("0110") + (250).to_bytes(8, "big") + (900).to_bytes(8, "big"))
    assert ClosingSigned.decode(raw).tlvs["fee_range"].max_fee_satoshis == 900
    features = Features.from_bits([12, 22])
    stream = OpenChannel.tlv_stream(channel_type=features.to_bytes())
    assert channel_type_features(stream) == features
    assert channel_type_features(OpenChannel.tlv_stream()) is None


def test_commitment_signed_counts_its_htlc_signatures() -> None:
    msg = CommitmentSigned(channel_id=bytes(32), signature=bytes(64), htlc_signature=[b"\x01" * 64, b"\x02" * 64])
    raw = msg.encode()
    assert raw[2 + 32 + 64 : 2 + 32 + 64 + 2] == b"\x00\x02"
    with pytest.raises(WireError):
        CommitmentSigned.decode(raw[:-1])


def test_unknown_even_tlv_is_refused() -> None:
    raw = OpenChannel.TLVS.encode(TlvStream(unknown={3: b"x"}))  # type: ignore[union-attr]
    assert raw == b"\x03\x01x"
    with pytest.raises(WireError):
        OpenChannel.TLVS.decode_stream(b"\x02\x01x")  # type: ignore[union-attr]


def test_registering_twice_is_harmless_and_conflicts_are_refused() -> None:
    registry = register_channel_messages(MessageRegistry())
    register_channel_messages(registry)
    assert len(registry) == len(CHANNEL_MESSAGES)
    taken = MessageRegistry([CSV.message_class("update_fee")])
    with pytest.raises(ValueError, match="already"):
        register_channel_messages(taken)
