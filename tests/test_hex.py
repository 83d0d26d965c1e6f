"""The one hex parser (:mod:`lnpmsg._hex`) and the control API's form of it (``rpc.params.hex_param``):
bytes out, or a ``ValueError`` that names the value and says what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg._hex import parse_hex
from lnpmsg.rpc.params import ParamsError, hex_param, node_id_param

NODE_ID = "02" + "ab" * 32


def test_hex_of_either_case_and_the_size_asked_is_its_bytes() -> None:
    assert parse_hex(NODE_ID, "node_id", 33) == bytes.fromhex(NODE_ID)
    assert parse_hex(NODE_ID.upper(), "node_id", 33) == bytes.fromhex(NODE_ID)
    assert parse_hex("", "payload") == b"" and parse_hex("00ff", "payload") == b"\x00\xff"


@pytest.mark.parametrize(
    ("text", "size", "said"),
    [
        ("zz", 33, "node_id is not hex (66 hex characters expected): 'zz'"),
        (NODE_ID[:-2], 33, f"node_id must be 33 bytes (66 hex characters), got 64: '{NODE_ID[:-2]}'"),
        (NODE_ID + "00", 33, "node_id must be 33 bytes (66 hex characters), got 68: "),
        ("abc", None, "node_id is not hex (an odd number of digits): 'abc'"),
        # what bytes.fromhex lets through: spaces, a 0x prefix is refused as any other non-digit
        ("02 " + "ab" * 32, None, "node_id is not hex: "),
        ("0x" + "ab" * 32, 33, "node_id is not hex (66 hex characters expected): "),
        ("ab\n", None, "node_id is not hex: "),
        ("é" * 66, 33, "node_id is not hex"),
        (33, 33, "node_id must be a hex string, got int"),
        (None, None, "node_id must be a hex string, got NoneType"),
    ],
)
def test_each_error_names_the_value_and_what_is_wrong(text: object, size: int | None, said: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_hex(text, "node_id", size)
    assert str(error.value).startswith(said), str(error.value)


def test_a_long_value_is_quoted_short_and_a_secret_not_at_all() -> None:
    with pytest.raises(ValueError) as error:
        parse_hex("ab" * 1000 + "zz", "payload")
    assert len(str(error.value)) < 120
    secret = "11" * 31 + "zz"
    with pytest.raises(ValueError) as error:
        parse_hex(secret, "the funding key", 32, quote=False)
    assert str(error.value) == "the funding key is not hex (64 hex characters expected)"
    with pytest.raises(ValueError) as error:
        parse_hex("11" * 31, "a node key", 32, quote=False)
    assert str(error.value) == "a node key must be 32 bytes (64 hex characters), got 62"


def test_the_control_api_form_raises_params_error_with_the_same_words() -> None:
    assert hex_param("00ff", "payload") == b"\x00\xff"
    assert node_id_param(NODE_ID) == bytes.fromhex(NODE_ID)
    with pytest.raises(ParamsError, match=r"^channel_id must be 32 bytes \(64 hex characters\), got 2: 'ab'$"):
        hex_param("ab", "channel_id", 32)
    with pytest.raises(ParamsError, match="^node_id is not hex"):
        node_id_param("zz" * 33)


@given(st.binary(max_size=64))
def test_any_bytes_come_back_from_their_hex(data: bytes) -> None:
    assert parse_hex(data.hex(), "x", len(data)) == data
    assert parse_hex(data.hex().upper(), "x") == data


@given(st.text(max_size=80), st.one_of(st.none(), st.integers(0, 40)))
def test_any_text_gives_bytes_of_the_size_asked_or_a_value_error(text: str, size: int | None) -> None:
    try:
        data = parse_hex(text, "x", size)
    except ValueError as exc:
        assert str(exc).startswith("x ")
    else:
        assert data.hex() == text.lower() and (size is None or len(data) == size)
