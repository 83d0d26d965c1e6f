"""Quiescence between two lnpmsg nodes in memory, on the embedded regtest chain: HTLCs in flight
both ways when Alice asks, both commitments settle, stfu both ways, no update while quiescent (a
fulfill waits), the quiescence timer disconnects, and after the reconnection the channel works."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_channels_app import TIMEOUT, Pair, balances, chain, channels, only_channel, pay, running_pair, settled, wait_until

from lnpmsg.channels.messages import UpdateFulfillHtlc
from lnpmsg.channels.messages_splice import SpliceInit
from lnpmsg.channels.quiesce import is_quiescent, local_initiator
from lnpmsg.channels.state import Phase
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running, running_tasks
from lnpmsg.wallet.calls import ChainAppError


@pytest.mark.trio
async def test_quiescence_with_htlcs_in_flight_then_the_timer_disconnects(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        assert alice.local_features(bob.node_id).has(35) and bob.local_features(alice.node_id).has(35)
        await pair.open(alice, bob)
        channel_id = only_channel(alice).channel_id.hex()
        for app in (channels(alice), channels(bob)):
            app.quiescence_timeout = 4.0
        # HTLCs on their way both ways when Alice asks: her stfu waits for her add to settle,
        # Bob answers once his is in both commitments.
        to_bob = await channels(alice).dev_addhtlc(channel_id, 30_000_000)
        to_alice = await channels(bob).dev_addhtlc(channel_id, 10_000_000)
        asked = await channels(alice).dev_quiesce(channel_id)
        assert asked["channel_id"] == channel_id and not asked["quiescent"]
        a, b = only_channel(alice), only_channel(bob)
        await wait_until(lambda: is_quiescent(a.core.state) and is_quiescent(b.core.state), "quiescence both ways")
        assert local_initiator(a.core.state) is True and local_initiator(b.core.state) is False
        assert settled(alice) and settled(bob) and balances(alice)[2] == 2 and balances(bob)[2] == 2
        listed = (await channels(alice).listchannels())["channels"][0]
        assert listed["quiescence"] == "quiescent"
        # nothing new while quiescent; a fulfill is kept for after the reconnection
        with pytest.raises(ChainAppError, match="quiescing"):
            await channels(alice).dev_addhtlc(channel_id, 1_000_000)
        with pytest.raises(ChainAppError, match="already quiescing"):
            await channels(bob).dev_quiesce(channel_id)
        await channels(bob).dev_fulfill(channel_id, to_bob["htlc_id"], to_bob["preimage"])
        assert [type(u) for u in b.core.state.resend_updates] == [UpdateFulfillHtlc]
        assert balances(bob)[2] == 2
        # HTLCs are pending: the timer ends the quiescence by disconnecting; the peers reconnect
        await wait_until(lambda: not a.core.state.connected or not b.core.state.connected, "the disconnection")
        if alice.peers.get(bob.node_id) is None:
            await bob.connect(alice.addresses[0])
        await wait_until(lambda: settled(alice) and settled(bob) and balances(alice)[2] == 1, "the kept fulfill after reestablish")
        assert a.core.state.quiesce is None and b.core.state.quiesce is None
        assert (await channels(bob).listchannels())["channels"][0]["quiescence"] is None
        await channels(alice).dev_fulfill(channel_id, to_alice["htlc_id"], to_alice["preimage"])
        await wait_until(lambda: settled(alice) and settled(bob) and balances(alice)[2] == 0, "both HTLCs settled")
        alice_msat = 1_000_000_000 - 200_000_000 - 30_000_000 + 10_000_000
        assert balances(alice)[:2] == (alice_msat, 1_000_000_000 - alice_msat)
        await pay(alice, bob, 5_000_000)  # and updates flow again


@pytest.mark.trio
async def test_a_quiescence_asked_for_and_reached_is_timed_once_on_each_side(tmp_path: Path) -> None:
    """dev_quiesce starts the timer; the quiescence it leads to on the same connection starts no second one."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        await pair.open(alice, bob)
        with record_events(alice) as alice_events, record_events(bob) as bob_events:
            await channels(alice).dev_quiesce(only_channel(alice).channel_id.hex())
            for events in (alice_events, bob_events):
                await events.wait_for(lambda e: getattr(e, "topic", None) == "channel.quiescent", timeout=TIMEOUT)
        assert running_tasks("QuiesceSide._end_quiescence_later") == 2  # Alice's (from her ask) and Bob's


@pytest.mark.trio
async def test_a_quiescence_without_htlcs_also_ends_with_a_disconnection(tmp_path: Path) -> None:
    """BOLT 2 requires the disconnection with HTLCs pending; with none it is done too, as nothing
    else would ever end the quiescence (dev_quiesce runs no protocol under it)."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        await pair.open(alice, bob)
        a, b = only_channel(alice), only_channel(bob)
        for app in (channels(alice), channels(bob)):
            app.quiescence_timeout = 1.0
        await channels(bob).dev_quiesce(a.channel_id.hex())
        await wait_until(lambda: is_quiescent(a.core.state) and is_quiescent(b.core.state), "quiescence")
        assert balances(alice)[2] == 0 and balances(bob)[2] == 0  # no HTLC
        await wait_until(lambda: not a.core.state.connected or not b.core.state.connected, "the disconnection")
        if alice.peers.get(bob.node_id) is None:
            await bob.connect(alice.addresses[0])
        await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
        assert a.core.state.quiesce is None and b.core.state.quiesce is None
        await pay(alice, bob, 1_000_000)


@pytest.mark.trio
async def test_a_splice_init_from_the_quiescence_non_initiator_is_a_warning_and_the_channel_goes_on(tmp_path: Path) -> None:
    """BOLT 2: only the quiescence initiator may send splice_init; the other side's costs it the
    connection (a warning); quiescence ends with it and the channel works again."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        assert alice.local_features(bob.node_id).has(63) and bob.local_features(alice.node_id).has(63)
        await pair.open(alice, bob)
        a, b = only_channel(alice), only_channel(bob)
        await channels(bob).dev_quiesce(a.channel_id.hex())
        await wait_until(lambda: is_quiescent(a.core.state) and is_quiescent(b.core.state), "quiescence")
        splice = SpliceInit(channel_id=a.channel_id, funding_contribution_satoshis=100_000, funding_feerate_perkw=253,
                            locktime=0, funding_pubkey=bytes([2]) + bytes(range(32)))  # fmt: skip
        await alice.peers[bob.node_id].send(splice.encode())  # Bob is the initiator: Alice may not send it
        await wait_until(lambda: not b.core.state.connected, "bob drops the connection")
        if alice.peers.get(bob.node_id) is None:
            await bob.connect(alice.addresses[0])
        await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
        assert b.core.state.quiesce is None and b.core.phase is Phase.NORMAL and b.core.state.splice is None
        await pay(bob, alice, 1_000_000)


@pytest.mark.trio
async def test_a_restart_while_quiescent_ends_quiescence_and_keeps_a_waiting_fulfill(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, network)
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.fund_connect_open(alice, bob)
                channel_id = only_channel(alice).channel_id.hex()
                added = await channels(alice).dev_addhtlc(channel_id, 6_000_000)
                await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 1, "HTLC committed")
                await channels(alice).dev_quiesce(channel_id)
                await wait_until(lambda: is_quiescent(only_channel(bob).core.state), "quiescence")
                await channels(bob).dev_fulfill(channel_id, added["htlc_id"], added["preimage"])  # kept: quiescent
                assert balances(bob)[2] == 1
            # Bob stops while quiescent, with the fulfill not sent; a new Bob from the same store
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            assert only_channel(alice).core.state.quiesce is None
            bob = pair.node("bob", False)
            async with running(bob):
                assert only_channel(bob).core.state.quiesce is None
                assert [type(u) for u in only_channel(bob).core.state.resend_updates] == [UpdateFulfillHtlc]
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 0, "the fulfill after restart")
                assert balances(alice)[:2] == (1_000_000_000 - 200_000_000 - 6_000_000, 206_000_000)
                await pay(alice, bob, 1_000_000)
