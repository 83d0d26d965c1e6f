"""Crash at every persistence point: one side of a scripted session (open,
HTLCs both ways including a trimmed one, settles, a fee change, a payment
after recovery) dies right after its k-th record is on disk and before the
messages of that output leave; it comes back from its log, both reestablish,
and the session goes on. Afterwards both sides agree on both commitments, the
commitments verify, and no side's latest commitment is one it has revoked."""

from __future__ import annotations

import pytest
from test_channels_pair import ChannelPair, Side, make_secrets, verify_commitments

from lnpmsg.channels.errors import LocalMisuse, ShachainError
from lnpmsg.channels.inputs import (
    BroadcastFunding,
    ChangeFee,
    Disconnected,
    FailHtlc,
    FulfillHtlc,
    HtlcDropped,
    HtlcIncoming,
    Input,
    Output,
    Reconnected,
    SignCommitment,
)
from lnpmsg.channels.records import restore
from lnpmsg.channels.shachain import FIRST_INDEX, ShachainStore
from lnpmsg.channels.state import Phase


class CrashingPair(ChannelPair):
    """A pair whose ``victim`` crashes once, when its ``crash_at``-th record has been written."""

    def __init__(self, victim: str, crash_at: int) -> None:
        super().__init__(anchors=True, push_msat=200_000_000)
        self.victim_name = victim
        self.crash_at = crash_at
        self.crashed = False

    def feed(self, side: Side, item: Input) -> Output:
        out = super().feed(side, item)
        if self.crashed or side is not getattr(self, self.victim_name) or len(side.records) < self.crash_at:
            return out
        self.crashed = True
        # What was sent in this output never left; what was in flight is lost with the connection.
        self.wire.clear()
        side.core = restore(make_secrets(self.victim_name), side.records[: self.crash_at])
        if side.core.state.connected and side.core.phase is not Phase.NEW:
            super().feed(side, Disconnected())  # the restarted node starts disconnected
        super().feed(self.other(side), Disconnected())
        if _reestablishable(side) and _reestablishable(self.other(side)):
            super().feed(self.alice, Reconnected())
            super().feed(self.bob, Reconnected())
            self.pump()
        return out

    def sync(self) -> None:
        """Sign until both commitments hold every update."""
        self.pump()
        for _ in range(10):
            moved = False
            for side in (self.alice, self.bob):
                state = side.core.state
                if self.has_changes(side) and state.remote_next_point is not None and not state.awaiting_reestablish:
                    try_feed(self, side, SignCommitment())
                    self.pump()
                    moved = True
            if not moved:
                return


def _reestablishable(side: Side) -> bool:
    return side.core.phase in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING)


def try_feed(pair: ChannelPair, side: Side, item: Input) -> None:
    """A command that a crash may have made impossible (the HTLC it names was forgotten) is skipped."""
    try:
        pair.feed(side, item)
    except LocalMisuse:
        pass


def incoming(side: Side) -> list[int]:
    return [e.add.id for e in side.events if isinstance(e, HtlcIncoming)]


def open_channel(pair: CrashingPair) -> bool:
    """Open as ChannelPair.open does, step by step; False when a crash ended the opening."""
    from lnpmsg.channels.inputs import FundingNeeded

    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    if not any(isinstance(e, FundingNeeded) for e in pair.alice.events):
        return False
    try:
        pair.open_rest_unchecked()
    except LocalMisuse:
        return False  # Alice came back in a state that no longer waits for the funding
    if not any(isinstance(e, BroadcastFunding) for e in pair.alice.events):
        return False
    pair.confirm()
    return True


def run(pair: CrashingPair) -> bool:
    """The scripted session; False when the crash fell inside the opening."""
    if not open_channel(pair):
        return False
    a1, pre_a1 = pair.add(pair.alice, 30_000_000)
    a2, _ = pair.add(pair.alice, 300_000)  # trimmed
    b1, pre_b1 = pair.add(pair.bob, 10_000_000)
    pair.sync()
    if a1 in incoming(pair.bob):
        try_feed(pair, pair.bob, FulfillHtlc(a1, pre_a1))
    if a2 in incoming(pair.bob):
        try_feed(pair, pair.bob, FailHtlc(a2, b"no"))
    if b1 in incoming(pair.alice):
        try_feed(pair, pair.alice, FulfillHtlc(b1, pre_b1))
    pair.sync()
    try_feed(pair, pair.alice, ChangeFee(3000))
    pair.sync()
    return True


def check_agreement(pair: CrashingPair) -> None:
    alice, bob = pair.alice.core.state, pair.bob.core.state
    assert alice.local_commit is not None and bob.local_commit is not None
    assert alice.remote_commit is not None and bob.remote_commit is not None
    assert alice.local_commit.spec == bob.remote_commit.spec  # both from the owner's view
    assert bob.local_commit.spec == alice.remote_commit.spec
    assert alice.local_commit.number == bob.remote_commit.number
    assert bob.local_commit.number == alice.remote_commit.number
    verify_commitments(pair)
    for side, other in ((alice, bob), (bob, alice)):
        with pytest.raises(ShachainError):  # the peer cannot know the secret of our current commitment
            ShachainStore.restore(list(other.remote_secrets)).lookup(FIRST_INDEX - side.local_commit.number)


def uncrashed(victim: str) -> tuple[int, tuple[int, int]]:
    """The session's record count for ``victim`` and its final balances, without a crash."""
    pair = CrashingPair(victim, crash_at=10**9)
    assert run(pair)
    return len(getattr(pair, victim).records), pair.balances()


def retransmitted(pair: CrashingPair) -> bool:
    kinds = {"CommitmentSigned", "RevokeAndAck", "UpdateAddHtlc", "UpdateFulfillHtlc"}
    for side in (pair.alice, pair.bob):
        sent = pair.sent_types(side)
        if "ChannelReestablish" in sent:
            after = sent[sent.index("ChannelReestablish") + 1 :]
            if kinds & set(after[:3]):
                return True
    return False


@pytest.mark.parametrize("victim", ["alice", "bob"])
def test_crash_at_every_persistence_point(victim: str) -> None:
    total, expected = uncrashed(victim)
    assert total > 15
    exact = resent = 0
    for k in range(total + 1):
        pair = CrashingPair(victim, crash_at=k)
        if not run(pair):
            # The crash fell inside the opening: the funder forgot the channel and never funded it.
            assert pair.crashed and pair.alice.core.phase in (Phase.NEW, Phase.CLOSED), k
            assert not any(isinstance(e, BroadcastFunding) for e in pair.alice.events), k
            continue
        assert pair.crashed, k
        check_agreement(pair)
        dropped = any(isinstance(e, HtlcDropped) for e in pair.alice.events + pair.bob.events)
        if not dropped:
            # Nothing the script did was forgotten: the balances are exactly those of the uncrashed run.
            assert pair.balances() == expected, k
            exact += 1
        resent += retransmitted(pair)
        # The channel still works after the crash: one more payment.
        htlc, preimage = pair.add(pair.alice, 1_000_000)
        pair.sync()
        pair.feed(pair.bob, FulfillHtlc(htlc, preimage))
        pair.sync()
        check_agreement(pair)
    assert exact > total // 2 and resent > 3, (exact, resent)
