"""The channel monitor follows a splice whatever comes between the switch and its move, between two
lnpmsg nodes on one embedded regtest chain: a node that stops right after the switch to the splice
(before its monitor moved), or before the splice is deep enough for it, moves at its next start
knowing the peer's commitments on the splice it revoked before the lock; a channel whose minimum depth passes the monitors' burial depth keeps the
old funding's monitor until the move (the splice that spent it buried first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_channels_app import FUNDING_SAT, channels, only_channel, settled, wait_until
from test_channels_crash_points import SimulatedCrash, _is_crash
from test_channels_onchain import Pair, alice_alone, open_channel
from test_channels_splice_nodes import lock_after_the_peer, monitor_on, pending, punished, splice_and_revoke

from lnpmsg.channels.monitor.core import IRREVOCABLE_DEPTH
from lnpmsg.testing.nodes import running


def crash_at_the_switch(node) -> None:
    """The node's process dies right after the records of the channel's switch to its splice reached
    the disk, before anything else of that job (its ``Spliced``, which moves the monitor) is done."""
    manager = channels(node).manager

    def crash() -> None:
        if only_channel(node).core.state.splices:
            raise SimulatedCrash
        manager.crash_at = (manager.crash_at[0] + 1, "persisted")  # (not the switch yet: the next point)

    manager.crash_at, manager.crash = (manager.persists + 1, "persisted"), crash


@pytest.mark.trio
async def test_a_stop_between_the_switch_and_the_move_still_punishes_a_commitment_revoked_before_the_lock(tmp_path: Path) -> None:
    """Alice's splice_locked reaches Bob first; his own lock switches the channel to the splice and
    his node dies right then (the records on disk, the monitor not moved). At his start the monitor
    moves onto the splice's funding, learning from the old one Alice's commitments on the splice
    (the switch recorded what it takes): her commitment revoked before the lock is punished in full."""
    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        try:
            async with running(bob):
                await open_channel(pair, alice, bob, "static_remotekey")
                lock_after_the_peer(bob)
                splice_txid, commitment = await splice_and_revoke(pair, alice, bob)
                crash_at_the_switch(bob)
                await pair.source.mine(1)
                with trio.fail_after(30):
                    await trio.sleep_forever()
        except BaseException as exc:  # noqa: B036 - the crash, as a node's death
            if not _is_crash(exc):
                raise
        bob = pair.node("bob", False)
        async with running(bob):
            assert only_channel(bob).core.state.splices == 1 and only_channel(bob).core.state.funding_outpoint.txid_hex == splice_txid  # type: ignore[union-attr]
            await wait_until(lambda: monitor_on(bob, splice_txid), "Bob's monitor moved at his start")
            await punished(pair, bob, alice, commitment, FUNDING_SAT + 200_000)


@pytest.mark.trio
async def test_a_stop_below_our_lock_depth_still_punishes_a_commitment_revoked_before_the_lock(tmp_path: Path) -> None:
    """Bob stops while the splice waits in the mempool; it confirms while he is down. At his start he
    locks it (deep enough already) and his monitor moves onto its funding, the peer's commitments on
    the splice with it; then the channel switches as Alice's lock comes: her commitment revoked
    before the lock is punished in full."""
    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            await open_channel(pair, alice, bob, "static_remotekey")
            splice_txid, commitment = await splice_and_revoke(pair, alice, bob)
        await pair.mine(2, alice)
        bob = pair.node("bob", False)
        async with running(bob):
            await wait_until(lambda: monitor_on(bob, splice_txid), "Bob's monitor moved at his start")
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: only_channel(bob).core.state.splices == 1 and only_channel(alice).core.state.splices == 1, "spliced")
            await punished(pair, bob, alice, commitment, FUNDING_SAT + 200_000)


def monitor_caught_up(node) -> bool:
    """The node's monitor read every block (a moved one reads from the splice's block on first, apart
    from the live stream: a commitment mined meanwhile is seen late, and a short to_self_delay
    could pass first)."""
    onchain = channels(node).onchain
    watched = onchain.watched.get(only_channel(node).key)
    return watched is not None and not watched.catching_up and onchain.done_height is not None and watched.monitor.height == onchain.done_height


async def follow_and_punish(pair: Pair, alice, bob, splice_txid: str, commitment) -> None:
    """The block that takes the splice to the channel's depth: both lock, the monitors follow the
    splice, and Alice's revoked commitment on it is punished in full."""
    await pair.mine(1, alice, bob)
    await wait_until(lambda: monitor_on(alice, splice_txid) and monitor_on(bob, splice_txid), "the monitors follow the splice")
    await wait_until(lambda: monitor_caught_up(bob), "Bob's monitor read the splice's blocks")
    await punished(pair, bob, alice, commitment, FUNDING_SAT + 200_000)


@pytest.mark.trio
@pytest.mark.parametrize("restart", [False, True])
async def test_a_minimum_depth_past_the_burial_depth_keeps_the_monitor_until_it_follows_the_splice(tmp_path: Path, restart: bool) -> None:
    """Both ask more confirmations than the monitors' burial depth: the splice (a spend of the old
    funding no commitment explains) is buried before either locks it. The old funding's monitor is
    not archived (``restart``: nor at Bob's start then); at the lock it moves onto the splice's
    funding, with Alice's commitment on the splice she revoked before: punished in full."""

    def kept_on_the_old_funding(node) -> None:
        status = channels(node).onchain.status(only_channel(node))
        assert status is not None and status["funding"].startswith(only_channel(node).core.state.funding_outpoint.txid_hex)  # type: ignore[union-attr]
        assert pending(node) is not None and not pending(node).locked_sent and not channels(node).onchain.archived  # type: ignore[union-attr]

    async with alice_alone(tmp_path, minimum_depth=IRREVOCABLE_DEPTH + 1) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            await open_channel(pair, alice, bob, "static_remotekey")
            splice_txid, commitment = await splice_and_revoke(pair, alice, bob)
            await pair.mine(IRREVOCABLE_DEPTH, alice, bob)
            for node in (alice, bob):
                kept_on_the_old_funding(node)
            if not restart:
                await follow_and_punish(pair, alice, bob, splice_txid, commitment)
        if restart:
            bob = pair.node("bob", False)
            async with running(bob):
                await wait_until(lambda: monitor_caught_up(bob) and channels(bob).onchain.done_height == pair.source.core.height, "Bob read the blocks")
                kept_on_the_old_funding(bob)
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
                await follow_and_punish(pair, alice, bob, splice_txid, commitment)
