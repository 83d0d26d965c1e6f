"""The channel manager alone (two of them, the test carrying their messages), under trio's mock clock.

Checks the shell's rules: every record of an output is in the channel's log
before any of its messages is handed out; the node signs what is left to sign
by itself; a restarted manager replays its store to the same state and feeds
``Disconnected``, and one that cannot write it (a full disk) fails its load
with one clear error and changes nothing; a stopped manager refuses jobs
instead of leaving a waiter hanging; the manager is ``idle`` only once every
job it took is done, its records on disk (a core's state in memory runs
ahead of its disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import OP_RETURN, script
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.channels.inputs import (
    AcceptCommand,
    AddHtlc,
    Disconnected,
    Event,
    FulfillHtlc,
    FundingDepth,
    FundingNeeded,
    FundingTransaction,
    HtlcIncoming,
    OpenCommand,
    Reconnected,
    Received,
)
from lnpmsg.channels.manager import ChannelManager, ChannelsStopped, ManagedChannel
from lnpmsg.channels.messages import OpenChannel, Shutdown
from lnpmsg.channels.params import STATIC_REMOTEKEY_BIT
from lnpmsg.channels.state import Phase
from lnpmsg.wire import CHAIN_HASH_REGTEST, Message, WarningMessage

ALICE, BOB = b"\x02" + b"\xaa" * 32, b"\x03" + b"\xbb" * 32
FEATURES = 1 << (STATIC_REMOTEKEY_BIT + 1)


class Side:
    """One manager, what it sent (checked against its log at the moment of sending) and its events."""

    def __init__(self, directory: Path, me: bytes, **options: Any) -> None:
        self.me = me
        self.wire: list[tuple[bytes, Message]] = []
        self.events: list[Event] = []
        self.unpersisted_sends = 0
        self.manager = ChannelManager(directory, send=self.send, on_events=self.on_events, now=trio.current_time, **options)

    async def send(self, peer_id: bytes, msg: Message) -> None:
        for channel in self.manager.of_peer(peer_id):
            if len(channel.log.records()) != channel.core.records_emitted:
                self.unpersisted_sends += 1
        self.wire.append((peer_id, msg))

    async def on_events(self, channel: ManagedChannel, events: Sequence[Event]) -> None:
        self.events.extend(events)


async def pump(a: Side, b: Side) -> None:
    """Deliver every message in flight (and those they cause) until both are quiet."""
    while a.wire or b.wire:
        for sender, receiver in ((a, b), (b, a)):
            while sender.wire:
                _, msg = sender.wire.pop(0)
                if isinstance(msg, OpenChannel):
                    channel = receiver.manager.new_channel(sender.me)
                    await receiver.manager.submit(channel, AcceptCommand(msg, CHAIN_HASH_REGTEST, FEATURES, FEATURES))
                    continue
                channel_id = getattr(msg, "channel_id", None) or msg.temporary_channel_id  # type: ignore[attr-defined]
                channel = receiver.manager.find(sender.me, channel_id)
                assert channel is not None
                await receiver.manager.submit(channel, Received(msg))


async def open_between(nursery: trio.Nursery, alice: Side, bob: Side) -> ManagedChannel:
    """Run both managers in ``nursery`` and let Alice open a channel to Bob (up to its funding)."""
    await nursery.start(alice.manager.run)
    await nursery.start(bob.manager.run)
    channel = alice.manager.new_channel(BOB)
    await alice.manager.submit(channel, OpenCommand(bytes(32), CHAIN_HASH_REGTEST, 1_000_000, 0, 2500, FEATURES, FEATURES))
    await pump(alice, bob)
    return channel


def only(side: Side) -> ManagedChannel:
    (channel,) = side.manager.channels.values()
    return channel


@pytest.mark.trio
async def test_managers_persist_before_sending_sign_by_themselves_and_replay(tmp_path: Path, autojump_clock: Any) -> None:
    alice, bob = Side(tmp_path / "alice", ALICE), Side(tmp_path / "bob", BOB)
    async with trio.open_nursery() as nursery:
        channel = await open_between(nursery, alice, bob)
        (needed,) = [e for e in alice.events if isinstance(e, FundingNeeded)]
        # a funding transaction that no chain will see: the cores only read its outputs
        funding = Tx(2, (TxIn(OutPoint(b"\x11" * 32, 0)),), (TxOut(0, script(OP_RETURN, b"x")), TxOut(needed.amount_sat, needed.script_pubkey)))
        await alice.manager.submit(channel, FundingTransaction(funding.serialize()))
        await pump(alice, bob)
        for side in (alice, bob):
            await side.manager.submit(only(side), FundingDepth(3, (101 << 40) | (1 << 16) | 1))
        await pump(alice, bob)
        assert only(alice).phase is only(bob).phase is Phase.NORMAL

        # One command: the manager signs by itself, the peer answers, both commitments hold the HTLC.
        preimage = sha256(b"preimage")
        await alice.manager.submit(channel, AddHtlc(5_000_000, sha256(preimage), 500, bytes(1366)))
        await pump(alice, bob)
        (incoming,) = [e for e in bob.events if isinstance(e, HtlcIncoming)]
        for side in (alice, bob):
            assert len(only(side).core.state.local_commit.spec.htlcs) == 1  # type: ignore[union-attr]
        await bob.manager.submit(only(bob), FulfillHtlc(incoming.add.id, preimage))
        await pump(alice, bob)
        spec = only(bob).core.state.local_commit.spec  # type: ignore[union-attr]
        assert (spec.htlcs, spec.to_local_msat) == ((), 5_000_000)
        assert alice.unpersisted_sends == bob.unpersisted_sends == 0
        bob_state = only(bob).core.state
        nursery.cancel_scope.cancel()

    # The actor stopped: a job is refused at once, nobody waits forever.
    with pytest.raises(ChannelsStopped):
        await alice.manager.submit(channel, AddHtlc(1000, bytes(32), 500, bytes(1366)))

    # Bob's store replays to the same state; the restart feeds Disconnected.
    again = Side(tmp_path / "bob", BOB)
    assert await again.manager.load() == 1
    restored = only(again).core.state
    assert restored.local_commit == bob_state.local_commit and restored.remote_commit == bob_state.remote_commit
    assert restored.channel_id == bob_state.channel_id and not restored.connected
    again.manager.close()


@pytest.mark.trio
async def test_a_restart_that_cannot_write_its_disconnected_fails_the_load_clearly_and_changes_nothing(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import logging

    from lnpmsg.channels.errors import ChannelStoreError
    from lnpmsg.channels.store import ChannelLog
    from lnpmsg.testing.disk import DiskFiller, small_disk

    with small_disk(tmp_path / "bob", size_kib=512) as bob_dir:
        alice, bob = Side(tmp_path / "alice", ALICE), Side(bob_dir, BOB)
        async with trio.open_nursery() as nursery:
            await open_between(nursery, alice, bob)
            nursery.cancel_scope.cancel()  # a crash: Bob's channel is stored connected, no Disconnected written
        bob.manager.close()
        (log_path,) = bob_dir.glob("*.log")
        stored = log_path.read_bytes()
        DiskFiller(bob_dir).fill()

        # The Disconnected a restart owes is a few bytes: on a real disk they land in the log's last
        # page, which has room; the append a full disk refuses is injected.
        def full(self: ChannelLog, records: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ChannelLog, "append", full)
        caplog.set_level(logging.INFO)
        again = Side(bob_dir, BOB)
        with pytest.raises(ChannelStoreError) as refused:
            await again.manager.load()
        text = str(refused.value)
        assert str(log_path) in text and "No space left on device" in text and "free some space" in text, text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the error is the one word
        assert log_path.read_bytes() == stored
        again.manager.close()
        monkeypatch.undo()
        DiskFiller(bob_dir).free()
        restarted = Side(bob_dir, BOB)
        assert await restarted.manager.load() == 1
        assert log_path.read_bytes().startswith(stored) and len(log_path.read_bytes()) > len(stored)  # the Disconnected, now
        restarted.manager.close()


@pytest.mark.trio
async def test_a_restart_whose_monitor_file_cannot_be_written_names_that_file(tmp_path: Path, autojump_clock: Any) -> None:
    from lnpmsg.channels.errors import ChannelStoreError
    from lnpmsg.channels.monitor_files import MonitorLog
    from lnpmsg.testing.disk import DiskFiller, small_disk

    with small_disk(tmp_path / "bob", size_kib=512) as bob_dir:
        alice, bob = Side(tmp_path / "alice", ALICE), Side(bob_dir, BOB)
        async with trio.open_nursery() as nursery:
            await open_between(nursery, alice, bob)
            nursery.cancel_scope.cancel()
        bob.manager.close()
        (log_path,) = bob_dir.glob("*.log")
        stored = log_path.read_bytes()
        monitors = bob_dir / "monitors"
        monitors.mkdir()
        DiskFiller(bob_dir).fill()

        async def begin_monitor(channel: ManagedChannel) -> None:
            """What the channel app's monitors do at the load for a channel that has none yet."""
            MonitorLog(monitors / f"{channel.key}.mon").begin(0)

        again = Side(bob_dir, BOB, on_persisted=begin_monitor)
        with pytest.raises(ChannelStoreError) as refused:
            await again.manager.load()
        text = str(refused.value)
        (channel_key,) = [p.stem for p in bob_dir.glob("*.log")]
        assert str(monitors / f"{channel_key}.mon") in text and "No space left on device" in text and "free some space" in text, text
        assert log_path.read_bytes() == stored and not (monitors / f"{channel_key}.mon").read_bytes()
        again.manager.close()


@pytest.mark.trio
async def test_the_manager_is_idle_only_once_every_job_is_on_disk(tmp_path: Path, autojump_clock: Any) -> None:
    alice = Side(tmp_path / "alice", ALICE)
    manager = alice.manager
    disk = trio.Event()  # the disk answers once this is set
    persist = manager._persist

    async def slow_disk(channel: ManagedChannel, records: Any) -> None:
        await disk.wait()
        await persist(channel, records)

    manager._persist = slow_disk  # type: ignore[method-assign]
    open_channel = OpenCommand(bytes(32), CHAIN_HASH_REGTEST, 1_000_000, 0, 2500, FEATURES, FEATURES)
    opened = trio.Event()

    async def open_it() -> None:
        await manager.submit(channel, open_channel)
        opened.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        assert manager.idle
        channel = manager.new_channel(BOB)
        with trio.CancelScope() as cancelled:  # a submit cancelled before its job was queued leaves nothing behind
            cancelled.cancel()
            await manager.submit(channel, open_channel)
        assert manager.idle and channel.phase is Phase.NEW

        nursery.start_soon(open_it)
        await trio.testing.wait_all_tasks_blocked()
        # The core moved on in memory, its record is not on disk yet: the manager is busy.
        assert channel.phase is Phase.WAIT_ACCEPT and channel.core.records_emitted == 1 and not channel.log.records()
        assert not manager.idle and manager.persists == 0 and not alice.wire
        disk.set()
        await opened.wait()
        assert manager.idle and manager.persists == 1 and len(channel.log.records()) == 1 and len(alice.wire) == 1

        # A job on its way to the disk and one queued behind it when the actor stops: the first is
        # finished (shielded), the second answered; neither is left unfinished.
        disk = trio.Event()
        manager.post(channel, Disconnected())
        manager.post(channel, Disconnected())
        await trio.testing.wait_all_tasks_blocked()
        assert not manager.idle and manager.persists == 1
        nursery.cancel_scope.cancel()
        disk.set()
    assert manager.idle and manager.persists == 2


@pytest.mark.trio
async def test_a_warning_fault_closes_the_connection_and_keeps_the_channel(tmp_path: Path, autojump_clock: Any) -> None:
    # BOLT 2's "send a warning and close the connection": here a shutdown to a script of no allowed form
    closed: list[tuple[bytes, str]] = []
    alice = Side(tmp_path / "alice", ALICE)
    bob = Side(tmp_path / "bob", BOB, disconnect=lambda peer_id, reason: closed.append((peer_id, reason)))
    async with trio.open_nursery() as nursery:
        channel = await open_between(nursery, alice, bob)
        (needed,) = [e for e in alice.events if isinstance(e, FundingNeeded)]
        funding = Tx(2, (TxIn(OutPoint(b"\x11" * 32, 0)),), (TxOut(needed.amount_sat, needed.script_pubkey),))
        await alice.manager.submit(channel, FundingTransaction(funding.serialize()))
        await pump(alice, bob)
        for side in (alice, bob):
            await side.manager.submit(only(side), FundingDepth(3, (101 << 40) | (1 << 16) | 1))
        await pump(alice, bob)
        assert closed == []
        bad = Shutdown(channel_id=only(bob).channel_id, scriptpubkey=b"\x6a\x01\x00")
        await bob.manager.submit(only(bob), Received(bad))
        assert [type(m) for _, m in bob.wire] == [WarningMessage]
        assert [peer_id for peer_id, _ in closed] == [ALICE]
        assert only(bob).phase is Phase.NORMAL
        # a message before channel_reestablish gets a warning too, but keeps the connection
        await bob.manager.submit(only(bob), Disconnected())
        await bob.manager.submit(only(bob), Reconnected())
        bob.wire.clear()
        await bob.manager.submit(only(bob), Received(bad))
        assert WarningMessage in [type(m) for _, m in bob.wire]
        assert len(closed) == 1
        nursery.cancel_scope.cancel()
