"""Hypothesis strategies for the values of lnpmsg.wire field types and messages."""

from __future__ import annotations

import dataclasses
from typing import Any

import coincurve
from hypothesis import strategies as st

from lnpmsg.wire import addresses as A
from lnpmsg.wire import fields as F
from lnpmsg.wire.message import Message
from lnpmsg.wire.primitives import MAX_U64, ShortChannelId
from lnpmsg.wire.tlv import TlvSchema, TlvStream

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

curve_points = st.integers(min_value=1, max_value=SECP256K1_ORDER - 1).map(
    lambda k: coincurve.PrivateKey.from_int(k).public_key.format(compressed=True)
)
# Cheap points: a right prefix and any x (what the default point field accepts).
prefixed_points = st.tuples(
    st.sampled_from([b"\x02", b"\x03"]), st.binary(min_size=32, max_size=32)
).map(b"".join)

ports = st.integers(min_value=0, max_value=0xFFFF)
addresses: st.SearchStrategy[Any] = st.one_of(
    st.builds(A.IPv4Addr, st.ip_addresses(v=4).map(str), ports),
    st.builds(A.IPv6Addr, st.ip_addresses(v=6).map(str), ports),
    st.builds(A.TorV2Addr, st.binary(min_size=10, max_size=10), ports),
    st.builds(A.TorV3Addr, st.binary(min_size=32, max_size=32), ports),
    st.builds(
        A.DnsAddr,
        st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126),
            min_size=1,
            max_size=255,
        ),
        ports,
    ),
)
unknown_address = st.builds(
    A.UnknownAddr, st.sampled_from([0, 6, 7, 200, 255]), st.binary(max_size=20)
)
address_lists = st.tuples(
    st.lists(addresses, max_size=4), st.lists(unknown_address, max_size=1)
).map(lambda t: tuple(t[0] + t[1]))


def values_for(field: F.Field, small: bool = False) -> st.SearchStrategy[Any]:
    """Valid values of a field type (``small`` keeps nested sizes down)."""
    if isinstance(field, F.IntField):
        return st.integers(min_value=field.min, max_value=field.max)
    if isinstance(field, F.TruncatedInt):
        return st.integers(min_value=0, max_value=field.max)
    if isinstance(field, F.BigSizeField):
        return st.integers(min_value=0, max_value=MAX_U64)
    if isinstance(field, F.Point):
        return curve_points if field.on_curve else prefixed_points
    if isinstance(field, F.ShortChannelIdField):
        return st.integers(min_value=0, max_value=MAX_U64).map(ShortChannelId.from_int)
    if isinstance(field, F.FixedBytes):
        return st.binary(min_size=field.size, max_size=field.size)
    if isinstance(field, F.PrefixedBytes):
        return st.binary(max_size=min(field.max, 40 if small else 300))
    if isinstance(field, F.RestBytes):
        return st.binary(max_size=40 if small else 300)
    if isinstance(field, F.ArrayOf):
        element = values_for(field.element, small=True)
        if isinstance(field.count, int) and field.count is not ...:
            return st.lists(element, min_size=field.count, max_size=field.count).map(
                tuple
            )
        return st.lists(element, max_size=4).map(tuple)
    if isinstance(field, F.RecordField):
        return st.tuples(*(values_for(f, small=True) for _, f in field.fields)).map(
            field.type._make
        )
    if isinstance(field, TlvSchema):
        return tlv_streams(field)
    if isinstance(field, A.AddressField):
        return st.one_of(addresses, unknown_address)
    if isinstance(field, A.AddressListField):
        return address_lists
    raise TypeError(f"no strategy for {field!r}")


def tlv_streams(schema: TlvSchema) -> st.SearchStrategy[TlvStream]:
    known = {
        name: values_for(f, small=True)
        for name, f in (entry for entry in schema.records.values())
    }
    unknown_types = (
        st.integers(min_value=0, max_value=MAX_U64 // 2)
        .map(lambda n: 2 * n + 1)
        .filter(lambda t: t not in schema.records)
    )
    return st.builds(
        lambda values, unknown: TlvStream(values, unknown=unknown),
        st.fixed_dictionaries({}, optional=known),
        st.dictionaries(unknown_types, st.binary(max_size=20), max_size=3),
    )


def messages(cls: type[Message]) -> st.SearchStrategy[Message]:
    kwargs = {name: values_for(f) for name, f in cls.FIELDS}
    if cls.TLVS is not None:
        kwargs["tlvs"] = tlv_streams(cls.TLVS)
    assert [f.name for f in dataclasses.fields(cls)] == list(kwargs)  # type: ignore[arg-type]
    return st.builds(cls, **kwargs)
