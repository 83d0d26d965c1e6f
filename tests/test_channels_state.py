"""The channel core: two cores pumped against each other in memory.

Open (both commitment variants), HTLCs both ways including trimmed ones,
fulfil and fail, update_fee; balances after each step; every commitment
transaction verified by the consensus engine (py-bitcoinkernel) spending the
funding output, and every HTLC signature checked against its transaction.
"""

from __future__ import annotations

import pytest
from test_channels_pair import FUNDING_SAT, ONION, ChannelPair, verify_commitments

from lnpmsg.channels.commitments import build
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    AddHtlc,
    ChangeFee,
    ChannelFailed,
    ChannelReadyEvent,
    FailHtlc,
    FailMalformedHtlc,
    FulfillHtlc,
    HtlcIncoming,
    HtlcSettled,
    Received,
    SignCommitment,
)
from lnpmsg.channels.messages import (
    AcceptChannel,
    ChannelReady,
    FundingCreated,
    FundingSigned,
    OpenChannel,
)
from lnpmsg.channels.state import Phase
from lnpmsg.channels.updates import commit_fee_sat
from lnpmsg.wire import Error, Features


@pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])
def test_open_fund_and_ready(anchors: bool) -> None:
    pair = ChannelPair(anchors=anchors, push_msat=100_000_000)
    pair.open()
    alice, bob = pair.alice.core.state, pair.bob.core.state
    assert alice.channel_id == bob.channel_id
    assert alice.funding_outpoint == bob.funding_outpoint
    assert alice.funding_outpoint.vout == 1  # type: ignore[union-attr]  # found past the OP_RETURN
    assert alice.anchors is anchors and bob.anchors is anchors
    assert pair.balances() == (FUNDING_SAT * 1000 - 100_000_000, 100_000_000)
    assert any(isinstance(e, ChannelReadyEvent) for e in pair.bob.events)
    sent = [type(m) for o in pair.alice.outputs for m in o.messages]
    assert sent == [OpenChannel, FundingCreated, ChannelReady]
    sent = [type(m) for o in pair.bob.outputs for m in o.messages]
    assert sent == [AcceptChannel, FundingSigned, ChannelReady]
    verify_commitments(pair)


@pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])
def test_channel_type_is_always_sent_and_echoed(anchors: bool) -> None:
    # the pair's init features have no option_channel_type bit (44/45): BOLT 2 now has the
    # opener set channel_type anyway, and the accepter echo it
    pair = ChannelPair(anchors=anchors)
    assert not pair.features & (3 << 44)
    pair.open()
    open_msg = pair.alice.outputs[0].messages[0]
    expected = Features.from_bits([12, 22] if anchors else [12]).to_bytes()
    assert isinstance(open_msg, OpenChannel) and open_msg.tlvs["channel_type"] == expected
    accept = pair.bob.outputs[0].messages[0]
    assert isinstance(accept, AcceptChannel) and accept.tlvs["channel_type"] == expected


@pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])
def test_htlcs_both_ways_with_trimmed_ones(anchors: bool) -> None:
    pair = ChannelPair(anchors=anchors, push_msat=300_000_000)
    pair.open()
    a0, b0 = pair.balances()
    big_a, pre_big_a = pair.add(pair.alice, 50_000_000)
    dust_a, _ = pair.add(pair.alice, 400_000)  # below the dust limit: trimmed
    big_b, pre_big_b = pair.add(pair.bob, 20_000_000)
    pair.pump()
    pair.commit(pair.alice)
    for side in (pair.alice, pair.bob):
        assert not side.core.state.local_changes.all() and not side.core.state.remote_changes.all()
    assert pair.balances() == (a0 - 50_400_000, b0 - 20_000_000)
    spec = pair.alice.core.state.local_commit.spec  # type: ignore[union-attr]
    assert len(spec.htlcs) == 3
    built = build(pair.alice.core.keys(), spec, pair.alice.core.state.local_commit.number,  # type: ignore[union-attr]
                  pair.alice.core.secrets.commitment_point(pair.alice.core.state.local_commit.number), local=True)  # type: ignore[union-attr]  # fmt: skip
    assert len(built.trimmed) >= 1 and len(built.second_stage) == 2
    verify_commitments(pair)
    incoming_bob = [e.add.id for e in pair.bob.events if isinstance(e, HtlcIncoming)]
    assert sorted(incoming_bob) == [big_a, dust_a]
    assert [e.add.id for e in pair.alice.events if isinstance(e, HtlcIncoming)] == [big_b]

    # Bob settles Alice's big HTLC and fails the dust one; Alice fulfils Bob's.
    pair.feed(pair.bob, FulfillHtlc(big_a, pre_big_a))
    pair.feed(pair.bob, FailHtlc(dust_a, b"no route"))
    pair.feed(pair.alice, FulfillHtlc(big_b, pre_big_b))
    pair.pump()
    pair.commit(pair.bob)
    assert pair.balances() == (a0 - 50_000_000 + 20_000_000, b0 + 50_000_000 - 20_000_000)
    settled = {e.htlc_id: e for e in pair.alice.events if isinstance(e, HtlcSettled)}
    assert settled[big_a].preimage == pre_big_a and settled[dust_a].reason == b"no route"
    assert not pair.alice.core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
    verify_commitments(pair)
    assert pair.alice.core.state.local_commit.number == pair.bob.core.state.remote_commit.number  # type: ignore[union-attr]


def test_update_fee_changes_the_commitment_fee() -> None:
    pair = ChannelPair(push_msat=100_000_000)
    pair.open()
    before = pair.alice.core.state.local_commit.spec  # type: ignore[union-attr]
    pair.feed(pair.alice, ChangeFee(5000))
    pair.commit(pair.alice)
    after = pair.alice.core.state.local_commit.spec  # type: ignore[union-attr]
    assert after.feerate_per_kw == 5000 == pair.bob.core.state.local_commit.spec.feerate_per_kw  # type: ignore[union-attr]
    assert commit_fee_sat(after, 546, anchors=False) > commit_fee_sat(before, 546, anchors=False)
    verify_commitments(pair)
    with pytest.raises(LocalMisuse):
        pair.feed(pair.bob, ChangeFee(3000))  # only the funder


def test_fail_malformed_needs_badonion() -> None:
    pair = ChannelPair(push_msat=100_000_000)
    pair.open()
    htlc_id, _ = pair.add(pair.alice, 10_000_000)
    pair.pump()
    pair.commit(pair.alice)
    with pytest.raises(LocalMisuse):
        pair.feed(pair.bob, FailMalformedHtlc(htlc_id, bytes(32), 0x4000))
    pair.feed(pair.bob, FailMalformedHtlc(htlc_id, bytes(32), 0x8000 | 5))
    pair.pump()
    pair.commit(pair.bob)
    settled = [e for e in pair.alice.events if isinstance(e, HtlcSettled)]
    assert settled[-1].failure_code == 0x8005
    assert pair.balances()[0] == FUNDING_SAT * 1000 - 100_000_000


def test_local_misuse_changes_nothing() -> None:
    pair = ChannelPair(push_msat=0)
    pair.open()
    state = pair.bob.core.state
    with pytest.raises(LocalMisuse):
        pair.feed(pair.bob, AddHtlc(1_000_000, bytes(32), 500, ONION))  # Bob has nothing to send
    with pytest.raises(LocalMisuse):
        pair.feed(pair.alice, SignCommitment())  # nothing to sign
    assert pair.bob.core.state == state


def test_an_error_from_the_peer_fails_the_channel_with_our_commitment() -> None:
    pair = ChannelPair(push_msat=100_000_000)
    pair.open()
    out = pair.feed(pair.bob, Received(Error(channel_id=pair.bob.core.state.channel_id, data=b"bye")))
    (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert failed.by_peer and failed.commitment_tx == pair.bob.core.latest_commitment_tx()
    assert pair.bob.core.phase is Phase.FAILED


def test_an_offered_htlc_past_its_expiry_fails_the_channel() -> None:
    from lnpmsg.channels.inputs import BlockHeight

    pair = ChannelPair(push_msat=100_000_000)
    pair.open()
    pair.add(pair.alice, 10_000_000, cltv=600)
    pair.commit(pair.alice)
    assert pair.feed(pair.alice, BlockHeight(600)).records == ()  # nothing due yet: no record either
    out = pair.feed(pair.alice, BlockHeight(601))
    (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert "expired" in failed.reason and failed.commitment_tx == pair.alice.core.latest_commitment_tx()
    assert pair.alice.core.phase is Phase.FAILED


def test_a_fulfilled_htlc_not_removed_in_time_fails_the_channel() -> None:
    from lnpmsg.channels.inputs import BlockHeight, FulfillHtlc

    pair = ChannelPair(push_msat=100_000_000)
    pair.open()
    htlc, preimage = pair.add(pair.alice, 10_000_000, cltv=600)
    pair.commit(pair.alice)
    pair.feed(pair.bob, FulfillHtlc(htlc, preimage))
    pair.wire.clear()  # Alice never acknowledges
    assert pair.bob.core.phase is Phase.NORMAL
    pair.feed(pair.bob, BlockHeight(592))
    assert pair.bob.core.phase is Phase.NORMAL
    pair.feed(pair.bob, BlockHeight(593))
    assert pair.bob.core.phase is Phase.FAILED


def test_the_fundee_forgets_a_funding_that_never_confirms() -> None:
    from lnpmsg.channels.inputs import BlockHeight

    pair = ChannelPair(push_msat=0)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    pair.feed(pair.bob, BlockHeight(1000))
    pair.feed(pair.bob, BlockHeight(3015))
    assert pair.bob.core.phase is Phase.AWAIT_READY
    out = pair.feed(pair.bob, BlockHeight(3016))
    assert pair.bob.core.phase is Phase.CLOSED
    assert [e.commitment_tx for e in out.events if isinstance(e, ChannelFailed)] == [None]
    pair.feed(pair.alice, BlockHeight(5000))  # the funder keeps its channel: its funds are in it
    assert pair.alice.core.phase is Phase.AWAIT_READY



def test_the_funder_keeps_a_fee_spike_buffer() -> None:
    from lnpmsg.channels.updates import funder_charge_sat

    pair = ChannelPair(push_msat=900_000_000, feerate=10_000)
    pair.open()
    spec = pair.alice.core.state.local_commit.spec  # type: ignore[union-attr]
    reserve = pair.bob.core.state.local_reserve_ask_sat
    fee_now = funder_charge_sat(spec, 546, anchors=False)
    # Affordable at today's feerate, but not at twice it with one more HTLC.
    spare_msat = spec.to_local_msat - (reserve + fee_now + 4 * 172 * 10) * 1000
    with pytest.raises(LocalMisuse, match="fee spike"):
        pair.feed(pair.alice, AddHtlc(spare_msat, bytes(32), 500, ONION))
    pair.add(pair.alice, spare_msat // 4)  # with room to spare it goes
