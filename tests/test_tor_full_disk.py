"""The node's own Tor on a full disk: a clear error naming the path, a warning, nothing lost.

The disk is real: a small tmpfs (:mod:`lnpmsg.testing.disk`) mounted on the
node's data dir or on tor's directory in it (``DATA_DIR/tor``), filled to the
last byte or out of inodes.

- A node whose tor directory is on a full disk does not start: one
  :class:`StartError` naming the path that could not be written, ``No space
  left on device`` and ``free some space``, at once (tor dies, or we could not
  write its torrc; nothing waits for a timeout), with tor's own words when it
  was tor that said it (they reach the error although its log file, on that
  same disk, could not take them). No Tor network needed: tor fails before it
  would look for one.
- In the session's private Tor network: a node serving its onion service whose
  disk fills keeps its tor, tells of tor's failed writes in one warning, takes
  a new connection through Tor and passes messages; its files are as they
  were. Restarted on the full disk it is refused with the disk's error (the
  first store that needs room names it; with room in the data dir but none on
  tor's disk, tor's path and tor's own words), changing nothing; once there is
  room it starts with the same onion address, from the onion key it kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from test_onion_node import CONNECT_TIMEOUT, MESSAGES, TOR_TIMEOUT, new_peer, onion_node, running, tor_settings
from test_onion_node_config import OFFLINE

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node
from lnpmsg.node.peer import Peer
from lnpmsg.runtime import NodeSettings, build_node
from lnpmsg.runtime.settings import StartError
from lnpmsg.testing.disk import DiskFiller, small_disk
from lnpmsg.testing.tornet import PrivateTorNetwork
from lnpmsg.tor_app import NodeTor, TorSettings
from lnpmsg.wire import UnknownMessage
from lnpmsg.transports.tor import control as control_module
from lnpmsg.transports.tor.control import DISK_FULL_WARN_INTERVAL, LaunchedTor
from lnpmsg.transports.tor.output import disk_full_path

pytestmark = pytest.mark.slow

CUSTOM = 32771
#: a guard against a hang, far above what any of these steps takes
GUARD = 60


def assert_clear(text: str, under: Path) -> None:
    """The error names a path under ``under``, the cause and the cure, and is no traceback."""
    assert f"cannot write {under}" in text and "No space left on device" in text and "free some space" in text, text
    assert "Traceback" not in text and "Errno" not in text, text


async def refused(settings: NodeSettings) -> str:
    with trio.fail_after(GUARD), pytest.raises(StartError) as caught:
        async with build_node(settings).running():
            pass
    return str(caught.value)


def test_tor_log_lines_that_say_a_write_found_no_room() -> None:
    said = {
        'Dec 06 [warn] Error writing to "/d/tor/data/state": No space left on device': "/d/tor/data/state",
        "Dec 06 [warn] Writing /d/tor/control-port failed: No space left on device": "/d/tor/control-port",
        "Dec 06 [warn] Error creating directory /d/tor/data/keys: No space left on device": "/d/tor/data/keys",
        'Dec 06 [warn] Error writing to "/d/a b/state": Disk quota exceeded': "/d/a b/state",
        'Dec 06 [warn] Unable to write state to file "/d/tor/data/state"; will try again later': None,
        "Dec 06 [notice] Bootstrapped 100% (done): Done": None,
    }
    assert {line: disk_full_path(line) for line in said} == said


def test_a_running_tors_failed_writes_are_one_warning_per_path_per_interval(tmp_path, monkeypatch, caplog) -> None:
    tor = LaunchedTor(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr(control_module.time, "monotonic", lambda: clock[0])
    state = 'Dec 06 [warn] Error writing to "/d/tor/data/state": No space left on device'
    cached = "Dec 06 [warn] Error writing to /d/tor/data/cached-microdesc-consensus: No space left on device"

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.WARNING):
        tor._on_disk_full("/d/tor/data/state", state)
        assert warnings() == []  # while starting, the failed start says it instead
        tor._up = True
        for path, line in [("/d/tor/data/state", state), ("/d/tor/data/cached-microdesc-consensus", cached)] * 3:
            tor._on_disk_full(path, line)
        assert len(warnings()) == 2 and "cannot write /d/tor/data/state: no room on its disk" in warnings()[0]
        clock[0] += DISK_FULL_WARN_INTERVAL - 1
        tor._on_disk_full("/d/tor/data/state", state)
        assert len(warnings()) == 2
        clock[0] += 1
        tor._on_disk_full("/d/tor/data/state", state)
        assert len(warnings()) == 3 and "tor said: Error writing to" in warnings()[2]


# ------------------------------------------------------------ a full disk before the start (no Tor network)


#: how full tor's disk is: to the last byte (our write of its torrc fails), room for the torrc only
#: (tor itself cannot write its files: its words must reach the error), no inode left
FULL = ("no_byte", "room_for_torrc", "no_inode")


@pytest.mark.parametrize("full", FULL)
async def test_a_node_whose_tor_directory_is_on_a_full_disk_says_so_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, full: str
) -> None:
    data_dir = tmp_path / "node"
    tor_dir = data_dir / "tor"
    # bootstrap would wait for minutes: a refusal that waited for it would trip the guard
    tor = TorSettings(data_dir, extra_torrc=OFFLINE, bootstrap_timeout=600, publish_timeout=600)
    settings = NodeSettings(data_dir=data_dir, key=NodeKey.generate(), onion_only=True, tor=tor)
    with small_disk(tor_dir, size_kib=1024, inodes=64 if full == "no_inode" else None) as disk:
        filler = DiskFiller(disk)
        if full == "no_inode":
            assert filler.fill_inodes() > 0
        else:
            assert filler.fill() > 0
            if full == "room_for_torrc":
                filler.give_back(4096)
        caplog.set_level(logging.INFO)
        text = await refused(settings)
        assert_clear(text, tor_dir)
        if full == "room_for_torrc":
            # tor's own reason, though its log file on that disk could not hold it
            assert (tor_dir / "tor.log").read_bytes() == b""
            assert 'Error writing to "' in text and "No space left on device" in text.split("tor's last warnings:", 1)[1], text
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors


# ------------------------------------------------------------ a running node's disk fills (private Tor network)


def node_files(data_dir: Path) -> dict[str, str]:
    """The node's own files (not tor's, not the fillers, not SQLite's shared-memory index) by SHA-256."""
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and not p.is_relative_to(data_dir / "tor") and not p.name.startswith("filler") and not p.name.endswith("-shm")
    }


@asynccontextmanager
async def started(settings: NodeSettings) -> AsyncIterator[tuple[Node, NodeTor]]:
    with trio.fail_after(TOR_TIMEOUT * 2):
        built = build_node(settings)
        async with built.running() as node:
            yield node, built.app("tor")


class Received:
    """The custom messages a node gets, and an event set once ``MESSAGES`` of them came."""

    def __init__(self, node: Node) -> None:
        self.payloads: list[bytes] = []
        self.done = trio.Event()
        node.add_handler(CUSTOM, self._on_custom)

    def _on_custom(self, peer: Peer, message: UnknownMessage) -> None:
        self.payloads.append(message.payload)
        if len(self.payloads) == MESSAGES:
            self.done.set()

    def reset(self) -> None:
        self.payloads.clear()
        self.done = trio.Event()


async def exchange(a: Node, b: Node, received: Received, tag: bytes, old: Peer | None = None) -> Peer:
    """A (connected to B, through Tor, other than ``old``) sends MESSAGES custom messages to B; B
    gets them all, in order. A's peer."""
    received.reset()
    peer = await new_peer(a, b.node_id, old=old, timeout=CONNECT_TIMEOUT * 2)
    assert peer.transport_kind == "tor"
    for i in range(MESSAGES):
        await peer.send(CUSTOM.to_bytes(2, "big") + tag + b" %d" % i)
    with trio.fail_after(CONNECT_TIMEOUT):
        await received.done.wait()
    assert received.payloads == [tag + b" %d" % i for i in range(MESSAGES)]
    return peer


async def test_a_full_disk_under_a_running_onion_node_loses_nothing_and_its_address_survives(
    private_tor_network: PrivateTorNetwork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = private_tor_network
    b_dir = tmp_path / "b"
    tor_dir = b_dir / "tor"
    b_settings = NodeSettings(data_dir=b_dir, onion_only=True, tor=tor_settings(net, b_dir))
    caplog.set_level(logging.INFO)
    with small_disk(b_dir, size_kib=8 * 1024) as data_disk, small_disk(tor_dir, size_kib=8 * 1024) as tor_disk:
        async with started(b_settings) as (b, b_tor):
            onion = b_tor.onion_target
            assert onion is not None and b.listen_addresses == [onion]
            received = Received(b)
            a, _ = onion_node(net, tmp_path / "a", connect=[b.addresses[0]])
            async with running(a):
                peer = await exchange(a, b, received, b"before")
                before = node_files(b_dir)
                assert {"node_key", "onion_key", "gossip.sqlite3"} <= before.keys()
                handle = b_tor.handle
                assert handle is not None and (await b_tor.status())["disk_full"] is None

                data_filler, tor_filler = DiskFiller(data_disk), DiskFiller(tor_disk)
                assert data_filler.fill() > 0 and tor_filler.fill() > 0
                # Tor writes its directory caches with each new consensus (every 10 s here): those
                # writes fail now, and the node says so, once, as a warning.
                with trio.fail_after(GUARD):
                    while (await b_tor.status())["disk_full"] is None:
                        await trio.sleep(0.2)
                full = (await b_tor.status())["disk_full"]
                assert Path(full).is_relative_to(tor_dir), full
                warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cannot write" in r.getMessage()]
                assert warned and f"cannot write {full}: no room on its disk; free some space there" in warned[0], warned

                # Tor runs on, and a new connection through it (A redials: a new rendezvous) carries messages.
                assert b_tor.handle is handle and handle.returncode is None and b_tor.recoveries == 0  # type: ignore[attr-defined]
                peer.close("a new connection while the disk is full")
                await exchange(a, b, received, b"while full", old=peer)
                assert b_tor.handle is handle and handle.returncode is None  # type: ignore[attr-defined]

                # Tor killed on the full disk: the node tries to bring it back, as it does for any
                # death, says why each try fails, and succeeds once tor's disk has room.
                os.kill(handle.pid, signal.SIGKILL)  # type: ignore[attr-defined]
                with trio.fail_after(GUARD):
                    while not (failed := [r.getMessage() for r in caplog.records if "bringing Tor back failed" in r.getMessage()]):
                        await trio.sleep(0.1)
                assert_clear(failed[0], tor_dir)
                assert b_tor.tor_state == "recovering" and b.listen_addresses == [onion]
                tor_filler.free()
                with trio.fail_after(GUARD):
                    while b_tor.recoveries < 1 or b_tor.tor_state != "ready":
                        await trio.sleep(0.1)
                assert b_tor.onion_target == onion and b.listen_addresses == [onion]
                assert tor_filler.fill() > 0
        now = node_files(b_dir)
        assert {k: now.get(k) for k in ("node_key", "onion_key")} == {k: before[k] for k in ("node_key", "onion_key")}
        assert now.get("gossip.sqlite3") == before["gossip.sqlite3"]

        # Restarted on the full disk: refused, nothing changed.
        text = await refused(b_settings)
        assert_clear(text, b_dir)
        # With room in the data dir, none on tor's disk but for its torrc (a new one replaces the old,
        # so the old one's room is what it gets): tor's path and words.
        data_filler.free()
        (tor_dir / "torrc").unlink()
        text = await refused(b_settings)
        assert_clear(text, tor_dir)
        assert "tor's last warnings:" in text and "No space left on device" in text.split("tor's last warnings:", 1)[1], text
        assert {k: node_files(b_dir).get(k) for k in ("node_key", "onion_key")} == {k: before[k] for k in ("node_key", "onion_key")}

        # Room again: the same onion address, from the key kept all along.
        tor_filler.free()
        async with started(b_settings) as (b, b_tor):
            assert b_tor.onion_target == onion and b.listen_addresses == [onion]
            received = Received(b)
            a, _ = onion_node(net, tmp_path / "a2", connect=[b.addresses[0]])
            async with running(a):
                await exchange(a, b, received, b"after")
