"""channel_reestablish: retransmission per BOLT 2 and data loss protection."""

from __future__ import annotations

import pytest
from test_channels_pair import (
    FUNDING_SAT,
    ChannelPair,
    make_secrets,
    verify_commitments,
)

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    AddHtlc,
    ChannelFailed,
    Disconnected,
    FulfillHtlc,
    FundingDepth,
    HtlcDropped,
    Received,
    Reconnected,
    SignCommitment,
    WeAreBehind,
)
from lnpmsg.channels.messages import ChannelReestablish, UpdateAddHtlc
from lnpmsg.channels.records import restore
from lnpmsg.channels.state import Phase
from lnpmsg.wire import WarningMessage


def opened(**kwargs: object) -> ChannelPair:
    pair = ChannelPair(push_msat=200_000_000, **kwargs)  # type: ignore[arg-type]
    pair.open()
    return pair


def test_quiet_reconnection_retransmits_nothing_and_the_channel_goes_on() -> None:
    pair = opened()
    mark = len(pair.alice.outputs)
    pair.reconnect()
    # Both still at commitment 0: channel_ready is sent again (BOLT 2), and ignored.
    assert pair.sent_types(pair.alice, mark) == ["ChannelReestablish", "ChannelReady"]
    htlc, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    mark = len(pair.alice.outputs)
    pair.reconnect()
    assert pair.sent_types(pair.alice, mark) == ["ChannelReestablish"]
    pair.fulfill(pair.bob, htlc, preimage)
    assert pair.balances() == (FUNDING_SAT * 1000 - 205_000_000, 205_000_000)
    verify_commitments(pair)


def test_uncommitted_updates_are_forgotten_on_disconnection() -> None:
    pair = opened()
    htlc, _ = pair.add(pair.alice, 5_000_000)
    pair.pump()
    out = pair.feed(pair.alice, Disconnected())
    assert HtlcDropped(htlc) in out.events
    pair.feed(pair.bob, Disconnected())
    assert not pair.alice.core.state.local_changes.all() and not pair.bob.core.state.remote_changes.all()
    assert pair.alice.core.state.local_next_htlc_id == 0 == pair.bob.core.state.remote_next_htlc_id
    with pytest.raises(LocalMisuse):
        pair.feed(pair.alice, AddHtlc(1_000_000, bytes(32), 500, bytes(1366)))
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    pair.pump()
    again, _ = pair.add(pair.alice, 6_000_000)
    assert again == 0  # the id is reused
    pair.commit(pair.alice)
    verify_commitments(pair)


def test_a_lost_commitment_signed_is_sent_again_with_its_updates() -> None:
    pair = opened()
    pair.add(pair.alice, 7_000_000)
    pair.pump()
    pair.feed(pair.alice, SignCommitment())
    pair.wire.clear()  # the commitment_signed never arrives
    mark = len(pair.alice.outputs)
    pair.reconnect()
    sent = ["ChannelReestablish", "ChannelReady", "UpdateAddHtlc", "CommitmentSigned"]
    assert pair.sent_types(pair.alice, mark) == sent
    assert pair.has_changes(pair.bob)  # Bob has Alice's add to sign back
    pair.commit(pair.bob)
    assert pair.balances()[0] == FUNDING_SAT * 1000 - 207_000_000
    assert len(pair.bob.core.state.local_commit.spec.htlcs) == 1  # type: ignore[union-attr]
    verify_commitments(pair)


def test_a_lost_revoke_and_ack_is_sent_again() -> None:
    pair = opened()
    pair.add(pair.alice, 7_000_000)
    pair.pump()
    pair.feed(pair.alice, SignCommitment())
    target, msg = pair.wire.popleft()
    pair.feed(target, Received(msg))  # Bob gets it and answers...
    pair.wire.clear()  # ...but the revoke_and_ack is lost
    mark = len(pair.bob.outputs)
    pair.reconnect()
    assert pair.sent_types(pair.bob, mark) == ["ChannelReestablish", "RevokeAndAck"]
    assert pair.alice.core.state.remote_next_commit is None
    pair.feed(pair.bob, SignCommitment())
    pair.pump()
    verify_commitments(pair)


def test_revoke_and_commit_both_lost_keep_their_order() -> None:
    pair = opened()
    pair.add(pair.alice, 7_000_000)
    pair.pump()
    pair.feed(pair.alice, SignCommitment())
    pair.pump()  # Bob revokes; Bob now signs for Alice's add
    pair.add(pair.alice, 3_000_000)
    pair.pump()
    pair.feed(pair.alice, SignCommitment())
    target, msg = pair.wire.popleft()
    pair.feed(target, Received(msg))  # Bob: revoke_and_ack lost below
    pair.feed(pair.bob, SignCommitment())  # then Bob signs: commitment_signed also lost
    pair.wire.clear()
    mark = len(pair.bob.outputs)
    pair.reconnect()
    assert pair.sent_types(pair.bob, mark) == ["ChannelReestablish", "RevokeAndAck", "CommitmentSigned"]
    while pair.has_changes(pair.alice) or pair.has_changes(pair.bob):
        for side in (pair.alice, pair.bob):
            if pair.has_changes(side) and side.core.state.remote_next_point is not None:
                pair.feed(side, SignCommitment())
                pair.pump()
    verify_commitments(pair)
    assert len(pair.alice.core.state.local_commit.spec.htlcs) == 2  # type: ignore[union-attr]


def test_channel_ready_is_sent_again_when_lost() -> None:
    pair = ChannelPair()
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    pair.feed(pair.alice, FundingDepth(3, 1))
    pair.wire.clear()  # Alice's channel_ready is lost
    pair.feed(pair.bob, FundingDepth(3, 1))
    pair.pump()
    assert pair.bob.core.phase is Phase.AWAIT_READY
    mark = len(pair.alice.outputs)
    pair.reconnect()
    assert pair.sent_types(pair.alice, mark) == ["ChannelReestablish", "ChannelReady"]
    assert pair.alice.core.phase is Phase.NORMAL and pair.bob.core.phase is Phase.NORMAL


def test_a_peer_that_proves_we_lost_state_stops_us_broadcasting() -> None:
    pair = opened()
    htlc, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    old_records = list(pair.bob.records)
    pair.fulfill(pair.bob, htlc, preimage)
    pair.add(pair.alice, 1_000_000)
    pair.commit(pair.alice)
    # Bob comes back from an old backup.
    pair.bob.core = restore(make_secrets("bob"), old_records)
    pair.bob.core.receive(Disconnected(), pair.now)  # the old state still thought it was connected
    pair.wire.clear()
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    pair.pump()
    assert any(isinstance(e, WeAreBehind) for e in pair.bob.events)
    (failed,) = [e for e in pair.bob.events if isinstance(e, ChannelFailed)]
    assert failed.commitment_tx is None and pair.bob.core.latest_commitment_tx() is None
    # Alice fails the channel and broadcasts her own (latest) commitment.
    (alice_failed,) = [e for e in pair.alice.events if isinstance(e, ChannelFailed)]
    assert alice_failed.commitment_tx == pair.alice.core.latest_commitment_tx() is not None


def test_a_wrong_secret_fails_the_channel() -> None:
    pair = opened()
    pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    pair.wire.clear()
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.alice, Reconnected())
    pair.wire.clear()
    real = pair.bob.core.state
    lie = ChannelReestablish(
        channel_id=real.channel_id, next_commitment_number=real.local_commit.number + 1,  # type: ignore[union-attr]
        next_revocation_number=real.remote_commit.number, your_last_per_commitment_secret=b"\x07" * 32,  # type: ignore[union-attr]
        my_current_per_commitment_point=pair.bob.core.secrets.commitment_point(real.local_commit.number),  # type: ignore[union-attr]
    )  # fmt: skip
    out = pair.feed(pair.alice, Received(lie))
    assert pair.alice.core.phase is Phase.FAILED
    assert any(isinstance(e, ChannelFailed) and e.commitment_tx for e in out.events)


def test_messages_before_reestablish_get_a_warning() -> None:
    pair = opened()
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.alice, Reconnected())
    add = UpdateAddHtlc(channel_id=pair.alice.core.state.channel_id, id=0, amount_msat=1000, payment_hash=bytes(32),
                        cltv_expiry=1, onion_routing_packet=bytes(1366))  # fmt: skip
    out = pair.feed(pair.alice, Received(add))
    assert isinstance(out.messages[0], WarningMessage) and pair.alice.core.phase is Phase.NORMAL
    # a message out of order around a reconnection keeps the connection: closing it would only
    # bring the same race back with the next reconnection
    assert not out.disconnect


def test_disconnection_while_opening_forgets_the_channel() -> None:
    pair = ChannelPair()
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    out = pair.feed(pair.alice, Disconnected())
    assert pair.alice.core.phase is Phase.CLOSED
    assert [e.commitment_tx for e in out.events if isinstance(e, ChannelFailed)] == [None]
    with pytest.raises(LocalMisuse):
        pair.feed(pair.alice, FulfillHtlc(0, bytes(32)))


def test_a_fulfill_lost_with_the_connection_is_sent_again() -> None:
    pair = opened()
    htlc, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    pair.feed(pair.bob, FulfillHtlc(htlc, preimage))
    mark = len(pair.bob.outputs)
    pair.reconnect()  # the update_fulfill_htlc was in flight: lost
    assert pair.sent_types(pair.bob, mark) == ["ChannelReestablish", "UpdateFulfillHtlc"]
    pair.commit(pair.bob)
    assert pair.balances() == (FUNDING_SAT * 1000 - 205_000_000, 205_000_000)
    assert pair.bob.core.state.resend_updates == ()
