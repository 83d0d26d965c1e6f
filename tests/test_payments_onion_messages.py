"""bolt04/blinded-onion-message-onion-test.json: an onion message into a
blinded path joined to another (next_path_key_override), built and peeled
with the same Sphinx and blinding code as payments (no associated data)."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import coincurve

from lnpmsg.payments.onion import construct_onion, create_blinded_path, decrypt_recipient_data, peel_onion
from lnpmsg.payments.onion._crypto import KEY_RHO, derive_key, ecdh
from lnpmsg.wire.fields import rest_bytes
from lnpmsg.wire.tlv import TlvSchema, TlvStream

VECTOR = json.loads((Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts" / "bolt04" / "blinded-onion-message-onion-test.json").read_text())
# the part of onionmsg_tlv this vector uses (the final hop's "hello" is an unknown odd record)
ONIONMSG_TLV = TlvSchema({4: ("encrypted_recipient_data", rest_bytes)}, name="onionmsg_tlv")
ONION_MESSAGE_TYPE = 513


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _node_ids() -> list[bytes]:
    """Alice is the route's first node; each next one is named by the previous hop's next_node_id."""
    hops = VECTOR["generate"]["hops"]
    return [_h(VECTOR["route"]["first_node_id"])] + [_h(h["tlvs"]["next_node_id"]) for h in hops[:-1]]


def test_blinded_path_with_a_joined_path_matches_the_vector() -> None:
    hops = VECTOR["generate"]["hops"]
    node_ids = _node_ids()
    # a new segment starts where the path key is not the previous hop's next_e
    starts = [0] + [i for i in range(1, len(hops)) if hops[i]["path_key_secret"] + "01" != hops[i - 1]["next_e"]]
    blinded = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(hops)
        path = create_blinded_path(
            _h(hops[start]["path_key_secret"]), node_ids[start:end], [_h(h["encrypted_data_tlv"]) for h in hops[start:end]]
        )
        if start == 0:
            assert path.first_path_key.hex() == VECTOR["route"]["first_path_key"]
        blinded.extend(path.hops)
    assert [(b.blinded_node_id.hex(), b.encrypted_recipient_data.hex()) for b in blinded] == [
        (h["blinded_node_id"], h["encrypted_recipient_data"]) for h in VECTOR["route"]["hops"]
    ]
    for hop, node_id in zip(hops, node_ids, strict=True):
        e = coincurve.PrivateKey(_h(hop["path_key_secret"]))
        assert e.public_key.format().hex() == hop["E"]
        ss = ecdh(e, node_id)
        assert ss.hex() == hop["ss"]
        assert derive_key(KEY_RHO, ss).hex() == hop["rho"]
        assert hmac.digest(b"blinded_node_id", ss, "sha256").hex() == hop["HMAC256('blinded_node_id', ss)"]


def test_onion_message_packet_is_built() -> None:
    hops = VECTOR["route"]["hops"]
    payloads = [ONIONMSG_TLV.encode(TlvStream(encrypted_recipient_data=_h(h["encrypted_recipient_data"]))) for h in hops]
    hello = VECTOR["onionmessage"]["unknown_tag_1"]
    payloads[-1] = ONIONMSG_TLV.encode(TlvStream(encrypted_recipient_data=_h(hops[-1]["encrypted_recipient_data"]), unknown={1: _h(hello)}))
    built = construct_onion(_h(VECTOR["generate"]["session_key"]), [_h(h["blinded_node_id"]) for h in hops], payloads, b"")
    assert built.packet.hex() == VECTOR["onionmessage"]["onion_message_packet"]


def _split_onion_message(message: bytes) -> tuple[bytes, bytes]:
    assert int.from_bytes(message[:2], "big") == ONION_MESSAGE_TYPE
    length = int.from_bytes(message[35:37], "big")
    assert len(message) == 37 + length
    return message[2:35], message[37:]


def test_each_hop_peels_the_onion_message_and_finds_the_next() -> None:
    hops = VECTOR["decrypt"]["hops"]
    for i, hop in enumerate(hops):
        key = _h(hop["privkey"])
        path_key, packet = _split_onion_message(_h(hop["onion_message"]))
        peeled = peel_onion(key, packet, b"", path_key=path_key)
        payload = ONIONMSG_TLV.decode_stream(peeled.payload)
        data = decrypt_recipient_data(key, path_key, payload["encrypted_recipient_data"])
        if i + 1 < len(hops):
            assert not peeled.is_final and peeled.next_packet is not None
            assert data.data["next_node_id"].hex() == hop["next_node_id"]
            forwarded = ONION_MESSAGE_TYPE.to_bytes(2, "big") + data.next_path_key + len(peeled.next_packet).to_bytes(2, "big")
            assert (forwarded + peeled.next_packet).hex() == hops[i + 1]["onion_message"]
        else:
            assert peeled.is_final
            assert payload.unknown == {1: _h(hop["tlvs"]["unknown_tag_1"])}
            assert payload["encrypted_recipient_data"].hex() == hop["tlvs"]["encrypted_recipient_data"]
            assert data.data["path_id"].hex() == VECTOR["generate"]["hops"][-1]["tlvs"]["path_id"]
