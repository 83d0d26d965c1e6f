"""The proof on the real consensus engine: every transaction of a channel's
life, built by lnpmsg.channels and signed by lnpmsg.bitcoin, is mined on the
embedded regtest chain and accepted by Bitcoin Core's validation
(libbitcoinkernel); every mutated version is rejected with the kernel's
reason and leaves the tip where it was.

A channel between two key sets (Alice funds, Bob accepts), funded by the
wallet's ``fund_output``, in both commitment formats: static_remotekey and
option_anchors_zero_fee_htlc_tx. HTLCs go both ways, some trimmed as dust.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import (
    OP_CHECKLOCKTIMEVERIFY,
    OP_CHECKSIG,
    OP_DROP,
    OP_ELSE,
    OP_ENDIF,
    OP_EQUALVERIFY,
    OP_IF,
    OP_RETURN,
    OP_SHA256,
    Num,
    p2wpkh,
    script,
)
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.regtest import RegtestChain
from lnpmsg.channels import (
    LOCAL_ANCHOR,
    REMOTE_ANCHOR,
    TO_LOCAL,
    TO_REMOTE,
    Commitment,
    CommitmentContext,
    CommitmentExtension,
    CommitmentKeys,
    CommitmentOutput,
    Htlc,
    InputPlan,
    OutputSpec,
    Sig,
    Spendable,
    SpendPath,
    SpendPlan,
    Value,
    bolt3_extensions,
    build_commitment,
    build_spend,
    closing_tx,
    funding_spendable,
    htlc_claim,
    htlc_tag,
    legacy_closing_tx,
    penalty_sweep,
    second_stage_penalty,
    second_stage_sweep,
    sweep,
    to_local_sweep,
    to_remote_sweep,
)
from lnpmsg.channels.keys import (
    commitment_obscuring_factor,
    derive_privkey,
    per_commitment_point,
    pubkey_from_privkey,
    revocation_privkey,
)
from lnpmsg.channels.script import ANCHOR_CSV_DELAY
from lnpmsg.testing.channels import Party, secret
from lnpmsg.wallet import Wallet

FUNDING_SAT = 1_000_000
#: small, so waiting for it costs few blocks; the scripts treat any 16-bit delay alike
TO_SELF_DELAY = 10
FEERATE = 2_500
DUST = 546
FIXED_TIME = 1_700_000_000
VARIANTS = pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])

# the kernel's reject reasons (the first word of BlockResult.reason), and details it gives
BAD_SCRIPT = "block-script-verify-flag-failed"
NON_FINAL = "bad-txns-nonfinal"
BELOW_OUT = "bad-txns-in-belowout"
CSV_PENDING = "non-BIP68-final"  # a relative timelock (nSequence, BIP68) not yet over
CLTV_PENDING = "non-final transaction"  # nLockTime not yet reached
WRONG_PREIMAGE = "OP_EQUALVERIFY"
SCRIPT_TIMELOCK = "Locktime requirement not satisfied"  # OP_CHECKSEQUENCEVERIFY / OP_CHECKLOCKTIMEVERIFY




ALICE = Party("alice")  # the funder
BOB = Party("bob")
PREIMAGES = {i: secret(f"preimage {i}") for i in range(6)}


def other(party: Party) -> Party:
    return BOB if party is ALICE else ALICE


@dataclass(frozen=True)
class State:
    """A channel state from Alice's view: balances and HTLCs (``offered``: Alice pays)."""

    alice_msat: int
    bob_msat: int
    htlcs: tuple[Htlc, ...] = ()

    def seen_by(self, owner: Party) -> tuple[int, int, tuple[Htlc, ...]]:
        """(owner's balance, the other's balance, HTLCs from the owner's view)."""
        if owner is ALICE:
            return self.alice_msat, self.bob_msat, self.htlcs
        flipped = tuple(replace(h, offered=not h.offered) for h in self.htlcs)
        return self.bob_msat, self.alice_msat, flipped


def htlcs(base_height: int) -> tuple[Htlc, ...]:
    """Both directions, with expiries after ``base_height``; H4 is dust without anchors, H5 always."""
    spec = [
        (True, 5_000, 40),  # H0: Alice offers; she times it out (HTLC-timeout)
        (False, 7_000, 50),  # H1: Bob offers; Alice claims it with the preimage (HTLC-success)
        (True, 3_000, 45),  # H2: Alice offers; Bob claims it on chain with the preimage
        (False, 4_000, 35),  # H3: Bob offers; Bob takes it back after the expiry
        (True, 1_000, 60),  # H4: trimmed without anchors (below dust + HTLC-timeout fee)
        (False, 400, 60),  # H5: trimmed in both formats (below the dust limit)
    ]
    return tuple(
        Htlc(i, offered, sat * 1000, sha256(PREIMAGES[i]), base_height + delta)
        for i, (offered, sat, delta) in enumerate(spec)
    )


def states(base_height: int) -> list[State]:
    h = htlcs(base_height)
    return [
        State(600_000_000, 400_000_000),
        State(591_000_000, 388_600_000, h),
        # H0 and H1 fulfilled, 123 msat moved: balances in msat, not whole satoshis
        State(597_999_877, 393_600_123, h[2:]),
    ]


@dataclass
class Channel:
    funding: OutPoint
    anchors: bool
    base_height: int

    def context(self, owner: Party, number: int, state: State) -> CommitmentContext:
        mine, theirs, _ = state.seen_by(owner)
        point = per_commitment_point(owner.commitment_secret(number))
        return CommitmentContext(
            funding_outpoint=self.funding,
            funding_sat=FUNDING_SAT,
            keys=CommitmentKeys.derive(point, owner.basepoints(), other(owner).basepoints()),
            commitment_number=number,
            obscuring_factor=commitment_obscuring_factor(
                ALICE.basepoints().payment_basepoint, BOB.basepoints().payment_basepoint
            ),
            owner_is_funder=owner is ALICE,
            to_local_msat=mine,
            to_remote_msat=theirs,
            feerate_per_kw=FEERATE,
            dust_limit_sat=DUST,
            to_self_delay=TO_SELF_DELAY,
        )

    def commitment(
        self, owner: Party, number: int, state: State, extra: Sequence[CommitmentExtension] = ()
    ) -> Commitment:
        _, _, owner_htlcs = state.seen_by(owner)
        extensions = [*bolt3_extensions(owner_htlcs, anchors=self.anchors), *extra]
        return build_commitment(self.context(owner, number, state), extensions)


def keyring(owner: Party, number: int, *extra: bytes) -> dict[bytes, bytes]:
    """Every secret a path of ``owner``'s commitment ``number`` may ask for, by public key.

    The revocation secret is only known to the other side once ``owner``
    revealed its per-commitment secret: including it here is the test playing
    both sides.
    """
    point = per_commitment_point(owner.commitment_secret(number))
    secrets = [
        ALICE.secret("funding"),
        BOB.secret("funding"),
        ALICE.secret("payment"),
        BOB.secret("payment"),
        derive_privkey(ALICE.secret("htlc"), point),
        derive_privkey(BOB.secret("htlc"), point),
        derive_privkey(owner.secret("delayed"), point),
        revocation_privkey(other(owner).secret("revocation"), owner.commitment_secret(number)),
        *extra,
    ]
    return {pubkey_from_privkey(s): s for s in secrets}


def witness_values(plan: SpendPlan, keys: dict[bytes, bytes], **values: bytes) -> list[dict[str, bytes]]:
    """Per input: a signature for every Sig slot (by the key it names) and the Value slots from ``values``."""
    filled = []
    for index, item in enumerate(plan.inputs):
        slots = {sig.slot: plan.sign(index, sig.slot, keys[sig.pubkey]) for sig in item.path.signatures}
        slots |= {v.slot: values[v.slot] for v in item.path.witness if isinstance(v, Value)}
        filled.append(slots)
    return filled


def sign(plan: SpendPlan, keys: dict[bytes, bytes], **values: bytes) -> Tx:
    return plan.finalize(witness_values(plan, keys, **values))


def forged(plan: SpendPlan, index: int, slot: str, privkey: bytes) -> bytes:
    """A well-formed signature for ``slot`` by the wrong key."""
    item = plan.inputs[index].path.slot(slot)
    assert isinstance(item, Sig)
    return sign_digest(privkey, plan.sighash(index, slot)) + bytes([item.sighash])


def accept(core: RegtestChain, txs: Sequence[Tx]) -> int:
    """Mine one block holding exactly ``txs``; the kernel must connect it. Returns its height."""
    tip = core.tip()
    result = core.submit_transactions_in_block(txs)
    assert result.accepted, result.reason
    assert core.height == tip.height + 1 == result.height
    for tx in txs:
        found = core.find_transaction(tx.txid)
        assert found is not None and found[1] == result.height
    return core.height


def assert_rejected(core: RegtestChain, txs: Sequence[Tx], code: str, detail: str = "") -> None:
    """The kernel refuses a block holding ``txs``, says why, and the tip stays."""
    tip = core.tip()
    result = core.submit_transactions_in_block(txs)
    assert not result.accepted and not result.stored
    assert result.code == code, result.reason
    assert result.reason is not None and result.reason.startswith(code) and detail in result.reason
    assert core.tip() == tip
    with pytest.raises(ChainError) as info:
        result.check()
    assert code in info.value.reason


def mine_to(core: RegtestChain, height: int) -> None:
    assert height >= core.height
    core.mine(height - core.height)


def accept_after_delay(core: RegtestChain, tx: Tx, confirmed: int, delay: int) -> None:
    """``tx`` spends an output confirmed at height ``confirmed`` under a ``delay``-block CSV:
    refused in the block before the delay is over (BIP68), accepted in the next."""
    mine_to(core, confirmed + delay - 2)
    assert_rejected(core, [tx], NON_FINAL, CSV_PENDING)
    core.mine(1)
    accept(core, [tx])


@pytest.fixture
async def onchain(tmp_path: Path) -> AsyncIterator[tuple[RegtestChain, Wallet]]:
    async with EmbeddedChainSource.open(tmp_path / "chain", clock=lambda: FIXED_TIME) as source:
        await source.mine(101)
        wallet = await Wallet.open(tmp_path / "wallet", source)
        await source.faucet(wallet.new_address(), 3 * FUNDING_SAT)
        await source.mine(1)
        await wallet.sync()
        yield source.core, wallet


async def open_channel(onchain: tuple[RegtestChain, Wallet], anchors: bool) -> Channel:
    """Fund the 2-of-2 from the wallet and mine the funding transaction."""
    core, wallet = onchain
    funding = funding_spendable(FUNDING_SAT, ALICE.basepoints().funding_pubkey, BOB.basepoints().funding_pubkey)
    script_pubkey = funding.script_pubkey
    funded = await wallet.fund_output(script_pubkey, FUNDING_SAT, feerate_per_kw=FEERATE)
    height = accept(core, [funded.tx])
    info = core.get_txout(funded.outpoint)
    assert info is not None and info.txout == TxOut(FUNDING_SAT, script_pubkey)
    await wallet.sync()
    assert all(u.reserved_by is None for u in wallet.list_funds())
    return Channel(funded.outpoint, anchors, height)


async def alice_at_state_one(
    onchain: tuple[RegtestChain, Wallet], anchors: bool
) -> tuple[RegtestChain, Commitment, tuple[Htlc, ...], dict[bytes, bytes]]:
    """A fresh channel and Alice's (unsigned) commitment at state 1, where every kind of HTLC is."""
    channel = await open_channel(onchain, anchors)
    state = states(channel.base_height)[1]
    return onchain[0], channel.commitment(ALICE, 1, state), state.htlcs, keyring(ALICE, 1)


# --------------------------------------------------------------------------- commitments


@VARIANTS
async def test_commitments_at_every_state_both_owners(onchain, anchors: bool) -> None:
    chain, _ = onchain
    channel = await open_channel(onchain, anchors)
    all_states = states(channel.base_height)
    dust_ids = {5} if anchors else {4, 5}  # H4 pays less than its HTLC transaction's fee plus dust
    last = (BOB, len(all_states) - 1)
    for number, state in enumerate(all_states):
        for owner in (ALICE, BOB):
            commitment = channel.commitment(owner, number, state)
            ids = {h.htlc_id for h in state.htlcs}
            trimmed = {s.payload.htlc_id for s in commitment.trimmed if isinstance(s.payload, Htlc)}
            present = {o.spec.payload.htlc_id for o in commitment.outputs if isinstance(o.spec.payload, Htlc)}
            assert trimmed == ids & dust_ids and present == ids - dust_ids
            assert len(commitment.second_stage) == len(present)
            assert (LOCAL_ANCHOR in {o.tag for o in commitment.outputs}) == anchors
            tx = sign(commitment.plan, keyring(owner, number))
            assert tx.txid == commitment.tx.txid
            fork = chain.tip()
            accept(chain, [tx])
            assert chain.get_txout(channel.funding) is None
            if (owner, number) != last:
                # undo it: two empty blocks on its parent outweigh it, and the kernel reorgs
                chain.mine(2, parent=fork.block_hash)
                assert chain.height == fork.height + 2 and chain.get_txout(channel.funding) is not None
    assert chain.get_txout(channel.funding) is None


@VARIANTS
async def test_commitment_mutations_rejected(onchain, anchors: bool) -> None:
    chain, commitment, _, keys = await alice_at_state_one(onchain, anchors)
    plan = commitment.plan

    # Bob's signature made by the wrong key
    values = witness_values(plan, keys)
    values[0]["remote_funding"] = forged(plan, 0, "remote_funding", ALICE.secret("htlc"))
    assert_rejected(chain, [plan.finalize(values)], BAD_SCRIPT)
    # a signature over another transaction: it no longer matches once an output changes
    signed = sign(plan, keys)
    outputs = list(signed.outputs)
    outputs[0] = TxOut(outputs[0].amount_sat - 1, outputs[0].script_pubkey)
    assert_rejected(chain, [replace(signed, outputs=tuple(outputs))], BAD_SCRIPT)
    # validly signed, but paying out more than the funding output holds
    to_local = commitment.output(TO_LOCAL)
    richer = list(plan.tx.outputs)
    richer[to_local.index] = TxOut(to_local.amount_sat + commitment.fee_sat + 1, to_local.spendable.script_pubkey)
    greedy = replace(plan, tx=replace(plan.tx, outputs=tuple(richer)))
    assert_rejected(chain, [sign(greedy, keys)], BELOW_OUT, "value in (0.01) < value out (0.01000001)")
    # signatures committing to the wrong funding amount (BIP143 signs the amount spent)
    spent = plan.inputs[0]
    wrong_amount = InputPlan(replace(spent.spendable, amount_sat=FUNDING_SAT - 1), spent.path)
    assert_rejected(chain, [sign(replace(plan, inputs=(wrong_amount,)), keys)], BAD_SCRIPT)
    # a witness without the funding script's dummy element
    stripped = signed.with_witness(0, signed.inputs[0].witness[1:])
    assert_rejected(chain, [stripped], BAD_SCRIPT)
    accept(chain, [signed])


# --------------------------------------------------------------------------- HTLC transactions and sweeps


@VARIANTS
async def test_htlc_success_timeout_and_their_sweeps(onchain, anchors: bool) -> None:
    chain, commitment, h, keys = await alice_at_state_one(onchain, anchors)
    signed = sign(commitment.plan, keys)
    success = commitment.second_stage_for(htlc_tag(h[1]))
    timeout = commitment.second_stage_for(htlc_tag(h[0]))
    assert success.fee_sat == (0 if anchors else FEERATE * 703 // 1000)
    assert timeout.tx.locktime == h[0].cltv_expiry
    success_tx = sign(success, keys, preimage=PREIMAGES[1])
    timeout_tx = sign(timeout, keys)
    if anchors:
        # their 1-block CSV keeps HTLC transactions out of the commitment's own block
        assert_rejected(chain, [signed, success_tx], NON_FINAL, CSV_PENDING)
    accept(chain, [signed])

    # HTLC-success: the wrong preimage fails the script; the right one confirms
    assert_rejected(chain, [sign(success, keys, preimage=PREIMAGES[2])], BAD_SCRIPT, WRONG_PREIMAGE)
    success_height = accept(chain, [success_tx])
    # its output is Alice's after to_self_delay
    delayed = sign(second_stage_sweep(success, ALICE.wallet_script(), feerate_per_kw=FEERATE), keys)
    accept_after_delay(chain, delayed, success_height, TO_SELF_DELAY)

    # HTLC-timeout: final only in a block above its expiry; lowering the locktime breaks the signatures
    mine_to(chain, h[0].cltv_expiry - 1)
    assert_rejected(chain, [timeout_tx], NON_FINAL, CLTV_PENDING)
    early = replace(timeout_tx, locktime=chain.height)
    assert_rejected(chain, [early], BAD_SCRIPT)
    chain.mine(1)
    timeout_height = accept(chain, [timeout_tx])
    delayed = sign(second_stage_sweep(timeout, ALICE.wallet_script(), feerate_per_kw=FEERATE), keys)
    accept_after_delay(chain, delayed, timeout_height, TO_SELF_DELAY)


@VARIANTS
async def test_to_local_after_its_delay_and_to_remote(onchain, anchors: bool) -> None:
    chain, commitment, _, keys = await alice_at_state_one(onchain, anchors)
    confirmed = accept(chain, [sign(commitment.plan, keys)])

    sweep_plan = to_local_sweep(commitment, ALICE.wallet_script(), feerate_per_kw=FEERATE)
    assert sweep_plan.tx.inputs[0].sequence == TO_SELF_DELAY
    sweep_tx = sign(sweep_plan, keys)
    remote_plan = to_remote_sweep(commitment, BOB.wallet_script(), feerate_per_kw=FEERATE)
    remote_tx = sign(remote_plan, keys)

    mine_to(chain, confirmed + TO_SELF_DELAY - 2)
    # one block early: BIP68 refuses it
    assert_rejected(chain, [sweep_tx], NON_FINAL, CSV_PENDING)
    # asking for a shorter delay breaks the signature, and the script's CSV would refuse it too
    shorter = replace(sweep_tx, inputs=(replace(sweep_tx.inputs[0], sequence=1),))
    assert_rejected(chain, [shorter], BAD_SCRIPT, SCRIPT_TIMELOCK)
    chain.mine(1)
    # the delayed key's signature does not open the revocation branch
    signature, _, witness_script = sweep_tx.inputs[0].witness
    assert_rejected(chain, [sweep_tx.with_witness(0, (signature, b"\x01", witness_script))], BAD_SCRIPT)
    accept(chain, [sweep_tx, remote_tx])
    assert chain.get_txout(commitment.output(TO_LOCAL).outpoint) is None
    assert chain.get_txout(commitment.output(TO_REMOTE).outpoint) is None


@VARIANTS
async def test_remote_claims_htlcs_from_the_commitment(onchain, anchors: bool) -> None:
    """Bob, seeing Alice's commitment: H2 with its preimage, H3 back to him after its expiry."""
    chain, commitment, h, keys = await alice_at_state_one(onchain, anchors)
    accept(chain, [sign(commitment.plan, keys)])
    if anchors:
        chain.mine(1)  # Bob's HTLC spends wait one block (CSV 1)

    preimage_claim = htlc_claim(commitment, htlc_tag(h[2]), BOB.wallet_script(), feerate_per_kw=FEERATE)
    assert_rejected(chain, [sign(preimage_claim, keys, preimage=PREIMAGES[3])], BAD_SCRIPT, WRONG_PREIMAGE)
    accept(chain, [sign(preimage_claim, keys, preimage=PREIMAGES[2])])

    timeout_claim = htlc_claim(commitment, htlc_tag(h[3]), BOB.wallet_script(), feerate_per_kw=FEERATE)
    assert timeout_claim.tx.locktime == h[3].cltv_expiry
    timeout_tx = sign(timeout_claim, keys)
    mine_to(chain, h[3].cltv_expiry - 1)
    assert_rejected(chain, [timeout_tx], NON_FINAL, CLTV_PENDING)
    # claiming before the expiry with a lower locktime: the script's CLTV refuses it
    assert_rejected(chain, [replace(timeout_tx, locktime=chain.height)], BAD_SCRIPT, SCRIPT_TIMELOCK)
    chain.mine(1)
    accept(chain, [timeout_tx])


# --------------------------------------------------------------------------- revocation


@VARIANTS
async def test_penalty_for_a_revoked_commitment(onchain, anchors: bool) -> None:
    chain, revoked, h, alice_keys = await alice_at_state_one(onchain, anchors)
    # Alice moved to state 2 and revealed her state-1 secret; then she publishes state 1
    revealed = ALICE.commitment_secret(1)
    penalty_key = revocation_privkey(BOB.secret("revocation"), revealed)
    assert pubkey_from_privkey(penalty_key) == revoked.context.keys.revocation_pubkey
    accept(chain, [sign(revoked.plan, alice_keys)])

    tags = [TO_LOCAL, htlc_tag(h[1]), htlc_tag(h[2])]
    penalty = penalty_sweep(revoked, BOB.wallet_script(), feerate_per_kw=FEERATE, tags=tags)
    assert len(penalty.tx.inputs) == 3
    assert {i.prevout for i in penalty.tx.inputs} == {revoked.output(t).outpoint for t in tags}
    # a revocation key from a commitment that was not revoked signs nothing useful
    wrong = revocation_privkey(BOB.secret("revocation"), ALICE.commitment_secret(2))
    values = [{"revocation": forged(penalty, i, "revocation", wrong)} for i in range(3)]
    assert_rejected(chain, [penalty.finalize(values)], BAD_SCRIPT)
    # the right one works at once: no delay applies to the revocation branch
    values = [{"revocation": penalty.sign(i, "revocation", penalty_key)} for i in range(3)]
    accept(chain, [penalty.finalize(values)])

    # Alice times out H0 anyway; Bob takes the HTLC-timeout output before her delay ends
    timeout = revoked.second_stage_for(htlc_tag(h[0]))
    mine_to(chain, h[0].cltv_expiry)
    timeout_height = accept(chain, [sign(timeout, alice_keys)])
    second = second_stage_penalty([timeout], BOB.wallet_script(), feerate_per_kw=FEERATE)
    accept(chain, [second.finalize({"revocation": second.sign(0, "revocation", penalty_key)})])
    assert chain.height < timeout_height + TO_SELF_DELAY


# --------------------------------------------------------------------------- anchors


async def test_anchor_spends(onchain) -> None:
    chain, commitment, _, keys = await alice_at_state_one(onchain, anchors=True)
    signed = sign(commitment.plan, keys)

    # a confirmed coin to pay for the child (CPFP): anchors hold only 330 sat
    cpfp_secret = secret("cpfp")
    cpfp_pubkey = pubkey_from_privkey(cpfp_secret)
    coin_sat = 20_000
    coin = chain.faucet(p2wpkh(cpfp_pubkey), coin_sat)
    chain.mine(1)
    coin_spendable = Spendable.p2wpkh(coin_sat, cpfp_pubkey, (SpendPath("key", (Sig("key", cpfp_pubkey), cpfp_pubkey)),))

    # Alice's anchor (her funding key) with the coin, in the same block as the commitment
    anchor = commitment.output(LOCAL_ANCHOR)
    child = build_spend(
        [(anchor.outpoint, anchor.spendable, "owner"), (coin, coin_spendable, "key")],
        [TxOut(anchor.amount_sat + coin_sat - 2_000, p2wpkh(cpfp_pubkey))],
        label="cpfp",
    )
    child_tx = sign(child, keyring(ALICE, 1, cpfp_secret))
    wrong = witness_values(child, keyring(ALICE, 1, cpfp_secret))
    wrong[0]["funding"] = forged(child, 0, "funding", BOB.secret("funding"))
    assert_rejected(chain, [signed, child.finalize(wrong)], BAD_SCRIPT)
    confirmed = accept(chain, [signed, child_tx])

    # Bob's anchor: anyone may sweep it after 16 blocks (here into a zero-value OP_RETURN)
    remote = commitment.output(REMOTE_ANCHOR)
    anyone = build_spend([(remote.outpoint, remote.spendable, "anyone")], [TxOut(0, script(OP_RETURN))])
    anyone_tx = anyone.finalize({})
    assert anyone_tx.inputs[0].sequence == ANCHOR_CSV_DELAY
    accept_after_delay(chain, anyone_tx, confirmed, ANCHOR_CSV_DELAY)


# --------------------------------------------------------------------------- cooperative close


@pytest.mark.parametrize("simple", [True, False], ids=["option_simple_close", "closing_signed"])
async def test_cooperative_close(onchain, simple: bool) -> None:
    chain, _ = onchain
    channel = await open_channel(onchain, anchors=True)
    funding_pubkeys = {
        "local_funding_pubkey": ALICE.basepoints().funding_pubkey,
        "remote_funding_pubkey": BOB.basepoints().funding_pubkey,
    }
    if simple:
        plan = closing_tx(
            channel.funding, FUNDING_SAT, **funding_pubkeys, closer_script=ALICE.wallet_script(),
            closee_script=BOB.wallet_script(), closer_msat=600_000_000, closee_msat=400_000_000,
            fee_sat=700, locktime=chain.height,
        )  # fmt: skip
    else:
        plan = legacy_closing_tx(
            channel.funding, FUNDING_SAT, **funding_pubkeys, local_script=ALICE.wallet_script(),
            remote_script=BOB.wallet_script(), to_local_msat=600_000_000, to_remote_msat=400_000_000,
            fee_sat=700, local_is_funder=True, dust_limit_sat=DUST,
        )  # fmt: skip
    assert plan.fee_sat == 700
    keys = keyring(ALICE, 0)
    values = witness_values(plan, keys)
    values[0]["remote_funding"] = forged(plan, 0, "remote_funding", ALICE.secret("funding"))
    assert_rejected(chain, [plan.finalize(values)], BAD_SCRIPT)
    outputs = list(plan.tx.outputs)
    outputs[-1] = TxOut(outputs[-1].amount_sat + 701, outputs[-1].script_pubkey)
    assert_rejected(chain, [sign(replace(plan, tx=replace(plan.tx, outputs=tuple(outputs))), keys)], BELOW_OUT)
    accept(chain, [sign(plan, keys)])
    assert chain.get_txout(channel.funding) is None


# --------------------------------------------------------------------------- a new extension


BONUS_CLAIM = secret("bonus claim")
BONUS_REFUND = secret("bonus refund")
BONUS_PREIMAGE = secret("bonus preimage")


class CltvBonus(CommitmentExtension):
    """A kind of output lnpmsg has never heard of: the other side takes it with a
    preimage, or the owner takes it back after an absolute height (CLTV), through a
    pre-signed refund. Defined here, in the test: nothing in lnpmsg changes."""

    name = "cltv_bonus"

    def __init__(self, amount_msat: int, expiry: int) -> None:
        self.amount_msat = amount_msat
        self.expiry = expiry

    def witness_script(self) -> bytes:
        return script(
            OP_IF, OP_SHA256, sha256(BONUS_PREIMAGE), OP_EQUALVERIFY, pubkey_from_privkey(BONUS_CLAIM),
            OP_ELSE, Num(self.expiry), OP_CHECKLOCKTIMEVERIFY, OP_DROP, pubkey_from_privkey(BONUS_REFUND),
            OP_ENDIF, OP_CHECKSIG,
        )  # fmt: skip

    def fixed_outputs(self, ctx: CommitmentContext) -> Sequence[OutputSpec]:
        claim = SpendPath(
            "claim", (Sig("claimer", pubkey_from_privkey(BONUS_CLAIM), signer="remote"), Value("preimage", 32), b"\x01")
        )
        refund = SpendPath(
            "refund", (Sig("refunder", pubkey_from_privkey(BONUS_REFUND), signer="local"), b""), locktime=self.expiry
        )
        amount = self.amount_msat // 1000
        spendable = Spendable.p2wsh(amount, self.witness_script(), (claim, refund))
        return [
            OutputSpec(
                "bonus", spendable, trimmed=amount < ctx.dust_limit_sat, fee_weight=172, value_msat=self.amount_msat
            )
        ]

    def second_stage(self, ctx: CommitmentContext, commitment_tx: Tx, output: CommitmentOutput) -> Sequence[SpendPlan]:
        back = TxOut(output.amount_sat - 1_000, p2wpkh(pubkey_from_privkey(BONUS_REFUND)))
        return [build_spend([(output.outpoint, output.spendable, "refund")], [back], label="bonus_refund")]


async def test_new_extension_commitment_and_spends_accepted(onchain) -> None:
    chain, _ = onchain
    channel = await open_channel(onchain, anchors=True)
    base = states(channel.base_height)[1]
    bonus_msat = 25_000_000
    state = replace(base, alice_msat=base.alice_msat - bonus_msat)
    bonus = CltvBonus(bonus_msat, channel.base_height + 30)
    commitment = channel.commitment(ALICE, 1, state, [bonus])
    output = commitment.output("bonus")
    assert output.amount_sat == 25_000 and output.spec.extension == "cltv_bonus"
    keys = keyring(ALICE, 1, BONUS_CLAIM, BONUS_REFUND)
    accept(chain, [sign(commitment.plan, keys)])

    refund = sign(commitment.second_stage_for("bonus"), keys)
    assert_rejected(chain, [refund], NON_FINAL, CLTV_PENDING)
    claim = sweep([(output.outpoint, output.spendable, "claim")], BOB.wallet_script(), feerate_per_kw=FEERATE)
    assert_rejected(chain, [sign(claim, keys, preimage=PREIMAGES[0])], BAD_SCRIPT, WRONG_PREIMAGE)
    accept(chain, [sign(claim, keys, preimage=BONUS_PREIMAGE)])
    assert chain.get_txout(output.outpoint) is None
