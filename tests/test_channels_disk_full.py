"""A channel node whose disk fills up: it sends nothing it could not write, loses nothing,
and goes on once there is space again.

Bob's channel store sits on a real 4 MiB tmpfs (:mod:`lnpmsg.testing.disk`),
filled with a file while the channel is open: his next writes fail with
``ENOSPC`` as on a full disk, the first of them maybe halfway through a frame
(the kernel writes what fits). It is filled once his log ends where his
next record, which carries an onion, needs a new page. Alice offers an HTLC;
Bob cannot write it, so he must not acknowledge it (no ``revoke_and_ack``
from a state he does not hold), must leave his log whole, and must say why.
Once the space is back, the channels reestablish, the HTLC is committed and
settled, and a Bob restarted from his disk holds exactly what the live one
held.

Two nodes in one process, the in-memory transport, one embedded regtest chain
(as ``test_channels_app.py``, whose helpers these are).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from test_channels_app import FUNDING_SAT, PUSH_MSAT, Pair, balances, chain, channels, only_channel, pay, settled, wait_until

from lnpmsg.channels.manager import ManagedChannel
from lnpmsg.channels.messages import ONION_PACKET_SIZE
from lnpmsg.channels.records import parse_frames
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.disk import DiskFiller, page_room, small_disk
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError


def _log_is_whole(node: Node) -> bool:
    """The channel's log on disk is a run of whole frames (no torn tail a reader would cut)."""
    data = only_channel(node).log.log_path.read_bytes()
    return parse_frames(data)[1] == len(data)


async def _connected(bob: Node, alice: Node) -> None:
    """Bob dials Alice, unless his channel app's reconnection already did."""
    if alice.node_id not in bob.peers:
        try:
            await bob.connect(alice.addresses[0])
        except Exception:  # a redial of Bob's own raced this one: his wins
            pass


def _channel_with(node: Node, peer: Node) -> ManagedChannel:
    manager = node.apps["channels"].manager  # type: ignore[attr-defined]
    (channel,) = [c for c in manager.channels.values() if c.peer_id == peer.node_id and c.phase is not Phase.NEW]
    return channel


async def log_end_before_an_onion(node: Node, peer: Node, ready: Callable[[], bool]) -> None:
    """Reconnect ``node`` (it dials) to ``peer`` until less than an onion's room is left in
    the last page of ``node``'s log of their channel; ``ready``: the nodes are settled again.

    Filled then, the disk refuses the channel's next record if it carries an onion
    (whatever else the record holds): it needs a new page (see :func:`page_room`).
    Where the log ends after a test's setup is chance (every record's size counts),
    so it is moved: a reconnection appends a few records, fewer bytes than an onion
    (checked), so the room left shrinks by less than an onion each time and cannot
    step over the range wanted: a few rounds (~500 bytes each, a 4 KiB page).
    """
    log = _channel_with(node, peer).log.log_path
    while page_room(log) >= ONION_PACKET_SIZE:
        size = log.stat().st_size
        await node.disconnect(peer.node_id, "test: the log's end moves")
        await wait_until(lambda: not _channel_with(peer, node).core.state.connected, "the peer sees the link go")
        await _connected(node, peer)
        await wait_until(ready, "reestablished")
        assert 0 < log.stat().st_size - size < ONION_PACKET_SIZE, "a reconnection's records must be fewer bytes than an onion"


#: when Bob's disk fills: before Alice offers him an HTLC (he cannot write her
#: ``update_add_htlc``), or before he offers one himself (his command cannot be written).
#: Both writes carry an onion, and the disk fills when less than that is left in the last
#: page of Bob's log (:func:`log_end_before_an_onion`). A settle's records are smaller than
#: what a reconnection appends, so the log's end cannot be brought that way to where they
#: would not fit: a full disk is not placed on them.
STAGES = ["alice_offers", "bob_offers"]


@pytest.mark.trio
@pytest.mark.parametrize("stage", STAGES)
async def test_a_full_disk_sends_nothing_unwritten_loses_nothing_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    network = MemoryNetwork()
    with small_disk(tmp_path / "bob-disk") as disk:
        filler = DiskFiller(disk)
        async with chain(tmp_path) as source:
            pair = Pair(source, tmp_path, network)
            alice = pair.node("alice", True)
            async with running(alice):
                bob = pair.node("bob", False, channels_dir=disk / "channels")
                async with running(bob):
                    await pair.fund_connect_open(alice, bob)
                    await pay(alice, bob, 30_000_000)
                    bob_msat = PUSH_MSAT + 30_000_000
                    assert balances(bob) == (bob_msat, FUNDING_SAT * 1000 - bob_msat, 0)
                    channel_id = only_channel(alice).channel_id.hex()
                    caplog.set_level(logging.ERROR, logger="lnpmsg.channels.manager")
                    payee, amount = (alice, -5_000_000) if stage == "bob_offers" else (bob, 9_000_000)
                    await log_end_before_an_onion(bob, alice, lambda: settled(alice) and settled(bob))
                    before = balances(bob)

                    assert filler.fill() > 0
                    if stage == "alice_offers":
                        added = await channels(alice).dev_addhtlc(channel_id, amount)
                    else:
                        with pytest.raises(ChainAppError, match="No space left on device") as refused:
                            await channels(bob).dev_addhtlc(channel_id, -amount)
                        assert refused.value.details == {"error": "StoreWriteFailed"}
                    # Bob could not write the change: he says so and drops the link to resume from disk.
                    await wait_until(lambda: "could not be written" in caplog.text, "bob's write error")
                    await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
                    assert "No space left on device" in caplog.text
                    if stage == "alice_offers":
                        # He acknowledged nothing: Alice still waits for his revoke_and_ack.
                        assert only_channel(alice).core.state.remote_next_commit is not None
                    # His log is whole, and the channel in his memory is the one on his disk.
                    assert _log_is_whole(bob)
                    stored = only_channel(bob).log.restore(only_channel(bob).core.secrets)
                    assert stored.state.local_commit == only_channel(bob).core.state.local_commit
                    assert balances(bob) == before

                    filler.free()
                    await _connected(bob, alice)
                    await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
                    if stage == "bob_offers":
                        added = await channels(bob).dev_addhtlc(channel_id, -amount)
                    await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 1, "HTLC committed")
                    (htlc,) = only_channel(payee).core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
                    assert htlc.add.id == added["htlc_id"] and htlc.add.amount_msat == abs(amount)
                    await channels(payee).dev_fulfill(channel_id, htlc.add.id, added["preimage"])
                    await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 0, "settled")
                    bob_msat += amount
                    assert balances(bob) == (bob_msat, FUNDING_SAT * 1000 - bob_msat, 0)
                    assert _log_is_whole(bob)
                    live = only_channel(bob).core.state.local_commit
                # Bob from his disk alone holds what the live Bob held.
                await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob stop")
                bob = pair.node("bob", False, channels_dir=disk / "channels")
                async with running(bob):
                    assert only_channel(bob).log.dropped_bytes == 0
                    assert only_channel(bob).core.state.local_commit == live
                    await _connected(bob, alice)
                    await wait_until(lambda: settled(alice) and settled(bob), "reestablished after the restart")
                    await pay(bob, alice, 1_000_000)
                    bob_msat -= 1_000_000
                    assert balances(bob) == (bob_msat, FUNDING_SAT * 1000 - bob_msat, 0)
