"""Sphinx onions: round trips over random routes of 1-20 hops, the malformed
cases that become update_fail_malformed_htlc, payload errors, and fuzzing of
the peel path (only the documented errors, with the right BADONION code)."""

from __future__ import annotations

import hashlib

import coincurve
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnpmsg.payments.onion import (
    ONION_PACKET_SIZE,
    HopPayload,
    MalformedOnionError,
    OnionConstructionError,
    OnionPayloadError,
    construct_onion,
    create_failure_onion,
    decode_hop_payload,
    decrypt_failure_onion,
    peel_onion,
    process_onion,
)
from lnpmsg.payments.onion.failures import (
    InvalidOnionBlinding,
    InvalidOnionHmac,
    InvalidOnionKey,
    InvalidOnionPayload,
    InvalidOnionVersion,
)
from lnpmsg.payments.onion.sphinx import hop_payload_size
from lnpmsg.wire.primitives import ShortChannelId

VERSION, KEY, HMAC = InvalidOnionVersion.TYPE, InvalidOnionKey.TYPE, InvalidOnionHmac.TYPE
PAYMENT_HASH = hashlib.sha256(b"preimage").digest()
NODE_KEYS = [hashlib.sha256(b"node %d" % i).digest() for i in range(20)]
NODE_IDS = [coincurve.PrivateKey(k).public_key.format() for k in NODE_KEYS]
SESSION_KEY = hashlib.sha256(b"session").digest()


def _payloads(n: int, final_secret: bytes = bytes(32)) -> list[HopPayload]:
    hops = [HopPayload.forward(10_000 + 1000 * (n - i), 800_000 + 40 * (n - i), ShortChannelId(700_000 + i, i, 1)) for i in range(n - 1)]
    return [*hops, HopPayload.final(10_000, 800_000, payment_secret=final_secret, payment_metadata=b"invoice-1")]


def _onion(n: int) -> bytes:
    return construct_onion(SESSION_KEY, NODE_IDS[:n], [p.encode() for p in _payloads(n)], PAYMENT_HASH).packet


VALID_3 = _onion(3)


@pytest.mark.parametrize("n", range(1, 21))
def test_route_of_n_hops_round_trips_through_process_onion(n: int) -> None:
    payloads = _payloads(n)
    built = construct_onion(SESSION_KEY, NODE_IDS[:n], [p.encode() for p in payloads], PAYMENT_HASH)
    assert len(built.packet) == ONION_PACKET_SIZE
    packet = built.packet
    for i in range(n):
        received = process_onion(NODE_KEYS[i], packet, PAYMENT_HASH)
        assert received.payload == payloads[i]
        assert received.shared_secret == built.shared_secrets[i]
        assert received.is_final == (i == n - 1)
        packet = received.next_packet or b""
    assert packet == b""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_routes_and_payload_sizes_round_trip(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 20), label="hops")
    budget = 1300
    payloads = []
    for i in range(n):
        # leave each later hop room for a 2-byte payload (35 bytes with length and HMAC);
        # this hop takes its payload + 32 + a length of up to 3 bytes
        room = budget - 35 * (n - i - 1) - 35
        size = data.draw(st.integers(2, max(2, min(room if room < 253 else room - 2, 400))), label=f"payload {i}")
        payloads.append(data.draw(st.binary(min_size=size, max_size=size)))
        budget -= hop_payload_size(payloads[-1])
    session = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: 0 < int.from_bytes(b, "big") < 2**255))
    assoc = data.draw(st.binary(max_size=64))
    built = construct_onion(session, NODE_IDS[:n], payloads, assoc)
    packet = built.packet
    for i in range(n):
        peeled = peel_onion(NODE_KEYS[i], packet, assoc)
        assert peeled.payload == payloads[i]
        assert peeled.is_final == (i == n - 1)
        packet = peeled.next_packet or b""


def test_construction_refuses_what_cannot_be_built() -> None:
    with pytest.raises(OnionConstructionError, match="hop keys but"):
        construct_onion(SESSION_KEY, NODE_IDS[:2], [b"\x02\x00"], PAYMENT_HASH)
    with pytest.raises(OnionConstructionError, match="1 to 27 hops"):
        construct_onion(SESSION_KEY, [], [], PAYMENT_HASH)
    with pytest.raises(OnionConstructionError, match="more than the onion's 1300"):
        construct_onion(SESSION_KEY, NODE_IDS[:2], [b"x" * 700, b"y" * 700], PAYMENT_HASH)
    with pytest.raises(OnionConstructionError, match="at least 2 bytes"):
        construct_onion(SESSION_KEY, NODE_IDS[:1], [b"x"], PAYMENT_HASH)
    with pytest.raises(OnionConstructionError, match="hop 1: invalid public key"):
        construct_onion(SESSION_KEY, [NODE_IDS[0], b"\x02" + bytes(32)], [b"\x02\x00"] * 2, PAYMENT_HASH)
    with pytest.raises(OnionConstructionError, match="session key"):
        construct_onion(bytes(32), NODE_IDS[:1], [b"\x02\x00"], PAYMENT_HASH)
    # exactly 1300 bytes of payloads fit
    exact = construct_onion(SESSION_KEY, NODE_IDS[:1], [b"z" * (1300 - 3 - 32)], PAYMENT_HASH)
    assert peel_onion(NODE_KEYS[0], exact.packet, PAYMENT_HASH).payload == b"z" * 1265


def _malformed(packet: bytes, **kwargs: object) -> MalformedOnionError:
    with pytest.raises(MalformedOnionError) as info:
        peel_onion(NODE_KEYS[0], packet, kwargs.get("assoc", PAYMENT_HASH), path_key=kwargs.get("path_key"))  # type: ignore[arg-type]
    assert info.value.sha256_of_onion == hashlib.sha256(packet).digest()
    assert info.value.failure.code == info.value.failure_code
    assert info.value.failure.sha256_of_onion == info.value.sha256_of_onion  # type: ignore[attr-defined]
    return info.value


def test_bad_version_key_and_hmac_become_malformed_htlc_failures() -> None:
    assert _malformed(b"\x01" + VALID_3[1:]).failure_code == VERSION
    assert _malformed(VALID_3[:1] + b"\x04" + VALID_3[2:]).failure_code == KEY  # not a compressed point
    off_curve = b"\x02" + bytes(32)  # x = 0 is on no secp256k1 point
    assert _malformed(VALID_3[:1] + off_curve + VALID_3[34:]).failure_code == KEY
    assert _malformed(VALID_3[:-1] + bytes([VALID_3[-1] ^ 1])).failure_code == HMAC
    assert _malformed(VALID_3, assoc=b"another payment hash").failure_code == HMAC
    # the right onion for someone else
    with pytest.raises(MalformedOnionError) as info:
        peel_onion(NODE_KEYS[1], VALID_3, PAYMENT_HASH)
    assert info.value.failure_code == HMAC


def test_truncated_onions_fail_at_their_first_missing_field() -> None:
    assert _malformed(b"").failure_code == VERSION
    assert _malformed(VALID_3[:20]).failure_code == KEY
    assert _malformed(VALID_3[:34]).failure_code == HMAC
    assert _malformed(VALID_3[:-1]).failure_code == HMAC
    assert _malformed(VALID_3 + b"\x00").failure_code == HMAC


def test_authentic_onion_with_broken_framing_gets_invalid_onion_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    # a broken sender: it writes the reserved payload length 1 in an otherwise valid onion
    secret = construct_onion(SESSION_KEY, NODE_IDS[:1], [b"\x02\x00"], PAYMENT_HASH).shared_secrets[0]
    from lnpmsg.payments.onion import sphinx

    monkeypatch.setattr(sphinx, "encode_bigsize", lambda n: b"\x01")
    packet = construct_onion(SESSION_KEY, NODE_IDS[:1], [b"\x02\x00"], PAYMENT_HASH).packet
    monkeypatch.undo()
    with pytest.raises(OnionPayloadError) as info:
        peel_onion(NODE_KEYS[0], packet, PAYMENT_HASH)
    assert info.value.failure == InvalidOnionPayload(type=0, offset=0)
    assert info.value.shared_secret == secret


def test_payload_errors_name_the_record_and_reach_the_sender() -> None:
    # a forwarding hop whose payload lacks short_channel_id
    bad = [HopPayload.final(5000, 700).encode(), HopPayload.final(5000, 700).encode()]
    built = construct_onion(SESSION_KEY, NODE_IDS[:2], bad, PAYMENT_HASH)
    with pytest.raises(OnionPayloadError) as info:
        process_onion(NODE_KEYS[0], built.packet, PAYMENT_HASH)
    assert info.value.failure == InvalidOnionPayload(type=6, offset=0)
    reply = create_failure_onion(info.value.shared_secret, info.value.failure)
    attributed = decrypt_failure_onion(built.shared_secrets, reply)
    assert (attributed.hop_index, attributed.failure) == (0, InvalidOnionPayload(type=6, offset=0))
    # a payload that is no TLV stream: type and offset of the first bad record
    with pytest.raises(OnionPayloadError) as info:
        decode_hop_payload(bytes.fromhex("02022710" + "0403e8"), b"s" * 32)  # 3 bytes promised, 1 there
    assert info.value.failure == InvalidOnionPayload(type=4, offset=4)
    with pytest.raises(OnionPayloadError) as info:
        decode_hop_payload(bytes.fromhex("02022710" + "0e0100"), b"s" * 32)  # unknown even type 14
    assert info.value.failure == InvalidOnionPayload(type=14, offset=4)
    missing = HopPayload(outgoing_cltv_value=5)
    with pytest.raises(OnionPayloadError) as info:
        missing.check(is_final=True, shared_secret=b"")
    assert info.value.failure == InvalidOnionPayload(type=2, offset=0)
    with pytest.raises(OnionPayloadError):
        HopPayload.forward(1, 2, ShortChannelId(1, 1, 1)).check(is_final=False, shared_secret=b"", path_key_in_htlc=True)


def test_payload_types_and_total() -> None:
    final = HopPayload.final(7000, 900, payment_secret=b"\x11" * 32, total_msat=21000, payment_metadata=b"m")
    decoded = decode_hop_payload(final.encode(), b"")
    assert decoded == final and decoded.total == 21000
    assert HopPayload.final(7000, 900).total == 7000
    assert HopPayload.final(7000, 900, payment_secret=b"\x11" * 32).total_msat == 7000
    assert decode_hop_payload(final.encode(), b"").encode().hex().startswith("0202" + "1b58")


# ------------------------------------------------------------------ fuzzing

_DOCUMENTED = (MalformedOnionError, OnionPayloadError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=ONION_PACKET_SIZE + 40))
def test_random_bytes_only_raise_documented_errors(packet: bytes) -> None:
    try:
        peel_onion(NODE_KEYS[0], packet, PAYMENT_HASH)
    except MalformedOnionError as exc:
        assert exc.failure_code in (VERSION, KEY, HMAC)
        if packet and packet[0] != 0:
            assert exc.failure_code == VERSION
    except OnionPayloadError:  # pragma: no cover - would need a forged HMAC
        pytest.fail("random bytes passed the HMAC check")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, ONION_PACKET_SIZE * 8 - 1))
def test_any_bit_flip_is_caught_with_the_right_code(bit: int) -> None:
    flipped = bytearray(VALID_3)
    flipped[bit // 8] ^= 1 << (bit % 8)
    error = _malformed(bytes(flipped))
    byte = bit // 8
    if byte == 0:
        assert error.failure_code == VERSION
    elif byte == 1:  # the key's prefix: 02 <-> 03 is still a point (HMAC fails), anything else is no key
        assert error.failure_code == (HMAC if flipped[1] in (2, 3) else KEY)
    elif byte < 34:
        assert error.failure_code in (KEY, HMAC)
    else:
        assert error.failure_code == HMAC


@settings(max_examples=100, deadline=None)
@given(st.integers(0, ONION_PACKET_SIZE - 1))
def test_any_truncation_is_caught(length: int) -> None:
    code = _malformed(VALID_3[:length]).failure_code
    assert code == (VERSION if length == 0 else KEY if length < 34 else HMAC)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_hop_payload_decoding_never_raises_anything_else(data: bytes) -> None:
    try:
        decode_hop_payload(data, b"s" * 32)
    except OnionPayloadError as exc:
        assert exc.failure.code == InvalidOnionPayload.TYPE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_failure_onion_decryption_never_raises_anything_else(data: bytes) -> None:
    from lnpmsg.payments.onion import FailureOnionError

    secrets = construct_onion(SESSION_KEY, NODE_IDS[:3], [b"\x02\x00"] * 3, PAYMENT_HASH).shared_secrets
    try:
        decrypt_failure_onion(secrets, data)
    except FailureOnionError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=40))
def test_any_path_key_gives_a_documented_error(path_key: bytes) -> None:
    # a hop told it is inside a blinded route, with a path key from anyone
    with pytest.raises(MalformedOnionError) as info:
        process_onion(NODE_KEYS[0], VALID_3, PAYMENT_HASH, path_key=path_key)
    assert info.value.failure_code in (HMAC, InvalidOnionBlinding.TYPE)
