"""BOLT-3 transaction vectors (Appendices B, C, F and G of 03-transactions.md),
parsed from the spec file at test time and rebuilt by lnpmsg.channels."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160, sha256
from lnpmsg.bitcoin.script import p2pkh_script, p2wsh, script
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, legacy_sighash
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.channels import (
    ChannelBasepoints,
    CommitmentContext,
    CommitmentKeys,
    Htlc,
    bolt3_extensions,
    build_commitment,
)
from lnpmsg.channels.keys import (
    commitment_obscuring_factor,
    derive_privkey,
    derive_pubkey,
    per_commitment_point,
    pubkey_from_privkey,
    revocation_pubkey,
)
from lnpmsg.channels.script import funding_script
from lnpmsg.channels.spend import Sig, Spendable, SpendPath, build_spend

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "bolts" / "03-transactions.md"
TEXT = SPEC.read_text()


def section(start: str, end: str) -> str:
    return TEXT[TEXT.index(start) : TEXT.index(end)]


def key_hex(value: str) -> bytes:
    """Private keys are printed with Bitcoin's trailing 01 "compressed" marker."""
    raw = bytes.fromhex(value.removeprefix("0x"))
    return raw[:32] if len(raw) == 33 else raw


# --------------------------------------------------------------------------- Appendix C parsing

APPENDIX_C = section("# Appendix C", "# Appendix D")
_FIELD = re.compile(r"^\s*(?:INTERNAL: )?([a-z_0-9 ]+?): (\S+)\s*$")


def _common_fields() -> dict[str, str]:
    head = APPENDIX_C[: APPENDIX_C.index("    name: ")]
    fields: dict[str, str] = {}
    for line in head.splitlines():
        match = _FIELD.match(line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields


COMMON = _common_fields()


def _test_htlcs() -> dict[int, tuple[str, int, int, bytes]]:
    htlcs = {}
    for number in range(100):
        prefix = f"htlc {number} "
        if prefix + "direction" not in COMMON:
            break
        htlcs[number] = (
            COMMON[prefix + "direction"],
            int(COMMON[prefix + "amount_msat"]),
            int(COMMON[prefix + "expiry"]),
            bytes.fromhex(COMMON[prefix + "payment_preimage"]),
        )
    return htlcs


TEST_HTLCS = _test_htlcs()


@dataclass
class HtlcTxVector:
    output_index: int
    kind: str
    htlc_number: int
    remote_sig: str = ""
    local_sig: str = ""
    tx_hex: str = ""


@dataclass
class CommitVector:
    name: str
    to_local_msat: int = 0
    to_remote_msat: int = 0
    feerate: int = 0
    base_fee: int | None = None
    actual_fee: int | None = None
    listed_htlcs: list[tuple[int, str, int, str]] = field(default_factory=list)
    to_local_wscript: str = ""
    remote_sig: str = ""
    local_sig: str = ""
    tx_hex: str = ""
    num_htlcs: int = 0
    htlc_txs: list[HtlcTxVector] = field(default_factory=list)


def _parse_cases() -> list[CommitVector]:
    body = APPENDIX_C[APPENDIX_C.index("    name: ") :]
    cases: list[CommitVector] = []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("name: "):
            cases.append(CommitVector(line.removeprefix("name: ")))
            continue
        if not line or not cases:
            continue
        case = cases[-1]
        if m := re.fullmatch(r"to_local_msat: (\d+)", line):
            case.to_local_msat = int(m[1])
        elif m := re.fullmatch(r"to_remote_msat: (\d+)", line):
            case.to_remote_msat = int(m[1])
        elif m := re.fullmatch(r"local_feerate_per_kw: (\d+)", line):
            case.feerate = int(m[1])
        elif m := re.fullmatch(r"# base commitment transaction fee = (\d+)", line):
            case.base_fee = int(m[1])
        elif m := re.fullmatch(r"# actual commitment transaction fee = (\d+)", line):
            case.actual_fee = int(m[1])
        elif m := re.fullmatch(r"# HTLC #(\d+) (offered|received) amount (\d+) wscript ([0-9a-f]+)", line):
            case.listed_htlcs.append((int(m[1]), m[2], int(m[3]), m[4]))
        elif m := re.fullmatch(r"# to_local amount \d+ wscript ([0-9a-f]+)", line):
            case.to_local_wscript = m[1]
        elif m := re.fullmatch(r"remote_signature = ([0-9a-f]+)", line):
            case.remote_sig = m[1]
        elif m := re.fullmatch(r"# local_signature = ([0-9a-f]+)", line):
            case.local_sig = m[1]
        elif m := re.fullmatch(r"output commit_tx: ([0-9a-f]+)", line):
            case.tx_hex = m[1]
        elif m := re.fullmatch(r"num_htlcs: (\d+)", line):
            case.num_htlcs = int(m[1])
        elif m := re.fullmatch(r"# signature for output #(\d+) \((htlc-success|htlc-timeout) for htlc #(\d+)\)", line):
            case.htlc_txs.append(HtlcTxVector(int(m[1]), m[2], int(m[3])))
        elif m := re.fullmatch(r"remote_htlc_signature = ([0-9a-f]+)", line):
            case.htlc_txs[-1].remote_sig = m[1]
        elif m := re.fullmatch(r"# local_htlc_signature = ([0-9a-f]+)", line):
            case.htlc_txs[-1].local_sig = m[1]
        elif m := re.fullmatch(r"htlc_(?:success|timeout)_tx \(htlc #(\d+)\): ([0-9a-f]+)", line):
            assert int(m[1]) == case.htlc_txs[-1].htlc_number
            case.htlc_txs[-1].tx_hex = m[2]
    return cases


CASES = _parse_cases()


def htlc_numbers(case_name: str, to_local_msat: int, to_remote_msat: int) -> list[int]:
    """Which test HTLCs a case uses. The spec: none in the first case, HTLCs 5 and 6
    only in the "same amount and preimage" case (which lists #1, #5, #6), 0-4 in the
    others. The balances tell which (they exclude the HTLCs in flight)."""
    same_name = [c for c in CASES if c.name == case_name]
    listed = sorted(number for c in same_name for number, *_ in c.listed_htlcs)
    funding_msat = int(COMMON["funding_amount_satoshi"]) * 1000
    for numbers in ([], listed, [n for n in TEST_HTLCS if n < 5]):
        if to_local_msat + to_remote_msat + sum(TEST_HTLCS[n][1] for n in numbers) == funding_msat:
            return numbers
    raise AssertionError(f"no HTLC set balances case {case_name!r}")


def make_htlcs(numbers: list[int]) -> list[Htlc]:
    htlcs = []
    for number in numbers:
        direction, amount_msat, expiry, preimage = TEST_HTLCS[number]
        htlcs.append(Htlc(number, direction == "local->remote", amount_msat, sha256(preimage), expiry))
    return htlcs


# --------------------------------------------------------------------------- keys of the vectors


class VectorKeys:
    local_funding_privkey = key_hex(COMMON["local_funding_privkey"])
    remote_funding_privkey = key_hex(COMMON["remote_funding_privkey"])
    local_funding_pubkey = bytes.fromhex(COMMON["local_funding_pubkey"])
    remote_funding_pubkey = bytes.fromhex(COMMON["remote_funding_pubkey"])
    per_commitment_secret = key_hex(COMMON["x_local_per_commitment_secret"])
    per_commitment_point = bytes.fromhex(COMMON["local_per_commitment_point"])
    local_payment_basepoint = bytes.fromhex(COMMON["local_payment_basepoint"])
    remote_payment_basepoint = bytes.fromhex(COMMON["remote_payment_basepoint"])
    local_htlc_basepoint = bytes.fromhex(COMMON["local_htlc_basepoint"])
    remote_htlc_basepoint = bytes.fromhex(COMMON["remote_htlc_basepoint"])
    local_payment_basepoint_secret = key_hex(COMMON["local_payment_basepoint_secret"])
    remote_payment_basepoint_secret = key_hex(COMMON["remote_payment_basepoint_secret"])
    remote_revocation_basepoint = bytes.fromhex(COMMON["remote_revocation_basepoint"])
    local_delayed_payment_basepoint = bytes.fromhex(COMMON["local_delayed_payment_basepoint"])
    local_delayed_payment_basepoint_secret = key_hex(COMMON["local_delayed_payment_basepoint_secret"])
    remote_revocation_basepoint_secret = key_hex(COMMON["remote_revocation_basepoint_secret"])


K = VectorKeys


def vector_commitment_keys() -> CommitmentKeys:
    # Basepoints the vectors do not use (local revocation, remote delayed) are
    # filled with other valid points: they never enter the local commitment.
    owner = ChannelBasepoints(
        funding_pubkey=K.local_funding_pubkey,
        revocation_basepoint=K.local_payment_basepoint,
        payment_basepoint=K.local_payment_basepoint,
        delayed_payment_basepoint=K.local_delayed_payment_basepoint,
        htlc_basepoint=K.local_htlc_basepoint,
    )
    other = ChannelBasepoints(
        funding_pubkey=K.remote_funding_pubkey,
        revocation_basepoint=K.remote_revocation_basepoint,
        payment_basepoint=K.remote_payment_basepoint,
        delayed_payment_basepoint=K.remote_payment_basepoint,
        htlc_basepoint=K.remote_htlc_basepoint,
    )
    return CommitmentKeys.derive(K.per_commitment_point, owner, other)


def context(to_local_msat: int, to_remote_msat: int, feerate: int, dust_limit: int) -> CommitmentContext:
    return CommitmentContext(
        funding_outpoint=OutPoint.from_hex(COMMON["funding_tx_id"], int(COMMON["funding_output_index"])),
        funding_sat=int(COMMON["funding_amount_satoshi"]),
        keys=vector_commitment_keys(),
        commitment_number=int(COMMON["commitment_number"]),
        obscuring_factor=commitment_obscuring_factor(K.local_payment_basepoint, K.remote_payment_basepoint),
        owner_is_funder=True,
        to_local_msat=to_local_msat,
        to_remote_msat=to_remote_msat,
        feerate_per_kw=feerate,
        dust_limit_sat=dust_limit,
        to_self_delay=int(COMMON["local_delay"]),
    )


def local_htlc_privkey() -> bytes:
    # local_htlc_basepoint equals local_payment_basepoint in the vectors.
    return derive_privkey(K.local_payment_basepoint_secret, K.per_commitment_point)


def remote_htlc_privkey() -> bytes:
    return derive_privkey(K.remote_payment_basepoint_secret, K.per_commitment_point)


# --------------------------------------------------------------------------- the keys themselves


def test_vector_parameters_parsed() -> None:
    assert len(CASES) == 16
    assert len(TEST_HTLCS) == 7
    assert all(case.tx_hex and case.remote_sig and case.local_sig for case in CASES)
    assert all(len(case.htlc_txs) == case.num_htlcs for case in CASES)


def test_derived_keys_match_appendix_c() -> None:
    keys = vector_commitment_keys()
    assert per_commitment_point(K.per_commitment_secret) == K.per_commitment_point
    assert keys.local_htlc_pubkey.hex() == COMMON["local_htlcpubkey"]
    assert keys.remote_htlc_pubkey.hex() == COMMON["remote_htlcpubkey"]
    assert keys.local_delayed_pubkey.hex() == COMMON["local_delayedpubkey"]
    assert keys.revocation_pubkey.hex() == COMMON["local_revocation_pubkey"]
    assert pubkey_from_privkey(K.local_funding_privkey) == K.local_funding_pubkey
    assert pubkey_from_privkey(K.remote_funding_privkey) == K.remote_funding_pubkey
    assert pubkey_from_privkey(K.remote_revocation_basepoint_secret) == K.remote_revocation_basepoint
    assert pubkey_from_privkey(K.local_delayed_payment_basepoint_secret) == K.local_delayed_payment_basepoint
    # local_privkey is the secret of localpubkey (from the payment basepoint) = local_htlcpubkey here.
    assert local_htlc_privkey() == key_hex(COMMON["local_privkey"])
    assert remote_htlc_privkey() == key_hex(COMMON["remote_privkey"])
    assert derive_privkey(K.local_delayed_payment_basepoint_secret, K.per_commitment_point) == key_hex(
        COMMON["local_delayed_privkey"]
    )
    assert derive_pubkey(K.local_htlc_basepoint, K.per_commitment_point) == pubkey_from_privkey(local_htlc_privkey())
    assert revocation_pubkey(K.remote_revocation_basepoint, K.per_commitment_point) == keys.revocation_pubkey


def test_obscured_commitment_number_comment() -> None:
    match = re.search(r"# obscured commitment number = (0x[0-9a-f]+) \^ (\d+)", APPENDIX_C)
    assert match
    factor = commitment_obscuring_factor(K.local_payment_basepoint, K.remote_payment_basepoint)
    assert factor == int(match[1], 16)
    assert int(match[2]) == int(COMMON["commitment_number"])


def test_funding_witness_script() -> None:
    expected = re.search(r"# funding wscript = ([0-9a-f]+)", APPENDIX_C)[1]  # type: ignore[index]
    assert funding_script(K.local_funding_pubkey, K.remote_funding_pubkey).hex() == expected
    assert funding_script(K.remote_funding_pubkey, K.local_funding_pubkey).hex() == expected


# --------------------------------------------------------------------------- Appendix C


def sign_commitment(commitment):  # type: ignore[no-untyped-def]
    plan = commitment.plan
    local = plan.sign(0, "local_funding", K.local_funding_privkey)
    remote = plan.sign(0, "remote_funding", K.remote_funding_privkey)
    return local, remote, plan.finalize({"local_funding": local, "remote_funding": remote})


def sign_htlc_tx(plan, preimages: dict[int, bytes], htlc_number: int):  # type: ignore[no-untyped-def]
    remote = plan.sign(0, "remote_htlc", remote_htlc_privkey())
    local = plan.sign(0, "local_htlc", local_htlc_privkey())
    values = {"remote_htlc": remote, "local_htlc": local}
    if plan.label.startswith("htlc_success"):
        values["preimage"] = preimages[htlc_number]
    return remote, local, plan.finalize(values)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_commitment_vector(case: CommitVector) -> None:
    numbers = htlc_numbers(case.name, case.to_local_msat, case.to_remote_msat)
    ctx = context(case.to_local_msat, case.to_remote_msat, case.feerate, int(COMMON["local_dust_limit_satoshi"]))
    commitment = build_commitment(ctx, bolt3_extensions(make_htlcs(numbers), anchors=False))

    local, remote, signed = sign_commitment(commitment)
    assert remote[:-1].hex() == case.remote_sig
    assert local[:-1].hex() == case.local_sig
    assert signed.serialize().hex() == case.tx_hex
    assert Tx.parse(bytes.fromhex(case.tx_hex)) == signed
    if case.base_fee is not None:
        assert commitment.base_fee_sat == case.base_fee
    if case.actual_fee is not None:
        assert commitment.fee_sat == case.actual_fee

    for number, kind, amount, wscript in case.listed_htlcs:
        output = commitment.output(f"htlc:{'offered' if kind == 'offered' else 'received'}:{number}")
        assert output.amount_sat == amount
        assert output.spendable.witness_script is not None
        assert output.spendable.witness_script.hex() == wscript
    if case.to_local_wscript:
        witness_script = commitment.output("to_local").spendable.witness_script
        assert witness_script is not None and witness_script.hex() == case.to_local_wscript

    preimages = {number: TEST_HTLCS[number][3] for number in numbers}
    assert len(commitment.second_stage) == case.num_htlcs
    for vector, plan in zip(case.htlc_txs, commitment.second_stage, strict=True):
        assert plan.tx.inputs[0].prevout == commitment.tx.outpoint(vector.output_index)
        assert plan.label.startswith(vector.kind.replace("-", "_"))
        remote_htlc, local_htlc, htlc_tx = sign_htlc_tx(plan, preimages, vector.htlc_number)
        assert remote_htlc[:-1].hex() == vector.remote_sig
        assert local_htlc[:-1].hex() == vector.local_sig
        assert htlc_tx.serialize().hex() == vector.tx_hex


# --------------------------------------------------------------------------- Appendix F (anchors)

APPENDIX_F = section("# Appendix F", "# Appendix G")
ANCHOR_CASES = json.loads(APPENDIX_F[APPENDIX_F.index("```yaml") + len("```yaml") : APPENDIX_F.rindex("```")])


def test_anchor_vectors_parsed() -> None:
    assert len(ANCHOR_CASES) == 9


@pytest.mark.parametrize("case", ANCHOR_CASES, ids=[case["Name"] for case in ANCHOR_CASES])
def test_anchor_commitment_vector(case: dict) -> None:  # type: ignore[type-arg]
    numbers = (
        htlc_numbers(case["Name"], case["LocalBalance"], case["RemoteBalance"]) if case["UseTestHtlcs"] else []
    )
    ctx = context(case["LocalBalance"], case["RemoteBalance"], case["FeePerKw"], case["DustLimitSatoshis"])
    commitment = build_commitment(ctx, bolt3_extensions(make_htlcs(numbers), anchors=True))

    _, remote, signed = sign_commitment(commitment)
    assert remote[:-1].hex() == case["RemoteSigHex"]
    assert signed.serialize().hex() == case["ExpectedCommitmentTxHex"]

    preimages = {number: TEST_HTLCS[number][3] for number in numbers}
    assert len(commitment.second_stage) == len(case["HtlcDescs"])
    for desc, plan in zip(case["HtlcDescs"], commitment.second_stage, strict=True):
        number = int(plan.label.rsplit(":", 1)[1])
        remote_htlc, _, htlc_tx = sign_htlc_tx(plan, preimages, number)
        assert remote_htlc[:-1].hex() == desc["RemoteSigHex"]
        assert remote_htlc[-1] == 0x83  # SIGHASH_SINGLE|SIGHASH_ANYONECANPAY
        assert htlc_tx.serialize().hex() == desc["ResolutionTxHex"]
        assert htlc_tx.inputs[0].sequence == 1
        assert plan.fee_sat == 0


# --------------------------------------------------------------------------- Appendix B (funding)

APPENDIX_B = section("# Appendix B", "# Appendix C")


def _appendix_b() -> dict[str, str]:
    fields = {}
    for line in APPENDIX_B.splitlines():
        match = re.match(r"^\s*(#?\s*[A-Za-z0-9_ ]+?)(?::| =) (\S+)\s*$", line)
        if match:
            fields[match.group(1).lstrip("# ").strip()] = match.group(2)
    return fields


def test_funding_transaction_vector() -> None:
    b = _appendix_b()
    coinbase = Tx.parse(bytes.fromhex(b["Block 1 coinbase transaction"]))
    privkey = key_hex(b["Block 1 coinbase privkey"])
    pubkey = pubkey_from_privkey(privkey)
    assert coinbase.txid_hex == b["input txid"]
    spent = coinbase.outputs[int(b["input index"])]
    assert spent.amount_sat == int(b["input satoshis"])
    assert spent.script_pubkey == p2pkh_script(hash160(pubkey))

    local = bytes.fromhex(b["local_funding_pubkey"])
    remote = bytes.fromhex(b["remote_funding_pubkey"])
    wscript = funding_script(local, remote)
    assert wscript.hex() == b["funding witness script"]
    funding_out = TxOut(int(b["funding satoshis"]), p2wsh(wscript))
    change_out = TxOut(int(b["change satoshis"]), bytes([0, 20]) + hash160(pubkey))
    outputs = sorted([funding_out, change_out], key=lambda o: (o.amount_sat, o.script_pubkey))
    unsigned = Tx(2, (TxIn(coinbase.outpoint(0)),), tuple(outputs), 0)
    assert unsigned.outputs[int(b["funding output"])] == funding_out

    digest = legacy_sighash(unsigned, 0, spent.script_pubkey, SIGHASH_ALL)
    script_sig = script(sign_digest(privkey, digest) + bytes([SIGHASH_ALL]), pubkey)
    signed = unsigned.with_script_sig(0, script_sig)
    assert signed.serialize().hex() == b["funding tx"]
    assert signed.txid_hex == b["txid"]
    # The change is what is left after a fee of feerate_per_kw on the transaction's weight.
    fee = int(b["input satoshis"]) - int(b["funding satoshis"]) - int(b["change satoshis"])
    assert fee == int(b["feerate_per_kw"]) * signed.weight // 1000
    assert COMMON["funding_tx_id"] == signed.txid_hex


# --------------------------------------------------------------------------- Appendix G (dual funding)

APPENDIX_G = section("# Appendix G", "# References")


def _base58check_decode(text: str) -> bytes:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = 0
    for char in text:
        number = number * 58 + alphabet.index(char)
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(text) - len(text.lstrip("1"))) + raw
    payload, checksum = raw[:-4], raw[-4:]
    assert sha256(sha256(payload))[:4] == checksum
    return payload


def _fenced_after(heading: str) -> str:
    start = APPENDIX_G.index(heading)
    block_start = APPENDIX_G.index("```", start) + 3
    return APPENDIX_G[block_start : APPENDIX_G.index("```", block_start)]


def test_dual_funded_transaction_vector() -> None:
    parent = Tx.parse(bytes.fromhex(re.search(r"Parent transaction[^\n]*\n([0-9a-f]+)", APPENDIX_G)[1]))  # type: ignore[index]
    locktime = int(re.search(r"Locktime: (\d+)", APPENDIX_G)[1])  # type: ignore[index]
    inputs_text = _fenced_after("Inputs:")
    assert parent.txid_hex in inputs_text

    def add_input(heading: str) -> tuple[int, OutPoint, int]:
        block = _fenced_after(heading)
        serial = int(re.search(r"serial_id: (\d+)", block)[1])  # type: ignore[index]
        vout = int(re.search(r"prev_vout: (\d+)", block)[1])  # type: ignore[index]
        sequence = int(re.search(r"sequence: (\d+)", block)[1])  # type: ignore[index]
        prevtx = re.search(r'prevtx: "([0-9a-f]+)"', block)[1]  # type: ignore[index]
        assert Tx.parse(bytes.fromhex(prevtx)) == parent
        return serial, parent.outpoint(vout), sequence

    def add_outputs(heading: str) -> list[tuple[int, TxOut]]:
        block = _fenced_after(heading)
        found = re.findall(r"serial_id: (\d+),\s*sats: (\d+),\s*scriptlen: \d+,\s*script: \"?([0-9a-f]+)", block)
        # The printed script keeps its length prefix byte.
        return [(int(serial), TxOut(int(sats), bytes.fromhex(hexs)[1:])) for serial, sats, hexs in found]

    ins = sorted([add_input("Expected Opener's `tx_add_input`"), add_input("Expected Accepter's `tx_add_input`")])
    outs = sorted(add_outputs("Expected Opener's `tx_add_output`") + add_outputs("Expected Accepter's `tx_add_output`"))
    unsigned = Tx(
        2,
        tuple(TxIn(outpoint, sequence=sequence) for _, outpoint, sequence in ins),
        tuple(out for _, out in outs),
        locktime,
    )
    assert unsigned.serialize().hex() == _fenced_after("### Unsigned Funding Transaction").strip()
    txid = re.search(r'txid: "([0-9a-f]+)"', APPENDIX_G)[1]  # type: ignore[index]
    assert unsigned.txid_hex == txid

    pubkey1, pubkey2 = (bytes.fromhex(h) for h in re.findall(r"pubkey[12]: ([0-9a-f]{66})", APPENDIX_G))
    funding = next(out for _, out in outs if out.script_pubkey[:2] == b"\x00\x20" and out.amount_sat > 10**8)
    assert funding.script_pubkey == p2wsh(funding_script(pubkey1, pubkey2))

    # Opener: a hash-locked P2WSH input (preimage + witness script). Accepter: P2WPKH, signed here.
    preimage_hex = re.search(r"preimage: \d+ ([0-9a-f]+)", inputs_text)[1]  # type: ignore[index]
    lock_script = bytes.fromhex(re.search(r"witness_script: \d+ ([0-9a-f]+)", inputs_text)[1])  # type: ignore[index]
    wif = re.search(r"privkey: (c[1-9A-HJ-NP-Za-km-z]+)\n\twitness_program", inputs_text)[1]  # type: ignore[index]
    privkey = _base58check_decode(wif)[1:33]
    pubkey = pubkey_from_privkey(privkey)
    accepter_prevout = next(op for _, op, _ in ins if parent.outputs[op.vout].script_pubkey[:2] == b"\x00\x14")
    opener_prevout = next(op for _, op, _ in ins if op != accepter_prevout)
    accepter_spendable = Spendable.p2wpkh(
        parent.outputs[accepter_prevout.vout].amount_sat, pubkey, (SpendPath("key", (Sig("key", pubkey), pubkey)),)
    )
    opener_spendable = Spendable.p2wsh(
        parent.outputs[opener_prevout.vout].amount_sat,
        lock_script,
        (SpendPath("preimage", (bytes.fromhex(preimage_hex),)),),
    )
    assert opener_spendable.script_pubkey == parent.outputs[opener_prevout.vout].script_pubkey
    assert accepter_spendable.script_pubkey == parent.outputs[accepter_prevout.vout].script_pubkey
    by_outpoint = {accepter_prevout: (accepter_spendable, "key"), opener_prevout: (opener_spendable, "preimage")}
    plan = build_spend(
        [(txin.prevout, *by_outpoint[txin.prevout]) for txin in unsigned.inputs],
        unsigned.outputs,
        locktime=locktime,
    )
    assert plan.tx == unsigned
    accepter_index = next(i for i, txin in enumerate(unsigned.inputs) if txin.prevout == accepter_prevout)
    values = [{} for _ in unsigned.inputs]
    values[accepter_index] = {"key": plan.sign(accepter_index, "key", privkey)}
    signed = plan.finalize(values)

    def witness_data(stack: tuple[bytes, ...]) -> str:
        return (bytes([len(stack)]) + b"".join(bytes([len(item)]) + item for item in stack)).hex()

    expected = re.findall(r'witness_data: "([0-9a-f]+)"', APPENDIX_G)
    assert witness_data(signed.inputs[1 - accepter_index].witness) == expected[0]
    assert witness_data(signed.inputs[accepter_index].witness) == expected[1]
    assert signed.serialize().hex() == _fenced_after("#### Signed Funding Transaction").strip()
