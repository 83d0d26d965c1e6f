"""BOLT-4 test vectors, parsed from ../shared/specs/bolts (never retyped):
bolt04/onion-test.json, bolt04/onion-error-test.json and the "Returning
Errors" trace in 04-onion-routing.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lnpmsg.payments.onion import (
    construct_onion,
    create_failure_onion,
    decode_failure,
    decode_hop_payload,
    decrypt_failure_onion,
    peel_onion,
    wrap_failure_onion,
)
from lnpmsg.payments.onion._crypto import KEY_AMMAG, KEY_UM, chacha20_stream, derive_key
from lnpmsg.payments.onion.failures import FAILURE_TLVS, IncorrectOrUnknownPaymentDetails, TemporaryNodeFailure
from lnpmsg.wire.primitives import decode_bigsize
from lnpmsg.wire.tlv import TlvStream

BOLTS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts"
ONION_TEST = json.loads((BOLTS / "bolt04" / "onion-test.json").read_text())
ERROR_TEST = json.loads((BOLTS / "bolt04" / "onion-error-test.json").read_text())


def _unframe(framed_hex: str) -> bytes:
    """A vector payload carries its BigSize length: the TLV stream behind it."""
    raw = bytes.fromhex(framed_hex)
    length, used = decode_bigsize(raw)
    assert used + length == len(raw)
    return raw[used:]


def test_onion_construction_matches_the_vector() -> None:
    generate = ONION_TEST["generate"]
    built = construct_onion(
        bytes.fromhex(generate["session_key"]),
        [bytes.fromhex(hop["pubkey"]) for hop in generate["hops"]],
        [_unframe(hop["payload"]) for hop in generate["hops"]],
        bytes.fromhex(generate["associated_data"]),
    )
    assert built.packet.hex() == ONION_TEST["onion"]
    assert len(built.shared_secrets) == len(generate["hops"])


def test_each_hop_of_the_vector_peels_its_payload() -> None:
    generate = ONION_TEST["generate"]
    associated_data = bytes.fromhex(generate["associated_data"])
    packet = bytes.fromhex(ONION_TEST["onion"])
    keys = ONION_TEST["decode"]
    for i, (key, hop) in enumerate(zip(keys, generate["hops"], strict=True)):
        peeled = peel_onion(bytes.fromhex(key), packet, associated_data)
        assert peeled.payload == _unframe(hop["payload"])
        assert peeled.is_final == (i == len(keys) - 1)
        # the TLV codec reads and re-encodes every vector payload exactly
        assert decode_hop_payload(peeled.payload, peeled.shared_secret).encode() == peeled.payload
        if not peeled.is_final:
            assert peeled.next_packet is not None
            packet = peeled.next_packet


def test_vector_payloads_hold_the_expected_records() -> None:
    hops = [decode_hop_payload(_unframe(hop["payload"]), b"") for hop in ONION_TEST["generate"]["hops"]]
    assert [h.short_channel_id.output for h in hops[:4]] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert all(h.amt_to_forward and h.outgoing_cltv_value for h in hops)
    assert hops[1].unknown  # the 275-byte payload's odd record is kept
    final = hops[-1]
    assert final.short_channel_id is None and final.payment_secret is not None and final.total_msat is not None
    assert final.unknown  # and an odd record of 224 bytes


def test_error_vector_shared_secrets_and_keys() -> None:
    generate = ERROR_TEST["generate"]
    hops = generate["hops"]
    built = construct_onion(
        bytes.fromhex(generate["session_key"]), [bytes.fromhex(h["pubkey"]) for h in hops], [b"\x02\x00"] * len(hops), b""
    )
    assert [s.hex() for s in built.shared_secrets] == [h["hop_shared_secret"] for h in hops]
    for hop in hops:
        secret = bytes.fromhex(hop["hop_shared_secret"])
        assert derive_key(KEY_AMMAG, secret).hex() == hop["ammag_key"]
        if "um_key" in hop:
            assert derive_key(KEY_UM, secret).hex() == hop["um_key"]


def test_error_vector_packet_is_created_wrapped_and_attributed() -> None:
    generate = ERROR_TEST["generate"]
    hops = generate["hops"]
    secrets = [bytes.fromhex(h["hop_shared_secret"]) for h in hops]
    failure = decode_failure(bytes.fromhex(generate["failure_message"]))
    assert failure == TemporaryNodeFailure()
    packet = create_failure_onion(secrets[-1], failure)
    # before any obfuscation: hmac || the vector's padded payload
    plain = wrap_failure_onion(secrets[-1], packet)
    assert plain[32:].hex() == hops[-1]["payload"]
    for secret in reversed(secrets[:-1]):
        packet = wrap_failure_onion(secret, packet)
    assert packet.hex() == ERROR_TEST["errorpacket"]
    attributed = decrypt_failure_onion(secrets, packet)
    assert attributed.hop_index == len(hops) - 1
    assert attributed.failure == TemporaryNodeFailure()


def _md_error_trace() -> dict[str, object]:
    """The "Returning Errors" test vector of 04-onion-routing.md, as named values."""
    text = (BOLTS / "04-onion-routing.md").read_text()
    section = text[text.index("# Test Vector") : text.index("## Returning success")]
    values = re.findall(r"^\s*([a-z_]+(?:\[\d+\])?|error packet for node \d|attribution data for node \d)\s*[=:]\s*(\S+)\s*$", section, re.M)
    trace: dict[str, object] = {"pubkeys": [], "forward": []}
    for name, value in values:
        if name.startswith("pubkey["):
            trace["pubkeys"].append(bytes.fromhex(value.removeprefix("0x")))  # type: ignore[union-attr]
        elif name in ("sessionkey", "encoded_failure_message", "payload", "um_key", "raw_error_packet", "type", "htlc_msat", "height"):
            trace.setdefault(name, value)
        elif name == "shared_secret":
            trace["forward"].append({"shared_secret": value})  # type: ignore[union-attr]
        elif name in ("ammag_key", "stream") or name.startswith("error packet"):
            trace["forward"][-1][name.split(" for")[0]] = value  # type: ignore[index]
    # the first shared_secret belongs to the creation step, the rest to the five forwarding steps
    creation, *steps = trace["forward"]  # type: ignore[misc]
    trace["creation_secret"] = creation["shared_secret"]
    trace["forward"] = steps
    return trace


MD = _md_error_trace()


def test_md_trace_was_parsed() -> None:
    assert len(MD["pubkeys"]) == 5  # type: ignore[arg-type]
    assert len(MD["forward"]) == 5  # type: ignore[arg-type]


def test_md_failure_message_encodes_from_typed_values() -> None:
    extension = FAILURE_TLVS.encode(TlvStream(unknown={int(MD["type"]): b"\x80" * 300}))  # type: ignore[call-overload]
    failure = IncorrectOrUnknownPaymentDetails(htlc_msat=int(MD["htlc_msat"]), height=int(MD["height"]), extension=extension)  # type: ignore[call-overload]
    # the trace prints failuremsg followed by its padding (pad_len, pad)
    encoded = bytes.fromhex(MD["encoded_failure_message"])  # type: ignore[arg-type]
    message = encoded[: len(failure.encode())]
    assert message == failure.encode()
    pad_len = int.from_bytes(encoded[len(message) : len(message) + 2], "big")
    assert encoded[len(message) + 2 :] == bytes(pad_len)
    decoded = decode_failure(message)
    assert decoded == failure
    assert decoded.tlvs is not None and decoded.tlvs.unknown == {34001: b"\x80" * 300}  # type: ignore[union-attr]


def test_md_trace_creation_wrapping_and_attribution() -> None:
    session_key = bytes.fromhex(MD["sessionkey"].removeprefix("0x"))  # type: ignore[union-attr]
    built = construct_onion(session_key, MD["pubkeys"], [b"\x02\x00"] * 5, b"")  # type: ignore[arg-type]
    steps = MD["forward"]
    # steps run from the failing node 4 back to node 0
    assert [s.hex() for s in reversed(built.shared_secrets)] == [step["shared_secret"] for step in steps]  # type: ignore[attr-defined]
    failing = bytes.fromhex(MD["creation_secret"])  # type: ignore[arg-type]
    assert failing == built.shared_secrets[-1]
    assert derive_key(KEY_UM, failing).hex() == MD["um_key"]
    raw = bytes.fromhex(MD["raw_error_packet"])  # type: ignore[arg-type]
    assert raw[32:].hex() == MD["payload"]
    failure_len = int.from_bytes(raw[32:34], "big")
    message = raw[34 : 34 + failure_len]
    assert bytes.fromhex(MD["encoded_failure_message"]).startswith(message)  # type: ignore[arg-type]
    # the vector pads failure_len + pad_len to 1024 (the spec asks for at least 256)
    pad_to = len(raw) - 32 - 4
    packet = create_failure_onion(failing, message, pad_to=pad_to)
    assert wrap_failure_onion(failing, packet) == raw
    packet = raw
    for step in steps:  # type: ignore[attr-defined]
        secret = bytes.fromhex(step["shared_secret"])
        assert derive_key(KEY_AMMAG, secret).hex() == step["ammag_key"]
        assert chacha20_stream(derive_key(KEY_AMMAG, secret), len(raw)).hex() == step["stream"]
        packet = wrap_failure_onion(secret, packet)
        assert packet.hex() == step["error packet"]
    attributed = decrypt_failure_onion(built.shared_secrets, packet)
    assert attributed.hop_index == 4
    assert attributed.message == message
    assert isinstance(attributed.failure, IncorrectOrUnknownPaymentDetails)
    assert (attributed.failure.htlc_msat, attributed.failure.height) == (100, 800000)
