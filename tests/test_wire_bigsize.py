"""BigSize: every vector of BOLT 1 Appendix A, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import bigsize_decoding_vectors, bigsize_encoding_vectors

from lnpmsg.wire import Reader, WireError, decode_bigsize, encode_bigsize
from lnpmsg.wire.fields import bigsize
from lnpmsg.wire.primitives import MAX_U64, bigsize_length

DECODING = bigsize_decoding_vectors()
ENCODING = bigsize_encoding_vectors()


def test_all_vectors_were_found() -> None:
    # Appendix A has both kinds of tests, with failures among the decoding ones.
    assert len(ENCODING) >= 8
    assert any("exp_error" in v for v in DECODING)
    assert any("exp_error" not in v for v in DECODING)


def _check_error_meaning(expected: str, error: WireError) -> None:
    text = str(error)
    assert expected in text
    if expected == "EOF":  # nothing at all to read: not the same as a truncated value
        assert "unexpected" not in text


@pytest.mark.parametrize("vector", DECODING, ids=[v["name"] for v in DECODING])
def test_decoding_vector(vector: dict) -> None:
    data = bytes.fromhex(vector["bytes"])
    if "exp_error" in vector:
        with pytest.raises(WireError) as info:
            decode_bigsize(data)
        _check_error_meaning(vector["exp_error"], info.value)
        with pytest.raises(WireError) as info:
            Reader(data).read_bigsize()
        _check_error_meaning(vector["exp_error"], info.value)
        with pytest.raises(WireError):
            bigsize.decode_exact(data)
    else:
        assert decode_bigsize(data) == (vector["value"], len(data))
        reader = Reader(data)
        assert reader.read_bigsize() == vector["value"]
        assert reader.at_end
        assert bigsize.decode_exact(data) == vector["value"]


@pytest.mark.parametrize("vector", ENCODING, ids=[v["name"] for v in ENCODING])
def test_encoding_vector(vector: dict) -> None:
    expected = bytes.fromhex(vector["bytes"])
    assert encode_bigsize(vector["value"]) == expected
    assert bigsize.encode(vector["value"]) == expected
    assert bigsize_length(vector["value"]) == len(expected)


def test_decode_at_offset_and_within_bounds() -> None:
    data = b"\xaa" + encode_bigsize(70000) + b"\x01"
    assert decode_bigsize(data, 1) == (70000, 6)
    assert decode_bigsize(data, 6) == (1, 7)
    with pytest.raises(WireError, match="EOF"):
        decode_bigsize(data, 7)
    with pytest.raises(WireError):
        decode_bigsize(data, -1)
    # A reader over a prefix must not see the bytes after its end.
    with pytest.raises(WireError, match="unexpected EOF"):
        Reader(data, 1, 4).read_bigsize()


@pytest.mark.parametrize("bad", [-1, MAX_U64 + 1, 2**100, True, 1.0, "1", None])
def test_encode_rejects_out_of_range_and_non_ints(bad: object) -> None:
    with pytest.raises(WireError):
        encode_bigsize(bad)  # type: ignore[arg-type]
    with pytest.raises(WireError):
        bigsize.encode(bad)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_U64))
def test_round_trip(n: int) -> None:
    data = encode_bigsize(n)
    assert len(data) == bigsize_length(n)
    assert decode_bigsize(data) == (n, len(data))
    assert bigsize.decode_exact(data) == n


@settings(deadline=None)
@given(st.binary(max_size=12), st.integers(min_value=0, max_value=12))
def test_garbage_gives_a_value_or_wire_error(data: bytes, offset: int) -> None:
    try:
        value, end = decode_bigsize(data, offset)
    except WireError:
        return
    # What decodes is canonical: it re-encodes to exactly the bytes read.
    assert encode_bigsize(value) == data[offset:end]
