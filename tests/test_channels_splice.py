"""Channel splicing (BOLT 2 "Channel Splicing") in the channel core, driven by hand: splice-in,
splice-out, the checks that refuse a splice, the lock and the switch, replay and reconnection."""

from __future__ import annotations

import pytest
from test_channels_pair import ChannelPair, Side, verify_commitments

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160, sha256
from lnpmsg.bitcoin.script import p2pkh_script, p2wpkh, p2wsh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.dualfund import FundingSignaturesNeeded, FundingWitnesses
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.commitments import build
from lnpmsg.channels.inputs import AddHtlc, BroadcastFunding, CloseChannel, Disconnected, Received, Reconnected, SignCommitment
from lnpmsg.channels.interactive_parts import OwnInput, OwnOutput, contribution_fee
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.messages import CommitmentSigned
from lnpmsg.channels.messages_splice import SpliceAck, SpliceInit, SpliceLocked
from lnpmsg.channels.messages_v2 import TxAbort, TxSignatures
from lnpmsg.channels.quiesce import Quiesce
from lnpmsg.channels.records import encode_snapshot, restore, restore_snapshot
from lnpmsg.channels.script import funding_script
from lnpmsg.channels.splice import SpliceAborted, SpliceCommand, SpliceDepth, Spliced, SplicedFrom, SpliceSession
from lnpmsg.wire import WarningMessage

FEERATE = 2_500
WALLET_KEY = sha256(b"alice wallet")
WALLET_SCRIPT = p2wpkh(pubkey_from_privkey(WALLET_KEY))
COIN = Tx(2, (TxIn(OutPoint(sha256(b"coin"), 0)),), (TxOut(700_000, WALLET_SCRIPT),))
DESTINATION = p2wpkh(pubkey_from_privkey(sha256(b"somewhere")))
SPLICE_SCID = (150 << 40) | (2 << 16) | 0


class SplicePair(ChannelPair):
    """A ChannelPair whose wallet side signs the splice inputs Alice adds."""

    def feed(self, side: Side, item) -> object:
        out = super().feed(side, item)
        for event in out.events:
            if isinstance(event, FundingSignaturesNeeded):
                tx = Tx.parse(event.raw_tx)
                stacks = []
                for index in event.indices:
                    code = p2pkh_script(hash160(pubkey_from_privkey(WALLET_KEY)))
                    digest = segwit_v0_sighash(tx, index, code, COIN.outputs[0].amount_sat, SIGHASH_ALL)
                    stacks.append((sign_digest(WALLET_KEY, digest) + bytes([SIGHASH_ALL]), pubkey_from_privkey(WALLET_KEY)))
                super().feed(side, FundingWitnesses(tuple(stacks)))
        return out


def opened() -> SplicePair:
    pair = SplicePair(push_msat=300_000_000, extra_features=1 << 63)
    pair.open()
    return pair


def quiesce(pair: ChannelPair, side: Side) -> None:
    pair.feed(side, Quiesce(peer_supports=True))
    pair.pump()


def old_funding_script(pair: ChannelPair) -> bytes:
    keys = (side.core.base_secrets.basepoints().funding_pubkey for side in (pair.alice, pair.bob))
    return p2wsh(funding_script(*keys))


def splice_out_command(amount: int) -> SpliceCommand:
    fee = contribution_fee([b"\x00\x20" + bytes(32)], [b"\x00\x20" + bytes(32), DESTINATION], FEERATE, initiator=True)
    return SpliceCommand(-(amount + fee), FEERATE, 120, (), (OwnOutput(amount, DESTINATION),), b"entropy", True)


def splice_in_command(amount: int) -> SpliceCommand:
    fee = contribution_fee([b"\x00\x20" + bytes(32), WALLET_SCRIPT], [b"\x00\x20" + bytes(32), WALLET_SCRIPT], FEERATE, initiator=True)
    change = COIN.outputs[0].amount_sat - amount - fee
    return SpliceCommand(amount, FEERATE, 120, (OwnInput(COIN.raw, 0),), (OwnOutput(change, WALLET_SCRIPT),), b"entropy", True)


def signed_splice(amount: int) -> SplicePair:
    """An open channel, Alice's splice-out of ``amount`` signed by both, not locked."""
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(amount))
    pair.pump()
    return pair


def broadcast(side: Side) -> list[Tx]:
    return [Tx.parse(e.raw_tx) for e in side.events if isinstance(e, BroadcastFunding)]


def splice_of(side: Side) -> SpliceSession:
    sp = side.core.state.splice
    assert isinstance(sp, SpliceSession)
    return sp


def pay_both_ways(pair: SplicePair, alice_pays: int = 20_000_000, bob_pays: int = 5_000_000) -> None:
    """Alice pays Bob ``alice_pays`` msat, then Bob pays Alice ``bob_pays``, each settled."""
    htlc_id, preimage = pair.add(pair.alice, alice_pays)
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
    back, back_preimage = pair.add(pair.bob, bob_pays)
    pair.commit(pair.bob)
    pair.fulfill(pair.alice, back, back_preimage)


def sign_and_lock(pair: SplicePair, command: SpliceCommand) -> Tx:
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, command)
    pair.pump()
    a, b = splice_of(pair.alice), splice_of(pair.bob)
    assert a.signed and b.signed
    splice_tx = broadcast(pair.alice)[-1]
    assert broadcast(pair.bob)[-1].raw == splice_tx.raw  # both hold the fully signed transaction
    spent = {pair.funding_tx.txid: pair.funding_tx, COIN.txid: COIN}  # type: ignore[union-attr]
    assert kernel_verify_scripts(splice_tx, [spent[i.prevout.txid].outputs[i.prevout.vout] for i in splice_tx.inputs]) is None
    assert pair.alice.core.state.quiesce is None and pair.bob.core.state.quiesce is None  # quiescence ended
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(splice_tx.txid, 3, SPLICE_SCID))
    pair.pump()
    return splice_tx


@pytest.mark.parametrize("direction", ["out", "in"])
def test_splice_then_lock_then_payments(direction: str) -> None:
    pair = opened()
    before_alice, before_bob = pair.balances()
    command = splice_out_command(200_000) if direction == "out" else splice_in_command(250_000)
    splice_tx = sign_and_lock(pair, command)
    for side in (pair.alice, pair.bob):
        s = side.core.state
        assert s.splice is None and s.splices == 1
        assert s.funding_outpoint.txid == splice_tx.txid  # type: ignore[union-attr]
        assert s.funding_sat == 1_000_000 + command.contribution_sat
        assert s.short_channel_id == SPLICE_SCID
        assert [e for e in side.events if isinstance(e, Spliced)]
        # BOLT 2: a new funding key per splice (ours derived from the channel's secrets and the splice's index)
        assert s.funding_key_index == 1 and side.core.basepoints.funding_pubkey != side.core.base_secrets.basepoints().funding_pubkey
    assert splice_tx.outputs[pair.alice.core.state.funding_outpoint.vout].script_pubkey != old_funding_script(pair)  # type: ignore[union-attr]
    assert pair.balances() == (before_alice + command.contribution_sat * 1000, before_bob)
    if direction == "out":
        assert TxOut(200_000, DESTINATION) in splice_tx.outputs
    pair.funding_tx = splice_tx
    verify_commitments(pair)  # the commitments spend the new funding under consensus rules
    pay_both_ways(pair, 40_000_000, 10_000_000)
    assert pair.balances() == (before_alice + command.contribution_sat * 1000 - 30_000_000, before_bob + 30_000_000)
    verify_commitments(pair)


def test_replay_of_the_records_rebuilds_the_spliced_channel() -> None:
    """The records and a snapshot rebuild the spliced channel, with what the monitor's move needs of
    the splice (a move after a restart carries the peer's commitments on it as one before)."""
    pair = opened()
    old = pair.alice.core.state.funding_outpoint
    sign_and_lock(pair, splice_in_command(100_000))
    for side, ours, theirs in ((pair.alice, 100_000, 0), (pair.bob, 0, 100_000)):
        moved = side.core.state.spliced_from
        assert isinstance(moved, SplicedFrom) and moved.funding_outpoint == old
        assert (moved.our_contribution, moved.their_contribution) == (ours, theirs)
        assert moved.first_remote_number == moved.old_through == side.core.state.remote_commit.number  # type: ignore[union-attr]
        again = restore(side.core.base_secrets, side.records)
        assert again.state == side.core.state
        assert restore_snapshot(side.core.base_secrets, encode_snapshot(side.core)).state == side.core.state


def test_a_splice_needs_quiescence_as_its_initiator_and_one_at_a_time() -> None:
    pair = opened()
    with pytest.raises(LocalMisuse, match="not quiescent"):
        pair.feed(pair.alice, splice_out_command(50_000))
    quiesce(pair, pair.bob)  # Bob initiated quiescence: only he may splice
    with pytest.raises(LocalMisuse, match="peer initiated"):
        pair.feed(pair.alice, splice_out_command(50_000))
    pair.reconnect()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(50_000))
    pair.pump()
    assert splice_of(pair.alice).signed
    with pytest.raises(LocalMisuse, match="close once both sent splice_locked"):
        pair.feed(pair.alice, CloseChannel(DESTINATION, FEERATE))
    with pytest.raises(LocalMisuse, match="another splice"):
        quiesce(pair, pair.alice)
        pair.feed(pair.alice, splice_out_command(10_000))


def splice_commitments_valid(pair: SplicePair, splice_tx: Tx) -> None:
    """Each side's commitment on the pending splice spends the splice's funding output under consensus rules."""
    from lnpmsg.channels.commitments import finalize_local
    from lnpmsg.channels.splice import next_keys
    from lnpmsg.channels.splice_sign import splice_keys

    for side in (pair.alice, pair.bob):
        sp = splice_of(side)
        commit = sp.local_commit
        assert commit.number == side.core.state.local_commit.number  # type: ignore[union-attr]
        built = build(splice_keys(side.core, sp), commit.spec, commit.number, side.core.secrets.commitment_point(commit.number), local=True)
        tx = finalize_local(built, next_keys(side.core)[0], commit.signature)
        assert kernel_verify_scripts(tx, [splice_tx.outputs[sp.outpoint.vout]]) is None  # type: ignore[union-attr]


@pytest.mark.parametrize("restart", [False, True])
def test_payments_while_the_splice_waits_then_it_locks(restart: bool) -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    command = splice_out_command(100_000)
    pair.feed(pair.alice, command)
    pair.pump()
    splice_tx = broadcast(pair.alice)[-1]
    start_alice, start_bob = pair.balances()
    htlc_id, preimage = pair.add(pair.alice, 30_000_000)
    since = len(pair.alice.outputs)
    pair.commit(pair.alice)
    assert pair.sent_types(pair.alice, since)[:3] == ["StartBatch", "CommitmentSigned", "CommitmentSigned"]
    assert "RevokeAndAck" in pair.sent_types(pair.bob, 0)
    verify_commitments(pair)  # the old funding's commitments
    splice_commitments_valid(pair, splice_tx)  # and the splice's, with the HTLC
    assert len(splice_of(pair.bob).local_commit.spec.htlcs) == 1  # type: ignore[union-attr]
    pair.fulfill(pair.bob, htlc_id, preimage)
    if restart:  # both rebuilt from their records, then reconnected
        for side in (pair.alice, pair.bob):
            side.core = restore(side.core.base_secrets, side.records)
            side.core.records_emitted = len(side.records)
        pair.reconnect()
    back, back_preimage = pair.add(pair.bob, 5_000_000)
    pair.commit(pair.bob)
    pair.fulfill(pair.alice, back, back_preimage)
    splice_commitments_valid(pair, splice_tx)
    assert pair.balances() == (start_alice - 25_000_000, start_bob + 25_000_000)
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(splice_tx.txid, 3, SPLICE_SCID))
    pair.pump()
    assert pair.alice.core.state.splice is None and pair.bob.core.state.splice is None
    assert pair.balances() == (start_alice - 25_000_000 + command.contribution_sat * 1000, start_bob + 25_000_000)
    pair.funding_tx = splice_tx
    verify_commitments(pair)
    htlc_id, preimage = pair.add(pair.alice, 1_000_000)
    since = len(pair.alice.outputs)
    pair.commit(pair.alice)
    assert "StartBatch" not in pair.sent_types(pair.alice, since)  # one funding again: no batch
    pair.fulfill(pair.bob, htlc_id, preimage)


def test_a_commitment_signed_without_start_batch_while_a_splice_is_pending_fails_the_channel() -> None:
    pair = signed_splice(100_000)
    pair.add(pair.alice, 3_000_000)
    pair.feed(pair.alice, SignCommitment())
    batch = [msg for _, msg in pair.wire]
    pair.wire.clear()
    pair.deliver(pair.bob, batch[0])  # the update_add_htlc
    out = pair.feed(pair.bob, Received(batch[2]))  # a commitment_signed alone
    assert [type(m).__name__ for m in out.messages] == ["Error"]


def test_an_htlc_the_splice_commitment_cannot_carry_is_refused() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(600_000))  # Alice keeps ~100k sat after the splice
    pair.pump()
    with pytest.raises(LocalMisuse, match="pending splice"):
        pair.feed(pair.alice, AddHtlc(150_000_000, bytes(32), 500, bytes(1366)))


def test_peer_splice_init_outside_the_rules_is_a_warning() -> None:
    pair = opened()
    msg = SpliceInit(channel_id=pair.bob.core.state.channel_id, funding_contribution_satoshis=-10_000,
                     funding_feerate_perkw=FEERATE, locktime=0, funding_pubkey=pubkey_from_privkey(sha256(b"k")))  # fmt: skip
    out = pair.feed(pair.bob, Received(msg))
    assert out.disconnect and [type(m) for m in out.messages] == [WarningMessage]  # not quiescent
    quiesce(pair, pair.alice)
    greedy = SpliceInit(channel_id=msg.channel_id, funding_contribution_satoshis=-2_000_000, funding_feerate_perkw=FEERATE,
                        locktime=0, funding_pubkey=msg.funding_pubkey)  # fmt: skip
    out = pair.feed(pair.bob, Received(greedy))
    assert out.disconnect and b"balance" in out.messages[0].data
    assert pair.bob.core.state.splice is None


def test_bad_feerate_or_reserve_gets_tx_abort_and_ends_quiescence() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    msg = SpliceInit(channel_id=pair.bob.core.state.channel_id, funding_contribution_satoshis=-10_000,
                     funding_feerate_perkw=10, locktime=0, funding_pubkey=pubkey_from_privkey(sha256(b"k")))  # fmt: skip
    out = pair.feed(pair.bob, Received(msg))
    assert [type(m) for m in out.messages] == [TxAbort] and b"feerate" in out.messages[0].data
    assert pair.bob.core.state.splice is None and pair.bob.core.state.quiesce is None
    with pytest.raises(LocalMisuse, match="reserve"):
        pair.feed(pair.alice, splice_out_command(699_000))


def test_peer_abort_and_disconnection_before_signatures_leave_the_channel_as_it_was() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    pair.feed(pair.bob, Received(pair.wire.popleft()[1]))  # splice_init
    pair.wire.clear()
    out = pair.feed(pair.alice, Received(TxAbort(channel_id=pair.alice.core.state.channel_id, data=b"no")))
    assert [type(m) for m in out.messages] == [TxAbort]
    (aborted,) = [e for e in pair.alice.events if isinstance(e, SpliceAborted)]
    assert aborted.inputs == (OwnInput(COIN.raw, 0),)  # the coins are freed
    assert pair.alice.core.state.splice is None and pair.alice.core.state.quiesce is None
    pair.feed(pair.bob, Disconnected())
    assert pair.bob.core.state.splice is None


def test_a_lost_tx_signatures_comes_again_with_next_funding() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(60_000))
    while pair.wire:
        target, msg = pair.wire.popleft()
        if isinstance(msg, TxSignatures) and target is pair.bob:
            break  # Alice's signatures (she signs second) are lost
        pair.deliver(target, msg)
    assert splice_of(pair.alice).signed and not splice_of(pair.bob).signed and splice_of(pair.bob).signatures_sent
    pair.reconnect()
    assert splice_of(pair.bob).signed
    assert broadcast(pair.bob)[-1].raw == broadcast(pair.alice)[-1].raw


def test_a_splice_whose_peer_signed_first_survives_our_restart_before_our_witnesses() -> None:
    """Alice's commitment_signed left, Bob (who signs first) sent his tx_signatures, lost with the
    connection; Alice restarts before her wallet's witnesses came. Bob must keep the splice he
    signed, so she keeps it too: reestablishment asks her wallet again and completes it."""
    pair = opened()
    quiesce(pair, pair.alice)
    ChannelPair.feed(pair, pair.alice, splice_in_command(100_000))  # (no witnesses from the wallet)
    while pair.wire:
        target, msg = pair.wire.popleft()
        if isinstance(msg, TxSignatures):
            break  # Bob's, lost
        ChannelPair.feed(pair, target, Received(msg))
    a, b = splice_of(pair.alice), splice_of(pair.bob)
    assert a.remote_commit is not None and a.our_witnesses is None and not a.signatures_sent and b.signatures_sent
    pair.alice.core = restore(pair.alice.core.base_secrets, pair.alice.records)
    pair.alice.core.records_emitted = len(pair.alice.records)
    pair.reconnect()
    assert splice_of(pair.alice).signed and splice_of(pair.bob).signed
    assert broadcast(pair.bob)[-1].raw == broadcast(pair.alice)[-1].raw


def test_splice_locked_across_a_reconnection_and_a_wrong_one() -> None:
    pair = signed_splice(60_000)
    txid = splice_of(pair.alice).outpoint.txid  # type: ignore[union-attr]
    out = pair.feed(pair.bob, Received(SpliceLocked(channel_id=pair.bob.core.state.channel_id, splice_txid=bytes(32))))
    assert out.disconnect
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.bob, Disconnected())
    pair.wire.clear()
    pair.feed(pair.alice, SpliceDepth(txid, 3, SPLICE_SCID))  # deep while disconnected
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    pair.pump()  # my_current_funding_locked stands for splice_locked
    for side in (pair.alice, pair.bob):
        assert side.core.state.splice is None and side.core.state.funding_outpoint.txid == txid  # type: ignore[union-attr]


def test_commitment_signed_for_the_splice_names_its_funding() -> None:
    pair = signed_splice(60_000)
    sent = [m for o in pair.alice.outputs for m in o.messages if isinstance(m, CommitmentSigned)]
    assert sent[-1].tlvs.get("funding_txid") == splice_of(pair.alice).outpoint.txid  # type: ignore[union-attr]
    assert splice_of(pair.alice).local_commit.number == pair.alice.core.state.local_commit.number  # type: ignore[union-attr]


def test_the_fundee_splices_in_and_the_funder_accepts() -> None:
    pair = opened()
    before_alice, before_bob = pair.balances()
    quiesce(pair, pair.bob)
    pair.feed(pair.bob, splice_in_command(150_000))
    pair.pump()
    splice_tx = broadcast(pair.bob)[-1]
    spent = {pair.funding_tx.txid: pair.funding_tx, COIN.txid: COIN}  # type: ignore[union-attr]
    assert kernel_verify_scripts(splice_tx, [spent[i.prevout.txid].outputs[i.prevout.vout] for i in splice_tx.inputs]) is None
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(splice_tx.txid, 3, SPLICE_SCID))
    pair.pump()
    assert pair.balances() == (before_alice, before_bob + 150_000_000)
    assert pair.alice.core.state.funding_sat == 1_150_000


def test_a_peer_requiring_confirmed_inputs_gets_tx_abort_when_we_add_coins() -> None:
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    init = pair.wire.popleft()[1]
    ack = SpliceAck(channel_id=init.channel_id, funding_contribution_satoshis=0, funding_pubkey=pubkey_from_privkey(sha256(b"k")),
                    tlvs=SpliceAck.tlv_stream(require_confirmed_inputs=()))  # fmt: skip
    out = pair.feed(pair.alice, Received(ack))
    assert [type(m) for m in out.messages] == [TxAbort] and b"confirmed inputs" in out.messages[0].data
    assert pair.alice.core.state.splice is None



def test_htlcs_committed_before_the_splice_move_to_it_and_settle_there() -> None:
    pair = opened()
    htlc_id, preimage = pair.add(pair.alice, 20_000_000)
    pair.commit(pair.alice)
    back, back_preimage = pair.add(pair.bob, 8_000_000)
    pair.commit(pair.bob)
    splice_tx = sign_and_lock(pair, splice_out_command(100_000))  # the splice's commitments carry both HTLCs
    for side in (pair.alice, pair.bob):
        assert len(side.core.state.local_commit.spec.htlcs) == 2  # type: ignore[union-attr]
        assert len(side.core.state.local_commit.htlc_signatures) == 2  # type: ignore[union-attr]
    pair.funding_tx = splice_tx
    pair.preimages = {sha256(p): p for p in (preimage, back_preimage)}
    verify_commitments(pair)  # HTLC transactions spend the new commitments under consensus rules
    pair.fulfill(pair.bob, htlc_id, preimage)
    pair.fulfill(pair.alice, back, back_preimage)
    assert not pair.alice.core.state.local_commit.spec.htlcs  # type: ignore[union-attr]


def test_a_batch_cut_by_a_disconnection_comes_again_whole() -> None:
    pair = signed_splice(100_000)
    pair.add(pair.alice, 4_000_000)
    pair.feed(pair.alice, SignCommitment())
    add, start, first, _second = [msg for _, msg in pair.wire]
    pair.wire.clear()
    for msg in (add, start, first):  # the splice's commitment_signed is lost
        pair.deliver(pair.bob, msg)
    assert pair.bob.core.state.batch_size == 2 and len(pair.bob.core.state.batch) == 1
    since = len(pair.alice.outputs)
    pair.reconnect()
    assert pair.sent_types(pair.alice, since).count("StartBatch") == 1  # the whole batch again
    assert pair.bob.core.state.batch_size == 0
    assert len(pair.bob.core.state.local_commit.spec.htlcs) == 1  # type: ignore[union-attr]
    assert len(splice_of(pair.bob).local_commit.spec.htlcs) == 1  # type: ignore[union-attr]


def test_a_batch_that_crosses_the_lock_keeps_the_commitment_for_the_new_funding() -> None:
    """Bob locked (both splice_locked seen by him); Alice has not seen his yet and signs a batch:
    Bob keeps its commitment_signed for his (new) funding and ignores the old one's (BOLT 2)."""
    pair = signed_splice(100_000)
    txid = splice_of(pair.alice).outpoint.txid  # type: ignore[union-attr]
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))
    ((_, bobs_locked),) = list(pair.wire)
    pair.wire.clear()
    pair.feed(pair.alice, SpliceDepth(txid, 3, SPLICE_SCID))
    pair.pump()  # Alice's splice_locked: Bob switches
    assert pair.bob.core.state.splice is None and splice_of(pair.alice).locked_sent
    htlc_id, preimage = pair.add(pair.alice, 6_000_000)
    pair.feed(pair.alice, SignCommitment())
    assert [type(m).__name__ for _, m in pair.wire][1:] == ["StartBatch", "CommitmentSigned", "CommitmentSigned"]
    batch = [m for _, m in pair.wire]
    pair.wire.clear()
    for msg in batch:  # Bob, locked already, keeps the one for his funding and revokes
        pair.deliver(pair.bob, msg)
    replies = list(pair.wire)
    pair.wire.clear()
    pair.deliver(pair.alice, bobs_locked)  # (sent before his replies: it arrives first)
    pair.wire.extend(replies)
    pair.pump()
    pair.feed(pair.bob, SignCommitment())
    pair.pump()
    assert pair.alice.core.state.splice is None
    assert pair.alice.core.state.funding_outpoint == pair.bob.core.state.funding_outpoint
    pair.fulfill(pair.bob, htlc_id, preimage)
    assert pair.alice.core.state.local_commit.spec == pair.bob.core.state.remote_commit.spec  # type: ignore[union-attr]


def zero_conf_splicing():
    """A zero-conf channel (option_zeroconf, trusted) open, Alice's splice-out of 100k sat sent (not pumped)."""
    from test_channels_aliases import AliasPair

    pair = AliasPair(type_bits=(46, 50), trusted=True)
    pair.features |= 1 << 63
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(100_000))
    return pair


def test_a_zero_conf_channel_locks_its_splice_at_once_and_learns_the_real_id_at_the_confirmation() -> None:
    from lnpmsg.channels.inputs import FundingDepth

    pair = zero_conf_splicing()
    assert pair.alice.core.phase.value == "normal" and pair.alice.core.state.short_channel_id == 0
    pair.pump()
    txid = broadcast(pair.alice)[-1].txid
    for side in (pair.alice, pair.bob):  # BOLT 2: splice_locked right after tx_signatures
        s = side.core.state
        assert s.splice is None and s.funding_outpoint.txid == txid and s.short_channel_id == 0  # type: ignore[union-attr]
    htlc_id, preimage = pair.add(pair.alice, 3_000_000)
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingDepth(1, SPLICE_SCID))
        assert side.core.state.short_channel_id == SPLICE_SCID


def durable_before_sent(outputs: list, recorded: set[str]) -> int:
    """Check that each output sending one of ``recorded`` has its record, and that one sending a
    commitment or signatures has it fsynced (persist, then send); how many of those there were."""
    committing = 0
    for out in outputs:
        names = {type(m).__name__ for m in out.messages}
        if names & recorded:
            assert out.records, names  # persist, then send
        if names & {"CommitmentSigned", "TxSignatures"}:
            committing += 1
            assert out.records[0].durable, names  # fsynced before it leaves
    return committing


def test_every_splice_message_that_commits_leaves_after_its_record_is_durable() -> None:
    pair = opened()
    sign_and_lock(pair, splice_in_command(100_000))
    recorded = {"CommitmentSigned", "TxSignatures", "SpliceLocked", "SpliceInit", "SpliceAck"}
    assert sum(durable_before_sent(side.outputs, recorded) for side in (pair.alice, pair.bob)) >= 4


def test_a_zero_conf_splice_the_peer_never_locked_learns_its_real_id_at_the_confirmation() -> None:
    """Alice locks her zero-conf splice at once, Bob's splice_locked is lost: the splice's depth gives
    it its real short channel id all the same (its monitor then follows it: .splice_watch), and the
    lock, when it comes, uses it."""
    from lnpmsg.channels.splice_watch import confirmed_unlocked_splice

    pair = zero_conf_splicing()
    lost = []
    while pair.wire:
        target, msg = pair.wire.popleft()
        if target is pair.alice and isinstance(msg, SpliceLocked):
            lost.append(msg)
        else:
            pair.feed(target, Received(msg))
    sp = pair.alice.core.state.splice
    assert lost and isinstance(sp, SpliceSession) and sp.locked_sent and sp.short_channel_id == 0
    assert confirmed_unlocked_splice(pair.alice.core) is None  # (not confirmed: nothing spent the funding yet)
    pair.feed(pair.alice, SpliceDepth(sp.outpoint.txid, 1, SPLICE_SCID))  # type: ignore[union-attr]
    assert confirmed_unlocked_splice(pair.alice.core) is not None
    assert pair.alice.core.state.splice.short_channel_id == SPLICE_SCID  # type: ignore[union-attr]
    pair.feed(pair.alice, Received(lost[0]))
    s = pair.alice.core.state
    assert s.splice is None and s.short_channel_id == SPLICE_SCID and s.funding_outpoint == sp.outpoint


def test_a_lock_while_the_reestablish_crosses_sends_splice_locked_once_reestablished() -> None:
    """Alice reaches the splice's depth after her channel_reestablish left (naming the funding she had
    locked then) and before Bob's came: her splice_locked goes once reestablished, else Bob would
    never lock the splice on this connection."""
    pair = signed_splice(50_000)
    txid = broadcast(pair.alice)[-1].txid
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))
    pair.pump()  # Bob locked: Alice holds his splice_locked
    assert splice_of(pair.alice).locked_received and not splice_of(pair.alice).locked_sent
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.bob, Disconnected())
    pair.feed(pair.alice, Reconnected())  # her channel_reestablish leaves
    pair.feed(pair.alice, SpliceDepth(txid, 3, SPLICE_SCID))  # deep before Bob's channel_reestablish came
    assert pair.alice.core.state.splice is None  # she switched
    pair.feed(pair.bob, Reconnected())
    pair.pump()
    assert pair.bob.core.state.splice is None and pair.bob.core.state.funding_outpoint.txid == txid  # type: ignore[union-attr]


def test_a_moved_monitor_carries_the_peers_commitments_on_the_splice_as_they_are_there() -> None:
    """The peer's commitments the old funding's monitor knows, carried to the splice's: none signed
    before the splice; those signed on the old funding before the switch with each balance moved by
    its side's contribution (one the splice-out would leave negative never existed there); those the
    old monitor learnt after the switch (the splice's already) as they are."""
    from lnpmsg.channels.monitor.updates import RemoteCommitment
    from lnpmsg.channels.splice_watch import carried_commitments

    point = pubkey_from_privkey(sha256(b"point"))

    def commitment(number: int, theirs_msat: int, ours_msat: int) -> RemoteCommitment:
        return RemoteCommitment(number, point, theirs_msat, ours_msat, FEERATE, ())

    old = [commitment(4, 500_000_000, 500_000_000), commitment(5, 400_000_000, 600_000_000),
           commitment(6, 50_000_000, 950_000_000), commitment(7, 300_000_000, 850_000_000)]  # fmt: skip
    move = SplicedFrom(OutPoint(sha256(b"old"), 0), 5, 250_000, -100_000, old_through=6)
    assert carried_commitments(old, move) == [commitment(5, 300_000_000, 850_000_000), commitment(7, 300_000_000, 850_000_000)]
    before_the_switch = SplicedFrom(OutPoint(sha256(b"old"), 0), 5, 250_000, -100_000)  # (a confirmed splice not locked by the peer)
    assert [c.commitment_number for c in carried_commitments(old, before_the_switch)] == [5, 7]
    assert carried_commitments(old, before_the_switch)[1] == commitment(7, 200_000_000, 1_100_000_000)


def test_a_splice_the_peer_forgot_after_our_signatures_is_kept_until_an_input_is_spent_elsewhere() -> None:
    """Bob (he signs first) sent his tx_signatures, lost; Alice forgets the splice and answers his
    next_funding with tx_abort. Bob keeps the splice (she holds his signatures), noting that she
    forgot it, over another reconnection too; a spend elsewhere of an input of the splice ends it
    (another outpoint changes nothing); the records replay to the same state."""
    from lnpmsg.channels.splice_forgotten import SpliceInputSpent

    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    while pair.wire:
        target, msg = pair.wire.popleft()
        if isinstance(msg, TxSignatures):
            break  # Bob's, lost
        pair.deliver(target, msg)
    assert splice_of(pair.bob).signatures_sent and not splice_of(pair.bob).signed
    pair.alice.core.state.splice = pair.alice.core.state.quiesce = None  # Alice forgets it (as a node may that never signed)
    pair.reconnect()
    sp = splice_of(pair.bob)
    assert sp.peer_forgot and not sp.signed and not [e for e in pair.bob.events if isinstance(e, SpliceAborted)]
    pair.reconnect()  # her tx_abort again: nothing changes
    assert splice_of(pair.bob) == sp
    pair.feed(pair.bob, SpliceInputSpent(OutPoint(sha256(b"elsewhere"), 0)))
    assert splice_of(pair.bob) == sp
    pair.feed(pair.bob, SpliceInputSpent(COIN.outpoint(0)))
    assert pair.bob.core.state.splice is None
    assert [e for e in pair.bob.events if isinstance(e, SpliceAborted)][-1].inputs == ()  # (Bob added no coin)
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state
    htlc_id, preimage = pair.add(pair.alice, 10_000_000)  # the channel works on its funding
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
