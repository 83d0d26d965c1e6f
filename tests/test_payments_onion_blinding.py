"""Route blinding: bolt04/route-blinding-test.json (path creation and
unblinding) and bolt04/blinded-payment-onion-test.json (a payment onion into
a blinded path, peeled hop by hop), parsed from the files."""

from __future__ import annotations

import json
from pathlib import Path

import coincurve
import pytest

from lnpmsg.payments.onion import HopPayload, MalformedOnionError, OnionPayloadError, construct_onion, peel_onion, process_onion
from lnpmsg.payments.onion.blinding import (
    BlindedHop,
    BlindedPath,
    BlindingError,
    blinded_node_key,
    create_blinded_path,
    decode_blinded_path,
    decrypt_recipient_data,
    encode_blinded_path,
    padded_encrypted_data,
)
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.onion.payloads import ENCRYPTED_DATA_TLVS
from lnpmsg.wire.primitives import ShortChannelId, decode_bigsize

BOLT04 = Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts" / "bolt04"
ROUTE = json.loads((BOLT04 / "route-blinding-test.json").read_text())
PAYMENT = json.loads((BOLT04 / "blinded-payment-onion-test.json").read_text())


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _segments() -> list[list[dict[str, str]]]:
    """The route is two blinded paths joined: each segment starts at a hop with its own session_key."""
    segments: list[list[dict[str, str]]] = []
    for hop in ROUTE["generate"]["hops"]:
        if "session_key" in hop:
            segments.append([])
        segments[-1].append(hop)
    return segments


def test_blinded_route_creation_matches_the_vector() -> None:
    hops = []
    first_path_key = None
    for segment in _segments():
        path = create_blinded_path(
            _h(segment[0]["session_key"]), [_h(h["node_id"]) for h in segment], [_h(h["encoded_tlvs"]) for h in segment]
        )
        first_path_key = first_path_key or path.first_path_key
        hops.extend(path.hops)
    assert first_path_key.hex() == ROUTE["route"]["first_path_key"]  # type: ignore[union-attr]
    assert [(h.blinded_node_id.hex(), h.encrypted_recipient_data.hex()) for h in hops] == [
        (h["blinded_node_id"], h["encrypted_data"]) for h in ROUTE["route"]["hops"]
    ]
    # and the intermediate values of the generating side
    assert [h.blinded_node_id.hex() for h in hops] == [h["blinded_node_id"] for h in ROUTE["generate"]["hops"]]


@pytest.mark.parametrize("index", range(4))
def test_each_node_unblinds_its_hop(index: int) -> None:
    hop = ROUTE["unblind"]["hops"][index]
    route_hop = ROUTE["route"]["hops"][index]
    key, path_key = _h(hop["node_privkey"]), _h(hop["path_key"])
    assert blinded_node_key(key, path_key).secret.hex() == hop["blinded_privkey"]
    assert coincurve.PrivateKey(_h(hop["blinded_privkey"])).public_key.format().hex() == route_hop["blinded_node_id"]
    data = decrypt_recipient_data(key, path_key, _h(route_hop["encrypted_data"]))
    assert ENCRYPTED_DATA_TLVS.encode(data.data).hex() == hop["decrypted_data"]
    # an override (Carol's, joining the two paths) wins over the derived key
    assert data.next_path_key.hex() == hop.get("next_path_key_override", hop["next_path_key"])


def test_unblinding_with_the_wrong_key_or_data_fails_clearly() -> None:
    hop = ROUTE["unblind"]["hops"][0]
    encrypted = _h(ROUTE["route"]["hops"][0]["encrypted_data"])
    with pytest.raises(BlindingError, match="does not decrypt"):
        decrypt_recipient_data(_h(ROUTE["unblind"]["hops"][1]["node_privkey"]), _h(hop["path_key"]), encrypted)
    with pytest.raises(BlindingError, match="does not decrypt"):
        decrypt_recipient_data(_h(hop["node_privkey"]), _h(hop["path_key"]), encrypted[:-1] + bytes([encrypted[-1] ^ 1]))
    with pytest.raises(BlindingError, match="path key"):
        decrypt_recipient_data(_h(hop["node_privkey"]), b"\x02" + bytes(32), encrypted)
    with pytest.raises(BlindingError, match="node ids"):
        create_blinded_path(_h(hop["node_privkey"]), [], [])


def _unframe(framed: str) -> bytes:
    raw = _h(framed)
    length, used = decode_bigsize(raw)
    return raw[used : used + length]


def test_payment_onion_into_a_blinded_path_matches_the_vector() -> None:
    generate = PAYMENT["generate"]
    hops = generate["full_route"]["hops"]
    built = construct_onion(
        _h(generate["session_key"]), [_h(h["pubkey"]) for h in hops], [_unframe(h["payload"]) for h in hops], _h(generate["associated_data"])
    )
    assert built.packet.hex() == generate["onion"]


def test_payment_onion_is_peeled_through_the_blinded_path() -> None:
    associated_data = _h(PAYMENT["generate"]["associated_data"])
    expected = PAYMENT["generate"]["full_route"]["hops"]
    path_key = None
    packet = _h(PAYMENT["generate"]["onion"])
    for i, hop in enumerate(PAYMENT["decrypt"]["hops"]):
        assert packet.hex() == hop["onion"], hop["alias"]
        key = _h(hop["node_privkey"])
        received = process_onion(key, packet, associated_data, path_key=path_key)
        assert received.payload.encode() == _unframe(expected[i]["payload"])
        assert received.is_final == (i == len(PAYMENT["decrypt"]["hops"]) - 1)
        payload = received.payload
        if payload.is_blinded:
            data = decrypt_recipient_data(key, path_key or payload.current_path_key, payload.encrypted_recipient_data)  # type: ignore[arg-type]
            assert data.next_path_key.hex() == hop["next_path_key"]
            wanted = expected[i]["tlvs"]["encrypted_recipient_data"]
            if "short_channel_id" in wanted:
                assert data.data["short_channel_id"] == ShortChannelId.parse(wanted["short_channel_id"])
            if "path_id" in wanted:
                assert data.data["path_id"].hex() == wanted["path_id"]
            path_key = data.next_path_key
        packet = received.next_packet or b""
    final = received.payload
    tlvs = expected[-1]["tlvs"]
    assert (final.amt_to_forward, final.outgoing_cltv_value, final.total_amount_msat) == (
        tlvs["amt_to_forward"],
        tlvs["outgoing_cltv_value"],
        tlvs["total_amount_msat"],
    )
    assert final.total == tlvs["total_amount_msat"]


def test_blinded_hop_errors() -> None:
    decrypt = PAYMENT["decrypt"]["hops"]
    associated_data = _h(PAYMENT["generate"]["associated_data"])
    carol = decrypt[2]
    # Carol's onion needs the path key: without it her HMAC check fails
    with pytest.raises(MalformedOnionError):
        peel_onion(_h(carol["node_privkey"]), _h(carol["onion"]), associated_data)
    # a path key that is no point: invalid_onion_blinding, for update_fail_malformed_htlc
    with pytest.raises(MalformedOnionError) as info:
        peel_onion(_h(carol["node_privkey"]), _h(carol["onion"]), associated_data, path_key=b"\x02" + bytes(32))
    assert info.value.failure_code == InvalidOnionBlinding.TYPE
    # a blinded payload carrying what it must not
    secret = b"s" * 32
    bad = HopPayload(encrypted_recipient_data=b"x" * 20, short_channel_id=ShortChannelId(1, 2, 3))
    with pytest.raises(OnionPayloadError, match="short_channel_id is not allowed"):
        bad.check(is_final=False, shared_secret=secret, path_key_in_htlc=True)
    with pytest.raises(OnionPayloadError, match="needs a path key"):
        HopPayload(encrypted_recipient_data=b"x").check(is_final=False, shared_secret=secret)
    with pytest.raises(OnionPayloadError, match="needs total_amount_msat"):
        HopPayload(encrypted_recipient_data=b"x", amt_to_forward=1, outgoing_cltv_value=2).check(
            is_final=True, shared_secret=secret, path_key_in_htlc=True
        )


def _vector_path() -> BlindedPath:
    hops = tuple(BlindedHop(_h(h["blinded_node_id"]), _h(h["encrypted_data"])) for h in ROUTE["route"]["hops"])
    return BlindedPath(first_node_id=_h(ROUTE["generate"]["hops"][0]["node_id"]), first_path_key=_h(ROUTE["route"]["first_path_key"]), hops=hops)


def test_blinded_path_wire_form_round_trips() -> None:
    path = _vector_path()
    data = encode_blinded_path(path)
    assert data[:33] == path.first_node_id and data[33:66] == path.first_path_key and data[66] == len(path.hops)
    assert decode_blinded_path(data + b"tail") == (path, len(data))
    # a sciddir introduction (direction byte + short channel id) is 9 bytes
    sciddir = BlindedPath(first_node_id=bytes([1]) + bytes(8), first_path_key=path.first_path_key, hops=path.hops)
    decoded, end = decode_blinded_path(sciddir.encode())
    assert decoded == sciddir and not decoded.introduction_is_node_id and end == len(data) - 24


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d[:50], "truncated in first_path_key"),
        (lambda d: d[:-1], "truncated in encrypted_recipient_data"),
        (lambda d: b"\x05" + d[1:], "starts with 5"),
        (lambda d: d[:66] + b"\x00", "no hops"),
        (lambda d: b"", "empty"),
        (lambda d: d[:33] + b"\x04" + d[34:], "not a compressed point"),
    ],
)
def test_bad_blinded_paths_are_refused(mangle, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BlindingError, match=match):
        decode_blinded_path(mangle(encode_blinded_path(_vector_path())))


def test_padded_encrypted_data_has_one_length() -> None:
    node = _h(ROUTE["generate"]["hops"][1]["node_id"])
    streams = [
        ENCRYPTED_DATA_TLVS.stream(next_node_id=node),
        ENCRYPTED_DATA_TLVS.stream(short_channel_id=ShortChannelId(1, 2, 3)),
        ENCRYPTED_DATA_TLVS.stream(path_id=bytes(300)),
        ENCRYPTED_DATA_TLVS.stream(),
    ]
    encoded = padded_encrypted_data(streams)
    assert len({len(e) for e in encoded}) == 1
    for stream, data in zip(streams, encoded, strict=True):
        decoded = ENCRYPTED_DATA_TLVS.decode_stream(data)
        assert decoded.replace(padding=None) == stream and set(decoded.get("padding", b"")) <= {0}
