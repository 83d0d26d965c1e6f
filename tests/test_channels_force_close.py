"""ForceClose in the channel core, and the monitor updates a channel's state gives (sans-IO)."""

from __future__ import annotations

import pytest
from test_channels_pair import ChannelPair, make_secrets

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    AddHtlc,
    ChannelFailed,
    Disconnected,
    ForceClose,
    FulfillHtlc,
    Reconnected,
    SignCommitment,
)
from lnpmsg.channels.monitor import (
    ChannelMonitor,
    DataLossDetected,
    LocalCommitment,
    MonitorError,
    MonitorUpdate,
    PaymentPreimage,
    RemoteCommitment,
    RemoteRevocation,
)
from lnpmsg.channels.monitor.feed import channel_setup, monitor_secrets, updates_for
from lnpmsg.channels.records import restore
from lnpmsg.channels.state import Phase


def opened(**kwargs: object) -> ChannelPair:
    pair = ChannelPair(push_msat=200_000_000, **kwargs)  # type: ignore[arg-type]
    pair.open()
    pair.confirm()
    return pair


def test_force_close_stops_the_channel_and_hands_out_our_latest_commitment() -> None:
    pair = opened()
    htlc, _ = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    out = pair.feed(pair.alice, ForceClose())
    (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert failed.commitment_tx == pair.alice.core.latest_commitment_tx() is not None and not failed.by_peer
    assert out.messages == ()  # the peer learns from the chain, it does not race us with its commitment
    assert out.records  # it is persisted: a restart keeps the channel stopped
    assert pair.alice.core.phase is Phase.FAILED
    with pytest.raises(LocalMisuse):
        pair.alice.core.receive(AddHtlc(1_000_000, bytes(32), 500, bytes(1366)), pair.now)
    with pytest.raises(LocalMisuse):
        pair.alice.core.receive(SignCommitment(), pair.now)
    replayed = restore(make_secrets("alice"), pair.alice.records)
    assert replayed.phase is Phase.FAILED and replayed.state == pair.alice.core.state
    del htlc


def test_force_close_is_refused_after_the_peer_proved_we_lost_state() -> None:
    pair = opened()
    htlc, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    old_records = list(pair.bob.records)
    pair.fulfill(pair.bob, htlc, preimage)
    pair.add(pair.alice, 1_000_000)
    pair.commit(pair.alice)
    pair.bob.core = restore(make_secrets("bob"), old_records)
    pair.bob.core.receive(Disconnected(), pair.now)
    pair.wire.clear()
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    pair.pump()
    assert pair.bob.core.state.behind
    with pytest.raises(LocalMisuse, match="lost channel state"):
        pair.bob.core.receive(ForceClose(), pair.now)
    # the monitor learns it: it never broadcasts our commitment, and knows the peer's latest point
    monitor = ChannelMonitor(monitor_secrets(pair.bob.core.secrets))
    setup = channel_setup(pair.bob.core, b"\x00\x14" + bytes(20))
    assert setup is not None
    monitor.apply(MonitorUpdate(0, setup))
    records = updates_for(pair.bob.core, monitor)
    (lost,) = [r for r in records if isinstance(r, DataLossDetected)]
    alice = pair.alice.core.state.local_commit
    assert alice is not None and lost.remote_commitment_number == alice.number
    assert lost.remote_per_commitment_point == pair.alice.core.secrets.commitment_point(alice.number)
    for record in records:
        monitor.apply(MonitorUpdate(monitor.next_update_id, record))
    with pytest.raises(MonitorError):
        monitor.force_close()


def test_the_feed_gives_the_monitor_every_commitment_revocation_and_preimage_once() -> None:
    pair = opened()
    core = pair.bob.core
    monitor = ChannelMonitor(monitor_secrets(core.secrets))
    setup = channel_setup(core, b"\x00\x14" + bytes(20))
    assert setup is not None
    applied: list[object] = [setup]
    monitor.apply(MonitorUpdate(0, setup))

    def feed() -> list[object]:
        records = updates_for(core, monitor)
        for record in records:
            monitor.apply(MonitorUpdate(monitor.next_update_id, record))
        applied.extend(records)
        assert updates_for(core, monitor) == []  # idempotent: nothing twice
        return records

    first = feed()
    assert {type(r) for r in first} == {LocalCommitment, RemoteCommitment}
    htlc, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    feed()
    pair.feed(pair.bob, FulfillHtlc(htlc, preimage))
    # the fulfill is in flight (proposed): the monitor already has the preimage
    assert PaymentPreimage(preimage) in feed()
    pair.commit(pair.bob)
    feed()
    revoked = {r.commitment_number for r in applied if isinstance(r, RemoteRevocation)}
    assert revoked == set(range(core.state.remote_commit.number))  # type: ignore[union-attr]
    assert monitor.local_commitment_number == core.state.local_commit.number  # type: ignore[union-attr]
    # a monitor rebuilt from the same updates is the same monitor
    again = ChannelMonitor(monitor_secrets(core.secrets), [MonitorUpdate(i, r) for i, r in enumerate(applied)])  # type: ignore[arg-type]
    assert again.describe() == monitor.describe()
    # and its latest local commitment is the channel's, signed by both
    assert monitor.signed_local_commitment().raw == core.latest_commitment_tx()
