"""The Reader and ShortChannelId."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import BOLTS

from lnpmsg.wire import Reader, ShortChannelId, WireError
from lnpmsg.wire.primitives import MAX_U64


def test_reader_reads_in_order() -> None:
    data = bytes.fromhex("0102030405060708090a0b0c0d0e0ffd0100aabbccdd")
    r = Reader(memoryview(data))
    assert r.remaining == len(data) and not r.at_end
    assert r.read_u8() == 1
    assert r.read_u16() == 0x0203
    assert r.read_u32() == 0x04050607
    assert r.read_u64() == 0x08090A0B0C0D0E0F
    assert r.read_bigsize() == 0x100
    chunk = r.read(2)
    assert chunk == b"\xaa\xbb" and type(chunk) is bytes
    assert r.read_rest() == b"\xcc\xdd"
    assert r.at_end and r.remaining == 0
    assert r.read_rest() == b""


@pytest.mark.parametrize(
    ("method", "size"),
    [("read_u8", 1), ("read_u16", 2), ("read_u32", 4), ("read_u64", 8)],
)
def test_reader_truncation(method: str, size: int) -> None:
    r = Reader(bytes(size - 1))
    with pytest.raises(WireError, match="truncated"):
        getattr(r, method)()
    # A failed read consumes nothing.
    assert r.remaining == size - 1


def test_reader_bounds_and_sub_readers() -> None:
    r = Reader(b"abcdef", 1, 4)
    assert r.remaining == 3
    sub = r.sub(2)
    assert sub.read_rest() == b"bc"
    assert r.read(1) == b"d"
    with pytest.raises(WireError):
        r.read(1)
    with pytest.raises(WireError):
        r.read(-1)
    with pytest.raises(WireError):
        r.sub(1)
    with pytest.raises(WireError):
        r.skip(1)
    with pytest.raises(WireError):
        Reader(b"abc", 2, 1)
    with pytest.raises(WireError):
        Reader(b"abc", 0, 4)


def test_scid_example_from_bolt7() -> None:
    text = (BOLTS / "07-routing-gossip.md").read_text()
    match = re.search(
        r"might be written as `(\d+)x(\d+)x(\d+)`,\s+indicating a channel on the output (\d+) of the transaction"
        r" at index (\d+)\s+of the block at height (\d+)",
        text,
    )
    assert match is not None
    scid = ShortChannelId.parse(f"{match[1]}x{match[2]}x{match[3]}")
    assert (scid.block, scid.tx, scid.output) == (
        int(match[6]),
        int(match[5]),
        int(match[4]),
    )
    assert str(scid) == f"{match[1]}x{match[2]}x{match[3]}"
    packed = scid.to_int()
    assert packed == scid.block << 40 | scid.tx << 16 | scid.output
    assert ShortChannelId.from_int(packed) == scid
    assert ShortChannelId.from_bytes(scid.to_bytes()) == scid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1x2",
        "1x2x3x4",
        "ax2x3",
        "1x2x-3",
        " 1x2x3",
        "1x2x3 ",
        "16777216x0x0",
        "0x16777216x0",
        "0x0x65536",
        "1X2X3",
        "١x2x3",
    ],
)
def test_scid_parse_rejects(text: str) -> None:
    with pytest.raises(WireError):
        ShortChannelId.parse(text)


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 0),
        (1 << 24, 0, 0),
        (0, 1 << 24, 0),
        (0, 0, 1 << 16),
        (0, 0, -1),
        (True, 0, 0),
        (1.0, 0, 0),
    ],
)
def test_scid_rejects_out_of_range(args: tuple) -> None:
    with pytest.raises(WireError):
        ShortChannelId(*args)


@pytest.mark.parametrize("bad", [-1, MAX_U64 + 1, "1"])
def test_scid_from_int_rejects(bad: object) -> None:
    with pytest.raises(WireError):
        ShortChannelId.from_int(bad)  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_U64))
def test_scid_int_round_trip(n: int) -> None:
    scid = ShortChannelId.from_int(n)
    assert scid.to_int() == n
    assert ShortChannelId.parse(str(scid)) == scid


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_U64))
def test_scid_from_u64_is_from_int(n: int) -> None:
    """The decoder's unchecked constructor makes the same value: equal, same hash, order and text, still frozen."""
    fast, checked = ShortChannelId.from_u64(n), ShortChannelId.from_int(n)
    assert fast == checked and hash(fast) == hash(checked) and str(fast) == str(checked)
    assert (fast.block, fast.tx, fast.output) == (checked.block, checked.tx, checked.output) and fast.to_int() == n
    assert not fast < checked and not checked < fast
    with pytest.raises(AttributeError):
        fast.block = 1  # type: ignore[misc]


@settings(deadline=None)
@given(
    st.integers(min_value=0, max_value=MAX_U64),
    st.integers(min_value=0, max_value=MAX_U64),
)
def test_scid_order_is_the_packed_order(a: int, b: int) -> None:
    assert (ShortChannelId.from_int(a) < ShortChannelId.from_int(b)) == (a < b)


@settings(deadline=None)
@given(st.text(max_size=30))
def test_scid_parse_garbage(text: str) -> None:
    try:
        scid = ShortChannelId.parse(text)
    except WireError:
        return
    assert ShortChannelId.parse(str(scid)) == scid
    assert [int(part) for part in text.split("x")] == [scid.block, scid.tx, scid.output]
