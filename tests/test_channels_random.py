"""Random interleavings of updates, signatures, message delivery and reconnections
between two cores (hypothesis): whatever the order, once both sides have signed everything
their commitments agree, every commitment and HTLC transaction verifies, and
no millisatoshi is created or lost."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_channels_crash import check_agreement
from test_channels_pair import FUNDING_SAT, ChannelPair, Side

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    ChangeFee,
    FailHtlc,
    FulfillHtlc,
    HtlcIncoming,
    Received,
    SignCommitment,
)
from lnpmsg.channels.state import Phase

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "settle", "fail", "sign", "deliver", "pump", "fee", "reconnect"]),
        st.booleans(),  # Alice (True) or Bob
        st.integers(min_value=1, max_value=40_000_000),
    ),
    min_size=1,
    max_size=30,
)


def command(pair: ChannelPair, side: Side, item: object) -> None:
    try:
        pair.feed(side, item)  # type: ignore[arg-type]
    except LocalMisuse:
        pass  # not possible right now (nothing to sign, waiting for a revocation, ...): skipped


def settle(pair: ChannelPair, side: Side, fail: bool) -> None:
    """Settle the oldest incoming HTLC this side may settle."""
    for event in side.events:
        if isinstance(event, HtlcIncoming):
            item = (FailHtlc(event.add.id, b"random") if fail
                    else FulfillHtlc(event.add.id, pair.preimages[event.add.payment_hash]))  # fmt: skip
            try:
                pair.feed(side, item)
                return
            except LocalMisuse:
                continue


def total_msat(pair: ChannelPair) -> int:
    spec = pair.alice.core.state.local_commit.spec  # type: ignore[union-attr]
    fee_free = spec.to_local_msat + spec.to_remote_msat + sum(h.add.amount_msat for h in spec.htlcs)
    return fee_free


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_interleavings_stay_consistent(ops: list[tuple[str, bool, int]]) -> None:
    pair = ChannelPair(push_msat=400_000_000)
    pair.open()
    for op, alice, amount in ops:
        side = pair.alice if alice else pair.bob
        if op == "add":
            try:
                pair.add(side, amount)
            except LocalMisuse:
                pass
        elif op in ("settle", "fail"):
            settle(pair, side, fail=op == "fail")
        elif op == "sign":
            command(pair, side, SignCommitment())
        elif op == "fee":
            command(pair, pair.alice, ChangeFee(253 + amount % 20_000))
        elif op == "pump":
            pair.pump()
        elif op == "reconnect":
            pair.reconnect()  # what is in flight is lost; channel_reestablish sorts it out
        elif pair.wire:  # deliver one message in flight
            target, msg = pair.wire.popleft()
            pair.feed(target, Received(msg))
        assert pair.alice.core.phase is Phase.NORMAL and pair.bob.core.phase is Phase.NORMAL
    sync(pair)
    check_agreement(pair)
    assert total_msat(pair) == FUNDING_SAT * 1000
    # Then every HTLC left is settled (fulfilled or failed by its id's parity): nothing stays locked.
    for side in (pair.alice, pair.bob):
        for event in side.events:
            if isinstance(event, HtlcIncoming):
                add = event.add
                item = FailHtlc(add.id, b"") if add.id % 2 else FulfillHtlc(add.id, pair.preimages[add.payment_hash])
                command(pair, side, item)
    sync(pair)
    check_agreement(pair)
    assert not pair.alice.core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
    assert total_msat(pair) == FUNDING_SAT * 1000


def sync(pair: ChannelPair) -> None:
    pair.pump()
    for _ in range(8):
        for side in (pair.alice, pair.bob):
            if pair.has_changes(side) and side.core.state.remote_next_point is not None:
                pair.feed(side, SignCommitment())
                pair.pump()