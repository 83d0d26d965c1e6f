"""Transactions and blocks (lnpmsg.bitcoin, as the chain layer uses them):
parse/serialize/txid against the BOLT 3 vectors, and untrusted bytes never
raise anything but BitcoinError; addresses never anything but ChainError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.bitcoin.block import Block, BlockHeader, merkle_root
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash_from_hex, sha256d
from lnpmsg.bitcoin.script import push_number as push_script_number
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.address import address_for_script, script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mining import REGTEST_BITS, build_block, target_from_bits
from lnpmsg.chain.tx import as_tx

SPEC = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "specs"
    / "bolts"
    / "03-transactions.md"
)
_TX_LINE = re.compile(
    r"^\s*(funding tx|output commit_tx|htlc_(?:success|timeout)_tx \(htlc #\d+\)): ([0-9a-f]+)\s*$"
)


def _spec_txs() -> list[tuple[str, bytes]]:
    found = []
    for line in SPEC.read_text().splitlines():
        match = _TX_LINE.match(line)
        if match:
            found.append((match.group(1), bytes.fromhex(match.group(2))))
    return found


SPEC_TXS = _spec_txs()


def test_spec_has_vectors() -> None:
    kinds = {kind.split(" ")[0] for kind, _ in SPEC_TXS}
    assert {"funding", "output", "htlc_success_tx", "htlc_timeout_tx"} <= kinds
    assert len(SPEC_TXS) > 30


def test_funding_tx_txid_matches_spec() -> None:
    text = SPEC.read_text()
    expected = re.search(r"funding tx: [0-9a-f]+\n\s*# txid: ([0-9a-f]{64})", text)
    assert expected is not None
    funding = Tx.parse(dict(SPEC_TXS)["funding tx"])
    assert funding.txid_hex == expected.group(1)
    assert not funding.has_witness
    # the commitment transactions spend it
    commit = Tx.parse(next(raw for kind, raw in SPEC_TXS if kind == "output commit_tx"))
    assert commit.inputs[0].prevout == OutPoint(funding.txid, 0)


@pytest.mark.parametrize(
    "kind,raw",
    SPEC_TXS,
    ids=[f"{i}-{k.split(' ')[0]}" for i, (k, _) in enumerate(SPEC_TXS)],
)
def test_spec_tx_round_trips(kind: str, raw: bytes) -> None:
    tx = Tx.parse(raw)
    assert tx.serialize() == raw
    assert Tx.parse(tx.serialize(witness=False)).txid == tx.txid
    assert tx.weight == len(tx.serialize(witness=False)) * 3 + len(raw)
    assert tx.has_witness == (kind != "funding tx")


def test_htlc_txs_spend_the_commitment_before_them() -> None:
    commit: Tx | None = None
    checked = 0
    for kind, raw in SPEC_TXS:
        tx = Tx.parse(raw)
        if kind == "output commit_tx":
            commit = tx
        elif kind.startswith("htlc_"):
            assert commit is not None
            assert tx.inputs[0].prevout.txid == commit.txid
            assert tx.inputs[0].prevout.vout < len(commit.outputs)
            checked += 1
    assert checked > 10


def test_outpoint_text_round_trip() -> None:
    op = OutPoint(bytes(range(32)), 7)
    assert OutPoint.from_str(str(op)) == op
    for bad in ["", "zz:1", "00:1", f"{'00' * 32}", f"{'00' * 32}:x"]:
        with pytest.raises(BitcoinError):
            OutPoint.from_str(bad)


def test_merkle_root_odd_level_duplicates_last() -> None:
    a, b, c = (sha256d(bytes([i])) for i in range(3))
    assert merkle_root([a]) == a
    assert merkle_root([a, b, c]) == sha256d(sha256d(a + b) + sha256d(c + c))
    with pytest.raises(BitcoinError):
        merkle_root([])


def test_script_number_pushes() -> None:
    assert push_script_number(0) == b"\x00"
    assert push_script_number(16) == b"\x60"
    assert push_script_number(17) == b"\x01\x11"
    assert push_script_number(128) == b"\x02\x80\x00"
    assert push_script_number(500) == b"\x02\xf4\x01"


def test_built_block_parses_back_and_meets_target() -> None:
    spend = Tx(
        2,
        (TxIn(OutPoint(b"\x01" * 32, 0), b"", 0xFFFFFFFF, (b"\x51",)),),
        (TxOut(1000, b"\x51"),),
    )
    block = build_block(b"\x00" * 32, 5, 1_700_000_000, b"\x51", [spend], 10)
    parsed = Block.parse(block.serialize())
    assert parsed == block
    assert int.from_bytes(parsed.hash, "little") <= target_from_bits(REGTEST_BITS)
    assert parsed.header.merkle_root == merkle_root([tx.txid for tx in parsed.txs])
    assert parsed.txs[0].is_coinbase and parsed.txs[0].inputs[0].script_sig.startswith(
        b"\x55"
    )


def test_malformed_inputs_raise_chain_error() -> None:
    raw = dict(SPEC_TXS)["funding tx"]
    for bad in [
        b"",
        raw[:-1],
        raw + b"\x00",
        b"\x02\x00\x00\x00\x00\x02",
        b"\x00" * 10,
    ]:
        with pytest.raises(BitcoinError):
            Tx.parse(bad)
    with pytest.raises(BitcoinError):
        Block.parse(b"\x00" * 79)
    with pytest.raises(BitcoinError):
        BlockHeader.parse(b"\x00" * 81)
    with pytest.raises(BitcoinError):
        hash_from_hex("abcd")
    with pytest.raises(BitcoinError):
        TxOut(2**63, b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_parse_or_chain_error(data: bytes) -> None:
    try:
        tx = Tx.parse(data)
    except BitcoinError:
        return
    # anything accepted is canonical: it serializes back to the same bytes
    assert tx.serialize() == data


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([raw for _, raw in SPEC_TXS]),
    st.integers(min_value=0),
    st.integers(0, 255),
)
def test_mutated_spec_txs_parse_or_chain_error(
    raw: bytes, where: int, value: int
) -> None:
    mutated = bytearray(raw)
    mutated[where % len(raw)] = value
    for candidate in (bytes(mutated), raw[: where % len(raw)]):
        try:
            assert Tx.parse(candidate).serialize() == candidate
        except BitcoinError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_blocks_parse_or_chain_error(data: bytes) -> None:
    try:
        block = Block.parse(data)
    except BitcoinError:
        return
    assert block.serialize() == data


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=100),
        st.from_regex(r"bcrt1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{6,70}"),
    )
)
def test_random_addresses_parse_or_chain_error(text: str) -> None:
    try:
        script = script_for_address(text, "bcrt")
    except ChainError:
        return
    assert script_for_address(address_for_script(script, "bcrt"), "bcrt") == script


def test_chain_boundary_turns_bad_bytes_into_chain_error() -> None:
    raw = dict(SPEC_TXS)["funding tx"]
    assert as_tx(raw) == Tx.parse(raw)
    for bad in [b"", raw[:-1], raw + b"\x00"]:
        with pytest.raises(ChainError) as info:
            as_tx(bad)
        assert info.value.code == "malformed" and "transaction" in info.value.reason
