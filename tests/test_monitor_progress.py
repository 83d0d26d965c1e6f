"""A restart replays only the blocks a channel monitor still needs.

While a channel's funding is unspent its monitor notes how far it has read;
after a restart it reads on from there (not from the channel's opening),
and still catches the peer's force close that follows. Once the close is
irrevocably resolved the monitor is archived: after the next restart it
reads no blocks at all, and ``listchannels`` still shows how the channel
ended. A damaged record only costs the longer replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels import onchain as onchain_module
from lnpmsg.channels import rescan as rescan_module
from lnpmsg.channels.monitor.core import IRREVOCABLE_DEPTH
from lnpmsg.channels.onchain import CHECKPOINT_LAG, OnchainWatch
from lnpmsg.node.node import Node
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from test_channels_app import channels, only_channel
from test_channels_onchain import FUNDING_SAT, Pair, alice_alone, open_channel, resolved, two_nodes, wait_until

EVERY = 5


def watch(node: Node) -> OnchainWatch:
    onchain = channels(node).onchain
    assert onchain is not None
    return onchain


async def reconnect(bob: Node, alice: Node) -> None:
    await bob.connect(alice.addresses[0])
    await wait_until(lambda: only_channel(alice).core.state.connected and not only_channel(alice).core.state.awaiting_reestablish,
                     "reestablished")  # fmt: skip


@pytest.mark.trio
async def test_a_restart_reads_on_from_the_checkpoint_and_an_archived_monitor_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onchain_module, "CHECKPOINT_EVERY", EVERY)
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp_path, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            channel_id = await open_channel(pair, alice, bob, "static_remotekey")
            key = only_channel(alice).key
            opened_from = watch(alice).watched[key].log.start_height
            assert opened_from is not None
            await pair.mine(3 * EVERY, alice, bob)
            tip = (await source.tip()).height
            progress = watch(alice).watched[key].progress
            assert progress is not None and progress.checkpoint is not None
            assert tip - CHECKPOINT_LAG - EVERY < progress.checkpoint <= tip - CHECKPOINT_LAG
            checkpoint = progress.checkpoint

        # restart: the monitor reads on from the checkpoint, not from the channel's opening
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await reconnect(bob, alice)
            watched = watch(alice).watched[key]
            assert watched.start_height == checkpoint + 1 > opened_from
            # ... and still sees the peer's force close and takes its funds
            before = pair.wallet_sat(alice)
            await channels(bob).closechannel(channel_id, force=True)
            for _ in range(40):
                await pair.mine(1, alice, bob)
                if resolved(alice) and resolved(bob):
                    break
            assert resolved(alice) and pair.wallet_sat(alice) > before + 600_000
            assert watch(alice).status(only_channel(alice))["state"] == "resolving"  # type: ignore[index]
            with trio.fail_after(120):
                while key in watch(alice).watched:
                    await pair.mine(1, alice, bob)
            final = watch(alice).archived[key]
            assert final["state"] == "irrevocably_resolved" and final["locked_sat"] == 0
            assert (await source.tip()).height - final["outputs"][-1]["height"] >= IRREVOCABLE_DEPTH - 1

        # restart: an archived monitor reads no blocks and listchannels shows how the channel ended
        alice = pair.node("alice", True)
        async with running(alice):
            assert not watch(alice).watched and watch(alice).start_height() is None
            (listed,) = (await channels(alice).listchannels())["channels"]
            assert listed["onchain"] == final

        # a damaged record only costs the longer replay: the archived monitor is read again from its log
        seen = tmp_path / "alice" / "channels" / "monitors" / f"{key}.seen"
        seen.write_bytes(b'{"final": ')
        alice = pair.node("alice", True)
        async with running(alice):
            await wait_until(lambda: key in watch(alice).watched, "the monitor loaded")
            assert watch(alice).watched[key].start_height == opened_from


@pytest.mark.trio
async def test_after_a_restart_the_live_stream_reads_the_missed_blocks_for_every_monitor_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocks mined while the node was down reach its monitors in the live stream, from the first
    one a monitor needs, each read once: none starts a catch-up of its own (which read them again,
    block by block, apart from the live stream: a commitment at the tip was seen only once it ended,
    while the node said every monitor had read the tip)."""
    catch_ups: list[str] = []
    catch_up = rescan_module.catch_up

    async def recorded(watch_: OnchainWatch, watched) -> None:  # type: ignore[no-untyped-def]
        catch_ups.append(watched.channel.key)
        await catch_up(watch_, watched)

    monkeypatch.setattr(rescan_module, "catch_up", recorded)
    follow = OnchainWatch.follow

    async def once_the_subscription_read_ahead(self: OnchainWatch, sub) -> None:  # type: ignore[no-untyped-def]
        # as it does while the node's start talks to the chain: its events wait in its buffer
        tip = (await self.chain.source.tip()).height
        await wait_until(lambda: sub.tip is not None and sub.tip.height == tip, "the subscription read ahead")
        await follow(self, sub)

    monkeypatch.setattr(OnchainWatch, "follow", once_the_subscription_read_ahead)
    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            await open_channel(pair, alice, bob, "static_remotekey")
            key = only_channel(bob).key
            read = watch(bob).watched[key].monitor.height
        await pair.source.mine(30)
        catch_ups.clear()
        bob = pair.node("bob", False)
        async with running(bob):
            tip = (await pair.source.tip()).height
            await wait_until(lambda: watch(bob).done_height == tip, "the live stream reads the missed blocks")
            watched = watch(bob).watched[key]
            assert read is not None and watched.start_height <= read + 1
            assert watched.monitor.height == tip and not watched.catching_up
            assert catch_ups == []


@pytest.mark.trio
async def test_a_block_mined_while_the_node_starts_is_done_without_waiting_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block mined between the node's start and its chain subscription's comes as no event: the
    monitors (none yet) are done to where the stream starts, not only once another block comes."""
    from lnpmsg.channels.app import ChannelsApp

    write_backup = ChannelsApp.write_backup
    mined = trio.Event()

    async def then_a_block(self: ChannelsApp) -> None:
        await write_backup(self)
        if not mined.is_set():  # (the last thing the app does before it subscribes)
            await self.chain.source.mine(1)
            mined.set()

    monkeypatch.setattr(ChannelsApp, "write_backup", then_a_block)
    async with alice_alone(tmp_path) as (pair, alice):
        await mined.wait()
        tip = (await pair.source.tip()).height
        await wait_until(lambda: watch(alice).done_height == tip, "Alice's monitors are done to the tip")
        assert tip == 102


@pytest.mark.trio
async def test_a_block_mined_while_a_new_monitor_catches_up_is_done_once_that_monitor_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new channel's monitor first reads the live stream's last block again, in a catch-up that the
    live stream passes by: a block mined meanwhile is done only once the catch-up has fed it that one
    too (a mine that waits for the monitors must not go on while one has not acted on the block)."""
    feerate = rescan_module._feerate
    held, release = trio.Event(), trio.Event()

    async def catch_up_held(onchain: OnchainWatch) -> int | None:
        held.set()
        await release.wait()
        return await feerate(onchain)

    monkeypatch.setattr(rescan_module, "_feerate", catch_up_held)
    async with two_nodes(tmp_path) as (pair, alice, bob):
        await pair.fund_wallet(alice, 3_000_000)
        await bob.connect(alice.addresses[0])
        await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, channel_type="static_remotekey")
        await held.wait()
        await pair.source.mine(1)
        tip = (await pair.source.tip()).height
        await wait_until(lambda: watch(alice).read_to == tip and watch(bob).read_to == tip, "the live streams read the block")
        assert watch(alice).done_height == watch(bob).done_height == tip - 1
        release.set()
        await wait_until(lambda: watch(alice).done_height == tip and watch(bob).done_height == tip, "the monitors are done")
        for node in (alice, bob):
            assert [w.monitor.height for w in watch(node).watched.values()] == [tip]
