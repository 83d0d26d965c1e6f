"""Fee bumping of a dual-funded channel's funding (lnpmsg.channels.dualfund_rbf), sans-IO: the
opener bumps (opener only, both contributing), the new version is signed by both and passes the
consensus engine's script checks, double-spends the first; whichever version confirms becomes the
funding; each refusal (feerate too low, not the opener, after confirmation, in a block, no common
input with a previous version, less total fee than the last version) is a tx_abort that leaves the
channel and its funding as they were."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_channels_dualfund import FEERATE, DualPair, confirm_and_pay, spent_outputs
from test_channels_pair import ChannelPair, verify_commitments

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.dualfund_rbf import (
    BumpCommand,
    CandidatesDropped,
    FundingCandidateConfirmed,
    RbfAborted,
    candidate_outpoints,
    funding_mined,
    min_feerate,
)
from lnpmsg.channels.dualfund import InteractiveAborted
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import BroadcastFunding, Disconnected, FundingDepth, Received
from lnpmsg.channels.interactive_parts import contribution_fee
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.messages import CommitmentSigned
from lnpmsg.channels.messages_v2 import TxAbort, TxAckRbf, TxAddInput, TxAddOutput, TxComplete, TxInitRbf, TxSignatures
from lnpmsg.channels.records import encode_snapshot, restore, restore_snapshot
from lnpmsg.channels.state import Phase

BUMPED = min_feerate(FEERATE)


def fundings(side) -> list[Tx]:
    return [Tx.parse(e.raw_tx) for e in side.events if isinstance(e, BroadcastFunding)]


def opened(bob_sat: int = 0) -> DualPair:
    pair = DualPair(bob_sat=bob_sat)
    pair.open_v2()
    assert pair.alice.core.phase is Phase.AWAIT_READY and pair.bob.core.phase is Phase.AWAIT_READY
    return pair


def test_min_feerate_is_25_over_24_rounded_down() -> None:
    assert min_feerate(520) == 541 and min_feerate(2_500) == 2_604


@pytest.mark.parametrize("bob_sat", [0, 250_000], ids=["opener_only", "both"])
def test_bump_then_the_bump_confirms(bob_sat: int) -> None:
    pair = opened(bob_sat)
    first = fundings(pair.alice)[0]
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    a, b = pair.alice.core.state, pair.bob.core.state
    assert pair.alice.core.phase is Phase.AWAIT_READY and pair.bob.core.phase is Phase.AWAIT_READY
    assert [type(m).__name__ for who, m in pair.sent if isinstance(m, TxInitRbf | TxAckRbf)] == ["TxInitRbf", "TxAckRbf"]
    second = fundings(pair.alice)[1]
    assert fundings(pair.bob)[1].raw == second.raw and second.txid != first.txid
    assert kernel_verify_scripts(second, spent_outputs(second)) is None
    assert {i.prevout for i in second.inputs} == {i.prevout for i in first.inputs}  # it double-spends the first
    assert second.locktime == 101
    fee = lambda tx: sum(o.amount_sat for o in spent_outputs(tx)) - sum(o.amount_sat for o in tx.outputs)  # noqa: E731
    assert fee(second) * 1000 >= BUMPED * second.weight and fee(second) > fee(first)
    assert a.funding_outpoint == b.funding_outpoint and a.funding_outpoint.txid == second.txid
    assert candidate_outpoints(pair.alice.core) == (first.outpoint(a.funding_outpoint.vout), a.funding_outpoint)
    assert second.outputs[a.funding_outpoint.vout].amount_sat == 600_000 + bob_sat
    for side in (pair.alice, pair.bob):
        out = pair.feed(side, FundingCandidateConfirmed(second.txid))
        (dropped,) = [e for e in out.events if isinstance(e, CandidatesDropped)]
        assert dropped.inputs == () and side.core.state.dual.previous == ()
    confirm_and_pay(pair, second, bob_sat)
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state


def test_the_original_confirms_instead() -> None:
    pair = opened(250_000)
    first = fundings(pair.alice)[0]
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingCandidateConfirmed(first.txid))
        s = side.core.state
        assert s.funding_outpoint.txid == first.txid and s.funding_tx == first.raw and s.dual.previous == ()
        assert s.dual.feerate_per_kw == FEERATE
    pair.funding_tx = first
    pair.confirm()
    verify_commitments(pair)  # the commitments spend the original's output
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state


def test_a_second_bump_needs_25_24_of_the_first() -> None:
    pair = opened()
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    with pytest.raises(LocalMisuse, match="below 25/24"):
        pair.feed(pair.alice, BumpCommand(BUMPED + 1, 101))
    pair.feed(pair.alice, BumpCommand(min_feerate(BUMPED), 102))
    pair.pump()
    assert len(candidate_outpoints(pair.bob.core)) == 3 and len(fundings(pair.bob)) == 3


def _refused(pair: DualPair, msg) -> bytes:
    before = pair.bob.core.state
    snapshot = (before.phase, before.funding_outpoint, before.local_commit, before.dual)
    out = pair.feed(pair.bob, Received(msg))
    (abort,) = out.messages
    assert isinstance(abort, TxAbort)
    s = pair.bob.core.state
    assert (s.phase, s.funding_outpoint, s.local_commit, s.dual) == snapshot  # nothing changed
    return abort.data


def test_refusals_leave_the_channel_as_it_was() -> None:
    pair = opened()
    cid = pair.bob.core.state.channel_id
    contribution = TxInitRbf.tlv_stream(funding_output_contribution=600_000)
    assert b"below 25/24" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED - 1, tlvs=contribution))
    assert b"block height" in _refused(pair, TxInitRbf(channel_id=cid, locktime=600_000_000, feerate=BUMPED, tlvs=contribution))
    assert b"contributions" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED))
    # the accepter cannot start one
    out = pair.feed(pair.alice, Received(TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution)))
    assert [type(m) for m in out.messages] == [TxAbort] and b"only the opener" in out.messages[0].data
    with pytest.raises(LocalMisuse, match="only the opener"):
        pair.bob.core.receive(BumpCommand(BUMPED, 100), pair.now)
    # the echo of our tx_abort changes nothing
    assert not pair.feed(pair.bob, Received(TxAbort(channel_id=cid, data=b"echo"))).messages
    # after confirmation: none
    pair.wire.clear()
    pair.confirm()
    pair.wire.clear()
    assert b"normal" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution))
    assert not pair.feed(pair.bob, Received(TxAbort(channel_id=cid, data=b"echo"))).messages
    assert pair.bob.core.phase is Phase.NORMAL
    with pytest.raises(LocalMisuse):
        pair.alice.core.receive(BumpCommand(BUMPED, 100), pair.now)


def test_an_attempt_without_a_common_input_is_aborted() -> None:
    pair = opened()  # Bob contributed nothing: only the opener's inputs tie the versions together
    bob = pair.bob.core
    first = bob.state.funding_outpoint
    cid = bob.state.channel_id
    contribution = TxInitRbf.tlv_stream(funding_output_contribution=600_000)
    out = pair.feed(pair.bob, Received(TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution)))
    assert [type(m) for m in out.messages] == [TxAckRbf] and bob.phase is Phase.INTERACTIVE
    # a (forged) opener pays the funding from a coin that neither version spent
    other = Tx(2, (TxIn(OutPoint(sha256(b"elsewhere"), 0)),), (TxOut(1_000_000, b"\x00\x14" + bytes(20)),))
    script = bob.state.dual.funding.script
    for msg in (TxAddInput(channel_id=cid, serial_id=0, prevtx=other.raw, prevtx_vout=0, sequence=0xFFFFFFFD),
                TxAddOutput(channel_id=cid, serial_id=2, sats=600_000, script=script),
                TxComplete(channel_id=cid)):  # fmt: skip
        out = pair.feed(pair.bob, Received(msg))
    (abort,) = [m for m in out.messages if isinstance(m, TxAbort)]
    assert b"double-spend" in abort.data
    (aborted,) = [e for e in out.events if isinstance(e, RbfAborted)]
    assert aborted.inputs == () and bob.phase is Phase.AWAIT_READY
    assert bob.state.funding_outpoint == first and bob.state.dual.previous == () and bob.state.local_commit is not None
    assert not any(isinstance(m, CommitmentSigned) for m in out.messages)
    # a disconnection mid-attempt ends it the same way (the first version stands)
    pair.feed(pair.bob, Received(TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution)))
    out = pair.feed(pair.bob, Disconnected())
    assert any(isinstance(e, RbfAborted) for e in out.events) and bob.phase is Phase.AWAIT_READY
    assert bob.state.funding_outpoint == first and not bob.state.connected
    assert restore(bob.secrets, pair.bob.records).state == bob.state


def test_an_attempt_paying_less_total_fee_than_the_last_version_is_aborted() -> None:
    """BOLT 2 at tx_complete: a (forged) Bob answers Alice's bump paying his share from one coin without
    change: a smaller version, whose higher feerate still pays less in total than the first."""
    pair = opened(250_000)
    alice = pair.alice.core
    first = fundings(pair.alice)[0]
    first_fee = sum(o.amount_sat for o in spent_outputs(first)) - sum(o.amount_sat for o in first.outputs)
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.wire.clear()
    assert alice.state.dual.replaces_fee_sat == first_fee
    cid = alice.state.channel_id
    script = p2wpkh(pubkey_from_privkey(sha256(b"forged bob")))
    share = 250_000 + contribution_fee([script], [], BUMPED, initiator=False)
    coin = Tx(2, (TxIn(OutPoint(sha256(b"bob elsewhere"), 0)),), (TxOut(share, script),))
    replies = [TxAckRbf(channel_id=cid, tlvs=TxAckRbf.tlv_stream(funding_output_contribution=250_000)),
               TxAddInput(channel_id=cid, serial_id=1, prevtx=coin.raw, prevtx_vout=0, sequence=0xFFFFFFFD)]  # fmt: skip
    sent: list = []
    while not any(isinstance(m, TxAbort) for m in sent):
        out = pair.feed(pair.alice, Received(replies.pop(0) if replies else TxComplete(channel_id=cid)))
        sent += out.messages
        assert len(sent) < 10
    (abort,) = [m for m in sent if isinstance(m, TxAbort)]
    assert b"less than the %d sat of the last version" % first_fee in abort.data
    assert not any(isinstance(m, CommitmentSigned | TxSignatures) for m in sent)
    (aborted,) = [e for e in out.events if isinstance(e, RbfAborted)]
    assert aborted.inputs == ()  # the attempt spent the first version's coins only: they stay reserved for it
    s = alice.state
    assert alice.phase is Phase.AWAIT_READY and s.funding_outpoint.txid == first.txid and s.dual.previous == ()
    assert len(fundings(pair.alice)) == 1 and restore(alice.secrets, pair.alice.records).state == s


def test_no_bump_while_the_funding_is_in_a_block_until_a_reorganization_takes_it_out() -> None:
    pair = opened(250_000)
    first = fundings(pair.alice)[0]
    scid = (150 << 40) | (1 << 16) | pair.bob.core.state.funding_outpoint.vout
    pair.feed(pair.bob, FundingDepth(1, scid))  # in a block for Bob (below the minimum depth), not yet for Alice
    assert pair.bob.core.state.dual.mined and not pair.bob.core.state.ready_sent
    # (the shell sends a depth of 0 only for a funding seen mined: a v1 channel's never is)
    assert funding_mined(pair.bob.core.state) and not funding_mined(pair.alice.core.state)
    assert not funding_mined(replace(pair.bob.core.state, dual=None))
    cid = pair.bob.core.state.channel_id
    contribution = TxInitRbf.tlv_stream(funding_output_contribution=600_000)
    assert b"in a block" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution))
    pair.feed(pair.alice, FundingDepth(1, scid))
    with pytest.raises(LocalMisuse, match="in a block"):
        pair.alice.core.receive(BumpCommand(BUMPED, 101), pair.now)
    # a reorganization takes the block out (depth 0, from the shell): the opener may bump again
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingDepth(0, 0))
        assert not side.core.state.dual.mined
    pair.wire.clear()
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    second = fundings(pair.bob)[-1]
    assert second.txid != first.txid and pair.alice.core.state.funding_outpoint.txid == second.txid
    assert candidate_outpoints(pair.bob.core)[0].txid == first.txid
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state


def test_peer_abort_mid_attempt_restores_the_previous_version() -> None:
    pair = opened(250_000)
    first = pair.alice.core.state.funding_outpoint
    pair.hold = True
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    assert pair.alice.core.phase is Phase.WAIT_ACCEPT2
    cid = pair.alice.core.state.channel_id
    out = pair.feed(pair.alice, Received(TxAbort(channel_id=cid, data=b"no")))
    assert [type(m) for m in out.messages] == [TxAbort]  # echoed
    assert any(isinstance(e, RbfAborted) for e in out.events)
    s = pair.alice.core.state
    assert pair.alice.core.phase is Phase.AWAIT_READY and s.funding_outpoint == first and s.local_commit is not None
    pair.hold = False
    pair.held.clear()
    pair.wire.clear()
    pair.funding_tx = fundings(pair.alice)[0]
    pair.confirm()
    verify_commitments(pair)


def test_tx_init_rbf_during_the_first_negotiation_still_ends_it() -> None:
    pair = DualPair(bob_sat=250_000, sign=False)  # stuck before tx_signatures
    pair.open_v2()
    assert pair.bob.core.phase is Phase.DUAL_SIGNING
    cid = pair.bob.core.state.channel_id
    out = pair.feed(pair.bob, Received(TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED)))
    assert [type(m) for m in out.messages] == [TxAbort] and b"unexpected tx_init_rbf" in out.messages[0].data
    assert any(isinstance(e, InteractiveAborted) for e in out.events) and pair.bob.core.phase is Phase.FAILED


def test_a_v1_channel_refuses_a_bump() -> None:
    pair = ChannelPair()
    pair.open()
    cid = pair.bob.core.state.channel_id
    out = pair.feed(pair.bob, Received(TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED)))
    assert [type(m) for m in out.messages] == [TxAbort] and b"not a dual-funded" in out.messages[0].data
    # the peer's echo changes nothing either
    assert not pair.feed(pair.bob, Received(TxAbort(channel_id=cid, data=b"echo"))).messages
    assert pair.bob.core.phase is Phase.NORMAL and pair.bob.core.state.failure is None


def test_disconnection_after_our_signatures_resumes_the_bump_with_next_funding() -> None:
    pair = opened(250_000)
    first = pair.alice.core.state.funding_outpoint
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    # Bob (less in) sends his tx_signatures first; Alice's answer is lost
    while pair.alice.core.phase is not Phase.AWAIT_READY:
        pair.step()
    pair.wire.clear()
    assert pair.bob.core.phase is Phase.DUAL_SIGNING and pair.bob.core.state.dual.signatures_sent
    pair.reconnect()  # channel_reestablish's next_funding names the bump: Alice sends her signatures again
    assert pair.bob.core.phase is Phase.AWAIT_READY
    a, b = pair.alice.core.state, pair.bob.core.state
    assert a.funding_outpoint == b.funding_outpoint != first and len(b.dual.previous) == 1
    second = fundings(pair.bob)[-1]
    assert second.txid == b.funding_outpoint.txid and kernel_verify_scripts(second, spent_outputs(second)) is None
    for side in (pair.alice, pair.bob):  # the candidates are in snapshots too
        assert restore_snapshot(side.core.secrets, encode_snapshot(side.core)).state == side.core.state
    pair.funding_tx = second
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingCandidateConfirmed(second.txid))
    pair.confirm()
    verify_commitments(pair)


def test_the_coins_only_the_forgotten_versions_spent_are_named() -> None:
    pair = opened(250_000)
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    # were Bob's first version funded by one more coin of his (not spent by the bump), the
    # bump's confirmation names it to be freed; the first version's confirmation names none
    from dataclasses import replace

    from test_channels_dualfund import coin

    extra, _ = coin("alice", 7_777)
    bob = pair.bob.core
    d = bob.state.dual
    first = d.previous[0]
    bob.state.dual = replace(d, previous=(replace(first, dual=replace(first.dual, inputs=(*first.dual.inputs, extra))),))
    out = bob.receive(FundingCandidateConfirmed(bob.state.funding_outpoint.txid), pair.now)
    (dropped,) = [e for e in out.events if isinstance(e, CandidatesDropped)]
    assert dropped.inputs == (extra,) and dropped.confirmed == bob.state.funding_outpoint
    with pytest.raises(LocalMisuse, match="no funding candidates"):
        bob.receive(FundingCandidateConfirmed(first.outpoint.txid), pair.now)


def test_a_version_in_a_block_read_as_a_double_spend_becomes_the_funding() -> None:
    """The shell that looks for double spends before it adopted the version that confirmed (its check of
    the blocks mined while it was down, a peer's error) names that version: it is the funding, not a
    double spend of it; a transaction that is no version still fails the channel."""
    from lnpmsg.channels.double_spend import FundingDoubleSpent, double_spent

    pair = opened(250_000)
    first = fundings(pair.bob)[0]
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    for side in (pair.alice, pair.bob):
        assert side.core.state.funding_outpoint.txid != first.txid  # the bump's
        out = pair.feed(side, FundingDoubleSpent(first.txid, 104))
        s = side.core.state
        assert side.core.phase is Phase.AWAIT_READY and not double_spent(s) and not out.messages
        assert any(isinstance(e, CandidatesDropped) for e in out.events)
        assert s.funding_outpoint.txid == first.txid and s.funding_tx == first.raw and s.dual.previous == ()
        assert restore(side.core.secrets, side.records).state == s
    pair.funding_tx = first
    pair.confirm()
    verify_commitments(pair)  # the commitments spend the version that confirmed
    other = opened(250_000)
    other.feed(other.alice, BumpCommand(BUMPED, 101))
    other.pump()
    other.feed(other.bob, FundingDoubleSpent(b"\x07" * 32, 104))
    assert other.bob.core.phase is Phase.FAILED and double_spent(other.bob.core.state)


def test_a_channel_failed_before_a_version_confirmed_follows_it() -> None:
    from lnpmsg.wire import Error

    pair = opened(250_000)
    first = fundings(pair.bob)[0]
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    pair.pump()
    bob = pair.bob.core
    pair.feed(pair.bob, Received(Error(channel_id=bob.state.channel_id, data=b"bye")))
    assert bob.phase is Phase.FAILED
    spends = lambda: Tx.parse(bob.latest_commitment_tx()).inputs[0].prevout.txid  # noqa: E731
    assert spends() != first.txid  # the bump's
    out = pair.feed(pair.bob, FundingCandidateConfirmed(first.txid))
    assert any(isinstance(e, CandidatesDropped) for e in out.events) and bob.phase is Phase.FAILED
    assert spends() == first.txid and bob.state.dual.previous == ()
    pair.funding_tx = first
    assert kernel_verify_scripts(Tx.parse(bob.latest_commitment_tx()), [first.outputs[bob.state.funding_outpoint.vout]]) is None
    assert restore(bob.secrets, pair.bob.records).state == bob.state


def test_refusals_of_confirmed_inputs_and_after_channel_ready() -> None:
    pair = opened(250_000)  # Bob's coin is in the funding
    cid = pair.bob.core.state.channel_id
    contribution = TxInitRbf.tlv_stream(funding_output_contribution=600_000, require_confirmed_inputs={})
    assert b"confirmed inputs" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution))
    # a zero-conf channel sends channel_ready before its funding confirms: no bump then
    pair.bob.core.state.ready_sent = True
    contribution = TxInitRbf.tlv_stream(funding_output_contribution=600_000)
    assert b"channel_ready" in _refused(pair, TxInitRbf(channel_id=cid, locktime=100, feerate=BUMPED, tlvs=contribution))


def test_an_attempt_the_peer_forgot_after_our_signatures_is_set_aside() -> None:
    pair = opened(250_000)
    first = pair.alice.core.state.funding_outpoint
    pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    # Bob (less in) sends his tx_signatures first; the line is cut before Alice gets them
    while not (pair.bob.core.phase is Phase.DUAL_SIGNING and pair.bob.core.state.dual.signatures_sent):
        pair.step()
    pair.wire.clear()
    attempt = pair.bob.core.state.funding_outpoint
    pair.reconnect()
    # Alice's attempt ended with the disconnection (her signatures had not left): she answers Bob's
    # next_funding with tx_abort; Bob goes back to the first version and keeps the attempt as a candidate
    assert any(isinstance(e, RbfAborted) for e in pair.alice.events)
    assert [type(m) for who, m in pair.sent if who == "alice" and isinstance(m, TxAbort)] == [TxAbort]
    for side in (pair.alice, pair.bob):
        assert side.core.phase is Phase.AWAIT_READY and side.core.state.funding_outpoint == first
    assert candidate_outpoints(pair.bob.core) == (attempt, first)
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state
    # a new bump goes on from the first version
    pair.feed(pair.alice, BumpCommand(BUMPED, 102))
    pair.pump()
    assert pair.alice.core.state.funding_outpoint == pair.bob.core.state.funding_outpoint not in (first, attempt)
    assert len(candidate_outpoints(pair.bob.core)) == 3
    pair.funding_tx = Tx.parse(pair.bob.core.state.funding_tx)
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingCandidateConfirmed(pair.funding_tx.txid))
    pair.confirm()
    verify_commitments(pair)


def test_a_reconnection_settles_once_the_peer_answered_our_next_funding() -> None:
    """``reestablish.settling`` (what a new bump or splice waits for): from the reconnection until
    both channel_reestablish are in, and on the side whose next_funding names a kept attempt until
    the peer's answer (here Alice's tx_abort: she forgot it). A bump reports its start (BumpStarted)."""
    from lnpmsg.channels.dualfund_rbf import BumpStarted
    from lnpmsg.channels.inputs import Reconnected
    from lnpmsg.channels.reestablish import settling

    pair = opened(250_000)
    out = pair.feed(pair.alice, BumpCommand(BUMPED, 101))
    assert [e for e in out.events if isinstance(e, BumpStarted)] == [BumpStarted(BUMPED)]
    while not (pair.bob.core.phase is Phase.DUAL_SIGNING and pair.bob.core.state.dual.signatures_sent):
        pair.step()
    pair.wire.clear()
    for side in (pair.alice, pair.bob):
        pair.feed(side, Disconnected())
    assert settling(pair.alice.core) and settling(pair.bob.core)  # (away)
    for side in (pair.alice, pair.bob):
        pair.feed(side, Reconnected())
    answered = False
    while pair.wire:
        target, msg = pair.wire[0]
        pair.step()
        answered = answered or (target is pair.bob and isinstance(msg, TxAbort))
        if target is pair.bob:  # Bob's next_funding names the attempt: settled by its answer only
            assert settling(pair.bob.core) is not answered, msg
    assert answered and not settling(pair.alice.core) and not settling(pair.bob.core)


def test_once_channel_ready_left_the_depth_changes_nothing_of_the_bumps() -> None:
    pair = opened()
    pair.confirm()  # channel_ready both ways
    for side in (pair.alice, pair.bob):
        assert side.core.state.ready_sent and side.core.state.dual.mined
        assert not pair.feed(side, FundingDepth(0, 0)).records  # (channel_ready left: no bump ever)
    with pytest.raises(LocalMisuse, match="no bump now"):
        pair.alice.core.receive(BumpCommand(BUMPED, 101), pair.now)
