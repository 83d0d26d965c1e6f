"""BOLT-3 key derivation (Appendix E vectors, parsed from the spec) and its algebra."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.channels import ChannelError
from lnpmsg.channels.keys import (
    CURVE_ORDER,
    MAX_COMMITMENT_NUMBER,
    commitment_locktime_sequence,
    commitment_number_from_locktime_sequence,
    commitment_obscuring_factor,
    derive_privkey,
    derive_pubkey,
    obscure_commitment_number,
    per_commitment_point,
    pubkey_from_privkey,
    revocation_privkey,
    revocation_pubkey,
)

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "bolts" / "03-transactions.md"
TEXT = SPEC.read_text()
APPENDIX_E = TEXT[TEXT.index("# Appendix E") : TEXT.index("# Appendix F")]
E = {m[1]: bytes.fromhex(m[2]) for m in re.finditer(r"^\s*(\w+): 0x([0-9a-f]+)\s*$", APPENDIX_E, re.MULTILINE)}

secrets = st.integers(min_value=1, max_value=CURVE_ORDER - 1).map(lambda n: n.to_bytes(32, "big"))


def test_appendix_e_inputs_consistent() -> None:
    assert pubkey_from_privkey(E["base_secret"]) == E["base_point"]
    assert per_commitment_point(E["per_commitment_secret"]) == E["per_commitment_point"]


def test_appendix_e_localpubkey() -> None:
    assert derive_pubkey(E["base_point"], E["per_commitment_point"]) == E["localpubkey"]


def test_appendix_e_localprivkey() -> None:
    assert derive_privkey(E["base_secret"], E["per_commitment_point"]) == E["localprivkey"]


def test_appendix_e_revocationpubkey() -> None:
    assert revocation_pubkey(E["base_point"], E["per_commitment_point"]) == E["revocationpubkey"]


def test_appendix_e_revocationprivkey() -> None:
    assert revocation_privkey(E["base_secret"], E["per_commitment_secret"]) == E["revocationprivkey"]


def test_appendix_e_intermediate_hashes() -> None:
    """The spec prints SHA256(per_commitment_point || basepoint); check the tweak is that hash."""
    from lnpmsg.bitcoin.hashes import sha256

    tweak = re.search(r"# = 0x([0-9a-f]{64})\n\s*# \+ basepoint \(", APPENDIX_E)
    assert tweak
    assert sha256(E["per_commitment_point"] + E["base_point"]).hex() == tweak[1]


@settings(max_examples=40, deadline=None)
@given(base=secrets, point_secret=secrets)
def test_derive_privkey_matches_derive_pubkey(base: bytes, point_secret: bytes) -> None:
    point = per_commitment_point(point_secret)
    basepoint = pubkey_from_privkey(base)
    assert pubkey_from_privkey(derive_privkey(base, point)) == derive_pubkey(basepoint, point)


@settings(max_examples=40, deadline=None)
@given(base=secrets, point_secret=secrets)
def test_revocation_privkey_matches_pubkey(base: bytes, point_secret: bytes) -> None:
    expected = revocation_pubkey(pubkey_from_privkey(base), per_commitment_point(point_secret))
    assert pubkey_from_privkey(revocation_privkey(base, point_secret)) == expected


@settings(max_examples=100, deadline=None)
@given(number=st.integers(0, MAX_COMMITMENT_NUMBER), factor=st.integers(0, MAX_COMMITMENT_NUMBER))
def test_obscured_number_round_trip(number: int, factor: int) -> None:
    locktime, sequence = commitment_locktime_sequence(obscure_commitment_number(number, factor))
    assert locktime >> 24 == 0x20 and sequence >> 24 == 0x80
    assert commitment_number_from_locktime_sequence(locktime, sequence, factor) == number


def test_obscuring_factor_is_order_sensitive() -> None:
    a, b = E["base_point"], E["per_commitment_point"]
    assert commitment_obscuring_factor(a, b) != commitment_obscuring_factor(b, a)
    assert commitment_obscuring_factor(a, b) <= MAX_COMMITMENT_NUMBER


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40), other=st.binary(max_size=40))
def test_bad_keys_raise_channel_error(data: bytes, other: bytes) -> None:
    for call in (
        lambda: derive_pubkey(data, other),
        lambda: derive_privkey(data, other),
        lambda: revocation_pubkey(data, other),
        lambda: revocation_privkey(data, other),
        lambda: per_commitment_point(data),
        lambda: commitment_obscuring_factor(data, other),
    ):
        try:
            call()
        except ChannelError:
            pass


def test_invalid_inputs_rejected() -> None:
    with pytest.raises(ChannelError):
        derive_pubkey(b"\x02" + bytes(32), E["per_commitment_point"])  # x = 0 is not on the curve
    with pytest.raises(ChannelError):
        pubkey_from_privkey(bytes(32))
    with pytest.raises(ChannelError):
        pubkey_from_privkey(CURVE_ORDER.to_bytes(32, "big"))
    with pytest.raises(ChannelError):
        obscure_commitment_number(MAX_COMMITMENT_NUMBER + 1, 0)
    with pytest.raises(ChannelError):
        commitment_number_from_locktime_sequence(0, 0, 0)
