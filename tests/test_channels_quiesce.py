"""Channel quiescence (BOLT 2 ``stfu``) in the channel core, driven by hand: each requirement."""

from __future__ import annotations

import pytest

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import ChangeFee, CloseChannel, Disconnected, FulfillHtlc, Received, Reconnected, SignCommitment
from lnpmsg.channels.messages import Shutdown, Stfu, UpdateAddHtlc, UpdateFulfillHtlc
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.quiesce import Quiesce, QuiesceState, Quiescent, is_quiescent, local_initiator, quiescence_status
from lnpmsg.channels.records import encode_snapshot, restore, restore_snapshot
from lnpmsg.channels.state import Phase
from lnpmsg.wire import WarningMessage
from test_channels_pair import ONION, ChannelPair, Side, make_secrets


def opened() -> ChannelPair:
    pair = ChannelPair(push_msat=200_000_000)
    pair.open()
    return pair


def stfus(side: Side, since: int = 0) -> list[Stfu]:
    return [m for o in side.outputs[since:] for m in o.messages if isinstance(m, Stfu)]


def quiescent_events(side: Side) -> list[Quiescent]:
    return [e for e in side.events if isinstance(e, Quiescent)]


def assert_warned_and_unchanged(pair: ChannelPair, side: Side, item: Received) -> None:
    """The peer broke a rule: a warning, a disconnection, the state as before, the channel kept."""
    before = side.core.state
    before_quiesce, before_phase = before.quiesce, before.phase
    out = pair.feed(side, item)
    assert out.disconnect
    assert [type(m) for m in out.messages] == [WarningMessage]
    assert not out.records
    assert side.core.state.quiesce == before_quiesce and side.core.phase is before_phase


def test_an_idle_channel_quiesces_at_once_and_the_initiator_is_the_sender_of_initiator_1() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    assert [m.initiator for m in stfus(pair.alice)] == [1]
    pair.pump()
    assert [m.initiator for m in stfus(pair.bob)] == [0]  # BOLT 2: a reply sets initiator 0
    assert is_quiescent(pair.alice.core.state) and is_quiescent(pair.bob.core.state)
    assert [e.initiator for e in quiescent_events(pair.alice)] == [True]
    assert [e.initiator for e in quiescent_events(pair.bob)] == [False]
    assert local_initiator(pair.alice.core.state) is True and local_initiator(pair.bob.core.state) is False


def test_no_stfu_unless_the_peer_offers_option_quiesce() -> None:
    pair = opened()
    with pytest.raises(LocalMisuse, match="option_quiesce"):
        pair.feed(pair.alice, Quiesce(peer_supports=False))
    assert pair.alice.core.state.quiesce is None and not stfus(pair.alice)


def test_never_twice() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    with pytest.raises(LocalMisuse, match="already"):
        pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.pump()
    with pytest.raises(LocalMisuse, match="already"):
        pair.feed(pair.bob, Quiesce(peer_supports=True))  # it answered: no second stfu
    assert len(stfus(pair.alice)) == 1 and len(stfus(pair.bob)) == 1


def test_only_in_normal_operation() -> None:
    pair = ChannelPair()
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    assert pair.alice.core.phase is Phase.AWAIT_READY
    with pytest.raises(LocalMisuse, match="phase await_ready"):
        pair.feed(pair.alice, Quiesce(peer_supports=True))
    stfu = Stfu(channel_id=pair.bob.core.state.channel_id, initiator=1)
    assert_warned_and_unchanged(pair, pair.bob, Received(stfu))


def test_the_initiator_waits_until_its_own_updates_are_in_both_commitments() -> None:
    pair = opened()
    pair.add(pair.alice, 5_000_000)
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    assert not stfus(pair.alice)  # BOLT 2: not while its HTLC addition is pending
    assert quiescence_status(pair.alice.core.state) == "requested"
    with pytest.raises(LocalMisuse, match="quiescing"):
        pair.add(pair.alice, 1_000_000)  # no new update once quiescence is asked
    with pytest.raises(LocalMisuse, match="quiescing"):
        pair.feed(pair.alice, ChangeFee(3000))
    pair.feed(pair.alice, SignCommitment())
    pair.pump()  # Bob's revoke_and_ack: Alice's add is in Bob's commitment, not yet in hers
    assert not stfus(pair.alice)
    pair.feed(pair.bob, SignCommitment())
    mark = len(pair.alice.outputs)
    pair.pump()
    # Bob's commitment_signed: Alice revokes, her add is in both: revoke_and_ack, then stfu in the same output
    sent = pair.sent_types(pair.alice, mark)
    assert sent[-2:] == ["RevokeAndAck", "Stfu"]
    assert not pair.alice.core.state.local_changes.all()
    assert is_quiescent(pair.alice.core.state) and is_quiescent(pair.bob.core.state)
    assert len(pair.alice.core.state.local_commit.spec.htlcs) == 1  # the HTLC stays, committed


def test_the_receiver_stops_updating_and_answers_once_its_updates_are_settled() -> None:
    pair = opened()
    htlc_id, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    pair.add(pair.bob, 2_000_000)  # Bob's add is on the wire when Alice's stfu leaves
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    assert [m.initiator for m in stfus(pair.alice)] == [1]
    pair.pump()
    bob = pair.bob.core.state
    assert bob.quiesce == QuiesceState(received=1) and not stfus(pair.bob)  # his add is pending: no answer yet
    assert quiescence_status(bob) == "stfu_received" and quiescence_status(pair.alice.core.state) == "stfu_sent"
    with pytest.raises(LocalMisuse, match="quiescing"):
        pair.add(pair.bob, 1_000_000)
    # A settle after the peer's stfu is not sent: kept for after the next channel_reestablish.
    out = pair.feed(pair.bob, FulfillHtlc(htlc_id, preimage))
    assert not out.messages and [type(u) for u in pair.bob.core.state.resend_updates] == [UpdateFulfillHtlc]
    with pytest.raises(LocalMisuse, match="already being settled"):
        pair.feed(pair.bob, FulfillHtlc(htlc_id, preimage))
    # commitment_signed and revoke_and_ack still flow: Bob's add gets committed, then he answers
    pair.commit(pair.bob)
    assert [m.initiator for m in stfus(pair.bob)] == [0]
    assert is_quiescent(pair.alice.core.state) and is_quiescent(pair.bob.core.state)
    # Quiescence ends with the connection: the kept fulfill goes out after channel_reestablish.
    pair.reconnect()
    assert pair.alice.core.state.quiesce is None and pair.bob.core.state.quiesce is None
    assert "UpdateFulfillHtlc" in pair.sent_types(pair.bob, len(pair.bob.outputs) - 3)
    pair.commit(pair.bob)
    assert not pair.bob.core.state.local_commit.spec.htlc(True, htlc_id)
    pair.add(pair.alice, 1_000_000)  # updates again


def test_both_initiate_at_once_and_the_funder_is_the_initiator() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.feed(pair.bob, Quiesce(peer_supports=True))
    pair.pump()
    assert [m.initiator for m in stfus(pair.alice)] == [1] and [m.initiator for m in stfus(pair.bob)] == [1]
    assert [e.initiator for e in quiescent_events(pair.alice)] == [True]  # Alice sent open_channel
    assert [e.initiator for e in quiescent_events(pair.bob)] == [False]


def test_a_second_stfu_is_a_warning() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.pump()
    assert_warned_and_unchanged(pair, pair.bob, Received(Stfu(channel_id=pair.bob.core.state.channel_id, initiator=1)))


def test_an_update_after_the_peers_stfu_is_a_warning() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.pump()
    add = UpdateAddHtlc(channel_id=pair.bob.core.state.channel_id, id=0, amount_msat=1_000_000,
                        payment_hash=bytes(32), cltv_expiry=500, onion_routing_packet=ONION)  # fmt: skip
    assert_warned_and_unchanged(pair, pair.bob, Received(add))
    shutdown = Shutdown(channel_id=pair.bob.core.state.channel_id, scriptpubkey=bytes([0, 20]) + bytes(20))
    assert_warned_and_unchanged(pair, pair.bob, Received(shutdown))


def test_updates_in_flight_when_our_stfu_left_are_taken() -> None:
    pair = opened()
    pair.add(pair.bob, 2_000_000)
    pair.wire.clear()  # Bob's add reaches Alice after she sent stfu
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    (add,) = [m for o in pair.bob.outputs for m in o.messages if isinstance(m, UpdateAddHtlc)]
    out = pair.feed(pair.alice, Received(add))
    assert not out.disconnect and len(pair.alice.core.state.remote_changes.proposed) == 1


def test_a_stfu_with_the_senders_updates_pending_is_a_warning() -> None:
    pair = opened()
    pair.add(pair.alice, 2_000_000)
    pair.pump()  # Bob holds Alice's add, uncommitted
    stfu = Stfu(channel_id=pair.bob.core.state.channel_id, initiator=1)
    assert_warned_and_unchanged(pair, pair.bob, Received(stfu))


def test_an_answer_to_no_stfu_is_a_warning() -> None:
    pair = opened()
    stfu = Stfu(channel_id=pair.bob.core.state.channel_id, initiator=0)
    assert_warned_and_unchanged(pair, pair.bob, Received(stfu))


def test_no_close_while_quiescing() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    with pytest.raises(LocalMisuse, match="quiescing"):
        pair.feed(pair.alice, CloseChannel(bytes([0, 20]) + bytes(20), 2500))


def test_a_shutdown_crossing_our_stfu_ends_the_connection() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.wire.clear()
    shutdown = Shutdown(channel_id=pair.alice.core.state.channel_id, scriptpubkey=bytes([0, 20]) + bytes(20))
    assert_warned_and_unchanged(pair, pair.alice, Received(shutdown))


def test_disconnection_ends_quiescence_both_ways() -> None:
    pair = opened()
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.pump()
    pair.feed(pair.alice, Disconnected())
    assert pair.alice.core.state.quiesce is None
    pair.feed(pair.bob, Disconnected())
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    pair.pump()
    pair.add(pair.alice, 1_000_000)
    pair.commit(pair.alice)
    pair.feed(pair.bob, Quiesce(peer_supports=True))  # and it can start again
    pair.pump()
    assert is_quiescent(pair.alice.core.state) and local_initiator(pair.bob.core.state) is True


def test_replay_and_snapshot_rebuild_the_quiescent_state() -> None:
    pair = opened()
    pair.add(pair.alice, 2_000_000)
    pair.feed(pair.alice, Quiesce(peer_supports=True))
    pair.commit(pair.alice)
    assert is_quiescent(pair.alice.core.state)
    replayed = restore(make_secrets("alice"), pair.alice.records)
    assert replayed.state == pair.alice.core.state
    snap = restore_snapshot(make_secrets("alice"), encode_snapshot(pair.alice.core))
    assert snap.state == pair.alice.core.state
    out = replayed.receive(Disconnected(), 10_000.0)  # a restart feeds Disconnected first
    assert replayed.state.quiesce is None and out.records


def test_asked_but_not_yet_sent_then_the_peers_stfu_comes_first_we_answer_with_initiator_0() -> None:
    pair = opened()
    pair.add(pair.alice, 2_000_000)
    pair.pump()
    pair.feed(pair.alice, Quiesce(peer_supports=True))  # her add is pending: her stfu waits
    pair.feed(pair.bob, Quiesce(peer_supports=True))  # Bob has nothing of his pending: his goes at once
    assert [m.initiator for m in stfus(pair.bob)] == [1] and not stfus(pair.alice)
    pair.pump()
    pair.commit(pair.alice)
    assert [m.initiator for m in stfus(pair.alice)] == [0]  # a reply, though she asked too
    assert local_initiator(pair.bob.core.state) is True and local_initiator(pair.alice.core.state) is False


def test_a_shutdown_before_our_stfu_left_cancels_the_wish() -> None:
    pair = ChannelPair(push_msat=200_000_000, alice_config=ChannelConfig(close_script=bytes([0, 20]) + bytes([7]) * 20))
    pair.open()
    pair.add(pair.alice, 2_000_000)
    pair.feed(pair.alice, Quiesce(peer_supports=True))  # waiting for her add to settle
    pair.pump()
    shutdown = Shutdown(channel_id=pair.alice.core.state.channel_id, scriptpubkey=bytes([0, 20]) + bytes(20))
    out = pair.feed(pair.alice, Received(shutdown))
    assert not out.disconnect and pair.alice.core.state.quiesce is None, out.messages
    assert pair.alice.core.phase is Phase.SHUTDOWN
    pair.commit(pair.alice)
    assert not stfus(pair.alice)
