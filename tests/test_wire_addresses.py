"""BOLT-7 address descriptors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3
from wire_spec_vectors import peer_wire
from wire_strategies import address_lists, addresses, unknown_address

from lnpmsg.wire import (
    DnsAddr,
    IPv4Addr,
    IPv6Addr,
    TorV2Addr,
    TorV3Addr,
    UnknownAddr,
    WireError,
    decode_address,
    decode_addresses,
    encode_addresses,
    parse_address,
)
from lnpmsg.wire import addresses as A

CLN_VECTORS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "gossip"
    / "cln-unit-vectors.txt"
)


def test_each_type_encodes_as_the_spec_says() -> None:
    assert IPv4Addr("1.2.3.4", 9735).encode() == bytes.fromhex("01010203042607")
    assert IPv6Addr("::1", 9735).encode() == bytes.fromhex("02") + bytes(
        15
    ) + b"\x01" + bytes.fromhex("2607")
    assert TorV2Addr(
        b"\x01" * 10, 9735
    ).encode() == b"\x03" + b"\x01" * 10 + bytes.fromhex("2607")
    tor = TorV3Addr(b"\x11" * 32, 9735).encode()
    assert (
        len(tor) == 1 + 37
        and tor[0] == 4
        and tor[35] == 3
        and tor[-2:] == bytes.fromhex("2607")
    )
    assert DnsAddr(
        "example.com", 9735
    ).encode() == b"\x05\x0bexample.com" + bytes.fromhex("2607")
    assert UnknownAddr(9, b"abc").encode() == b"\x09abc"


def test_text_forms() -> None:
    assert str(IPv4Addr("1.2.3.4", 9735)) == "1.2.3.4:9735"
    assert str(IPv6Addr("0:0::1", 9735)) == "[::1]:9735"
    assert str(DnsAddr("node.example", 1)) == "node.example:1"
    onion = TorV3Addr(bytes(32), 9735)
    assert (
        str(onion) == onion.host + ":9735"
        and onion.host.endswith(".onion")
        and len(onion.host) == 62
    )
    assert str(TorV2Addr(bytes(10), 9735)) == "aaaaaaaaaaaaaaaa.onion:9735"
    for text in ("1.2.3.4:9735", "[::1]:9735", f"{onion.host}:9735", "node.example:1"):
        assert str(parse_address(text)) == text
    assert parse_address("1.2.3.4") == IPv4Addr("1.2.3.4", 9735)
    assert parse_address("::1") == IPv6Addr("::1", 9735)
    assert parse_address("[2001:db8::1]") == IPv6Addr("2001:db8::1", 9735)
    assert parse_address(onion.host.upper()) == onion


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3.4:",
        "1.2.3.4:99999",
        "[::1",
        "[::1]x",
        "[::1]:-1",
        "bad.onion:9735",
        "é.example:1",
        "a b:1",
        "-x:1",
        "x/y",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(WireError):
        parse_address(text)


@settings(deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 65535))
def test_torv3_names_agree_with_stem(pubkey: bytes, port: int) -> None:
    addr = TorV3Addr(pubkey, port)
    assert addr.host == HiddenServiceDescriptorV3.address_from_identity_key(pubkey)
    assert TorV3Addr.from_host(addr.host, port) == addr
    assert decode_address(addr.encode()) == addr


def test_torv3_checksum_and_version_are_checked() -> None:
    good = TorV3Addr(b"\x42" * 32, 9735).encode()
    assert decode_address(good) == TorV3Addr(b"\x42" * 32, 9735)
    bad_checksum = good[:33] + bytes([good[33] ^ 1]) + good[34:]
    with pytest.raises(WireError, match="checksum"):
        decode_address(bad_checksum)
    bad_version = good[:35] + b"\x02" + good[36:]
    with pytest.raises(WireError, match="version"):
        decode_address(bad_version)


def test_lists_end_at_the_first_unknown_type() -> None:
    known = [IPv4Addr("10.0.0.1", 1), DnsAddr("a.example", 2)]
    data = (
        encode_addresses(known)
        + b"\x07"
        + b"future data"
        + IPv4Addr("1.1.1.1", 3).encode()
    )
    decoded = decode_addresses(data)
    assert decoded[:2] == tuple(known)
    assert decoded[2] == UnknownAddr(
        7, b"future data" + IPv4Addr("1.1.1.1", 3).encode()
    )
    assert encode_addresses(decoded) == data
    assert decode_addresses(b"") == ()
    # Type 0 is not defined either: it too ends the list.
    assert decode_addresses(b"\x00\x00") == (UnknownAddr(0, b"\x00"),)
    with pytest.raises(WireError, match="last"):
        encode_addresses([UnknownAddr(9), IPv4Addr("1.2.3.4", 1)])


@pytest.mark.parametrize(
    "data",
    [
        "01010203",  # ipv4 short
        "02" + "00" * 17,  # ipv6 short
        "03" + "00" * 11,  # torv2 short
        "04" + "00" * 36,  # torv3 short
        "05",  # dns without length
        "0505616263",  # dns shorter than its length
        ("010102030426070203"),  # a good ipv4, then a cut ipv6
    ],
)
def test_truncated_known_descriptors_fail(data: str) -> None:
    with pytest.raises(WireError):
        decode_addresses(bytes.fromhex(data))


def test_dns_rules() -> None:
    with pytest.raises(WireError):
        decode_addresses(b"\x05\x00\x26\x07")  # empty hostname
    with pytest.raises(WireError):
        decode_addresses(b"\x05\x02\xc3\xa9\x26\x07")  # not ASCII
    with pytest.raises(WireError):
        DnsAddr("x" * 256, 1)
    assert DnsAddr("x" * 255, 1).encode()[1] == 255


@pytest.mark.parametrize(
    ("cls", "args"),
    [
        (IPv4Addr, ("1.2.3", 1)),
        (IPv4Addr, ("1.2.3.4", 65536)),
        (IPv4Addr, ("1.2.3.4", -1)),
        (IPv6Addr, ("1.2.3.4", 1)),
        (IPv6Addr, ("fe80::1%eth0", 1)),
        (TorV2Addr, (b"short", 1)),
        (TorV3Addr, (b"short", 1)),
        (UnknownAddr, (1, b"")),
        (UnknownAddr, (256, b"")),
    ],
)
def test_invalid_descriptors_are_refused(cls: type, args: tuple) -> None:
    with pytest.raises(WireError):
        cls(*args)


def test_a_real_node_announcement() -> None:
    # Core Lightning's mainnet node_announcement, declared from the csv; its
    # addresses field decodes and re-encodes byte for byte.
    line = next(
        row
        for row in CLN_VECTORS.read_text().splitlines()
        if " node_announcement " in row
    )
    raw = bytes.fromhex(line.split()[-1])
    node_announcement = peer_wire().message_class("node_announcement")
    msg = node_announcement.decode(raw)
    addrs = decode_addresses(msg.addresses)  # type: ignore[attr-defined]
    assert addrs and all(
        isinstance(a, A.IPv4Addr | A.IPv6Addr | A.TorV2Addr | A.TorV3Addr | A.DnsAddr)
        for a in addrs
    )
    assert encode_addresses(addrs) == msg.addresses  # type: ignore[attr-defined]
    assert (
        A.u16_address_list.decode_exact(
            len(msg.addresses).to_bytes(2, "big") + msg.addresses
        )
        == addrs
    )  # type: ignore[attr-defined]


@settings(deadline=None)
@given(address_lists)
def test_list_round_trip(addrs: tuple) -> None:
    data = encode_addresses(addrs)
    assert decode_addresses(data) == addrs
    prefixed = A.u16_address_list.encode(addrs)
    assert A.u16_address_list.decode_exact(prefixed) == addrs


@settings(deadline=None)
@given(st.one_of(addresses, unknown_address))
def test_one_round_trip(addr: A.Address) -> None:
    assert decode_address(addr.encode()) == addr
    assert A.address.decode_exact(addr.encode()) == addr
    if isinstance(addr, A.UnknownAddr | A.TorV2Addr):
        return
    if isinstance(addr, A.DnsAddr):
        # A peer may announce any ASCII; only hostname-like text parses back as one.
        try:
            parsed = parse_address(str(addr))
        except WireError:
            assert not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", addr.hostname)
            return
        assert parsed == addr or not isinstance(parsed, A.DnsAddr)
        return
    assert parse_address(str(addr)) == addr


@settings(deadline=None)
@given(st.binary(max_size=100))
def test_garbage_gives_addresses_or_wire_error(data: bytes) -> None:
    try:
        addrs = decode_addresses(data)
    except WireError:
        pass
    else:
        assert encode_addresses(addrs) == data
    try:
        one = decode_address(data)
    except WireError:
        return
    assert one.encode() == data
