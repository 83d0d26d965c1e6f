"""BOLT-9 feature bits: the table against 09-features.md, bytes, dependencies, unknown bits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import feature_table

from lnpmsg.wire import Features, UnknownRequiredFeatureError, WireError
from lnpmsg.wire.features import (
    FEATURES_BY_BIT,
    FEATURES_BY_NAME,
    KNOWN_FEATURES,
    check_dependencies,
    check_features,
    describe,
    feature,
    is_compatible,
    known_features,
    unknown_required,
)

TABLE = feature_table()


def test_table_matches_the_spec() -> None:
    assert len(TABLE) >= 20
    assert [(f.name, f.bit, f.bit + 1) for f in KNOWN_FEATURES] == [
        (r["name"], *r["bits"]) for r in TABLE
    ]
    for row in TABLE:
        f = FEATURES_BY_NAME[row["name"]]
        assert f.contexts == row["context"]
        assert f.depends == row["depends"]
        assert f.assumed == row["assumed"]
        assert f.required_bit % 2 == 0 and f.optional_bit == f.required_bit + 1
        assert FEATURES_BY_BIT[f.bit] is f and FEATURES_BY_BIT[f.bit + 1] is f
    # Every dependency names a known feature.
    assert {d for f in KNOWN_FEATURES for d in f.depends} <= set(FEATURES_BY_NAME)


def test_bytes_are_big_endian_from_bit_zero() -> None:
    f = Features.from_bytes(b"\x02\x00\x01")
    assert f.bits() == [0, 17]
    assert f.has(0) and f.has(17) and not f.has(1) and 17 in f
    assert f.to_bytes() == b"\x02\x00\x01"
    assert Features.from_bytes(b"\x00\x00\x01").to_bytes() == b"\x01"  # minimal length
    assert Features.from_bytes(b"\x01").to_bytes(min_length=3) == b"\x00\x00\x01"
    assert Features().to_bytes() == b"" and not Features()
    assert Features.from_bytes(b"") == Features()


def test_sets_and_unions() -> None:
    glob = Features.from_bytes(b"\x20")  # bit 5
    local = Features.from_bytes(b"\x02\x00")  # bit 9
    both = glob | local
    assert both.bits() == [5, 9] and len(both) == 2
    assert both & glob == glob
    assert both.set(1).clear(5).bits() == [1, 9]
    assert list(both) == [5, 9]
    assert hash(both) == hash(Features.from_bits([9, 5]))
    assert Features.from_names(
        optional=["basic_mpp"], required=["payment_secret"]
    ).bits() == [14, 17]
    assert both.supports("option_upfront_shutdown_script")
    assert not both.requires("option_upfront_shutdown_script")
    assert Features.from_bits([8]).requires("var_onion_optin")
    with pytest.raises(WireError):
        feature("no_such_feature")
    with pytest.raises(WireError):
        Features.from_bits([-1])
    with pytest.raises(WireError):
        Features(-1)


@pytest.mark.parametrize(
    ("bits", "problem"),
    [
        ([17], "basic_mpp needs payment_secret"),
        ([51], "option_zeroconf needs option_scid_alias"),
        ([60], "option_simple_close needs option_shutdown_anysegwit"),
    ],
)
def test_missing_dependencies_are_reported(bits: list[int], problem: str) -> None:
    assert check_dependencies(Features.from_bits(bits)) == [problem]


def test_dependencies_hold_with_either_bit() -> None:
    for f in KNOWN_FEATURES:
        for dep_bit in (0, 1):
            bits = [f.bit + 1] + [FEATURES_BY_NAME[d].bit + dep_bit for d in f.depends]
            assert check_dependencies(Features.from_bits(bits)) == []
    assert check_dependencies(Features()) == []


def test_unknown_required_and_optional_bits() -> None:
    ours = Features.from_names(optional=["gossip_queries", "option_quiesce"])
    # Unknown odd bits are ignored; unknown even ones are reported.
    theirs = Features.from_bits([101, 200, 34, 7])
    assert unknown_required(theirs, ours) == {200}
    # Knowing one bit of a pair is knowing the feature.
    assert unknown_required(Features.from_bits([6]), ours) == set()
    # Required but not offered by us: unknown to us.
    assert unknown_required(Features.from_bits([22]), ours) == {22}
    assert unknown_required(Features.from_bits([22]), known_features()) == set()
    assert unknown_required(Features.from_bits([22]), [23]) == set()
    # The ASSUMED features are known to everyone, unless asked otherwise.
    assumed = Features.from_bits([0, 8, 12, 14, 44])
    assert unknown_required(assumed, Features()) == set()
    assert unknown_required(assumed, Features(), assume=False) == {0, 8, 12, 14, 44}
    err = UnknownRequiredFeatureError(unknown_required(theirs, ours))
    assert err.bits == {200} and "200" in str(err) and isinstance(err, WireError)


def test_compatibility() -> None:
    ours = Features.from_names(optional=["option_quiesce"], required=["gossip_queries"])
    assert is_compatible(ours, Features.from_names(optional=["gossip_queries"]))
    assert not is_compatible(ours, Features())  # we require what they do not offer
    assert not is_compatible(
        ours, Features.from_bits([7, 200])
    )  # they require what we do not know
    assert not is_compatible(
        ours, Features.from_bits([7, 17])
    )  # their dependencies are broken
    assert is_compatible(ours, Features.from_bits([7, 35, 201]))


def test_describe() -> None:
    f = Features.from_bits([8, 17, 101, 200])
    assert describe(f) == [
        "var_onion_optin (required)",
        "basic_mpp (optional)",
        "bit 101 (unknown, optional)",
        "bit 200 (unknown, required)",
    ]
    assert f.describe() == describe(f)
    assert "basic_mpp" in repr(f)


def test_huge_feature_fields_are_cheap() -> None:
    # A peer may send 65535 bytes of features: listing them must not be quadratic.
    f = Features.from_bytes(b"\x55" * 65535)
    assert len(f.bits()) == 4 * 65535
    assert (
        len(unknown_required(f, Features())) == 4 * 65535 - 5
    )  # less the ASSUMED ones
    with pytest.raises(WireError):
        Features.from_bytes(bytes(65536))


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_bytes_round_trip(data: bytes) -> None:
    f = Features.from_bytes(data)
    assert f.to_bytes() == data.lstrip(b"\x00")
    assert f.to_bytes(min_length=len(data)) == data
    assert Features.from_bits(f.bits()) == f
    assert all(f.has(b) for b in f.bits())
    assert unknown_required(f, f) == set()


@settings(deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    st.lists(st.integers(0, 600), max_size=20),
)
def test_unknown_required_property(theirs: list[int], ours: list[int]) -> None:
    result = unknown_required(
        Features.from_bits(theirs), Features.from_bits(ours), assume=False
    )
    assert result == {
        b for b in theirs if b % 2 == 0 and b not in ours and b + 1 not in ours
    }


def test_check_features_raises_the_right_error() -> None:
    ours = Features.from_names(optional=["basic_mpp", "payment_secret"])
    check_features(Features.from_bits([16, 15]), ours)
    with pytest.raises(UnknownRequiredFeatureError) as info:
        check_features(Features.from_bits([300, 17, 15]), ours)
    assert info.value.bits == {300}
    with pytest.raises(WireError, match="basic_mpp needs payment_secret") as broken:
        check_features(Features.from_bits([17]), ours)
    assert not isinstance(broken.value, UnknownRequiredFeatureError)


def test_membership() -> None:
    f = Features.from_bits([17])
    assert 17 in f and 16 not in f
    assert "basic_mpp" in f and feature("basic_mpp") in f and "payment_secret" not in f
    with pytest.raises(WireError):  # a misspelt name is an error, not "absent"
        assert "no_such_feature" in f
    assert None not in f
