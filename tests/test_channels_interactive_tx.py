"""BOLT-2 interactive transaction construction (lnpmsg.channels.interactive_tx), sans-IO:
two sessions talking, every receiver requirement broken by a hand-driven peer (each
gives a tx_abort with its reason), tx_signatures order and checks, and a negotiated
transaction signed by both sides accepted by the consensus engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160
from lnpmsg.bitcoin.script import p2pkh_script, p2wpkh, p2wsh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.interactive_rules import (
    check_witness,
    encode_witness,
    is_segwit_script,
    is_standard_output_script,
)
from lnpmsg.channels.interactive_parts import FundingOutput, OwnInput, OwnOutput, contribution_fee
from lnpmsg.channels.interactive_tx import InteractiveTx, SessionState
from lnpmsg.channels.messages_v2 import (
    TxAbort,
    TxAddInput,
    TxAddOutput,
    TxComplete,
    TxRemoveInput,
    TxRemoveOutput,
    TxSignatures,
)
from lnpmsg.testing.channels import Party
from lnpmsg.wire import Message

CID = b"\x42" * 32
FEERATE = 2_500
DUST = 546
ALICE, BOB = Party("alice"), Party("bob")
A_KEY, B_KEY = ALICE.secret("wallet"), BOB.secret("wallet")
FUNDING_SCRIPT = p2wsh(b"\x51")  # any P2WSH stands for the 2-of-2 here


def pub(secret: bytes) -> bytes:
    from lnpmsg.channels.keys import pubkey_from_privkey

    return pubkey_from_privkey(secret)


def prevtx(amount: int, script: bytes, tag: int = 0) -> bytes:
    """A transaction paying ``amount`` to ``script`` at output 0 (not on any chain: the rules read it only)."""
    return Tx(2, (TxIn(OutPoint(bytes([tag]) * 32, 0)),), (TxOut(amount, script),)).raw


def change_for(coin: int, prev_script: bytes, share: int, *, initiator: bool, with_funding: bool) -> int:
    outputs = [p2wpkh(pub(A_KEY))] + ([FUNDING_SCRIPT] if with_funding else [])
    return coin - share - contribution_fee([prev_script], outputs, FEERATE, initiator=initiator)


def session(initiator: bool, funding: FundingOutput | None, inputs=(), outputs=(), entropy=b"e") -> InteractiveTx:
    return InteractiveTx(
        channel_id=CID, initiator=initiator, feerate_per_kw=FEERATE, locktime=100, dust_limit_sat=DUST,
        inputs=list(inputs), outputs=list(outputs), funding=funding, entropy=entropy,
    )  # fmt: skip


def pump(a: InteractiveTx, b: InteractiveTx) -> list[Message]:
    """Run the exchange to its end; returns every message, in order."""
    log: list[Message] = []
    to_b = a.start()
    while to_b:
        log += to_b
        to_a: list[Message] = []
        for m in to_b:
            to_a += b.receive(m)
        log += to_a
        to_b = []
        for m in to_a:
            to_b += a.receive(m)
    return log


def pair(a_share: int, b_share: int, a_coin: int = 1_000_000, b_coin: int = 500_000) -> tuple[InteractiveTx, InteractiveTx]:
    a_script, b_script = p2wpkh(pub(A_KEY)), p2wpkh(pub(B_KEY))
    a_change = change_for(a_coin, a_script, a_share, initiator=True, with_funding=True)
    a = session(True, FundingOutput(FUNDING_SCRIPT, a_share, b_share),
                [OwnInput(prevtx(a_coin, a_script, 1), 0)], [OwnOutput(a_change, a_script)], b"a")  # fmt: skip
    b_inputs, b_outputs = [], []
    if b_share:
        b_inputs = [OwnInput(prevtx(b_coin, b_script, 2), 0)]
        b_outputs = [OwnOutput(change_for(b_coin, b_script, b_share, initiator=False, with_funding=False), b_script)]
    b = session(False, FundingOutput(FUNDING_SCRIPT, b_share, a_share), b_inputs, b_outputs, b"b")
    return a, b


def test_initiator_only_and_both_contributing() -> None:
    for b_share in (0, 200_000):
        a, b = pair(300_000, b_share)
        log = pump(a, b)
        assert a.state is b.state is SessionState.COMPLETE
        assert isinstance(log[-1], TxComplete) and isinstance(log[-2], TxComplete)
        assert a.transaction == b.transaction
        tx = a.transaction
        assert tx.locktime == 100 and tx.version == 2
        assert [o.amount_sat for o in tx.outputs if o.script_pubkey == FUNDING_SCRIPT] == [300_000 + b_share]
        assert len(tx.inputs) == (2 if b_share else 1)
        # ordered by serial id: the sorted serials give the transaction's order on both sides
        adds = [m for m in log if isinstance(m, TxAddInput)]
        order = [m.serial_id for m in sorted(adds, key=lambda m: m.serial_id)]
        assert [a._inputs[s].outpoint for s in order] == [i.prevout for i in tx.inputs]
        assert a.funding_outpoint() == b.funding_outpoint()
        assert all(m.serial_id % 2 == 0 for m in log if isinstance(m, TxAddInput | TxAddOutput) and m in a_sent(log))


def a_sent(log: list[Message]) -> list[Message]:
    """The initiator's messages: it speaks first, and the parties alternate."""
    return log[0::2]


def test_sign_first_order() -> None:
    a, b = pair(300_000, 0)
    pump(a, b)
    # the accepter contributed nothing: it signs first whatever the node ids
    assert b.we_sign_first(b"\x03" * 33, b"\x02" * 33) and not a.we_sign_first(b"\x02" * 33, b"\x03" * 33)
    a, b = pair(300_000, 200_000, a_coin=500_000, b_coin=500_000)
    pump(a, b)
    # equal inputs: the lower node id first
    assert a.we_sign_first(b"\x02" * 33, b"\x03" * 33) and not b.we_sign_first(b"\x03" * 33, b"\x02" * 33)


def test_our_contribution_must_pay_its_way() -> None:
    script = p2wpkh(pub(A_KEY))
    with pytest.raises(LocalMisuse, match="do not cover"):
        session(True, FundingOutput(FUNDING_SCRIPT, 300_000, 0), [OwnInput(prevtx(300_000, script), 0)])
    with pytest.raises(LocalMisuse, match="segwit"):
        session(True, None, [OwnInput(prevtx(300_000, p2pkh_script(bytes(20))), 0)])


# -- a hand-driven peer: the initiator's messages to a non-initiator -------------


def accepter(funding: FundingOutput | None = None) -> InteractiveTx:
    return session(False, funding)


def add_input(serial: int = 0, *, amount: int = 1_000_000, script: bytes | None = None, tag: int = 1, **kw) -> TxAddInput:
    fields = dict(channel_id=CID, serial_id=serial, prevtx=prevtx(amount, script or p2wpkh(pub(A_KEY)), tag), prevtx_vout=0, sequence=0xFFFFFFFD)
    fields.update(kw)
    return TxAddInput(**fields)


def add_output(serial: int = 2, sats: int = 10_000, script: bytes | None = None) -> TxAddOutput:
    return TxAddOutput(channel_id=CID, serial_id=serial, sats=sats, script=script or p2wpkh(pub(A_KEY)))


def aborted(b: InteractiveTx, *msgs: Message) -> str:
    """Feed ``msgs`` (each answered); the last must give a tx_abort: its reason."""
    for m in msgs[:-1]:
        out = b.receive(m)
        assert out and not isinstance(out[0], TxAbort), out
    out = b.receive(msgs[-1])
    assert len(out) == 1 and isinstance(out[0], TxAbort), out
    assert b.state is SessionState.ABORTED and b.receive(add_output(40)) == []  # sticky
    return out[0].data.decode()


@pytest.mark.parametrize(
    ("msgs", "reason"),
    [
        ([add_input(1)], "wrong parity"),
        ([add_input(0), add_input(0, tag=2)], "already in the transaction"),
        ([add_input(0), add_output(0)], "already in the transaction"),
        ([add_input(0), add_input(2)], "added twice"),
        ([add_input(0, sequence=0xFFFFFFFE)], "replaceability"),
        ([add_input(0, sequence=0xFFFFFFFF)], "replaceability"),
        ([add_input(0, prevtx=b"\x01\x02")], "not a valid transaction"),
        ([add_input(0, prevtx=b"")], "shared inputs"),
        ([add_input(0, prevtx_vout=1)], "beyond the 1 outputs"),
        ([add_input(0, script=p2pkh_script(bytes(20)))], "non-segwit"),
        ([add_output(2, sats=DUST - 1)], "dust"),
        ([add_output(2, sats=MAX_MONEY + 1)], "MAX_MONEY"),
        ([add_output(2, script=b"\x51")], "non-standard"),
        ([add_output(2), TxRemoveOutput(channel_id=CID, serial_id=3)], "did not add"),
        ([add_output(2), TxRemoveOutput(channel_id=CID, serial_id=4)], "not in the transaction"),
        ([add_output(2), TxRemoveInput(channel_id=CID, serial_id=2)], "not in the transaction"),
        ([TxAddOutput(channel_id=b"\x01" * 32, serial_id=2, sats=10_000, script=p2wpkh(pub(A_KEY)))], "another channel"),
        ([TxSignatures(channel_id=CID, txid=bytes(32), witnesses=[])], "unexpected TxSignatures"),
    ],
)
def test_each_violation_aborts_with_its_reason(msgs: list[Message], reason: str) -> None:
    assert reason in aborted(accepter(), *msgs)


def test_out_of_turn() -> None:
    # the protocol is turn-based: the initiator speaks first, so a message before it did is refused
    a = session(True, None, [OwnInput(prevtx(100_000, p2wpkh(pub(A_KEY))), 0)])
    assert "out of turn" in aborted(a, TxComplete(channel_id=CID))
    # (once it started, each message is answered at once, so the turn is always the peer's)


def test_limit_on_received_adds() -> None:
    b = accepter()
    reason = ""
    for n in range(5000):
        out = b.receive(add_output(2 * n))
        if isinstance(out[0], TxAbort):
            reason = out[0].data.decode()
            break
    assert n == 4095 and "4096 tx_add_output" in reason


@pytest.mark.parametrize(
    ("funding", "msgs", "reason"),
    [
        (None, [add_input(0, amount=5_000), add_output(2, sats=5_000), TxComplete(channel_id=CID)], "pays 0 sat"),
        (None, [add_input(0, amount=5_000), add_output(2, sats=6_000), TxComplete(channel_id=CID)], "less than its outputs"),
        (FundingOutput(FUNDING_SCRIPT, 0, 50_000), [add_input(0), TxComplete(channel_id=CID)], "no funding output"),
        (
            FundingOutput(FUNDING_SCRIPT, 0, 50_000),
            [add_input(0), add_output(2, 40_000, FUNDING_SCRIPT), TxComplete(channel_id=CID)],
            "not 50000",
        ),
        (
            # the funding share counts as the initiator's output: 1000 sat cannot pay 50000 + fees
            FundingOutput(FUNDING_SCRIPT, 0, 50_000),
            [add_input(0, amount=1_000), add_output(2, 50_000, FUNDING_SCRIPT), TxComplete(channel_id=CID)],
            "less than its outputs",
        ),
    ],
)
def test_completion_checks(funding: FundingOutput | None, msgs: list[Message], reason: str) -> None:
    assert reason in aborted(accepter(funding), *msgs)


def test_initiator_pays_the_common_fields() -> None:
    script = p2wpkh(pub(A_KEY))
    own_fee = contribution_fee([script], [script], FEERATE, initiator=False)
    common = contribution_fee([script], [script], FEERATE, initiator=True) - own_fee
    assert common > 0
    # enough for its own input and output, not for the common fields: refused
    b = accepter()
    msgs = [add_input(0, amount=100_000), add_output(2, 100_000 - own_fee), TxComplete(channel_id=CID)]
    assert "common fields" in aborted(b, *msgs)
    b = accepter()
    for m in [add_input(0, amount=100_000), add_output(2, 100_000 - own_fee - common)]:
        b.receive(m)
    assert b.receive(TxComplete(channel_id=CID)) == [] and b.state is SessionState.COMPLETE


def test_a_replacement_pays_at_least_the_total_fee_of_the_version_it_replaces() -> None:
    a, b = pair(300_000, 200_000)
    pump(a, b)
    fee = a.total_fee_sat()
    assert fee == b.total_fee_sat() > 0
    for floor, ends in ((fee, SessionState.COMPLETE), (fee + 1, SessionState.ABORTED)):
        a, b = pair(300_000, 200_000)
        a.replaces_fee_sat = b.replaces_fee_sat = floor
        log = pump(a, b)
        assert a.state is b.state is ends
        if ends is SessionState.ABORTED:  # the side that completes last refuses it; the other echoes
            (abort, echo) = [m for m in log if isinstance(m, TxAbort)]
            assert f"pays {fee} sat in fees, less than the {fee + 1} sat".encode() in abort.data and echo.data == b"echo"


def test_removal_and_peer_abort_echo() -> None:
    b = accepter()
    b.receive(add_input(0))
    b.receive(add_output(2, 20_000))
    b.receive(TxRemoveOutput(channel_id=CID, serial_id=2))
    b.receive(TxRemoveInput(channel_id=CID, serial_id=0))
    assert not b._inputs and not b._outputs
    assert b.receive(TxAbort(channel_id=CID, data=b"bye")) == [TxAbort(channel_id=CID, data=b"echo")]
    assert b.state is SessionState.ABORTED
    assert b.receive(TxAbort(channel_id=CID, data=b"again")) == []  # no echo of an echo


def test_signature_checks() -> None:
    a, b = pair(300_000, 200_000)
    pump(a, b)
    txid = a.transaction.txid
    (_, _, b_script), = b.our_inputs()
    good = TxSignatures(channel_id=CID, txid=txid, witnesses=[{"witness_data": encode_witness((b"\x30" * 70 + b"\x01", pub(B_KEY)))}])
    cases = [
        (TxSignatures(channel_id=CID, txid=bytes(32), witnesses=good.witnesses), "not "),
        (TxSignatures(channel_id=CID, txid=txid, witnesses=[]), "0 witnesses"),
        (TxSignatures(channel_id=CID, txid=txid, witnesses=[{"witness_data": b"\x00"}]), "empty witness"),
        (TxSignatures(channel_id=CID, txid=txid, witnesses=[{"witness_data": b"\x02\x01"}]), "malformed"),
        (TxSignatures(channel_id=CID, txid=txid, witnesses=[{"witness_data": encode_witness((b"\x30" * 70 + b"\x83", pub(B_KEY)))}]), "SIGHASH_ALL"),
        (TxSignatures(channel_id=CID, txid=txid, witnesses=[{"witness_data": encode_witness((b"\x30" * 70 + b"\x01", pub(A_KEY)))}]), "does not match"),
    ]
    from lnpmsg.channels.interactive_tx import InteractiveTxAborted

    for msg, reason in cases:
        with pytest.raises(InteractiveTxAborted, match=reason):
            a.receive_signatures(msg)
    a.receive_signatures(good)
    assert check_witness((), b_script) == "an empty witness"


def test_script_classes() -> None:
    assert is_segwit_script(p2wpkh(pub(A_KEY))) and is_segwit_script(b"\x51\x20" + bytes(32))
    assert is_segwit_script(b"\x60\x02ab") and not is_segwit_script(b"\x00\x01a") and not is_segwit_script(b"\x00\x29" + bytes(41))
    assert is_standard_output_script(p2pkh_script(bytes(20))) and is_standard_output_script(b"\x6a\x04abcd")
    assert not is_standard_output_script(b"\x6a" + bytes(83)) and not is_standard_output_script(b"\x00\x15" + bytes(21))


# -- the consensus engine --------------------------------------------------------


def p2wpkh_witness(tx: Tx, index: int, amount: int, secret: bytes) -> tuple[bytes, bytes]:
    key = pub(secret)
    digest = segwit_v0_sighash(tx, index, p2pkh_script(hash160(key)), amount, SIGHASH_ALL)
    return sign_digest(secret, digest) + bytes([SIGHASH_ALL]), key


async def test_negotiated_transaction_is_accepted_by_the_kernel(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain", clock=lambda: 1_700_000_000) as source:
        await source.mine(101)
        core = source.core
        a_script, b_script = p2wpkh(pub(A_KEY)), p2wpkh(pub(B_KEY))
        a_coin = core.faucet(a_script, 1_000_000)
        b_coin = core.faucet(b_script, 700_000)
        core.mine(1)
        a_prev, _ = core.find_transaction(a_coin.txid)
        b_prev, _ = core.find_transaction(b_coin.txid)
        a_amount = a_prev.outputs[a_coin.vout].amount_sat
        b_amount = b_prev.outputs[b_coin.vout].amount_sat
        a_change = change_for(a_amount, a_script, 300_000, initiator=True, with_funding=True)
        b_change = b_amount - 200_000 - contribution_fee([b_script], [b_script], FEERATE, initiator=False)
        funding = (300_000, 200_000)
        a = session(True, FundingOutput(FUNDING_SCRIPT, *funding),
                    [OwnInput(a_prev.raw, a_coin.vout)], [OwnOutput(a_change, a_script)], b"a")  # fmt: skip
        b = session(False, FundingOutput(FUNDING_SCRIPT, funding[1], funding[0]),
                    [OwnInput(b_prev.raw, b_coin.vout)], [OwnOutput(b_change, b_script)], b"b")  # fmt: skip
        pump(a, b)
        tx = a.transaction
        assert b.transaction == tx
        a_id, b_id = pub(ALICE.secret("node")), pub(BOB.secret("node"))
        first, second = (a, b) if a.we_sign_first(a_id, b_id) else (b, a)
        assert first is b  # Bob put in less

        def sign(s: InteractiveTx, secret: bytes) -> TxSignatures:
            return s.our_signatures([p2wpkh_witness(tx, i, amt, secret) for i, amt, _ in s.our_inputs()])

        first_sigs = sign(b, B_KEY)
        a.receive_signatures(first_sigs)
        b.receive_signatures(sign(a, A_KEY))
        signed = a.signed_transaction()
        assert signed == b.signed_transaction() and signed.txid == tx.txid
        fee = a_amount + b_amount - sum(o.amount_sat for o in signed.outputs)
        assert fee * 1000 >= FEERATE * signed.weight  # the estimates covered the real weight
        # first a witness that signs nothing valid: the kernel refuses it (the checks above cannot)
        a_index = a.our_inputs()[0][0]
        bad = signed.with_witness(a_index, (b"\x30" * 70 + b"\x01", pub(A_KEY)))
        refused = core.submit_transactions_in_block([bad])
        assert not refused.accepted and refused.code == "block-script-verify-flag-failed", refused.reason
        result = core.submit_transactions_in_block([signed])
        assert result.accepted, result.reason
        assert core.get_txout(a.funding_outpoint()).txout == TxOut(500_000, FUNDING_SCRIPT)
