"""What a peer returns of our backup in ``peer_storage_retrieval`` (BOLT 1), end to end.

Alice keeps Bob's backup over their channel (two nodes in one process, the in-memory transport,
the embedded regtest chain); Alice's app is then made to send Bob retrievals of what the test
chooses. A blob that is not Bob's backup (garbage, or his own cut short) or an older copy than the
latest Bob sent her gets BOLT 1's warning, once per connection, logged at INFO; the connection stays,
Bob sends his current backup again, and his kept copy stays the best one. Bob remembers what he
sent across a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import pytest
import trio
from test_channels_app import channels, only_channel, pay
from test_channels_onchain import FUNDING_SAT, open_channel, wait_until
from test_peer_storage import StoragePair, storage

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.backup import decode_backup, encode_padded
from lnpmsg.channels.peer_storage import _digest
from lnpmsg.node.events import PeerWarningReceived
from lnpmsg.node.node import Node
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wire import PeerStorageRetrieval

NOT_OURS = "peer_storage_retrieval: the blob returned is not our backup (it does not decrypt with our key)"
OLDER = "peer_storage_retrieval: the blob returned is older than the latest peer_storage we sent"


async def returned(alice: Node, bob: Node, blob: bytes, caplog: pytest.LogCaptureFixture, log_line: str) -> None:
    """Alice returns ``blob`` to Bob, who logs ``log_line`` for it."""
    seen = caplog.text.count(log_line)
    await storage(alice).send(bob.node_id, PeerStorageRetrieval(blob=blob))
    await wait_until(lambda: caplog.text.count(log_line) > seen, f"bob logs {log_line!r}")


@pytest.mark.trio
async def test_an_outdated_or_foreign_retrieval_gets_one_warning_a_connection_and_never_replaces_the_best_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg.channels.peer_storage")
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = StoragePair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await open_channel(pair, alice, bob, "anchors")
                seed = channels_seed(bob)
                scid = only_channel(bob).core.state.short_channel_id
                await wait_until(lambda: _scids(alice, bob, seed) == [scid], "alice holds bob's latest backup")
                latest = storage(alice).theirs.read(bob.node_id)
                assert latest is not None
                entries = decode_backup(latest, seed)
                await wait_until(lambda: storage(bob).sent.read(alice.node_id) == _digest(entries), "bob noted what he sent")
                older = encode_padded([dataclasses.replace(e, short_channel_id=0) for e in entries], seed, os.urandom(12))[0]
                with record_events(alice) as events:
                    # the latest: kept, nothing said
                    await storage(alice).send(bob.node_id, PeerStorageRetrieval(blob=latest))
                    await wait_until(lambda: storage(bob).ours.read(alice.node_id) == latest, "bob keeps the latest")
                    # garbage: logged, warned, not kept; Bob sends his backup again
                    await returned(alice, bob, os.urandom(500), caplog, "that is not our backup: ignored")
                    warning = await events.wait_for(PeerWarningReceived, timeout=10)
                    assert warning.node_id == bob.node_id and warning.text == NOT_OURS and warning.channel_id == bytes(32)
                    assert f"warned {alice.node_id.hex()[:16]}: {NOT_OURS}" in caplog.text
                    # an older copy: logged; no second warning on this connection; the kept copy stays the latest
                    await returned(alice, bob, older, caplog, "returned an older copy of our backup than the latest we sent it")
                    assert "keeping the latest copy" in caplog.text
                    assert storage(bob).ours.read(alice.node_id) == latest
                    await pay(alice, bob, 1_000_000)  # the connection and the channel work
                    assert len(events.of(PeerWarningReceived)) == 1
                    await wait_until(lambda: _scids(alice, bob, seed) == [scid], "bob sent his current backup again")
            # Bob restarts: what he sent is remembered; Alice's retrieval after init is the latest (no warning)
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            bob = pair.node("bob", False)
            async with running(bob):
                with record_events(alice) as events:
                    await bob.connect(alice.addresses[0])
                    await wait_until(lambda: alice.node_id in storage(bob)._retrieved and only_channel(bob).core.state.connected, "reconnected")
                    await returned(alice, bob, older, caplog, "returned an older copy of our backup than the latest we sent it")
                    warning = await events.wait_for(PeerWarningReceived, timeout=10)
                    assert warning.text == OLDER
                    # Bob's own blob cut short: logged, no second warning, the connection stays
                    await returned(alice, bob, latest[:1000], caplog, "returned a blob (1000 bytes) that is not our backup")
                    await pay(alice, bob, 1_000_000)
                    assert [w.text for w in events.of(PeerWarningReceived)] == [OLDER] and bob.peers[alice.node_id].is_ready
                    # kept: what Alice returned after init (Bob's latest channels; his resend, encrypted anew)
                    kept = storage(bob).ours.read(alice.node_id)
                    assert kept is not None and _digest(decode_backup(kept, seed)) == _digest(entries)


def channels_seed(node: Node) -> bytes:
    return node.apps["channels"].manager.seed  # type: ignore[attr-defined, no-any-return]


def _scids(holder: Node, owner: Node, seed: bytes) -> list[int]:
    blob = storage(holder).theirs.read(owner.node_id)
    return [e.short_channel_id for e in decode_backup(blob, seed)] if blob is not None else []


@pytest.mark.trio
async def test_a_node_stopping_while_it_reads_what_a_peer_keeps_stops_cleanly(tmp_path: Path) -> None:
    """Bob's channels change and he sends Alice his backup, first reading the copy she returned
    before (a thread: not cancellable); his node stops meanwhile and the channel app ends first: the read's end finds no channel app
    and the node stops without an error (it raised once, found by a CI run)."""
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = StoragePair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with trio.open_nursery() as outer:
                async with running(bob):
                    await open_channel(pair, alice, bob, "anchors")
                    await wait_until(lambda: _scids(alice, bob, channels_seed(bob)) != [], "alice holds bob's backup")
                    latest = storage(alice).theirs.read(bob.node_id)
                    await storage(alice).send(bob.node_id, PeerStorageRetrieval(blob=latest))
                    await wait_until(lambda: alice.node_id in storage(bob).kept, "bob keeps his copy")
                    reading, release = threading.Event(), threading.Event()
                    read = storage(bob).ours.read

                    def held_read(peer_id: bytes) -> bytes | None:
                        reading.set()
                        release.wait(30)
                        return read(peer_id)

                    storage(bob).ours.read = held_read  # type: ignore[method-assign]
                    # a second channel: Bob sends his backup again, first reading what Alice keeps of it
                    await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
                    await wait_until(reading.is_set, "bob reads the copy alice keeps")

                    async def release_once_the_channel_app_ended() -> None:
                        with trio.move_on_after(10):
                            await wait_until(lambda: bob.apps["channels"].manager is None, "bob's channel app ends")  # type: ignore[attr-defined]
                        release.set()

                    outer.start_soon(release_once_the_channel_app_ended)
                # bob stopped: without an error (the ``running`` block raises one otherwise)
                assert release.is_set() and bob.apps["channels"].manager is None  # type: ignore[attr-defined]
