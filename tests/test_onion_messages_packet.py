"""The onion-message core (lnpmsg.onion_messages.packet): bolt04/blinded-onion-message-onion-test.json
built and peeled hop by hop through the public API (parsed from the file), then round trips over
direct and blinded paths, sizes, and every message BOLT 4 says to ignore."""

from __future__ import annotations

import json

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import BOLTS

from lnpmsg.onion_messages.packet import (
    ONION_MESSAGE_TYPE,
    BlindedPath,
    Delivery,
    Forward,
    OnionMessageError,
    OnionMessageIgnored,
    _tlv,
    blinded_path_to,
    build_onion_message,
    peel_onion_message,
)
from lnpmsg.payments.onion import construct_onion, create_blinded_path
from lnpmsg.payments.onion.blinding import BlindingError, decode_blinded_path
from lnpmsg.payments.onion.payloads import ENCRYPTED_DATA_TLVS
from lnpmsg.wire.primitives import ShortChannelId

VECTOR = json.loads((BOLTS / "bolt04" / "blinded-onion-message-onion-test.json").read_text())
GEN = VECTOR["generate"]["hops"]


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _message(path_key: bytes, packet: bytes) -> bytes:
    return ONION_MESSAGE_TYPE.to_bytes(2, "big") + path_key + len(packet).to_bytes(2, "big") + packet


def _split(message: bytes) -> tuple[bytes, bytes]:
    assert int.from_bytes(message[:2], "big") == ONION_MESSAGE_TYPE
    return message[2:35], message[37:]


def _dave_path() -> BlindedPath:
    """Dave's blinded path Bob -> Carol -> Dave, as Dave made it (the vector's second segment)."""
    nodes = [_h(GEN[0]["tlvs"]["next_node_id"]), _h(GEN[1]["tlvs"]["next_node_id"]), _h(GEN[2]["tlvs"]["next_node_id"])]
    return create_blinded_path(_h(GEN[1]["path_key_secret"]), nodes, [_h(h["encrypted_data_tlv"]) for h in GEN[1:]])


def test_the_vector_message_is_built_by_joining_daves_path() -> None:
    alice = _h(VECTOR["route"]["first_node_id"])
    out = build_onion_message(
        _h(VECTOR["generate"]["session_key"]), _h(GEN[0]["path_key_secret"]), [alice], _dave_path(), {1: _h(VECTOR["onionmessage"]["unknown_tag_1"])}
    )
    assert out.first_node_id == alice
    assert out.path_key.hex() == VECTOR["route"]["first_path_key"]
    assert out.packet.hex() == VECTOR["onionmessage"]["onion_message_packet"]
    assert _message(out.path_key, out.packet).hex() == VECTOR["decrypt"]["hops"][0]["onion_message"]


def test_each_hop_of_the_vector_forwards_then_dave_gets_it() -> None:
    hops = VECTOR["decrypt"]["hops"]
    for i, hop in enumerate(hops):
        result = peel_onion_message(_h(hop["privkey"]), *_split(_h(hop["onion_message"])))
        if i + 1 < len(hops):
            assert isinstance(result, Forward)
            assert result.next_node_id.hex() == hop["next_node_id"] and result.next_short_channel_id is None  # type: ignore[union-attr]
            assert _message(result.path_key, result.packet).hex() == hops[i + 1]["onion_message"]
        else:
            assert isinstance(result, Delivery)
            assert result.path_id.hex() == GEN[-1]["tlvs"]["path_id"]  # type: ignore[union-attr]
            assert result.unknown_odd == {1: _h(hop["tlvs"]["unknown_tag_1"])}
            assert result.records == {} and result.reply_path is None


KEYS = [coincurve.PrivateKey(bytes([i]) * 32) for i in range(1, 6)]
IDS = [k.public_key.format() for k in KEYS]


def _walk(out, keys_by_id):  # type: ignore[no-untyped-def]
    """Carry a message hop by hop; the node ids it passed and what the last one got."""
    node, path_key, packet, seen = out.first_node_id, out.path_key, out.packet, []
    while True:
        seen.append(node)
        result = peel_onion_message(keys_by_id[node], path_key, packet)
        if isinstance(result, Delivery):
            return seen, result
        node, path_key, packet = result.next_node_id, result.path_key, result.packet


def test_a_direct_path_with_a_reply_path_and_the_reply() -> None:
    keys = dict(zip(IDS, KEYS, strict=True))
    reply = blinded_path_to(bytes([9]) * 32, [IDS[2], IDS[1], IDS[0]], path_id=b"our secret")
    out = build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [IDS[1], IDS[2]], IDS[3], {65: b"ping"}, reply_path=reply)
    assert len(out.packet) == 1366
    seen, got = _walk(out, keys)
    assert seen == IDS[1:4] and got.records == {65: b"ping"} and got.path_id is None and got.reply_path == reply
    back = build_onion_message(bytes([10]) * 32, bytes([11]) * 32, [], got.reply_path, {67: b"pong"})
    seen, answer = _walk(back, keys)
    assert seen == [IDS[2], IDS[1], IDS[0]] and answer.records == {67: b"pong"} and answer.path_id == b"our secret"
    # our own hops' encrypted data are padded to one length
    assert len({len(h.encrypted_recipient_data) for h in reply.hops}) == 1


def test_a_large_message_takes_the_big_size_and_too_large_is_refused() -> None:
    keys = dict(zip(IDS, KEYS, strict=True))
    out = build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [IDS[1]], IDS[2], {64: bytes(2000)})
    assert len(out.packet) == 32834
    assert _walk(out, keys)[1].records == {64: bytes(2000)}
    with pytest.raises(OnionMessageError, match="more than"):
        build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [], IDS[2], {64: bytes(40000)})
    with pytest.raises(OnionMessageError, match="64 and up"):
        build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [], IDS[2], {6: b"x"})


def test_a_hop_named_by_short_channel_id() -> None:
    scid = ShortChannelId(700, 1, 0)
    path = blinded_path_to(bytes([9]) * 32, [IDS[0], IDS[1]], first_scids=[scid])
    out = build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [], path, {64: b"x"})
    forward = peel_onion_message(KEYS[0], out.path_key, out.packet)
    assert isinstance(forward, Forward) and forward.next_node_id is None and forward.next_short_channel_id == scid
    assert peel_onion_message(KEYS[1], forward.path_key, forward.packet).records == {64: b"x"}  # type: ignore[union-attr]


def _raw(final_records: dict[int, bytes], data: dict, *, hops: int = 1) -> tuple[bytes, bytes]:  # type: ignore[type-arg]
    """A message hand-made for KEYS[0] (then KEYS[1]): our own TLVs and encrypted data, any of them wrong."""
    streams = [ENCRYPTED_DATA_TLVS.encode(ENCRYPTED_DATA_TLVS.stream(**data))] + [b""] * (hops - 1)
    path = create_blinded_path(bytes([9]) * 32, IDS[:hops], streams)
    payloads = [_tlv({4: path.hops[0].encrypted_recipient_data, **final_records})] + [_tlv({4: h.encrypted_recipient_data}) for h in path.hops[1:]]
    packet = construct_onion(bytes([7]) * 32, [h.blinded_node_id for h in path.hops], payloads, b"", min_payload=0).packet
    return path.first_path_key, packet


@pytest.mark.parametrize(
    ("records", "data", "hops", "match"),
    [
        ({6: b"x"}, {}, 1, "unknown even type 6"),
        ({64: b"a", 66: b"b"}, {}, 1, "at most one"),
        ({}, {"allowed_features": b"\x01"}, 1, "allowed_features"),
        ({2: b"\x07junk"}, {}, 1, "reply_path"),
        ({65: b"x"}, {"next_node_id": IDS[1]}, 2, "only encrypted_recipient_data"),
        ({}, {"next_node_id": IDS[1], "path_id": b"p"}, 2, "path_id"),
        ({}, {}, 2, "neither next_node_id nor short_channel_id"),
    ],
)
def test_messages_bolt4_says_to_ignore(records, data, hops, match) -> None:  # type: ignore[no-untyped-def]
    path_key, packet = _raw(records, data, hops=hops)
    with pytest.raises(OnionMessageIgnored, match=match):
        peel_onion_message(KEYS[0], path_key, packet)


def test_broken_packets_are_ignored_not_raised_otherwise() -> None:
    out = build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [], IDS[0], {64: b"x"})
    bad_hmac = out.packet[:-1] + bytes([out.packet[-1] ^ 1])
    cases = [
        (out.path_key, bad_hmac, "HMAC"),
        (b"\x02" + bytes(32), out.packet, "onion"),  # a path key off the curve
        (out.path_key, out.packet[:60], "onion"),
        (out.path_key, b"\x01" + out.packet[1:], "version"),
        (out.path_key, bytes(70000), "more than"),
        (IDS[1], out.packet, "HMAC"),  # the wrong path key: the blinded key does not match
    ]
    for path_key, packet, match in cases:
        with pytest.raises(OnionMessageIgnored, match=match):
            peel_onion_message(KEYS[0], path_key, packet)
    # no encrypted_recipient_data at all
    path = create_blinded_path(bytes([9]) * 32, IDS[:1], [b""])
    packet = construct_onion(bytes([7]) * 32, [path.hops[0].blinded_node_id], [_tlv({64: b"x"})], b"", min_payload=0).packet
    with pytest.raises(OnionMessageIgnored, match="no encrypted_recipient_data"):
        peel_onion_message(KEYS[0], path.first_path_key, packet)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=33), st.binary(max_size=1500), st.integers(min_value=0, max_value=1400), st.binary(max_size=8))
def test_peeling_anything_only_ever_ignores(path_key: bytes, noise: bytes, at: int, flip: bytes) -> None:
    """Random bytes, and a valid message with bytes changed anywhere: a result or OnionMessageIgnored, nothing else."""
    for key, packet in ((path_key, noise), _corrupted(at, flip)):
        try:
            peel_onion_message(KEYS[0], key, packet)
        except OnionMessageIgnored:
            pass


_VALID = build_onion_message(bytes([7]) * 32, bytes([8]) * 32, [], IDS[0], {65: b"x"}, reply_path=blinded_path_to(bytes([9]) * 32, [IDS[1], IDS[0]]))


def _corrupted(at: int, flip: bytes) -> tuple[bytes, bytes]:
    packet = bytearray(_VALID.packet)
    for i, b in enumerate(flip):
        packet[(at + i) % len(packet)] ^= b
    return _VALID.path_key, bytes(packet)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_blinded_path_parser_refuses_cleanly(data: bytes) -> None:
    try:
        path, end = decode_blinded_path(data)
    except BlindingError:
        return
    assert end <= len(data) and path.encode() == data[:end]
