"""TLV streams: every vector of BOLT 1 Appendix B, in the n1 and n2 namespaces
declared from csv/peer_wire.csv, plus properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import TlvVector, peer_wire, tlv_vectors
from wire_strategies import tlv_streams

from lnpmsg.wire import (
    ShortChannelId,
    TlvSchema,
    TlvStream,
    UnknownEvenTypeError,
    WireError,
)
from lnpmsg.wire import fields as F

NAMESPACES = {name: peer_wire().tlv_schema(name) for name in ("n1", "n2")}
VECTORS = tlv_vectors()
CASES = [(ns, v) for v in VECTORS for ns in v.namespaces]


def test_vectors_and_namespaces_were_found() -> None:
    assert set(NAMESPACES["n1"].types) == {"tlv1", "tlv2", "tlv3", "tlv4"}
    assert set(NAMESPACES["n2"].types) == {"tlv1", "tlv2"}
    assert sum(v.valid for v in VECTORS) >= 19
    assert sum(not v.valid for v in VECTORS) >= 38
    assert {ns for ns, _ in CASES} == {"n1", "n2"}


def _expected_value(schema: TlvSchema, record: str, fields: dict[str, str]) -> object:
    field = schema.records[schema.types[record]][1]

    def convert(f: F.Field, text: str) -> object:
        if isinstance(f, F.ShortChannelIdField):
            return ShortChannelId.parse(text)
        if isinstance(f, F.FixedBytes):
            return bytes.fromhex(text)
        return int(text)

    if isinstance(field, F.RecordField):
        return field.type(
            **{name: convert(f, fields[name]) for name, f in field.fields}
        )
    ((_, text),) = fields.items()
    return convert(field, text)


@pytest.mark.parametrize(
    ("namespace", "vector"), CASES, ids=[f"{ns}-{v.hex or 'empty'}" for ns, v in CASES]
)
def test_vector(namespace: str, vector: TlvVector) -> None:
    schema = NAMESPACES[namespace]
    if not vector.valid:
        with pytest.raises(WireError) as info:
            schema.decode_stream(vector.data)
        if "unknown even" in vector.note:
            assert isinstance(info.value, UnknownEvenTypeError)
        if "ordering" in vector.note or "duplicate" in vector.note:
            assert "strictly increasing" in str(info.value)
        if "minimal" in vector.note:
            assert "minimal" in str(info.value) or "canonical" in str(info.value)
        return
    stream = schema.decode_stream(vector.data)
    expected = {
        name: _expected_value(schema, name, fields)
        for name, fields in vector.values.items()
    }
    assert dict(stream) == expected
    if not vector.values and vector.data:
        assert len(stream.unknown) == 1  # "ignored": kept aside, not decoded
    # Valid streams are canonical: they re-encode to the same bytes.
    assert schema.encode(stream) == vector.data


def _valid(namespace: str) -> list[TlvVector]:
    return [v for v in VECTORS if v.valid and namespace in v.namespaces]


def _last_type(schema: TlvSchema, data: bytes) -> int:
    stream = schema.decode_stream(data)
    return max([schema.types[n] for n in stream] + list(stream.unknown), default=-1)


def _first_type(schema: TlvSchema, data: bytes) -> int:
    stream = schema.decode_stream(data)
    return min(
        [schema.types[n] for n in stream] + list(stream.unknown), default=1 << 64
    )


@pytest.mark.parametrize("namespace", ["n1", "n2"])
def test_appending_valid_streams_in_order_decodes(namespace: str) -> None:
    schema = NAMESPACES[namespace]
    checked = 0
    for a, b in itertools.permutations(_valid(namespace), 2):
        if _last_type(schema, a.data) < _first_type(schema, b.data):
            joined = schema.decode_stream(a.data + b.data)
            first, second = schema.decode_stream(a.data), schema.decode_stream(b.data)
            assert dict(joined) == {**first, **second}
            assert dict(joined.unknown) == {**first.unknown, **second.unknown}
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("namespace", ["n1", "n2"])
def test_appending_an_invalid_stream_to_a_valid_one_fails(namespace: str) -> None:
    schema = NAMESPACES[namespace]
    invalid = [v for v in VECTORS if not v.valid and namespace in v.namespaces]
    for good, bad in itertools.product(_valid(namespace), invalid):
        with pytest.raises(WireError):
            schema.decode_stream(good.data + bad.data)


SCHEMA = NAMESPACES["n1"]


def test_encode_sorts_and_keeps_unknown_odd_records() -> None:
    stream = SCHEMA.stream(tlv4=550, tlv1=1, unknown={0x21: b"", 0xFD0201: b"\x2a"})
    data = SCHEMA.encode(stream)
    assert data == bytes.fromhex(
        "01 01 0121 00fd00fe 02 0226fe00fd0201 01 2a".replace(" ", "")
    )
    again = SCHEMA.decode_stream(data)
    assert again == stream
    assert dict(again.unknown) == {0x21: b"", 0xFD0201: b"\x2a"}
    assert SCHEMA.encode(again) == data


def test_stream_building_is_checked() -> None:
    with pytest.raises(WireError, match="no record named"):
        SCHEMA.stream(nope=1)
    with pytest.raises(WireError):
        SCHEMA.stream(tlv4=1 << 16)
    with pytest.raises(WireError, match="known record"):
        SCHEMA.stream(unknown={1: b"\x01"})
    with pytest.raises(WireError):
        SCHEMA.stream(unknown={33: "text"})  # type: ignore[dict-item]
    with pytest.raises(WireError):
        SCHEMA.encode(TlvStream(tlv2=5))
    assert SCHEMA.encode(TlvStream()) == b""
    assert SCHEMA.encode({"tlv1": 0}) == b"\x01\x00"


def test_tlv_stream_is_an_immutable_mapping() -> None:
    stream = TlvStream({"a": 1}, b=None, c=(1, 2), unknown={5: b"x"})
    assert dict(stream) == {"a": 1, "c": (1, 2)}
    assert "b" not in stream and stream.get("b") is None
    assert len(stream) == 2 and stream
    assert stream == TlvStream(a=1, c=(1, 2), unknown={5: b"x"})
    assert stream != TlvStream(a=1, c=(1, 2))
    assert hash(stream) == hash(TlvStream(a=1, c=(1, 2), unknown={5: b"x"}))
    with pytest.raises(TypeError):
        stream.unknown[7] = b"y"  # type: ignore[index]
    with pytest.raises(TypeError):
        stream["a"] = 2  # type: ignore[index]
    changed = stream.replace(a=None, d=4)
    assert dict(changed) == {"c": (1, 2), "d": 4} and dict(changed.unknown) == {5: b"x"}
    assert dict(stream) == {"a": 1, "c": (1, 2)}
    assert not TlvStream()
    assert "unknown" in repr(stream)


def test_schema_declaration_errors() -> None:
    with pytest.raises(ValueError):
        TlvSchema({1: ("a", F.u8), 2: ("a", F.u8)})
    with pytest.raises(ValueError):
        TlvSchema({-1: ("a", F.u8)})
    with pytest.raises(TypeError):
        TlvSchema({1: ("a", "u8")})  # type: ignore[dict-item]


def test_length_beyond_the_data_fails_before_reading_it() -> None:
    with pytest.raises(WireError, match="exceeds"):
        SCHEMA.decode_stream(bytes.fromhex("21 ff ffffffffffffffff".replace(" ", "")))


def test_nested_stream_in_a_record() -> None:
    inner = TlvSchema({1: ("x", F.tu64)}, name="inner")
    outer = TlvSchema({2: ("nested", inner), 4: ("after", F.u8)}, name="outer")
    stream = outer.stream(nested=inner.stream(x=5), after=1)
    data = outer.encode(stream)
    assert data == bytes.fromhex("02 03 01010504 01 01".replace(" ", ""))
    assert outer.decode_stream(data) == stream
    with pytest.raises(WireError):
        outer.decode_stream(bytes.fromhex("02 02 0200 04 01 01".replace(" ", "")))


@pytest.mark.parametrize("namespace", ["n1", "n2"])
@settings(deadline=None)
@given(data=st.data())
def test_round_trip(namespace: str, data: st.DataObject) -> None:
    schema = NAMESPACES[namespace]
    stream = data.draw(tlv_streams(schema))
    encoded = schema.encode(stream)
    assert schema.decode_stream(encoded) == stream


@pytest.mark.parametrize("namespace", ["n1", "n2"])
@settings(deadline=None)
@given(garbage=st.binary(max_size=120))
def test_garbage_gives_a_stream_or_wire_error(namespace: str, garbage: bytes) -> None:
    schema = NAMESPACES[namespace]
    try:
        stream = schema.decode_stream(garbage)
    except WireError:
        return
    assert schema.encode(stream) == garbage


@settings(deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=5)), max_size=6)
)
def test_structured_garbage(records: list[tuple[int, bytes]]) -> None:
    # Streams of well-formed records in any order, with any types and values:
    # either all the rules hold, or WireError.
    from lnpmsg.wire import encode_bigsize

    data = b"".join(encode_bigsize(t) + encode_bigsize(len(v)) + v for t, v in records)
    try:
        stream = SCHEMA.decode_stream(data)
    except WireError:
        types = [t for t, _ in records]
        known = set(SCHEMA.records)
        assert (
            types != sorted(set(types))
            or any(t % 2 == 0 and t not in known for t in types)
            or any(t in known for t in types)
        )
        return
    assert SCHEMA.encode(stream) == data
