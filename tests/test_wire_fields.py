"""Field types: BOLT 1's signed-integer vectors, round trips and garbage for every type."""

from __future__ import annotations

from typing import Any

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import signed_integer_vectors
from wire_strategies import values_for

from lnpmsg.wire import Reader, ShortChannelId, WireError
from lnpmsg.wire import addresses as A
from lnpmsg.wire import fields as F

SIGNED = {1: F.s8, 2: F.s16, 4: F.s32, 8: F.s64}
SMALLER = {F.s16: F.s8, F.s32: F.s16, F.s64: F.s32}

ALL_FIELDS: list[F.Field] = [
    F.u8,
    F.u16,
    F.u32,
    F.u64,
    F.s8,
    F.s16,
    F.s32,
    F.s64,
    F.tu16,
    F.tu32,
    F.tu64,
    F.bigsize,
    F.point,
    F.point_on_curve,
    F.signature,
    F.sha256,
    F.chain_hash,
    F.channel_id,
    F.short_channel_id,
    F.fixed_bytes(3),
    F.u8_prefixed_bytes,
    F.u16_prefixed_bytes,
    F.bigsize_prefixed_bytes,
    F.rest_bytes,
    F.array_of(F.chain_hash),
    F.array_of(F.u64, F.u16),
    F.array_of(F.short_channel_id, 3),
    F.array_of(F.u16_prefixed_bytes, F.bigsize),
    F.array_of(F.bigsize),
    F.record("pair", ("a", F.u32), ("b", F.u32)),
    F.record("tail", ("node_id", F.point), ("amount", F.tu64)),
    A.address,
    A.address_list,
    A.u16_address_list,
]
IDS = [f.name for f in ALL_FIELDS]


VECTORS = signed_integer_vectors()


@pytest.mark.parametrize("vector", VECTORS, ids=[str(v["value"]) for v in VECTORS])
def test_signed_integer_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bytes"])
    field = SIGNED[len(data)]
    assert field.encode(vector["value"]) == data
    assert field.decode_exact(data) == vector["value"]
    assert field.decode(Reader(data)) == vector["value"]
    # The vectors use the smallest type that holds the value: one size less must refuse it.
    if field in SMALLER:
        with pytest.raises(WireError):
            SMALLER[field].encode(vector["value"])


@pytest.mark.parametrize("field", ALL_FIELDS, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_round_trip(field: F.Field, data: st.DataObject) -> None:
    value = data.draw(values_for(field))
    encoded = field.encode(value)
    assert field.decode_exact(encoded) == value
    assert field.validate(value) == value
    if field.size is not None:
        assert len(encoded) == field.size
    if not field.greedy:
        # It reads its own bytes and stops: what follows is left alone.
        reader = Reader(encoded + b"\xee\xff")
        assert field.decode(reader) == value
        assert reader.read_rest() == b"\xee\xff"


@pytest.mark.parametrize("field", ALL_FIELDS, ids=IDS)
@settings(deadline=None)
@given(garbage=st.binary(max_size=80))
def test_garbage_gives_a_value_or_wire_error(field: F.Field, garbage: bytes) -> None:
    try:
        value = field.decode_exact(garbage)
    except WireError:
        return
    # Every decoder is strict: what it accepts is the one canonical encoding.
    assert field.encode(value) == garbage


@pytest.mark.parametrize("field", ALL_FIELDS, ids=IDS)
@pytest.mark.parametrize(
    "bad", [None, "text", 1.5, object(), -1, 2**64, [1, "x"], True]
)
def test_bad_values_raise_wire_error(field: F.Field, bad: object) -> None:
    try:
        field.encode(bad)
    except WireError:
        return
    # Only a value the field really holds may pass (-1 for signed types, True never).
    assert bad is not True
    assert field.decode_exact(field.encode(bad)) == bad


def test_truncated_integers_are_minimal() -> None:
    assert F.tu64.encode(0) == b""
    assert F.tu64.encode(1) == b"\x01"
    assert F.tu32.encode(0x01000000) == b"\x01\x00\x00\x00"
    assert F.tu16.decode_exact(b"") == 0
    with pytest.raises(WireError, match="minimal"):
        F.tu64.decode_exact(b"\x00\x01")
    with pytest.raises(WireError, match="minimal"):
        F.tu16.decode_exact(b"\x00")
    with pytest.raises(WireError):
        F.tu16.decode_exact(b"\x01\x00\x00")
    with pytest.raises(WireError):
        F.tu32.encode(1 << 32)


def test_point_checks_prefix_and_optionally_the_curve() -> None:
    key = coincurve.PrivateKey.from_int(7).public_key.format(compressed=True)
    assert F.point.decode_exact(key) == key
    assert F.point_on_curve.decode_exact(key) == key
    with pytest.raises(WireError, match="prefix 04"):
        F.point.decode_exact(b"\x04" + key[1:])
    with pytest.raises(WireError):
        F.point.encode(key[:32])
    # An x coordinate with no point on secp256k1 above it: the prefix check lets it
    # through, the curve check does not.
    off_curve = None
    for x in range(1, 100):
        candidate = b"\x02" + x.to_bytes(32, "big")
        try:
            coincurve.PublicKey(candidate)
        except ValueError:
            off_curve = candidate
            break
    assert off_curve is not None
    assert F.point.decode_exact(off_curve) == off_curve
    with pytest.raises(WireError, match="not a point"):
        F.point_on_curve.decode_exact(off_curve)
    with pytest.raises(WireError):
        F.point_on_curve.encode(off_curve)


def test_short_channel_id_field() -> None:
    scid = ShortChannelId(539268, 845, 1)
    assert F.short_channel_id.encode(scid) == scid.to_int().to_bytes(8, "big")
    assert F.short_channel_id.decode_exact(scid.to_bytes()) == scid
    with pytest.raises(WireError):
        F.short_channel_id.encode(scid.to_int())


def test_arrays() -> None:
    hashes = F.array_of(F.chain_hash)
    assert hashes.decode_exact(bytes(64)) == (bytes(32), bytes(32))
    assert hashes.decode_exact(b"") == ()
    with pytest.raises(WireError, match="whole number"):
        hashes.decode_exact(bytes(33))
    counted = F.array_of(F.u64, F.u16)
    assert counted.encode([1, 2]) == bytes.fromhex(
        "000200000000000000010000000000000002"
    )
    # A count the data cannot hold is refused before reading anything.
    with pytest.raises(WireError, match="truncated"):
        counted.decode_exact(b"\xff\xff" + bytes(16))
    fixed = F.array_of(F.u16, 2)
    assert fixed.size == 4
    with pytest.raises(WireError, match="exactly 2"):
        fixed.encode([1])
    # Lists are accepted and come back as tuples.
    assert counted.validate([1, 2]) == (1, 2)
    with pytest.raises(WireError):
        counted.encode(b"\x01\x02")
    with pytest.raises(ValueError):
        F.array_of(F.rest_bytes)


def test_records() -> None:
    pair = F.record("pair", ("a", F.u16), ("b", F.u8))
    value = pair(a=1, b=2)
    assert value.a == 1 and value.b == 2
    assert pair.encode(value) == b"\x00\x01\x02"
    assert pair.encode((1, 2)) == b"\x00\x01\x02"
    assert pair.encode({"a": 1, "b": 2}) == b"\x00\x01\x02"
    assert pair.decode_exact(b"\x00\x01\x02") == value
    assert pair.size == 3
    with pytest.raises(WireError):
        pair.encode((1,))
    with pytest.raises(WireError):
        pair.encode({"a": 1, "c": 2})
    with pytest.raises(WireError):
        pair.decode_exact(b"\x00\x01")
    with pytest.raises(ValueError):
        F.record("bad", ("rest", F.rest_bytes), ("after", F.u8))


def test_prefixed_bytes_limits() -> None:
    assert F.u16_prefixed_bytes.encode(b"abc") == b"\x00\x03abc"
    assert F.u8_prefixed_bytes.encode(b"") == b"\x00"
    assert F.bigsize_prefixed_bytes.encode(bytes(300)) == b"\xfd\x01\x2c" + bytes(300)
    with pytest.raises(WireError, match="more than"):
        F.u8_prefixed_bytes.encode(bytes(256))
    with pytest.raises(WireError, match="truncated"):
        F.u16_prefixed_bytes.decode_exact(b"\x00\x05abc")
    assert F.u16_prefixed_bytes.validate(bytearray(b"x")) == b"x"
