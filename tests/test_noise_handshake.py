"""The BOLT-8 handshake objects: in-memory handshakes, misuse, garbage, sans-IO."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lnpmsg.noise
from lnpmsg.noise import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    HandshakeError,
    InitiatorHandshake,
    NoiseError,
    ResponderHandshake,
    TransportKeys,
    public_key_of,
)

# The fixed keys of BOLT 8's vectors, to build valid acts for fuzzing.
RESPONDER_SECRET = bytes([0x21]) * 32
INITIATOR_SECRET = bytes([0x11]) * 32


def _handshake(
    initiator_secret: bytes, responder_secret: bytes
) -> tuple[InitiatorHandshake, ResponderHandshake, bytes]:
    initiator = InitiatorHandshake(initiator_secret, public_key_of(responder_secret))
    responder = ResponderHandshake(responder_secret)
    act_one = initiator.act_one()
    act_two = responder.receive_act_one(act_one)
    act_three = initiator.receive_act_two(act_two)
    assert (len(act_one), len(act_two), len(act_three)) == (ACT_ONE_SIZE, ACT_TWO_SIZE, ACT_THREE_SIZE)
    return initiator, responder, responder.receive_act_three(act_three)


def test_random_keys_give_matching_transport_keys() -> None:
    for _ in range(5):
        initiator_secret, responder_secret = os.urandom(32), os.urandom(32)
        initiator, responder, learned = _handshake(initiator_secret, responder_secret)
        assert learned == public_key_of(initiator_secret)
        mine, theirs = initiator.keys, responder.keys
        assert isinstance(mine, TransportKeys)
        assert mine.send_key == theirs.receive_key
        assert mine.receive_key == theirs.send_key
        assert mine.send_key != mine.receive_key
        assert mine.chaining_key == theirs.chaining_key
        assert mine.remote_static == public_key_of(responder_secret)
        assert theirs.remote_static == public_key_of(initiator_secret)
        assert initiator.is_complete and responder.is_complete


def test_fresh_ephemeral_keys_each_time() -> None:
    first = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET)).act_one()
    second = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET)).act_one()
    assert first[1:34] != second[1:34]


def test_keys_are_not_in_repr() -> None:
    initiator, _, _ = _handshake(INITIATOR_SECRET, RESPONDER_SECRET)
    text = repr(initiator.keys)
    assert initiator.keys.send_key.hex() not in text and repr(initiator.keys.send_key) not in text
    assert "remote_static" in text


def test_wrong_remote_key_is_refused_by_the_responder() -> None:
    # The initiator thinks the responder is someone else: XK makes the
    # responder drop it at act one, and stay failed.
    initiator = InitiatorHandshake(INITIATOR_SECRET, public_key_of(os.urandom(32)))
    responder = ResponderHandshake(RESPONDER_SECRET)
    with pytest.raises(HandshakeError, match="act one: bad MAC"):
        responder.receive_act_one(initiator.act_one())
    with pytest.raises(HandshakeError, match="failed earlier"):
        responder.receive_act_three(bytes(ACT_THREE_SIZE))


def test_act_two_of_another_session_fails_and_responder_cannot_complete() -> None:
    responder_key = public_key_of(RESPONDER_SECRET)
    initiator_a = InitiatorHandshake(INITIATOR_SECRET, responder_key)
    initiator_b = InitiatorHandshake(INITIATOR_SECRET, responder_key)
    responder_a, responder_b = ResponderHandshake(RESPONDER_SECRET), ResponderHandshake(RESPONDER_SECRET)
    responder_a.receive_act_one(initiator_a.act_one())
    act_two_b = responder_b.receive_act_one(initiator_b.act_one())
    with pytest.raises(HandshakeError, match="act two: bad MAC"):
        initiator_a.receive_act_two(act_two_b)
    with pytest.raises(HandshakeError, match="act three: bad MAC"):
        responder_a.receive_act_three(initiator_b.receive_act_two(act_two_b))
    for side in (initiator_a, responder_a):
        assert not side.is_complete
        with pytest.raises(HandshakeError):
            _ = side.keys


def test_out_of_order_calls_fail_and_stick() -> None:
    initiator = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET))
    with pytest.raises(HandshakeError, match="not complete"):
        _ = initiator.keys
    with pytest.raises(HandshakeError, match="receive_act_two called while waiting for act_one"):
        initiator.receive_act_two(bytes(ACT_TWO_SIZE))
    with pytest.raises(HandshakeError, match="failed earlier"):
        initiator.act_one()

    initiator, _, _ = _handshake(INITIATOR_SECRET, RESPONDER_SECRET)
    with pytest.raises(HandshakeError, match="already complete"):
        initiator.act_one()
    responder_again = ResponderHandshake(RESPONDER_SECRET)
    with pytest.raises(HandshakeError, match="receive_act_three called while waiting for receive_act_one"):
        responder_again.receive_act_three(bytes(ACT_THREE_SIZE))


def test_keys_of_a_failed_handshake_are_refused_even_if_complete_before() -> None:
    _, responder, _ = _handshake(INITIATOR_SECRET, RESPONDER_SECRET)
    with pytest.raises(HandshakeError):
        responder.receive_act_one(bytes(ACT_ONE_SIZE))
    with pytest.raises(HandshakeError, match="failed earlier"):
        _ = responder.keys


@pytest.mark.parametrize(
    "secret",
    [b"", bytes(31), bytes(32), bytes.fromhex("ff" * 32), bytes.fromhex("ff" * 33)],
    ids=["empty", "short", "zero", "above-order", "long"],
)
def test_invalid_private_keys(secret: bytes) -> None:
    with pytest.raises(HandshakeError):
        public_key_of(secret)
    with pytest.raises(HandshakeError, match="local static key"):
        ResponderHandshake(secret)
    with pytest.raises(HandshakeError, match="ephemeral key"):
        ResponderHandshake(RESPONDER_SECRET, secret)
    with pytest.raises(HandshakeError, match="local static key"):
        InitiatorHandshake(secret, public_key_of(RESPONDER_SECRET))


@pytest.mark.parametrize(
    "remote",
    [
        b"",
        public_key_of(RESPONDER_SECRET)[:32],
        b"\x04" + public_key_of(RESPONDER_SECRET)[1:],
        b"\x02" + bytes(32),  # x = 0 is not on the curve
        bytes.fromhex("04") + bytes(64),
    ],
    ids=["empty", "short", "bad-prefix", "off-curve", "uncompressed"],
)
def test_invalid_remote_keys(remote: bytes) -> None:
    with pytest.raises(HandshakeError, match="remote static key"):
        InitiatorHandshake(INITIATOR_SECRET, remote)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_garbage_act_one(data: bytes, fix_length: bool) -> None:
    if fix_length:
        data = b"\x00" + (data + bytes(ACT_ONE_SIZE))[: ACT_ONE_SIZE - 1]
    responder = ResponderHandshake(RESPONDER_SECRET)
    with pytest.raises(HandshakeError, match="act one"):
        responder.receive_act_one(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_garbage_act_two(data: bytes, fix_length: bool) -> None:
    if fix_length:
        data = b"\x00" + (data + bytes(ACT_TWO_SIZE))[: ACT_TWO_SIZE - 1]
    initiator = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET))
    initiator.act_one()
    with pytest.raises(HandshakeError, match="act two"):
        initiator.receive_act_two(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.booleans())
def test_garbage_act_three(data: bytes, fix_length: bool) -> None:
    if fix_length:
        data = b"\x00" + (data + bytes(ACT_THREE_SIZE))[: ACT_THREE_SIZE - 1]
    initiator = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET))
    responder = ResponderHandshake(RESPONDER_SECRET)
    responder.receive_act_one(initiator.act_one())
    with pytest.raises(HandshakeError, match="act three"):
        responder.receive_act_three(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40), st.one_of(st.none(), st.binary(max_size=40)))
def test_garbage_keys_raise_only_handshake_error(local: bytes, remote: bytes, ephemeral: bytes | None) -> None:
    for build in (
        lambda: InitiatorHandshake(local, remote, ephemeral).act_one(),
        lambda: ResponderHandshake(local, ephemeral),
        lambda: public_key_of(local),
    ):
        try:
            build()
        except NoiseError as exc:
            assert isinstance(exc, HandshakeError)


FORBIDDEN_IMPORTS = {"trio", "socket", "time", "asyncio", "zmq", "stem", "selectors"}


def test_noise_is_sans_io() -> None:
    package = Path(lnpmsg.noise.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{module.name} imports {name}"


def _off_curve_key() -> bytes:
    """A well-formed compressed key whose x has no point on secp256k1 (x = 5: 5^3 + 7 is not a square)."""
    return b"\x02" + (5).to_bytes(32, "big")


def test_act_one_with_an_off_curve_ephemeral_key_fails_clearly() -> None:
    act_one = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET)).act_one()
    forged = act_one[:1] + _off_curve_key() + act_one[34:]
    responder = ResponderHandshake(RESPONDER_SECRET)
    with pytest.raises(HandshakeError, match="act one: initiator ephemeral key: public key is not a point"):
        responder.receive_act_one(forged)
    with pytest.raises(HandshakeError, match="failed earlier"):
        responder.receive_act_three(bytes(ACT_THREE_SIZE))


def test_act_two_with_an_off_curve_ephemeral_key_fails_clearly() -> None:
    initiator = InitiatorHandshake(INITIATOR_SECRET, public_key_of(RESPONDER_SECRET))
    act_two = ResponderHandshake(RESPONDER_SECRET).receive_act_one(initiator.act_one())
    forged = act_two[:1] + _off_curve_key() + act_two[34:]
    with pytest.raises(HandshakeError, match="act two: responder ephemeral key: public key is not a point"):
        initiator.receive_act_two(forged)
