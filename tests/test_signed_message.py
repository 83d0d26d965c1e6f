"""signmessage / checkmessage: the signature lnd and Core Lightning make (zbase32 of a recoverable
signature), checked against their published signatures; the control calls and the CLI, offline and
with a node."""

from __future__ import annotations

import json
from pathlib import Path

import coincurve
import pytest

from cli_in_process import cli
from lnpmsg.node.signed_message import SignedMessage, recover_signer, sign_message, zbase32_decode, zbase32_encode
from lnpmsg.runtime import NodeSettings, build_node

#: signatures made by lnd nodes, with their node ids: the corpus of Core Lightning's
#: tests/test_misc.py::test_signmessage ("contributions from LND users", ElementsProject/lightning
#: at 1275af6, lines 1925-1938; rust-lightning's util/message_signing.rs checks the same corpus)
LND_SIGNATURES = [
    ("is this compatible?",
     "rbgfioj114mh48d8egqx8o9qxqw4fmhe8jbeeabdioxnjk8z3t1ma1hu1fiswpakgucwwzwo6ofycffbsqusqdimugbh41n1g698hr9t",
     "02b80cabdf82638aac86948e4c06e82064f547768dcef977677b9ea931ea75bab5"),
    ("hi",
     "rnrphcjswusbacjnmmmrynh9pqip7sy5cx695h6mfu64iac6qmcmsd8xnsyczwmpqp9shqkth3h4jmkgyqu5z47jfn1q7gpxtaqpx4xg",
     "02de60d194e1ca5947b59fe8e2efd6aadeabfb67f2e89e13ae1a799c1e08e4a43b"),
    ("hi",
     "ry8bbsopmduhxy3dr5d9ekfeabdpimfx95kagdem7914wtca79jwamtbw4rxh69hg7n6x9ty8cqk33knbxaqftgxsfsaeprxkn1k48p3",
     "022b8ece90ee891cbcdac0c1cc6af46b73c47212d8defbce80265ac81a6b794931"),
]  # fmt: skip
#: rust-lightning's util/message_signing.rs test_sign: "test message" signed by the secret key 1
#: (RFC 6979 nonces, as libsecp256k1 and Core Lightning's hsmd: one key and message, one signature)
KEY_ONE_SIGNATURE = "d9tibmnic9t5y41hg7hkakdcra94akas9ku3rmmj4ag9mritc8ok4p5qzefs78c9pqfhpuftqqzhydbdwfg7u6w6wdxcqpqn4sj4e73e"
#: Core Lightning's signmessage output (signature, recid, zbase), as quoted by the README of
#: SeverinAlexB/ln-verifymessagejs ("lightning-cli signmessage MyMessageToSign")
CLN_OUTPUT = (
    "ddd47bc1398327e98775b27cc575fce1df2464c382549eacebc7233c1cbc4b430f8ee4d654719a1bc281f51b030ba9fa8bf95032c26abfe6e56bb282a9065332",
    "01",
    "rdq7e66b8gb1x4c8qs383tmi9uo76jdraqbfj8ic7xd1gxyhztfwgdhqhumfehc4dxbed7e5ycf4u6wm9fedfoukz9uqk471okwocw31",
)


@pytest.mark.parametrize(("message", "zbase", "node_id"), LND_SIGNATURES)
def test_lnd_signatures_verify(message: str, zbase: str, node_id: str) -> None:
    assert recover_signer(message, zbase) == bytes.fromhex(node_id)
    assert recover_signer(message + " ", zbase) != bytes.fromhex(node_id)


def test_same_signature_as_rust_lightning_and_core_lightning_for_the_same_key_and_message() -> None:
    one = (1).to_bytes(32, "big")
    signed = sign_message(one, "test message")
    assert signed.zbase == KEY_ONE_SIGNATURE
    assert recover_signer("test message", KEY_ONE_SIGNATURE) == coincurve.PrivateKey(one).public_key.format()
    signature, recid, zbase = CLN_OUTPUT  # Core Lightning's fields say the same as its zbase
    assert SignedMessage(bytes.fromhex(signature), int(recid, 16)).to_dict() == {"signature": signature, "recid": recid, "zbase": zbase}


def test_round_trip_and_what_fails() -> None:
    key = coincurve.PrivateKey()
    node_id = key.public_key.format()
    signed = sign_message(key.secret, "pay to the order of lnpmsg ✓")
    assert len(signed.signature) == 64 and 0 <= signed.recid <= 3
    assert recover_signer("pay to the order of lnpmsg ✓", signed.zbase) == node_id
    assert recover_signer("pay to the order of lnpmsg !", signed.zbase) != node_id  # tampered message
    raw = bytearray(zbase32_decode(signed.zbase))
    raw[40] ^= 1  # tampered signature (s): another key, or none
    assert recover_signer("pay to the order of lnpmsg ✓", zbase32_encode(bytes(raw))) != node_id
    other = coincurve.PrivateKey()
    assert recover_signer("pay to the order of lnpmsg ✓", sign_message(other.secret, "pay to the order of lnpmsg ✓").zbase) != node_id
    for bad in ("", signed.zbase[:-1], signed.zbase + "y", signed.zbase.replace(signed.zbase[3], "l")):  # 'l' is no zbase32
        with pytest.raises(ValueError):
            recover_signer("x", bad)
    raw[0] = 27  # an uncompressed-key header: never a node's
    with pytest.raises(ValueError, match="header"):
        recover_signer("x", zbase32_encode(bytes(raw)))


def test_zbase32() -> None:
    for data in (b"", b"\x00", b"\xff", bytes(range(65))):
        assert zbase32_decode(zbase32_encode(data)) == data
    assert zbase32_encode(b"\xf0\xbf\xc7") == "6n9hq"  # the zbase32 spec's example: 24 bits
    with pytest.raises(ValueError):
        zbase32_decode("6n9hb")  # non-zero padding bits (b: 00001)


async def test_cli_signs_with_the_node_key_and_checks(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    built = build_node(NodeSettings(data_dir=data_dir, listen=["127.0.0.1:0"]))
    stranger = coincurve.PrivateKey()
    known = coincurve.PrivateKey()
    async with built.running() as node:
        code, out, _ = await cli(capsys, "signmessage", "hello world", "--json", "--data-dir", data_dir)
        signed = json.loads(out)
        assert code == 0 and set(signed) == {"signature", "recid", "zbase"}
        assert signed["zbase"] == sign_message(node.key.secret, "hello world").zbase
        code, out, _ = await cli(capsys, "signmessage", "hello world", "--data-dir", data_dir)
        assert code == 0 and out == signed["zbase"] + "\n"
        # no pubkey: the node says whether the signer is a node it knows (itself, or one of its gossip graph)
        code, out, _ = await cli(capsys, "checkmessage", "hello world", signed["zbase"], "--json", "--data-dir", data_dir)
        assert code == 0 and json.loads(out) == {"pubkey": node.node_id.hex(), "verified": True}
        by_stranger = sign_message(stranger.secret, "hello world").zbase
        code, out, _ = await cli(capsys, "checkmessage", "hello world", by_stranger, "--json", "--data-dir", data_dir)
        error = json.loads(out)["error"]
        assert code == 1 and error["data"] == {"pubkey": stranger.public_key.format().hex(), "verified": False}
        built.app("gossip").graph.load_channel(0x1 << 40, known.public_key.format(), node.node_id, b"", None, 0)
        by_known = sign_message(known.secret, "hello world").zbase
        code, out, _ = await cli(capsys, "checkmessage", "hello world", by_known, "--data-dir", data_dir)
        assert code == 0 and out == f"verified: signed by {known.public_key.format().hex()}\n"
        code, out, err = await cli(capsys, "checkmessage", "hello world", "not-zbase", "--data-dir", data_dir)
        assert code == 1 and "zbase is not a signature" in err
    # with --pubkey no node is needed (none runs now); without, the node is
    node_id = node.node_id.hex()
    code, out, err = await cli(capsys, "checkmessage", "hello world", signed["zbase"], "--data-dir", data_dir)
    assert code == 3 and "give --pubkey to check the signature without a node" in err
    code, out, _ = await cli(capsys, "checkmessage", "hello world", signed["zbase"], "--pubkey", node_id, "--json", "--data-dir", data_dir)
    assert code == 0 and json.loads(out) == {"pubkey": node_id, "verified": True}
    code, out, err = await cli(capsys, "checkmessage", "hello world!", signed["zbase"], "--pubkey", node_id, "--data-dir", data_dir)
    assert code == 1 and f"not verified: this is no signature of the message by {node_id}" in err
    message, zbase, lnd_node = LND_SIGNATURES[0]
    code, out, _ = await cli(capsys, "checkmessage", message, zbase, "--pubkey", lnd_node)
    assert code == 0 and out == f"verified: signed by {lnd_node}\n"
    code, out, _ = await cli(capsys, "checkmessage", message, zbase, "--pubkey", "02" + "11" * 31, "--json")
    assert code == 2 and "not a node id" in json.loads(out)["error"]["message"]
