"""v3 onion address validation (no Tor needed)."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.transports.tor.address import (
    OnionAddress,
    is_onion_host,
    parse_onion_address,
)
from lnpmsg.transports.tor.errors import OnionAddressError, TorError

BOLT7 = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "specs"
    / "bolts"
    / "07-routing-gossip.md"
)
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def public_key(seed: bytes) -> bytes:
    """A real ed25519 public key (Tor only accepts valid curve points)."""
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


#: 32 bytes that are not an ed25519 point (the curve equation has no solution for this y)
NOT_A_POINT = bytes([2]) + bytes(31)


@functools.cache
def spec_checksum_rule() -> tuple[bytes, int]:
    """The checksum prefix and version as BOLT 7 states them (descriptor type 4)."""
    text = BOLT7.read_text()
    match = re.search(
        r'checksum = sha3\("(.+?)" \|\| pubkey \|\| version\)\[:2\]', text
    )
    assert match, "BOLT 7 no longer states the onion checksum rule"
    version = re.search(
        r"\* version (\d+) \(\[prop224\]", text[match.start() - 400 : match.end()]
    )
    assert version, "BOLT 7 no longer states the onion version byte"
    return match.group(1).encode(), int(version.group(1))


def address_by_spec(pubkey: bytes) -> str:
    prefix, version = spec_checksum_rule()
    checksum = hashlib.sha3_256(prefix + pubkey + bytes([version])).digest()[:2]
    return (
        base64.b32encode(pubkey + checksum + bytes([version])).decode().lower()
        + ".onion"
    )


def test_address_matches_bolt7_rule() -> None:
    pubkey = public_key(bytes(range(32)))
    assert OnionAddress(pubkey).hostname == address_by_spec(pubkey)
    assert parse_onion_address(address_by_spec(pubkey)).public_key == pubkey


def test_accepts_any_case_with_or_without_suffix() -> None:
    addr = OnionAddress(public_key(bytes(range(100, 132))))
    for text in (
        addr.hostname,
        addr.service_id,
        addr.hostname.upper(),
        addr.hostname + ".",
        f"  {addr.hostname} ",
    ):
        assert parse_onion_address(text) == addr
    assert len(addr.service_id) == 56
    assert OnionAddress.from_raw(addr.raw) == addr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it has 0"),
        ("abc.onion", "it has 3"),
        ("expyuzz4wqqyqhjn.onion", "v2 onion address"),
        ("a" * 57 + ".onion", "it has 57"),
        ("a" * 55 + "1.onion", "character '1' at position 55 is not base32"),
        ("a" * 55 + "!.onion", "character '!' at position 55"),
        ("www." + "a" * 56 + ".onion", "without subdomains"),
        ("example.com", "not an onion address"),
    ],
)
def test_malformed_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(OnionAddressError, match=re.escape(reason)):
        parse_onion_address(text)


def test_wrong_checksum_and_version() -> None:
    addr = OnionAddress(public_key(bytes(32)))
    raw = bytearray(addr.raw)
    raw[32] ^= 0x01
    bad_checksum = base64.b32encode(bytes(raw)).decode().lower()
    with pytest.raises(OnionAddressError, match="checksum does not match"):
        parse_onion_address(bad_checksum)
    raw = bytearray(addr.raw)
    raw[34] = 4
    with pytest.raises(OnionAddressError, match="version is 4"):
        parse_onion_address(base64.b32encode(bytes(raw)).decode())


def test_key_must_be_an_ed25519_point() -> None:
    # checksum and version right, key not on the curve: Tor answers 0xF6 for these
    prefix, version = spec_checksum_rule()
    checksum = hashlib.sha3_256(prefix + NOT_A_POINT + bytes([version])).digest()[:2]
    text = base64.b32encode(NOT_A_POINT + checksum + bytes([version])).decode().lower()
    with pytest.raises(OnionAddressError, match="not a valid ed25519 point"):
        parse_onion_address(text)
    with pytest.raises(OnionAddressError, match="not a valid ed25519 point"):
        OnionAddress(NOT_A_POINT)


def test_error_is_the_layer_error() -> None:
    with pytest.raises(TorError):
        parse_onion_address("nope")
    with pytest.raises(OnionAddressError):
        OnionAddress(b"short")
    with pytest.raises(OnionAddressError):
        parse_onion_address(b"bytes" * 12)  # type: ignore[arg-type]


def test_is_onion_host() -> None:
    assert is_onion_host("X.ONION")
    assert is_onion_host("x.onion.")
    assert not is_onion_host("onion.example")


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(seed: bytes) -> None:
    pubkey = public_key(seed)
    addr = OnionAddress(pubkey)
    assert addr.hostname == address_by_spec(pubkey)
    assert parse_onion_address(addr.hostname) == addr
    assert parse_onion_address(addr.service_id.upper()) == addr


@given(st.text(max_size=100))
def test_arbitrary_text_is_rejected_cleanly(text: str) -> None:
    try:
        addr = parse_onion_address(text)
    except OnionAddressError as exc:
        assert str(exc)
    else:
        assert addr.service_id == text.strip().lower().removesuffix(".").removesuffix(
            ".onion"
        )


@given(st.binary(min_size=32, max_size=32), st.integers(0, 55), st.sampled_from(BASE32))
def test_one_changed_character(seed: bytes, position: int, char: str) -> None:
    good = OnionAddress(public_key(seed)).service_id
    mutated = good[:position] + char + good[position + 1 :]
    try:
        addr = parse_onion_address(mutated)
    except OnionAddressError as exc:
        assert (
            "checksum" in str(exc)
            or "version" in str(exc)
            or "ed25519 point" in str(exc)
        )
    else:
        # Only an unchanged text, or a 1-in-65536 checksum collision, may pass,
        # and then it must still be self-consistent.
        assert addr.service_id == mutated
        assert addr.hostname == address_by_spec(addr.public_key)


@given(st.binary(min_size=35, max_size=35))
def test_random_raw_bytes(raw: bytes) -> None:
    try:
        addr = OnionAddress.from_raw(raw)
    except OnionAddressError:
        return
    assert addr.raw == raw
