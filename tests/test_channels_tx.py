"""The transaction model, sighashes, signatures, scripts and hashes (lnpmsg.bitcoin)
as the channel layer uses them: bad input raises BitcoinError only."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.bitcoin.ecdsa import (
    compact_to_der,
    der_to_compact,
    private_key,
    sign_digest,
    verify_digest,
)
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import ripemd160, ripemd160_python
from lnpmsg.bitcoin.script import Num, decode_script, push_number, script
from lnpmsg.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_NONE,
    SIGHASH_SINGLE,
    legacy_sighash,
    segwit_v0_sighash,
)
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.channels.keys import pubkey_from_privkey

outpoints = st.builds(OutPoint, st.binary(min_size=32, max_size=32), st.integers(0, 0xFFFFFFFF))
txins = st.builds(
    TxIn,
    outpoints,
    sequence=st.integers(0, 0xFFFFFFFF),
    script_sig=st.binary(max_size=60),
    witness=st.lists(st.binary(max_size=80), max_size=4).map(tuple),
)
txouts = st.builds(TxOut, st.integers(0, 21_000_000 * 100_000_000), st.binary(max_size=60))
txs = st.builds(
    Tx,
    st.integers(-(2**31), 2**31 - 1),
    st.lists(txins, min_size=1, max_size=4).map(tuple),
    st.lists(txouts, max_size=4).map(tuple),
    st.integers(0, 0xFFFFFFFF),
)
SIGHASH_TYPES = [base | acp for base in (SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE) for acp in (0, SIGHASH_ANYONECANPAY)]


@settings(max_examples=150, deadline=None)
@given(tx=txs)
def test_serialize_parse_round_trip(tx: Tx) -> None:
    assert Tx.parse(tx.serialize()) == tx
    stripped = tx.without_witness()
    assert Tx.parse(tx.serialize(witness=False)) == stripped
    assert tx.txid == stripped.txid
    assert tx.weight == 4 * len(tx.serialize(witness=False)) + (len(tx.serialize()) - len(tx.serialize(witness=False)))


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_parse_garbage_raises_channel_error(data: bytes) -> None:
    try:
        tx = Tx.parse(data)
    except BitcoinError:
        return
    assert tx.serialize() == data


@settings(max_examples=200, deadline=None)
@given(tx=txs, cut=st.integers(1, 50))
def test_truncated_transaction_rejected(tx: Tx, cut: int) -> None:
    raw = tx.serialize()
    with pytest.raises(BitcoinError):
        Tx.parse(raw[: max(0, len(raw) - cut)])


def test_non_canonical_compact_size_rejected() -> None:
    tx = Tx(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(1, b"\x51"),), 0)
    raw = tx.serialize()
    bad = raw[:4] + b"\xfd\x01\x00" + raw[5:]  # input count 1 written on three bytes
    with pytest.raises(BitcoinError):
        Tx.parse(bad)


@settings(max_examples=60, deadline=None)
@given(tx=txs, extra_in=txins, extra_out=txouts, amount=st.integers(0, 10**10))
def test_single_anyonecanpay_survives_added_inputs_and_outputs(
    tx: Tx, extra_in: TxIn, extra_out: TxOut, amount: int
) -> None:
    """What anchor HTLC signatures rely on: others may add inputs and outputs after the signed pair."""
    if not tx.outputs:
        tx = replace(tx, outputs=(TxOut(1, b"\x51"),))
    code = b"\x51"
    kind = SIGHASH_SINGLE | SIGHASH_ANYONECANPAY
    before = segwit_v0_sighash(tx, 0, code, amount, kind)
    grown = replace(tx, inputs=(*tx.inputs, extra_in), outputs=(*tx.outputs, extra_out))
    assert segwit_v0_sighash(grown, 0, code, amount, kind) == before
    if extra_in.prevout not in [i.prevout for i in tx.inputs]:
        assert segwit_v0_sighash(grown, 0, code, amount, SIGHASH_ALL) != segwit_v0_sighash(
            tx, 0, code, amount, SIGHASH_ALL
        )


@settings(max_examples=40, deadline=None)
@given(tx=txs, kind=st.sampled_from(SIGHASH_TYPES), amount=st.integers(0, 10**10))
def test_sighash_types_are_distinct_and_amount_bound(tx: Tx, kind: int, amount: int) -> None:
    code = b"\x51"
    digests = {segwit_v0_sighash(tx, 0, code, amount, k) for k in SIGHASH_TYPES}
    assert len(digests) == len(SIGHASH_TYPES)
    assert segwit_v0_sighash(tx, 0, code, amount, kind) != segwit_v0_sighash(tx, 0, code, amount + 1, kind)
    legacy = {legacy_sighash(tx, 0, code, k) for k in SIGHASH_TYPES}
    assert len(legacy) >= len(SIGHASH_TYPES) - (0 if tx.outputs else 2)


def test_legacy_single_without_matching_output_signs_one() -> None:
    tx = Tx(2, (TxIn(OutPoint(bytes(32), 0)), TxIn(OutPoint(bytes(32), 1))), (TxOut(1, b"\x51"),), 0)
    assert legacy_sighash(tx, 1, b"\x51", SIGHASH_SINGLE) == (1).to_bytes(32, "little")


def test_bad_sighash_requests_rejected() -> None:
    tx = Tx(2, (TxIn(OutPoint(bytes(32), 0)),), (), 0)
    with pytest.raises(BitcoinError):
        segwit_v0_sighash(tx, 1, b"", 0, SIGHASH_ALL)
    with pytest.raises(BitcoinError):
        segwit_v0_sighash(tx, 0, b"", 0, 0x04)


@settings(max_examples=40, deadline=None)
@given(secret=st.integers(1, 2**255).map(lambda n: n.to_bytes(32, "big")), digest=st.binary(min_size=32, max_size=32))
def test_signatures_low_s_and_convertible(secret: bytes, digest: bytes) -> None:
    der = sign_digest(secret, digest)
    compact = der_to_compact(der)
    assert compact_to_der(compact) == der
    assert int.from_bytes(compact[32:], "big") <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    pubkey = pubkey_from_privkey(secret)
    assert verify_digest(pubkey, der, digest)
    assert not verify_digest(pubkey, der, bytes(a ^ 1 for a in digest[:1]) + digest[1:])


@settings(max_examples=40, deadline=None)
@given(secret=st.integers(1, 2**255).map(lambda n: n.to_bytes(32, "big")), digest=st.binary(min_size=32, max_size=32))
def test_low_r_signatures_fit_70_bytes(secret: bytes, digest: bytes) -> None:
    """What the wallet's fee estimates assume: a ground signature is at most 70 DER bytes (R below 2^255)."""
    der = sign_digest(secret, digest, low_r=True)
    assert len(der) <= 70 and der_to_compact(der)[0] < 0x80
    assert verify_digest(pubkey_from_privkey(secret), der, digest)
    assert sign_digest(private_key(secret), digest, low_r=True) == der  # deterministic, key object or bytes


def test_invalid_private_keys_rejected() -> None:
    for bad in (bytes(32), (2**256 - 1).to_bytes(32, "big"), b"short"):
        with pytest.raises(BitcoinError):
            private_key(bad)
        with pytest.raises(BitcoinError):
            sign_digest(bad, bytes(32))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80))
def test_der_parser_rejects_garbage_cleanly(data: bytes) -> None:
    try:
        compact = der_to_compact(data)
    except BitcoinError:
        return
    assert compact_to_der(compact) == data


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_ripemd160_fallback_matches(data: bytes) -> None:
    assert ripemd160_python(data) == ripemd160(data)
    try:
        assert ripemd160_python(data) == hashlib.new("ripemd160", data).digest()
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(value=st.integers(-(2**39), 2**39))
def test_script_numbers_minimal(value: int) -> None:
    encoded = push_number(value)
    items = list(decode_script(encoded))
    assert len(items) == 1
    if -1 <= value <= 16:
        assert len(encoded) == 1
    else:
        raw = items[0]
        assert isinstance(raw, bytes)
        assert raw[-1] & 0x7F or len(raw) == 1 or raw[-2] & 0x80  # no needless high byte
        magnitude = int.from_bytes(raw[:-1] + bytes([raw[-1] & 0x7F]), "little")
        assert (-magnitude if raw[-1] & 0x80 else magnitude) == value


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.one_of(st.binary(max_size=300), st.sampled_from([0x63, 0x67, 0x68, 0xAC])), max_size=8))
def test_script_decode_round_trip(parts: list[int | bytes]) -> None:
    built = script(*parts)
    decoded = list(decode_script(built))
    expected: list[int | bytes] = []
    for part in parts:
        expected.append(0 if part == b"" else part)  # the empty push is OP_0
    assert decoded == expected


def test_script_rejects_bad_parts() -> None:
    with pytest.raises(BitcoinError):
        script(bytes(521))
    with pytest.raises(BitcoinError):
        script(256)
    with pytest.raises(BitcoinError):
        list(decode_script(b"\x05ab"))
    assert script(Num(144)) == bytes.fromhex("029000")
