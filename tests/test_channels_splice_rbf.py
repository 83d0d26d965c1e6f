"""Fee bumping of a splice (BOLT 2 "Channel Splicing": ``tx_init_rbf`` / ``tx_ack_rbf``) in the channel
core, driven by hand: the bump by either side, the batches over every version, whichever version
confirms, the refusals, replay and reconnection."""

from __future__ import annotations

import pytest
from test_channels_pair import verify_commitments
import test_channels_splice
from test_channels_splice import (
    COIN, FEERATE, SPLICE_SCID, SplicePair, broadcast, durable_before_sent, opened, pay_both_ways, signed_splice,
    splice_commitments_valid, splice_in_command, splice_of, splice_out_command, zero_conf_splicing,
)  # fmt: skip

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.dualfund_rbf import min_feerate
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import BlockHeight, Disconnected, Received
from lnpmsg.channels.messages_splice import SpliceLocked, StartBatch
from lnpmsg.channels.interactive_parts import contribution_fee
from lnpmsg.channels.messages import CommitmentSigned
from lnpmsg.channels.messages_v2 import TxAbort, TxAckRbf, TxAddInput, TxAddOutput, TxComplete, TxInitRbf, TxSignatures
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.records import restore
from lnpmsg.channels.splice import SpliceAborted, SpliceDepth, Spliced, session
from lnpmsg.channels.splice_rbf import MAX_RBF_ATTEMPTS, SpliceBump, SpliceVersionsDropped, check_bump
from lnpmsg.wire import WarningMessage

BUMPED = FEERATE * 25 // 24 + 100
#: the chain's height in these tests (below every HTLC's expiry)
HEIGHT = 110


def a_block(pair: SplicePair) -> None:
    """Both sides see a block: the last version of the splice may be bumped (OpeningPolicy.rbf_wait_blocks)."""
    for side in (pair.alice, pair.bob):
        pair.feed(side, BlockHeight(HEIGHT))


def quiesce(pair: SplicePair, side) -> None:
    """A block for both (so that a bump may follow), then ``side`` quiesces the channel."""
    a_block(pair)
    test_channels_splice.quiesce(pair, side)


def fee_of(tx: Tx, pair: SplicePair) -> int:
    spent = spent_outputs(tx, pair)
    return sum(o.amount_sat for o in spent) - sum(o.amount_sat for o in tx.outputs)


def spent_outputs(tx: Tx, pair: SplicePair) -> list:
    known = {pair.funding_tx.txid: pair.funding_tx, COIN.txid: COIN}  # type: ignore[union-attr]
    return [known[i.prevout.txid].outputs[i.prevout.vout] for i in tx.inputs]


def bump(pair: SplicePair, side, feerate: int = BUMPED) -> Tx:
    """``side`` quiesces the channel and bumps the splice to ``feerate``; both sign the new version."""
    quiesce(pair, side)
    pair.feed(side, SpliceBump(feerate, 130))
    pair.pump()
    for each in (pair.alice, pair.bob):
        sp = splice_of(each)
        assert sp.signed and sp.feerate_per_kw == feerate and each.core.state.quiesce is None
    tx = broadcast(side)[-1]
    assert broadcast(pair.other(side))[-1].raw == tx.raw  # both hold the signed bump
    assert kernel_verify_scripts(tx, spent_outputs(tx, pair)) is None  # it spends the funding under consensus rules
    return tx


def lock(pair: SplicePair, tx: Tx) -> None:
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(tx.txid, 3, SPLICE_SCID))
    pair.pump()


@pytest.mark.parametrize("command", ["out", "in"])
def test_the_splice_initiator_bumps_its_splice_and_the_bump_locks(command: str) -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    first_command = splice_out_command(100_000) if command == "out" else splice_in_command(150_000)
    pair.feed(pair.alice, first_command)
    pair.pump()
    first = broadcast(pair.alice)[-1]
    bumped = bump(pair, pair.alice)
    assert bumped.txid != first.txid and fee_of(bumped, pair) > fee_of(first, pair)
    assert {i.prevout for i in bumped.inputs} & {i.prevout for i in first.inputs}  # the same shared input: a double spend
    for side in (pair.alice, pair.bob):
        sp = splice_of(side)
        assert [v.outpoint.txid for v in sp.previous] == [first.txid]  # type: ignore[union-attr]
    # a splice-in's change pays the higher fee (the same coins), a splice-out's from our balance
    extra = fee_of(bumped, pair) - fee_of(first, pair)
    sp = splice_of(pair.alice)
    if command == "in":
        assert sp.our_contribution == first_command.contribution_sat and sp.outputs[0].sats == first_command.outputs[0].sats - extra
    else:
        assert sp.our_contribution == first_command.contribution_sat - extra and sp.outputs == first_command.outputs
    # until the lock every commitment_signed is a batch over the funding and both versions
    before = len(pair.alice.outputs)
    pay_both_ways(pair)
    batches = [m for o in pair.alice.outputs[before:] for m in o.messages if isinstance(m, StartBatch)]
    assert batches and all(b.batch_size == 3 for b in batches)
    splice_commitments_valid(pair, bumped)
    lock(pair, bumped)
    for side in (pair.alice, pair.bob):
        s = side.core.state
        assert s.splice is None and s.funding_outpoint.txid == bumped.txid  # type: ignore[union-attr]
        assert [e for e in side.events if isinstance(e, SpliceVersionsDropped)]
    assert pair.alice.core.state.funding_sat == 1_000_000 + splice_of_contribution(pair, bumped)
    pair.funding_tx = bumped
    before = len(pair.alice.outputs)
    pay_both_ways(pair)
    assert not [m for o in pair.alice.outputs[before:] for m in o.messages if isinstance(m, StartBatch)]
    verify_commitments(pair)


def splice_of_contribution(pair: SplicePair, tx: Tx) -> int:
    (spliced,) = [e for e in pair.alice.events if isinstance(e, Spliced)]
    assert spliced.funding_outpoint.txid == tx.txid
    return spliced.session.our_contribution + spliced.session.their_contribution  # type: ignore[union-attr]


def test_the_first_version_confirms_instead_of_the_bump() -> None:
    pair = signed_splice(80_000)
    first = broadcast(pair.alice)[-1]
    first_contribution = splice_of(pair.alice).our_contribution
    bumped = bump(pair, pair.alice)
    pay_both_ways(pair)
    lock(pair, first)  # the first version is mined: it wins
    for side in (pair.alice, pair.bob):
        s = side.core.state
        assert s.splice is None and s.funding_outpoint.txid == first.txid  # type: ignore[union-attr]
        (dropped,) = [e for e in side.events if isinstance(e, SpliceVersionsDropped)]
        assert dropped.confirmed.txid == first.txid and dropped.inputs == ()
    assert pair.alice.core.state.funding_sat == 1_000_000 + first_contribution
    assert bumped.txid != first.txid
    pair.funding_tx = first
    pay_both_ways(pair)
    verify_commitments(pair)


def test_the_peer_that_did_not_splice_may_bump_it_paying_the_fee() -> None:
    """Bob (quiescence initiator) bumps Alice's splice-in: he is the new construction's initiator and
    pays its common fields from his balance; Alice adds the same coins again."""
    pair = opened()
    quiesce(pair, pair.alice)
    command = splice_in_command(150_000)
    pair.feed(pair.alice, command)
    pair.pump()
    first = broadcast(pair.alice)[-1]
    bumped = bump(pair, pair.bob)
    assert COIN.txid in {i.prevout.txid for i in bumped.inputs}
    alice, bob = splice_of(pair.alice), splice_of(pair.bob)
    assert not alice.initiator and bob.initiator
    assert alice.our_contribution == command.contribution_sat == bob.their_contribution
    assert bob.our_contribution < 0 and alice.their_contribution == bob.our_contribution
    assert fee_of(bumped, pair) > fee_of(first, pair)
    lock(pair, bumped)
    assert pair.alice.core.state.funding_sat == 1_000_000 + command.contribution_sat + bob.our_contribution
    pair.funding_tx = bumped
    pay_both_ways(pair)
    verify_commitments(pair)


def test_a_peer_locking_an_earlier_version_makes_it_the_one() -> None:
    pair = signed_splice(50_000)
    first = broadcast(pair.alice)[-1]
    bump(pair, pair.alice)
    pair.feed(pair.bob, SpliceDepth(first.txid, 3, SPLICE_SCID))
    assert splice_of(pair.bob).outpoint.txid == first.txid and splice_of(pair.bob).locked_sent  # type: ignore[union-attr]
    pair.pump()  # Alice takes Bob's splice_locked for the first version: it is her current one too
    sp = splice_of(pair.alice)
    assert sp.outpoint.txid == first.txid and sp.locked_received and len(sp.previous) == 1  # type: ignore[union-attr]
    pay_both_ways(pair)  # the batches still carry both versions
    pair.feed(pair.alice, SpliceDepth(first.txid, 3, SPLICE_SCID))
    pair.pump()
    for side in (pair.alice, pair.bob):
        assert side.core.state.splice is None and side.core.state.funding_outpoint.txid == first.txid  # type: ignore[union-attr]


def test_records_replay_and_a_lost_tx_signatures_of_the_bump_comes_again() -> None:
    pair = signed_splice(60_000)
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    while pair.wire:
        target, msg = pair.wire.popleft()
        if isinstance(msg, TxSignatures) and target is pair.bob:
            break  # Alice's signatures of the bump are lost
        pair.deliver(target, msg)
    assert splice_of(pair.alice).signed and not splice_of(pair.bob).signed and splice_of(pair.bob).signatures_sent
    for side in (pair.alice, pair.bob):
        assert restore(side.core.base_secrets, side.records).state == side.core.state
    pair.reconnect()  # next_funding names the bump: its signatures come again
    assert splice_of(pair.bob).signed and splice_of(pair.bob).previous
    assert broadcast(pair.bob)[-1].raw == broadcast(pair.alice)[-1].raw
    lock(pair, broadcast(pair.alice)[-1])
    for side in (pair.alice, pair.bob):
        assert side.core.state.splice is None
        assert restore(side.core.base_secrets, side.records).state == side.core.state


def test_an_attempt_ended_early_leaves_the_last_version_standing() -> None:
    pair = signed_splice(50_000)
    first = broadcast(pair.alice)[-1]
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.deliver(pair.bob, pair.wire.popleft()[1])  # tx_init_rbf
    assert [type(m) for _, m in pair.wire] == [TxAckRbf]
    pair.wire.clear()
    out = pair.feed(pair.alice, Received(TxAbort(channel_id=pair.alice.core.state.channel_id, data=b"no")))
    assert [type(m) for m in out.messages] == [TxAbort]
    assert [e for e in pair.alice.events if isinstance(e, SpliceAborted)][-1].inputs == ()
    pair.feed(pair.bob, Disconnected())  # Bob's attempt ends with the connection
    for side in (pair.alice, pair.bob):
        sp = splice_of(side)
        assert sp.signed and sp.outpoint.txid == first.txid and not sp.previous  # type: ignore[union-attr]
        assert side.core.state.quiesce is None


def test_a_bump_paying_less_total_fee_than_the_last_version_is_aborted() -> None:
    """BOLT 2 at tx_complete: a (forged) Alice takes out only its fee, drops its splice-out's output,
    and so builds a smaller version whose higher feerate still pays less in total than the first."""
    pair = signed_splice(50_000)
    first = broadcast(pair.bob)[-1]
    quiesce(pair, pair.alice)
    pair.wire.clear()
    bob = pair.bob.core
    cid = bob.state.channel_id
    shared = splice_of(pair.bob).shared
    fee = contribution_fee([shared.script], [shared.script], BUMPED, initiator=True)
    out = pair.feed(pair.bob, Received(init_rbf(pair, funding_output_contribution=-fee)))
    assert [type(m) for m in out.messages] == [TxAckRbf]
    funding = session(bob).funding
    assert funding is not None and fee < fee_of(first, pair) and splice_of(pair.bob).replaces_fee_sat == fee_of(first, pair)
    add_shared = TxAddInput(channel_id=cid, serial_id=0, prevtx=b"", prevtx_vout=shared.outpoint.vout, sequence=0xFFFFFFFD,
                            tlvs=TxAddInput.tlv_stream({"shared_input_txid": shared.outpoint.txid}))  # fmt: skip
    for msg in (add_shared, TxAddOutput(channel_id=cid, serial_id=2, sats=funding.total_sat, script=funding.script)):
        assert [type(m) for m in pair.feed(pair.bob, Received(msg)).messages] == [TxComplete]
    out = pair.feed(pair.bob, Received(TxComplete(channel_id=cid)))
    (abort,) = out.messages
    assert isinstance(abort, TxAbort) and b"less than" in abort.data
    assert not any(isinstance(m, CommitmentSigned | TxSignatures) for m in out.messages)
    assert [e for e in out.events if isinstance(e, SpliceAborted)][-1].inputs == ()
    sp = splice_of(pair.bob)
    assert sp.signed and sp.outpoint.txid == first.txid and not sp.previous and broadcast(pair.bob)[-1].txid == first.txid


def init_rbf(pair: SplicePair, feerate: int = BUMPED, **tlvs) -> TxInitRbf:
    return TxInitRbf(channel_id=pair.bob.core.state.channel_id, locktime=0, feerate=feerate, tlvs=TxInitRbf.tlv_stream(tlvs))


def test_a_bump_outside_the_rules_is_a_warning() -> None:
    pair = signed_splice(50_000)
    out = pair.feed(pair.bob, Received(init_rbf(pair)))
    assert out.disconnect and [type(m) for m in out.messages] == [WarningMessage] and b"quiescent" in out.messages[0].data
    pair.reconnect()
    quiesce(pair, pair.bob)  # Bob initiated the quiescence: Alice may not bump
    out = pair.feed(pair.bob, Received(init_rbf(pair)))
    assert out.disconnect and b"quiescence initiator" in out.messages[0].data
    pair.reconnect()
    quiesce(pair, pair.alice)
    out = pair.feed(pair.bob, Received(init_rbf(pair, funding_output_contribution=-5_000_000)))
    assert out.disconnect and b"balance" in out.messages[0].data
    pair.reconnect()
    assert splice_of(pair.bob).signed and not splice_of(pair.bob).previous


def test_a_bump_after_the_senders_splice_locked_is_a_warning() -> None:
    pair = signed_splice(50_000)
    txid = broadcast(pair.alice)[-1].txid
    pair.feed(pair.alice, SpliceDepth(txid, 3, SPLICE_SCID))  # Alice locks, Bob not yet
    pair.pump()
    with pytest.raises(LocalMisuse, match="we sent splice_locked"):
        quiesce(pair, pair.alice)
        pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    out = pair.feed(pair.bob, Received(init_rbf(pair)))
    assert out.disconnect and b"splice_locked" in out.messages[0].data


def test_a_zero_conf_splice_is_not_bumped() -> None:
    pair = zero_conf_splicing()
    while pair.wire:  # Alice's splice_locked is lost: Bob's splice stays pending
        target, msg = pair.wire.popleft()
        if not (isinstance(msg, SpliceLocked) and target is pair.bob):
            pair.deliver(target, msg)
    assert splice_of(pair.bob).signed
    with pytest.raises(LocalMisuse, match="option_zeroconf"):
        check_bump(pair.bob.core, BUMPED, 130)  # (what bumpsplice checks before quiescing)
    quiesce(pair, pair.alice)
    out = pair.feed(pair.bob, Received(init_rbf(pair)))
    assert out.disconnect and b"zero-conf" in out.messages[0].data


def test_a_low_feerate_or_a_splice_not_signed_gets_tx_abort_and_ends_quiescence() -> None:
    pair = signed_splice(50_000)
    quiesce(pair, pair.alice)
    out = pair.feed(pair.bob, Received(init_rbf(pair, feerate=FEERATE * 25 // 24 - 1)))
    assert [type(m) for m in out.messages] == [TxAbort] and b"25/24" in out.messages[0].data
    assert pair.bob.core.state.quiesce is None and not splice_of(pair.bob).previous
    with pytest.raises(LocalMisuse, match="25/24"):
        pair.feed(pair.alice, SpliceBump(FEERATE, 130))
    # a bump during the splice's own negotiation ends that negotiation
    fresh = opened()
    quiesce(fresh, fresh.alice)
    fresh.feed(fresh.alice, splice_out_command(50_000))
    fresh.deliver(fresh.bob, fresh.wire.popleft()[1])  # splice_init
    fresh.wire.clear()
    out = fresh.feed(fresh.bob, Received(init_rbf(fresh)))
    assert [type(m) for m in out.messages] == [TxAbort] and fresh.bob.core.state.splice is None


def test_at_most_ten_bumps_are_pending() -> None:
    pair = signed_splice(50_000)
    feerate = FEERATE
    for _ in range(MAX_RBF_ATTEMPTS):
        feerate = feerate * 25 // 24 + 1
        bump(pair, pair.alice, feerate)
    assert len(splice_of(pair.bob).previous) == MAX_RBF_ATTEMPTS
    quiesce(pair, pair.alice)
    with pytest.raises(LocalMisuse, match="10 fee bumps"):
        pair.feed(pair.alice, SpliceBump(feerate * 2, 130))
    out = pair.feed(pair.bob, Received(init_rbf(pair, feerate=feerate * 2)))
    assert [type(m) for m in out.messages] == [TxAbort] and b"10 fee bumps" in out.messages[0].data
    pair.reconnect()  # (Alice quiesced for nothing: the connection ends it)
    pay_both_ways(pair)  # a batch of twelve: the funding and eleven versions
    batches = [m for o in pair.alice.outputs for m in o.messages if isinstance(m, StartBatch)]
    assert batches[-1].batch_size == MAX_RBF_ATTEMPTS + 2


def test_our_bump_needs_quiescence_as_its_initiator_and_a_pending_splice() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    with pytest.raises(LocalMisuse, match="no splice is pending"):
        pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.reconnect()
    pair = signed_splice(50_000)
    with pytest.raises(LocalMisuse, match="not quiescent"):
        pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    quiesce(pair, pair.bob)
    with pytest.raises(LocalMisuse, match="peer initiated"):
        pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    out = pair.feed(pair.alice, Received(TxAckRbf(channel_id=pair.alice.core.state.channel_id)))
    assert out.disconnect and b"without our tx_init_rbf" in out.messages[0].data


def test_a_bump_adds_the_same_shared_input() -> None:
    pair = signed_splice(50_000)
    shared = splice_of(pair.alice).shared.outpoint
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.pump()
    adds = [m for o in pair.alice.outputs for m in o.messages if isinstance(m, TxAddInput) and "shared_input_txid" in m.tlvs]
    assert len(adds) == 2 and all(m.tlvs["shared_input_txid"] == shared.txid for m in adds)


def test_every_bump_message_that_commits_leaves_after_its_record_is_durable() -> None:
    pair = signed_splice(50_000)
    marks = {id(side): len(side.outputs) for side in (pair.alice, pair.bob)}
    bumped = bump(pair, pair.bob)
    pay_both_ways(pair)
    lock(pair, bumped)
    recorded = {"CommitmentSigned", "TxSignatures", "SpliceLocked", "TxInitRbf", "TxAckRbf"}
    assert sum(durable_before_sent(side.outputs[marks[id(side)]:], recorded) for side in (pair.alice, pair.bob)) >= 4


def test_a_bump_after_our_own_lock_gets_tx_abort() -> None:
    """Bob locked the first version (it confirmed for him): Alice's bump could not confirm."""
    pair = signed_splice(50_000)
    txid = broadcast(pair.alice)[-1].txid
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))
    pair.wire.clear()  # (Bob's splice_locked lost)
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.pump()
    assert [e for e in pair.alice.events if isinstance(e, SpliceAborted)][-1].reason.startswith("peer aborted: a version of the splice is")
    for side in (pair.alice, pair.bob):
        assert splice_of(side).outpoint.txid == txid and not splice_of(side).previous  # type: ignore[union-attr]


def test_a_version_mined_during_an_attempt_ends_the_attempt() -> None:
    """BOLT 2: the previous transaction confirms in the middle of an RBF attempt: it is abandoned."""
    pair = signed_splice(50_000)
    first = broadcast(pair.alice)[-1]
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.deliver(pair.bob, pair.wire.popleft()[1])  # tx_init_rbf
    pair.deliver(pair.alice, pair.wire.popleft()[1])  # tx_ack_rbf: Alice's construction starts
    pair.wire.clear()
    assert splice_of(pair.alice).previous and not splice_of(pair.alice).signed
    out = pair.feed(pair.alice, SpliceDepth(first.txid, 1, SPLICE_SCID))
    assert [type(m) for m in out.messages] == [TxAbort]
    sp = splice_of(pair.alice)
    assert sp.signed and sp.outpoint.txid == first.txid and not sp.previous and pair.alice.core.state.quiesce is None  # type: ignore[union-attr]


def test_a_greedy_tx_ack_rbf_is_a_warning() -> None:
    pair = signed_splice(50_000)
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.wire.clear()
    greedy = TxAckRbf(channel_id=pair.alice.core.state.channel_id, tlvs=TxAckRbf.tlv_stream({"funding_output_contribution": -5_000_000}))
    out = pair.feed(pair.alice, Received(greedy))
    assert out.disconnect and b"tx_ack_rbf takes" in out.messages[0].data


def test_no_bump_once_a_version_is_in_a_block() -> None:
    pair = signed_splice(50_000)
    txid = broadcast(pair.alice)[-1].txid
    pair.feed(pair.bob, SpliceDepth(txid, 1, SPLICE_SCID))  # in a block for Bob, not deep enough to lock
    assert splice_of(pair.bob).mined and not splice_of(pair.bob).locked_sent
    with pytest.raises(LocalMisuse, match="in a block"):
        check_bump(pair.bob.core, BUMPED, 130)
    quiesce(pair, pair.alice)  # Alice has not seen the block
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    pair.pump()
    assert [e for e in pair.alice.events if isinstance(e, SpliceAborted)][-1].reason.startswith("peer aborted: a version of the splice is in a block")
    assert not splice_of(pair.alice).previous and not splice_of(pair.bob).previous
    # a reorganization takes the block out (depth 0, from the shell): bumps are allowed again
    pair.feed(pair.bob, SpliceDepth(txid, 0, 0))
    assert not splice_of(pair.bob).mined
    check_bump(pair.bob.core, BUMPED, 130)
    second = bump(pair, pair.bob)
    assert [v.outpoint.txid for v in splice_of(pair.alice).previous] == [txid] and second.txid != txid  # type: ignore[union-attr]
    assert restore(pair.bob.core.secrets, pair.bob.records).state == pair.bob.core.state


def test_a_bump_waits_for_a_block_after_the_last_version() -> None:
    """BOLT 2: an RBF attempt "created recently" is refused (the last version had no time to confirm):
    by default one block since the last version was signed, for our bump as for the peer's."""
    pair = signed_splice(50_000)
    first = broadcast(pair.alice)[-1]
    test_channels_splice.quiesce(pair, pair.alice)  # no block yet
    with pytest.raises(LocalMisuse, match="signed 0 block.s. ago: a bump waits for 1"):
        pair.alice.core.receive(SpliceBump(BUMPED, 130), pair.now)
    out = pair.feed(pair.bob, Received(init_rbf(pair)))  # a peer that does not wait
    assert [type(m) for m in out.messages] == [TxAbort] and b"a bump waits for 1" in out.messages[0].data
    assert not splice_of(pair.bob).previous and splice_of(pair.bob).outpoint.txid == first.txid  # type: ignore[union-attr]
    pair.reconnect()
    a_block(pair)
    assert all(splice_of(side).blocks_waited == 1 for side in (pair.alice, pair.bob))
    assert not pair.feed(pair.alice, BlockHeight(HEIGHT + 1)).records  # counted up to the wait only
    second = bump(pair, pair.alice)
    assert splice_of(pair.alice).blocks_waited == 0 and second.txid != first.txid
    with pytest.raises(LocalMisuse, match="a bump waits"):  # the new version waits in turn
        check_bump(pair.bob.core, min_feerate(BUMPED), 130)
    a_block(pair)
    check_bump(pair.bob.core, min_feerate(BUMPED), 130)
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state


@pytest.mark.parametrize("wait", [0, 2])
def test_the_wait_between_bumps_is_a_policy(wait: int) -> None:
    pair = SplicePair(push_msat=300_000_000, extra_features=1 << 63, policy=OpeningPolicy(rbf_wait_blocks=wait))
    pair.open()
    test_channels_splice.quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(50_000))
    a_block(pair)  # while the splice is negotiated: it counts from its signatures only
    pair.pump()
    assert splice_of(pair.alice).signed and splice_of(pair.alice).blocks_waited == 0
    for _ in range(wait - 1):
        a_block(pair)
    if wait:
        with pytest.raises(LocalMisuse, match=f"a bump waits for {wait}"):
            check_bump(pair.alice.core, BUMPED, 130)
        a_block(pair)
    check_bump(pair.alice.core, BUMPED, 130)


def test_a_lock_is_not_taken_back_by_a_reorganization() -> None:
    pair = signed_splice(50_000)
    txid = broadcast(pair.bob)[-1].txid
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))  # Bob locks (Alice has not seen the blocks)
    pair.wire.clear()
    assert splice_of(pair.bob).locked_sent and splice_of(pair.bob).mined
    assert not pair.feed(pair.bob, SpliceDepth(txid, 0, 0)).records  # splice_locked left: it stands
    assert splice_of(pair.bob).mined
    with pytest.raises(LocalMisuse, match="splice_locked"):
        check_bump(pair.bob.core, BUMPED, 130)
