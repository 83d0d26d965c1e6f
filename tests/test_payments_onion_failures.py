"""Every BOLT-4 failure message (checked against csv/onion_wire.csv), its
flags and codec; failure onions attributed to each hop position."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import coincurve
import pytest

from lnpmsg.payments.onion import (
    FailureOnionError,
    construct_onion,
    create_failure_onion,
    decode_failure,
    decrypt_failure_onion,
    peel_onion,
    wrap_failure_onion,
)
from lnpmsg.payments.onion.failures import (
    BADONION,
    FAILURES,
    NODE,
    PERM,
    UPDATE,
    AmountBelowMinimum,
    ChannelDisabled,
    ExpiryTooSoon,
    Failure,
    IncorrectOrUnknownPaymentDetails,
    InvalidOnionHmac,
    InvalidOnionPayload,
    TemporaryChannelFailure,
    UnknownFailure,
)
from lnpmsg.wire.errors import WireError

BOLTS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts"
_FLAGS = {"BADONION": BADONION, "PERM": PERM, "NODE": NODE, "UPDATE": UPDATE}


def _csv_failures() -> dict[str, tuple[int, list[str]]]:
    """name -> (failure code, field names without the ``len`` prefixes) from onion_wire.csv."""
    failures: dict[str, tuple[int, list[str]]] = {}
    with (BOLTS / "csv" / "onion_wire.csv").open() as f:
        for row in csv.reader(f):
            if row[0] == "msgtype" and row[1] != "onion_message":
                code = 0
                for part in row[2].split("|"):
                    code |= _FLAGS[part] if part in _FLAGS else int(part)
                failures[row[1]] = (code, [])
            elif row[0] == "msgdata" and row[1] in failures and row[2] != "len":
                failures[row[1]][1].append(row[2])
    return failures


CSV_FAILURES = _csv_failures()


def test_every_spec_failure_is_known_with_its_code_and_fields() -> None:
    assert len(CSV_FAILURES) == 22
    by_name = {cls.NAME: cls for cls in FAILURES}
    assert set(by_name) == set(CSV_FAILURES)
    for name, (code, fields) in CSV_FAILURES.items():
        cls = by_name[name]
        assert cls.TYPE == code, name
        assert [n for n, _ in cls.FIELDS] == [*fields, "extension"], name


def _example(cls: type[Failure]) -> Failure:
    values = {
        "sha256_of_onion": bytes(range(32)),
        "channel_update": b"\x01\x02" * 70,
        "htlc_msat": 123_456_789,
        "cltv_expiry": 800_144,
        "height": 800_000,
        "incoming_htlc_amt": 5000,
        "disabled_flags": 0,
        "type": 65537,
        "offset": 42,
    }
    names = [n for n, _ in cls.FIELDS if n != "extension"]
    return cls(**{n: values[n] for n in names}, extension=b"\x01\x02ab")  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", list(FAILURES), ids=lambda c: c.NAME)
def test_failure_round_trip_and_flags(cls: type[Failure]) -> None:
    failure = _example(cls)
    data = failure.encode()
    assert data[:2] == cls.TYPE.to_bytes(2, "big")
    decoded = decode_failure(data)
    assert decoded == failure
    assert decoded.is_bad_onion == bool(cls.TYPE & BADONION)
    assert decoded.is_permanent == bool(cls.TYPE & PERM)
    assert decoded.is_node_failure == bool(cls.TYPE & NODE)
    assert decoded.is_update == bool(cls.TYPE & UPDATE)
    assert decoded.tlvs is not None and decoded.tlvs.unknown == {1: b"ab"}
    # a failure without its optional TLV stream reads the same
    bare = cls(**{n: getattr(failure, n) for n, _ in cls.FIELDS if n != "extension"})  # type: ignore[call-arg]
    assert decode_failure(bare.encode()) == bare


def test_failure_fields_by_spec_example() -> None:
    assert IncorrectOrUnknownPaymentDetails(htlc_msat=100, height=800000).encode().hex() == "400f0000000000000064000c3500"
    assert TemporaryChannelFailure().encode().hex() == "100700" + "00"
    assert AmountBelowMinimum(htlc_msat=1, channel_update=b"\xaa").encode().hex() == "100b" + "0000000000000001" + "0001aa"
    assert ChannelDisabled().encode().hex() == "1014" + "0000" + "0000"
    assert ExpiryTooSoon(channel_update=b"").is_update
    assert InvalidOnionPayload(type=0xFD, offset=3).encode().hex() == "4016" + "fd00fd" + "0003"


def test_unknown_and_truncated_failures() -> None:
    unknown = decode_failure(bytes.fromhex("c0ff" + "beef"))
    assert isinstance(unknown, UnknownFailure)
    assert unknown.is_bad_onion and unknown.is_permanent and unknown.data == b"\xbe\xef"
    assert unknown.encode().hex() == "c0ffbeef"
    with pytest.raises(WireError):
        decode_failure(bytes.fromhex("400f0000"))  # incorrect_or_unknown_payment_details cut short
    with pytest.raises(WireError):
        decode_failure(b"\x40")
    # a broken TLV tail is ignored by the reader, as the origin MUST ignore extra bytes
    odd_tail = decode_failure(bytes.fromhex("2002") + b"\x02\x05")
    assert isinstance(odd_tail, Failure) and odd_tail.tlvs is None and odd_tail.code == NODE | 2


def _route(n: int, rng: random.Random) -> tuple[list[bytes], list[bytes], bytes]:
    keys = [coincurve.PrivateKey(rng.randbytes(32)) for _ in range(n)]
    return [k.secret for k in keys], [k.public_key.format() for k in keys], rng.randbytes(32)


@pytest.mark.parametrize("length", [1, 2, 5, 20])
def test_failure_attributed_to_each_hop_position(length: int) -> None:
    rng = random.Random(length)
    secrets, pubkeys, payment_hash = _route(length, rng)
    built = construct_onion(rng.randbytes(32), pubkeys, [b"\x02\x01\x01"] * length, payment_hash)
    # each hop peels and remembers its shared secret, as a forwarding node does
    hop_secrets = []
    packet = built.packet
    for key in secrets:
        peeled = peel_onion(key, packet, payment_hash)
        hop_secrets.append(peeled.shared_secret)
        packet = peeled.next_packet or b""
    assert tuple(hop_secrets) == built.shared_secrets
    for failing in range(length):
        failure = AmountBelowMinimum(htlc_msat=failing + 1)
        returned = create_failure_onion(hop_secrets[failing], failure)
        assert len(returned) == 32 + 2 + 256 + 2  # padded: the length hides which failure it is
        for upstream in reversed(range(failing)):
            returned = wrap_failure_onion(hop_secrets[upstream], returned)
        attributed = decrypt_failure_onion(built.shared_secrets, returned)
        assert attributed.hop_index == failing
        assert attributed.failure == failure


def test_a_garbled_failure_onion_is_not_attributed() -> None:
    rng = random.Random(7)
    _, pubkeys, payment_hash = _route(3, rng)
    built = construct_onion(rng.randbytes(32), pubkeys, [b"\x02\x01\x01"] * 3, payment_hash)
    returned = create_failure_onion(built.shared_secrets[2], InvalidOnionHmac(sha256_of_onion=bytes(32)))
    returned = wrap_failure_onion(built.shared_secrets[1], returned)
    garbled = bytearray(returned)
    garbled[40] ^= 1  # one bit flipped by a hop on the way back
    with pytest.raises(FailureOnionError):
        decrypt_failure_onion(built.shared_secrets, wrap_failure_onion(built.shared_secrets[0], bytes(garbled)))
    with pytest.raises(FailureOnionError):
        decrypt_failure_onion(built.shared_secrets, os.urandom(20))


def test_a_hop_that_sends_no_failure_message_is_still_blamed() -> None:
    rng = random.Random(9)
    _, pubkeys, payment_hash = _route(2, rng)
    built = construct_onion(rng.randbytes(32), pubkeys, [b"\x02\x01\x01"] * 2, payment_hash)
    returned = create_failure_onion(built.shared_secrets[1], b"\x40")  # one byte: no failure code
    attributed = decrypt_failure_onion(built.shared_secrets, wrap_failure_onion(built.shared_secrets[0], returned))
    assert attributed.hop_index == 1 and attributed.failure is None and attributed.message == b"\x40"


def test_a_malformed_htlc_becomes_the_upstream_hops_failure() -> None:
    from lnpmsg.payments.onion.failures import InvalidOnionBlinding, InvalidOnionKey, malformed_failure

    sha = bytes(range(32))
    assert malformed_failure(InvalidOnionKey.TYPE, sha) == InvalidOnionKey(sha256_of_onion=sha)
    assert malformed_failure(InvalidOnionBlinding.TYPE, sha) == InvalidOnionBlinding(sha256_of_onion=sha)
    assert malformed_failure(BADONION | PERM | 99, sha) == UnknownFailure(code=BADONION | PERM | 99, data=sha)
    with pytest.raises(ValueError, match="BADONION bit"):
        malformed_failure(PERM | 5, sha)
    # the upstream hop wraps it for the origin, which learns the onion broke after that hop
    rng = random.Random(3)
    _, pubkeys, payment_hash = _route(3, rng)
    built = construct_onion(rng.randbytes(32), pubkeys, [b"\x02\x01\x01"] * 3, payment_hash)
    returned = create_failure_onion(built.shared_secrets[1], malformed_failure(InvalidOnionKey.TYPE, sha))
    attributed = decrypt_failure_onion(built.shared_secrets, wrap_failure_onion(built.shared_secrets[0], returned))
    assert attributed.hop_index == 1 and attributed.failure == InvalidOnionKey(sha256_of_onion=sha)
