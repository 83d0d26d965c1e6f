"""Generalized channels: a new output kind defined here, in the test, plugs into the
commitment builder with no change to lnpmsg; plus sweeps, penalties and closings."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.bitcoin.ecdsa import verify_digest
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import (
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_DROP,
    OP_ELSE,
    OP_ENDIF,
    OP_EQUALVERIFY,
    OP_IF,
    OP_SHA256,
    Num,
    decode_script,
    p2wpkh,
    script,
)
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, SIGHASH_ANYONECANPAY, SIGHASH_SINGLE
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut
from lnpmsg.channels import (
    LOCAL_ANCHOR,
    REMOTE_ANCHOR,
    TO_LOCAL,
    TO_REMOTE,
    ChannelError,
    CommitmentContext,
    CommitmentExtension,
    CommitmentKeys,
    CommitmentOutput,
    Htlc,
    OutputSpec,
    Sig,
    Spendable,
    SpendPath,
    SpendPlan,
    Value,
    bolt3_extensions,
    build_commitment,
    build_spend,
    htlc_tag,
    sweeps,
)
from lnpmsg.channels.fees import HTLC_OUTPUT_WEIGHT, htlc_success_fee, htlc_timeout_fee
from lnpmsg.channels.keys import (
    commitment_obscuring_factor,
    derive_privkey,
    per_commitment_point,
    pubkey_from_privkey,
    revocation_privkey,
)
from lnpmsg.testing.channels import Party, secret

FUNDING_SAT = 1_000_000
TO_SELF_DELAY = 144
FEERATE = 2500
DUST = 546




ALICE = Party("alice")  # the owner of the commitments built here, and the funder
BOB = Party("bob")
FUNDING_OUTPOINT = OutPoint(sha256(b"funding tx"), 1)
PREIMAGES = {i: sha256(f"preimage {i}".encode()) for i in range(10)}


def alice_context(number: int, to_local_msat: int, to_remote_msat: int, *, feerate: int = FEERATE) -> CommitmentContext:
    point = per_commitment_point(ALICE.commitment_secret(number))
    return CommitmentContext(
        funding_outpoint=FUNDING_OUTPOINT,
        funding_sat=FUNDING_SAT,
        keys=CommitmentKeys.derive(point, ALICE.basepoints(), BOB.basepoints()),
        commitment_number=number,
        obscuring_factor=commitment_obscuring_factor(
            ALICE.basepoints().payment_basepoint, BOB.basepoints().payment_basepoint
        ),
        owner_is_funder=True,
        to_local_msat=to_local_msat,
        to_remote_msat=to_remote_msat,
        feerate_per_kw=feerate,
        dust_limit_sat=DUST,
        to_self_delay=TO_SELF_DELAY,
    )


def privkey_for(ctx: CommitmentContext, sig: Sig) -> bytes:
    """The secret behind any key a BOLT-3 path asks for, for the two test parties."""
    point = ctx.keys.per_commitment_point
    number = ctx.commitment_number
    candidates = [
        ALICE.secret("funding"),
        BOB.secret("funding"),
        BOB.secret("payment"),
        derive_privkey(ALICE.secret("htlc"), point),
        derive_privkey(BOB.secret("htlc"), point),
        derive_privkey(ALICE.secret("delayed"), point),
        revocation_privkey(BOB.secret("revocation"), ALICE.commitment_secret(number)),
        BONUS_CLAIM_SECRET,
        BONUS_REFUND_SECRET,
    ]
    for candidate in candidates:
        if pubkey_from_privkey(candidate) == sig.pubkey:
            return candidate
    raise AssertionError(f"no test secret for slot {sig.slot}")


def sign_all(ctx: CommitmentContext, plan: SpendPlan, extra: dict[str, bytes] | None = None) -> Tx:
    """Sign every slot of every input, check each signature with coincurve, and finalize."""
    values = []
    for index, item in enumerate(plan.inputs):
        filled = dict(extra or {})
        for sig in item.path.signatures:
            signature = plan.sign(index, sig.slot, privkey_for(ctx, sig))
            assert signature[-1] == sig.sighash
            assert verify_digest(sig.pubkey, signature[:-1], plan.sighash(index, sig.slot))
            assert plan.verify(index, sig.slot, signature)
            filled[sig.slot] = signature
        values.append({k: v for k, v in filled.items() if _has_slot(item.path, k)})
    return plan.finalize(values)


def _has_slot(path: SpendPath, name: str) -> bool:
    try:
        path.slot(name)
    except ChannelError:
        return False
    return True


# --------------------------------------------------------------------------- a brand-new extension

BONUS_CLAIM_SECRET = secret("bonus claim")
BONUS_REFUND_SECRET = secret("bonus refund")
BONUS_PREIMAGE = secret("bonus preimage")
BONUS_DELAY = 20
BONUS_WEIGHT = 172


def bonus_script(payment_hash: bytes, claim_pubkey: bytes, refund_pubkey: bytes) -> bytes:
    """Hash-locked to the claimer, or back to the refund key after BONUS_DELAY blocks."""
    return script(
        OP_IF, OP_SHA256, payment_hash, OP_EQUALVERIFY, claim_pubkey,
        OP_ELSE, Num(BONUS_DELAY), OP_CHECKSEQUENCEVERIFY, OP_DROP, refund_pubkey,
        OP_ENDIF, OP_CHECKSIG,
    )  # fmt: skip


class BonusExtension(CommitmentExtension):
    """A hash-locked "bonus" output with its own script, spend paths and a pre-signed refund."""

    name = "bonus"

    def __init__(self, amount_msat: int) -> None:
        self.amount_msat = amount_msat
        self.claim_pubkey = pubkey_from_privkey(BONUS_CLAIM_SECRET)
        self.refund_pubkey = pubkey_from_privkey(BONUS_REFUND_SECRET)

    def fixed_outputs(self, ctx: CommitmentContext) -> Sequence[OutputSpec]:
        amount = self.amount_msat // 1000
        spendable = Spendable.p2wsh(
            amount,
            bonus_script(sha256(BONUS_PREIMAGE), self.claim_pubkey, self.refund_pubkey),
            (
                SpendPath("claim", (Sig("claimer", self.claim_pubkey, signer="remote"), Value("preimage", 32), b"\x01")),
                SpendPath("refund", (Sig("refunder", self.refund_pubkey, signer="local"), b""), sequence=BONUS_DELAY),
            ),
        )
        return [
            OutputSpec(
                "bonus", spendable, trimmed=amount < ctx.dust_limit_sat, fee_weight=BONUS_WEIGHT,
                value_msat=self.amount_msat,
            )
        ]  # fmt: skip

    def second_stage(self, ctx: CommitmentContext, commitment_tx: Tx, output: CommitmentOutput) -> Sequence[SpendPlan]:
        refund_to = TxOut(output.amount_sat - 500, p2wpkh(self.refund_pubkey))
        return [build_spend([(output.outpoint, output.spendable, "refund")], [refund_to], label="bonus_refund")]


HTLCS = [
    Htlc(0, True, 50_000_000, sha256(PREIMAGES[0]), 700),
    Htlc(1, False, 30_000_000, sha256(PREIMAGES[1]), 710),
    Htlc(2, True, 400_000, sha256(PREIMAGES[2]), 720),  # trimmed: dust
]
HTLC_MSAT = sum(h.amount_msat for h in HTLCS)


def composed(bonus_msat: int = 20_000_000, *, anchors: bool = True, number: int = 7):  # type: ignore[no-untyped-def]
    to_remote = 300_000_000
    ctx = alice_context(number, FUNDING_SAT * 1000 - to_remote - HTLC_MSAT - bonus_msat, to_remote)
    extensions = [*bolt3_extensions(HTLCS, anchors=anchors), BonusExtension(bonus_msat)]
    return ctx, build_commitment(ctx, extensions)


def test_new_extension_output_in_commitment() -> None:
    ctx, commitment = composed()
    bonus = commitment.output("bonus")
    assert bonus.spec.extension == "bonus"
    assert bonus.amount_sat == 20_000
    assert commitment.tx.outputs[bonus.index].script_pubkey == bonus.spendable.script_pubkey
    assert {o.tag for o in commitment.outputs} == {
        TO_LOCAL, TO_REMOTE, LOCAL_ANCHOR, REMOTE_ANCHOR, "bonus", htlc_tag(HTLCS[0]), htlc_tag(HTLCS[1])
    }
    assert [t.tag for t in commitment.trimmed] == [htlc_tag(HTLCS[2])]
    # The fee counts the new output's weight like an HTLC's.
    assert commitment.expected_weight == 1124 + 2 * HTLC_OUTPUT_WEIGHT + BONUS_WEIGHT
    assert commitment.base_fee_sat == FEERATE * commitment.expected_weight // 1000
    to_local_sat = ctx.to_local_msat // 1000 - commitment.base_fee_sat - 660
    assert commitment.output(TO_LOCAL).amount_sat == to_local_sat
    assert sum(o.amount_sat for o in commitment.tx.outputs) + commitment.fee_sat == FUNDING_SAT
    keys = [(o.amount_sat, o.script_pubkey) for o in commitment.tx.outputs]
    assert keys == sorted(keys)


def test_new_extension_spending_transaction() -> None:
    ctx, commitment = composed()
    signed_commitment = sign_all(ctx, commitment.plan)
    assert signed_commitment.txid == commitment.tx.txid
    bonus = commitment.output("bonus")

    destination = p2wpkh(pubkey_from_privkey(BONUS_CLAIM_SECRET))
    claim = sweeps.sweep([(bonus.outpoint, bonus.spendable, "claim")], destination, feerate_per_kw=FEERATE)
    tx = sign_all(ctx, claim, {"preimage": BONUS_PREIMAGE})
    assert tx.inputs[0].prevout == signed_commitment.outpoint(bonus.index)
    assert claim.fee_sat == FEERATE * claim.expected_weight() // 1000
    assert tx.weight <= claim.expected_weight()

    signature, preimage, selector, witness_script = tx.inputs[0].witness
    assert (selector, witness_script) == (b"\x01", bonus.spendable.witness_script)
    # The script's structure: its hash lock is our preimage's and its key signed the spend.
    items = list(decode_script(witness_script))
    assert items[2] == sha256(preimage)
    assert items[4] == pubkey_from_privkey(BONUS_CLAIM_SECRET)
    assert verify_digest(items[4], signature[:-1], claim.sighash(0, "claimer"))
    with pytest.raises(ChannelError):
        claim.finalize({"claimer": signature, "preimage": b"short"})


def test_new_extension_second_stage_transaction() -> None:
    ctx, commitment = composed()
    refund = commitment.second_stage_for("bonus")
    assert refund.label == "bonus_refund"
    assert refund.tx.inputs[0].sequence == BONUS_DELAY
    tx = sign_all(ctx, refund)
    assert tx.inputs[0].witness[1:] == (b"", commitment.output("bonus").spendable.witness_script)
    labels = [plan.label for plan in commitment.second_stage]
    assert sorted(labels) == sorted(["htlc_timeout:0", "htlc_success:1", "bonus_refund"])


def test_new_extension_trimmed_as_dust_goes_to_fee() -> None:
    ctx, commitment = composed(bonus_msat=400_000)
    assert not commitment.has_output("bonus")
    assert [t.tag for t in commitment.trimmed] == [htlc_tag(HTLCS[2]), "bonus"]
    assert commitment.expected_weight == 1124 + 2 * HTLC_OUTPUT_WEIGHT
    # Every balance is whole satoshis here, so the fee is the base fee plus the two trimmed outputs.
    assert ctx.to_local_msat % 1000 == ctx.to_remote_msat % 1000 == 0
    assert commitment.fee_sat == commitment.base_fee_sat + 400 + 400


def test_empty_extension_changes_nothing() -> None:
    class Nothing(CommitmentExtension):
        name = "nothing"

    ctx = alice_context(3, 600_000_000, 400_000_000)
    plain = build_commitment(ctx, bolt3_extensions(anchors=True))
    extended = build_commitment(ctx, [*bolt3_extensions(anchors=True), Nothing()])
    assert plain.tx == extended.tx


def test_core_refuses_inconsistent_extensions() -> None:
    ctx = alice_context(3, 600_000_000, 400_000_000)
    with pytest.raises(ChannelError, match="frame"):
        build_commitment(ctx, [ext for ext in bolt3_extensions() if ext.name != "base"])
    with pytest.raises(ChannelError, match="unique"):
        build_commitment(ctx, [*bolt3_extensions(), *bolt3_extensions()])
    with pytest.raises(ChannelError, match="add up"):
        build_commitment(ctx, [*bolt3_extensions(), BonusExtension(1_000_000)])

    class Clash(BonusExtension):
        name = "clash"

    ctx2 = alice_context(3, 600_000_000 - 2_000_000, 400_000_000)
    with pytest.raises(ChannelError, match="tags"):
        build_commitment(ctx2, [*bolt3_extensions(), BonusExtension(1_000_000), Clash(1_000_000)])


# --------------------------------------------------------------------------- signatures and second stage


def test_signature_requirements_declared() -> None:
    ctx, commitment = composed()
    required = commitment.plan.signatures()
    assert {(sig.slot, sig.signer, sig.sighash) for _, sig in required} == {
        ("local_funding", "local", SIGHASH_ALL),
        ("remote_funding", "remote", SIGHASH_ALL),
    }
    timeout = commitment.second_stage_for(htlc_tag(HTLCS[0]))
    sigs = {sig.slot: sig for _, sig in timeout.signatures()}
    assert sigs["remote_htlc"].sighash == SIGHASH_SINGLE | SIGHASH_ANYONECANPAY
    assert sigs["remote_htlc"].pubkey == ctx.keys.remote_htlc_pubkey
    assert sigs["local_htlc"].sighash == SIGHASH_ALL
    assert timeout.tx.locktime == HTLCS[0].cltv_expiry
    assert timeout.tx.inputs[0].sequence == 1


def test_htlc_second_stage_fees_without_anchors() -> None:
    ctx, commitment = composed(anchors=False)
    timeout = commitment.second_stage_for(htlc_tag(HTLCS[0]))
    success = commitment.second_stage_for(htlc_tag(HTLCS[1]))
    assert timeout.fee_sat == htlc_timeout_fee(FEERATE, zero_fee_htlc_tx=False) == FEERATE * 663 // 1000
    assert success.fee_sat == htlc_success_fee(FEERATE, zero_fee_htlc_tx=False) == FEERATE * 703 // 1000
    assert (timeout.tx.inputs[0].sequence, success.tx.inputs[0].sequence, success.tx.locktime) == (0, 0, 0)
    signed = sign_all(ctx, success, {"preimage": PREIMAGES[1]})
    assert signed.inputs[0].witness[0] == b"" and signed.inputs[0].witness[3] == PREIMAGES[1]
    assert not commitment.has_output(LOCAL_ANCHOR)


# --------------------------------------------------------------------------- sweeps, penalties, closing

DEST = p2wpkh(pubkey_from_privkey(secret("destination")))


def test_to_local_sweep_after_delay() -> None:
    ctx, commitment = composed()
    plan = sweeps.to_local_sweep(commitment, DEST, feerate_per_kw=FEERATE)
    tx = sign_all(ctx, plan)
    assert tx.inputs[0].sequence == TO_SELF_DELAY
    assert tx.inputs[0].witness[1:] == (b"", commitment.output(TO_LOCAL).spendable.witness_script)
    assert tx.outputs[0].amount_sat == commitment.output(TO_LOCAL).amount_sat - plan.fee_sat


def test_penalty_claims_every_revocable_output() -> None:
    ctx, commitment = composed()
    plan = sweeps.penalty_sweep(commitment, DEST, feerate_per_kw=FEERATE)
    claimed = {txin.prevout.vout for txin in plan.tx.inputs}
    revocable = {o.index for o in commitment.outputs if o.tag == TO_LOCAL or o.tag.startswith("htlc:")}
    assert claimed == revocable
    tx = sign_all(ctx, plan)
    revocation_key = ctx.keys.revocation_pubkey
    for txin, item in zip(tx.inputs, plan.inputs, strict=True):
        assert item.path.name == "revocation"
        assert txin.witness[1] in (b"\x01", revocation_key)
    # The watcher needs only the revealed secret and its own basepoint secret.
    assert pubkey_from_privkey(revocation_privkey(BOB.secret("revocation"), ALICE.commitment_secret(7))) == revocation_key


def test_second_stage_sweep_and_penalty() -> None:
    ctx, commitment = composed()
    timeout = commitment.second_stage_for(htlc_tag(HTLCS[0]))
    sweep_plan = sweeps.second_stage_sweep(timeout, DEST, feerate_per_kw=FEERATE)
    assert sweep_plan.tx.inputs[0].prevout == timeout.tx.outpoint(0)
    assert sign_all(ctx, sweep_plan).inputs[0].sequence == TO_SELF_DELAY
    htlc_txs = [plan for plan in commitment.second_stage if plan.label.startswith("htlc_")]
    penalty = sweeps.second_stage_penalty(htlc_txs, DEST, feerate_per_kw=FEERATE)
    assert len(sign_all(ctx, penalty).inputs) == 2


def test_htlc_claims_by_the_other_side() -> None:
    ctx, commitment = composed()
    offered = sweeps.htlc_claim(commitment, htlc_tag(HTLCS[0]), DEST, feerate_per_kw=FEERATE)
    tx = sign_all(ctx, offered, {"preimage": PREIMAGES[0]})
    assert tx.inputs[0].witness[1] == PREIMAGES[0]
    assert tx.inputs[0].sequence == 1  # the anchors variant's one-block CSV
    received = sweeps.htlc_claim(commitment, htlc_tag(HTLCS[1]), DEST, feerate_per_kw=FEERATE)
    assert received.tx.locktime == HTLCS[1].cltv_expiry
    assert sign_all(ctx, received).inputs[0].witness[1] == b""
    to_remote = sweeps.to_remote_sweep(commitment, DEST, feerate_per_kw=FEERATE)
    assert sign_all(ctx, to_remote).inputs[0].sequence == 1


def test_sweep_refuses_dust() -> None:
    _ctx, commitment = composed()
    with pytest.raises(ChannelError, match="dust"):
        sweeps.to_local_sweep(commitment, DEST, feerate_per_kw=10**9)


def test_legacy_closing_transaction() -> None:
    alice_script, bob_script = p2wpkh(pubkey_from_privkey(secret("a"))), p2wpkh(pubkey_from_privkey(secret("b")))
    ctx = alice_context(0, 1, 1)
    plan = sweeps.legacy_closing_tx(
        FUNDING_OUTPOINT, FUNDING_SAT, local_funding_pubkey=ctx.keys.local_funding_pubkey,
        remote_funding_pubkey=ctx.keys.remote_funding_pubkey, local_script=alice_script, remote_script=bob_script,
        to_local_msat=700_000_500, to_remote_msat=299_999_500, fee_sat=1_000, local_is_funder=True,
        dust_limit_sat=DUST,
    )  # fmt: skip
    tx = sign_all(ctx, plan)
    assert tx.inputs[0].sequence == 0xFFFFFFFF and tx.locktime == 0
    assert [(o.amount_sat, o.script_pubkey) for o in tx.outputs] == [(299_999, bob_script), (699_000, alice_script)]
    assert plan.fee_sat == 1_001  # the fee plus the rounded-away millisatoshis
    dusty = sweeps.legacy_closing_tx(
        FUNDING_OUTPOINT, FUNDING_SAT, local_funding_pubkey=ctx.keys.local_funding_pubkey,
        remote_funding_pubkey=ctx.keys.remote_funding_pubkey, local_script=alice_script, remote_script=bob_script,
        to_local_msat=999_500_000, to_remote_msat=500_000, fee_sat=1_000, local_is_funder=True, dust_limit_sat=DUST,
    )  # fmt: skip
    assert [o.script_pubkey for o in dusty.tx.outputs] == [alice_script]


def test_simple_closing_transaction() -> None:
    ctx = alice_context(0, 1, 1)
    closer = p2wpkh(pubkey_from_privkey(secret("a")))
    plan = sweeps.closing_tx(
        FUNDING_OUTPOINT, FUNDING_SAT, local_funding_pubkey=ctx.keys.local_funding_pubkey,
        remote_funding_pubkey=ctx.keys.remote_funding_pubkey, closer_script=closer, closee_script=b"\x6a\x01\x00",
        closer_msat=600_000_000, closee_msat=400_000_000, fee_sat=700, locktime=800_000,
    )  # fmt: skip
    tx = sign_all(ctx, plan)
    assert tx.inputs[0].sequence == 0xFFFFFFFD and tx.locktime == 800_000
    assert [(o.amount_sat, o.script_pubkey) for o in tx.outputs] == [(0, b"\x6a\x01\x00"), (599_300, closer)]
    with pytest.raises(ChannelError):
        sweeps.closing_tx(
            FUNDING_OUTPOINT, FUNDING_SAT, local_funding_pubkey=ctx.keys.local_funding_pubkey,
            remote_funding_pubkey=ctx.keys.remote_funding_pubkey, closer_script=closer, closee_script=None,
            closer_msat=500, closee_msat=FUNDING_SAT * 1000 - 500, fee_sat=700, locktime=0,
        )  # fmt: skip


# --------------------------------------------------------------------------- properties of the composed builder

htlc_lists = st.lists(
    st.builds(
        lambda i, offered, amount, expiry: Htlc(i, offered, amount, sha256(i.to_bytes(2, "big")), expiry),
        st.integers(0, 1000), st.booleans(), st.integers(1, 40_000_000), st.integers(500, 600),
    ),
    max_size=8, unique_by=lambda h: (h.htlc_id, h.offered),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    htlcs=htlc_lists,
    local_share=st.floats(0, 1),
    feerate=st.integers(0, 50_000),
    anchors=st.booleans(),
    funder=st.booleans(),
)
def test_commitment_invariants(
    htlcs: list[Htlc], local_share: float, feerate: int, anchors: bool, funder: bool
) -> None:
    in_flight = sum(h.amount_msat for h in htlcs)
    if in_flight > FUNDING_SAT * 1000:
        return
    free = FUNDING_SAT * 1000 - in_flight
    to_local = int(free * local_share)
    ctx = alice_context(5, to_local, free - to_local, feerate=feerate)
    ctx = CommitmentContext(**{**{f: getattr(ctx, f) for f in ctx.__slots__}, "owner_is_funder": funder})
    funder_sat = (ctx.to_local_msat if funder else ctx.to_remote_msat) // 1000
    if anchors and funder_sat < 660:
        with pytest.raises(ChannelError, match="funder"):
            build_commitment(ctx, bolt3_extensions(htlcs, anchors=anchors))
        return
    commitment = build_commitment(ctx, bolt3_extensions(htlcs, anchors=anchors))

    amounts = [o.amount_sat for o in commitment.tx.outputs]
    assert sum(amounts) + commitment.fee_sat == FUNDING_SAT
    charge = 660 if anchors else 0
    assert commitment.fee_sat >= min(commitment.base_fee_sat, funder_sat - charge)
    keys = [(o.amount_sat, o.script_pubkey) for o in commitment.tx.outputs]
    assert keys == sorted(keys)
    present_htlcs = [o for o in commitment.outputs if o.tag.startswith("htlc:")]
    base = 1124 if anchors else 724
    assert commitment.expected_weight == base + HTLC_OUTPUT_WEIGHT * len(present_htlcs)
    for output in present_htlcs:
        htlc = output.spec.payload
        assert isinstance(htlc, Htlc)
        fee = (htlc_timeout_fee if htlc.offered else htlc_success_fee)(feerate, zero_fee_htlc_tx=anchors)
        assert output.amount_sat - fee >= DUST
    for spec in commitment.trimmed:
        if isinstance(spec.payload, Htlc):
            fee = (htlc_timeout_fee if spec.payload.offered else htlc_success_fee)(feerate, zero_fee_htlc_tx=anchors)
            assert spec.amount_sat - fee < DUST
        else:
            assert spec.tag in (TO_LOCAL, TO_REMOTE) and spec.amount_sat < DUST
    assert len(commitment.second_stage) == len(present_htlcs)
    if anchors:
        tags = {o.tag for o in commitment.outputs}
        assert (LOCAL_ANCHOR in tags) == bool(tags - {TO_REMOTE, LOCAL_ANCHOR, REMOTE_ANCHOR})
        assert (REMOTE_ANCHOR in tags) == bool(tags - {TO_LOCAL, LOCAL_ANCHOR, REMOTE_ANCHOR})


def test_channels_package_is_sans_io() -> None:
    """No module of lnpmsg.channels imports I/O, an event loop or the clock (but its shells:
    store.py, the channel store's file shell, and the channel app's trio shells manager.py,
    app.py and the rest of lnpmsg.channels.SHELL_MODULES, which the core never imports)."""
    import ast
    from pathlib import Path

    import lnpmsg.channels

    forbidden = {"trio", "socket", "time", "asyncio", "zmq", "stem", "os", "lnpmsg.chain", "pbk"}
    package = Path(lnpmsg.channels.__file__).parent
    for source in package.glob("*.py"):
        if source.stem in lnpmsg.channels.SHELL_MODULES:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                assert not any(name == bad or name.startswith(bad + ".") for bad in forbidden), (source.name, name)
