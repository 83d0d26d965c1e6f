"""A node that starts on a full disk: one clear error, nothing lost.

The disk is real: a small tmpfs (:mod:`lnpmsg.testing.disk`) mounted on the
data dir, or on one store's directory, filled before the node starts.

- A fresh data dir, each store in turn the first that cannot write (the node
  key, the gossip store, ``control.json``, the wallet's seed, the channel
  seed, the payments store): the start fails with one :class:`StartError`
  naming the file, ``No space left on device`` and ``free some space``,
  nothing is logged at ERROR besides, nothing half written is left behind
  (an empty wallet seed made the next start fail), and once there is room
  the node starts.
- The channel app's monitors' and failures' directories, on a disk with no
  room for them: the channel store's own error names the directory.
- A data dir holding a channel, a payment, invoices, coins and gossip (the
  whole dir full, or only the wallet's or the payments store's): the same
  error, no file of the stores changed, and after freeing space the node
  starts, in the same process, with everything as it was.
- The embedded chain, as ``lnpmsg node --chain regtest`` runs it (real
  processes): a fresh chain on a disk with less room than the consensus
  engine wants, and an existing one on a full disk, exit 1 with the disk's
  error (not "damaged, start with --reindex", which would send the user
  the wrong way); once there is room the node starts with its chain and
  coins as they were.

Nodes in one process on loopback TCP, on one embedded regtest chain kept on
the ordinary disk (``NodeSettings.chain_source``), except in the last part.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_chain_durability import cli_json, mine_and_faucet, stop

from lnpmsg.app import App
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.node.full_disk import LOW_SPACE_BYTES, cannot, is_full_disk
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node
from lnpmsg.runtime import NodeSettings, build_node
from lnpmsg.runtime.settings import StartError
from lnpmsg.testing.disk import DiskFiller, small_disk
from lnpmsg.testing.processes import finish_process, start_node_process

pytestmark = pytest.mark.slow

TIMEOUT = 60
#: the consensus engine wants 66 MiB free to write a block; a chain after 101 blocks takes ~17 MiB
CHAIN_DISK_KIB = 96 * 1024
#: where the small disk is mounted under the data dir, the settings beyond the defaults, and the
#: file that cannot be written (the first store of a fresh node that needs room, in start order)
FRESH: dict[str, tuple[str, dict[str, Any], str]] = {
    "node_key": (".", {}, "node_key"),
    "gossip_store": (".", {"key": "given"}, "gossip.sqlite3"),
    "control_file": (".", {"key": "given", "gossip": False, "chain_source": None}, "control.json"),
    "wallet_seed": ("wallet", {}, "wallet/seed"),
    "channel_seed": ("channels", {}, "channels/channel_seed"),
    "payments_store": ("payments", {}, "payments/payments.sqlite3"),
}
#: where the small disk of a node with state is mounted, and the file its start cannot write
EXISTING = {"data_dir": (".", "wallet/wallet.json"), "wallet": ("wallet", "wallet/wallet.json"),
            "payments_store": ("payments", "payments/payments.sqlite3")}  # fmt: skip
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def settings(data_dir: Path, source: EmbeddedChainSource | None, **fields: Any) -> NodeSettings:
    """A node as ``lnpmsg node`` builds one (chain and wallet, channels, payments, gossip, control)."""
    if fields.get("key") == "given":
        fields["key"] = NodeKey.generate()
    return NodeSettings(**{"data_dir": data_dir, "listen": ["127.0.0.1:0"], "network": "regtest", "chain_source": source, **fields})


async def wait_until(condition: Callable[[], Any], what: str) -> None:
    with trio.fail_after(TIMEOUT):
        while not await condition():
            await trio.sleep(0.05)


def assert_one_clear_error(text: str, path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The error names the file, the cause and the cure; nothing else was said at ERROR."""
    assert str(path) in text and "No space left on device" in text and "free some space" in text, text
    assert "Errno" not in text and "OperationalError" not in text and "Traceback" not in text, text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


async def refused_start(node_settings: NodeSettings) -> str:
    """Build and start a node that must not start; its :class:`StartError`'s text."""
    with pytest.raises(StartError) as refused:
        async with build_node(node_settings).running():
            pass
    return str(refused.value)


def disk_for(data_dir: Path, under: str) -> Path:
    return data_dir if under == "." else data_dir / under


@pytest.fixture
async def source(tmp_path: Path):
    async with EmbeddedChainSource.open(tmp_path / "chain") as src:
        await src.mine(101)
        yield src


# ------------------------------------------------------------------ a fresh data dir


@pytest.mark.parametrize("store", list(FRESH))
async def test_a_fresh_node_on_a_full_disk_fails_with_one_clear_error_and_starts_once_there_is_room(
    tmp_path: Path, source: EmbeddedChainSource, caplog: pytest.LogCaptureFixture, store: str
) -> None:
    under, fields, named = FRESH[store]
    data_dir = tmp_path / "node"
    chain = fields.pop("chain_source", source)
    node_settings = settings(data_dir, chain, **fields)
    with small_disk(disk_for(data_dir, under), size_kib=1024) as disk:
        filler = DiskFiller(disk)
        assert filler.fill() > 0
        caplog.set_level(logging.INFO)
        text = await refused_start(node_settings)
        assert_one_clear_error(text, data_dir / named, caplog)
        left = [p for p in data_dir.rglob("*") if p.is_file() and p.name != "filler"]
        assert not [p for p in left if p.name.endswith(".tmp")], left
        # A key or seed is whole or absent: an empty one would make the next start fail.
        assert all(p.stat().st_size > 0 for p in left if p.name in ("node_key", "seed", "channel_seed")), left

        filler.free()
        async with build_node(node_settings).running() as node:
            assert node.started.is_set() and (data_dir / named).stat().st_size > 0


#: the channel app's directories, made before its first file, and those made before each
CHANNEL_DIRS = {"monitors": (), "failures": ("monitors",)}


@pytest.mark.parametrize("named", list(CHANNEL_DIRS))
async def test_a_channel_directory_the_disk_has_no_room_for_is_named_by_the_channel_store(
    tmp_path: Path, source: EmbeddedChainSource, caplog: pytest.LogCaptureFixture, named: str
) -> None:
    # A tmpfs makes a directory without a data page: the disk is out of inodes, as full for a
    # directory as a disk whose directories take a block.
    data_dir = tmp_path / "node"
    channels = data_dir / "channels"
    node_settings = settings(data_dir, source)
    with small_disk(channels, size_kib=1024, inodes=64) as disk:
        for made in CHANNEL_DIRS[named]:
            (disk / made).mkdir()
        filler = DiskFiller(disk)
        assert filler.fill_inodes() > 0
        caplog.set_level(logging.INFO)
        text = await refused_start(node_settings)
        assert_one_clear_error(text, channels / named, caplog)
        assert text.startswith("cannot "), text  # the channel store's own error, not the start's catch-all
        assert "no inode left" in text, text  # not "N bytes free: free some space", which would puzzle

        filler.free()
        async with build_node(node_settings).running() as node:
            assert node.started.is_set() and (channels / named).is_dir()


class JournalApp(App):
    """A user app that writes a journal in the data dir when it starts (a store no part of the node wraps)."""

    def __init__(self, path: Path) -> None:
        super().__init__("journal")
        self.path = path

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.path.open("ab") as f:
            f.write(b"started\n" * 1024)
            f.flush()
        await super().run(task_status=task_status)


async def test_a_write_no_store_wraps_is_still_said_clearly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "node"
    node_settings = settings(data_dir, None, key="given", gossip=False, control=False, apps=[JournalApp(data_dir / "journal")])
    with small_disk(data_dir, size_kib=1024) as disk:
        filler = DiskFiller(disk)
        assert filler.fill() > 0
        caplog.set_level(logging.INFO)
        text = await refused_start(node_settings)
        assert text.startswith(f"app 'journal' failed to start: cannot write in {data_dir}: "), text  # its write named no file
        assert_one_clear_error(text, data_dir, caplog)
        filler.free()
        node_settings.apps = [JournalApp(data_dir / "journal")]
        async with build_node(node_settings).running() as node:
            assert node.started.is_set()


def test_an_sqlite_io_error_is_a_full_disk_only_when_the_disk_has_no_room(tmp_path: Path) -> None:
    import sqlite3

    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorname = "SQLITE_IOERR_SHMSIZE"  # type: ignore[attr-defined]
    assert not is_full_disk(io_error, tmp_path)  # the ordinary disk has room: a failing disk, not a full one
    assert cannot("open", tmp_path / "x.sqlite3", io_error) == f"cannot open {tmp_path / 'x.sqlite3'}: disk I/O error"
    with small_disk(tmp_path / "disk", size_kib=LOW_SPACE_BYTES // 1024 * 2) as disk:
        filler = DiskFiller(disk)
        filler.fill()
        filler.give_back(LOW_SPACE_BYTES // 2)
        assert is_full_disk(io_error, disk / "x.sqlite3")
        said = cannot("open", disk / "x.sqlite3", io_error)
        assert "No space left on device (the disk holding it has" in said and said.endswith("(SQLite said: disk I/O error)")
    refused = PermissionError(13, "Permission denied")
    assert cannot("write", tmp_path / "y", refused) == f"cannot write {tmp_path / 'y'}: Permission denied"


# ------------------------------------------------------------------ a data dir with state


async def state(node: Node) -> dict[str, Any]:
    """What a user of the node has: channels, invoices, payments, coins, the gossip it stored."""
    apps = node.apps
    channels = (await apps["channels"].listchannels())["channels"]  # type: ignore[attr-defined]
    kept = ("channel_id", "peer_id", "state", "capacity_sat", "to_local_msat", "to_remote_msat", "htlcs",
            "short_channel_id", "funding_outpoint", "channel_type")  # fmt: skip
    gossip = await apps["gossip"].list_channels()  # type: ignore[attr-defined]
    return {
        "channels": [{k: c[k] for k in kept} for c in channels],
        "invoices": (await apps["payments"].listinvoices())["invoices"],  # type: ignore[attr-defined]
        "payments": (await apps["payments"].listpayments())["payments"],  # type: ignore[attr-defined]
        "funds": await apps["chain"].listfunds(),  # type: ignore[attr-defined]
        # a restart re-signs our channel_updates: the channels are what must stay
        "gossip": [{k: v for k, v in c.items() if k != "policies"} for c in gossip],
    }


def files(data_dir: Path) -> dict[str, str]:
    """Every file of the data dir but the filler and SQLite's shared-memory index, by its SHA-256."""
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and p.name != "filler" and not p.name.endswith("-shm")
    }


async def give_a_node_state(source: EmbeddedChainSource, a: NodeSettings, b: NodeSettings) -> dict[str, Any]:
    """A funds an announced channel to B, pays B's invoice, makes an invoice of its own and stores
    the channel's gossip; both stop. A's state."""
    async with build_node(b).running() as node_b, build_node(a).running() as node_a:
        wallet = node_a.apps["chain"].wallet  # type: ignore[attr-defined]
        await source.faucet(wallet.new_address(), 3_000_000)
        await source.mine(1)
        await wallet.sync()
        await node_a.connect(node_b.addresses[0])
        await node_a.apps["channels"].fundchannel(node_b.node_id.hex(), 1_000_000, push_msat=10_000_000, announce=True)  # type: ignore[attr-defined]
        await source.mine(6)

        async def ready() -> bool:
            got = (await node_a.apps["channels"].listchannels())["channels"]  # type: ignore[attr-defined]
            return bool(got) and got[0]["state"] == "normal" and got[0]["connected"]

        await wait_until(ready, "the channel is ready")
        invoice = await node_b.apps["payments"].invoice(5_000_000, "paid", "paid by A")  # type: ignore[attr-defined]
        paid = await node_a.apps["payments"].pay(invoice["bolt11"])  # type: ignore[attr-defined]
        assert paid["status"] == "complete"

        async def settled() -> bool:  # the preimage came back: the HTLC leaves both commitments after
            (got,) = (await node_a.apps["channels"].listchannels())["channels"]  # type: ignore[attr-defined]
            return not got["htlcs"] and got["to_remote_msat"] == 15_000_000

        await wait_until(settled, "the HTLC is settled")
        await node_a.apps["payments"].invoice(7_000_000, "open", "for B to pay")  # type: ignore[attr-defined]

        async def gossiped() -> bool:
            return len(await node_a.apps["gossip"].list_channels()) == 1  # type: ignore[attr-defined]

        await wait_until(gossiped, "the channel is in A's gossip store")
        return await state(node_a)


@pytest.mark.parametrize("full", list(EXISTING))
async def test_a_node_with_channels_payments_and_coins_refuses_to_start_on_a_full_disk_and_loses_nothing(
    tmp_path: Path, source: EmbeddedChainSource, caplog: pytest.LogCaptureFixture, full: str
) -> None:
    under, named = EXISTING[full]
    data_dir = tmp_path / "a"
    a_settings = settings(data_dir, source)
    with small_disk(disk_for(data_dir, under), size_kib=16 * 1024) as disk:
        before = await give_a_node_state(source, a_settings, settings(tmp_path / "b", source))
        assert before["channels"] and before["payments"] and len(before["invoices"]) == 1 and before["funds"]["outputs"]
        stored = files(data_dir)
        filler = DiskFiller(disk)
        assert filler.fill() > 0
        caplog.set_level(logging.INFO)
        text = await refused_start(a_settings)
        assert_one_clear_error(text, data_dir / named, caplog)
        # Nothing any store held changed; a refused SQLite open may leave an empty WAL beside its file.
        now = files(data_dir)
        changed = {k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k)}
        assert all(k.endswith("-wal") and k not in stored and now[k] == EMPTY_SHA256 for k in changed), changed

        filler.free()
        async with build_node(a_settings).running() as node:  # in the same process: the data dir's lock is free
            after = await state(node)
            assert after == before, [(k, b[k], a[k]) for b, a in zip(before["channels"], after["channels"], strict=True) for k in b if b[k] != a[k]]


# ------------------------------------------------------------------ the embedded chain, as lnpmsg node runs it


async def test_a_fresh_embedded_chain_without_the_room_it_needs_says_so_and_starts_once_there_is_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_disk(tmp_path / "disk", size_kib=CHAIN_DISK_KIB) as disk:
        data_dir = disk / "node"
        filler = DiskFiller(disk)
        filler.fill()
        filler.give_back(256 * 1024)  # room for the node key and the gossip store, not for the chain's first block
        await _start_refused(data_dir, "chain")

        filler.free()
        process, info = await start_node_process(data_dir, "--chain", "regtest")
        try:
            assert info is not None
            code, chain = await cli_json(capsys, "getchaininfo", "--data-dir", data_dir)
            assert code == 0 and chain["height"] == 0
        finally:
            await stop(process)


async def test_an_embedded_chain_with_coins_on_a_full_disk_says_so_and_keeps_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with small_disk(tmp_path / "disk", size_kib=CHAIN_DISK_KIB) as disk:
        data_dir = disk / "node"
        d = ("--data-dir", data_dir)
        process, info = await start_node_process(data_dir, "--chain", "regtest")
        try:
            assert info is not None
            await mine_and_faucet(capsys, d, 100_000)
            _, chain = await cli_json(capsys, "getchaininfo", *d)
            _, funds = await cli_json(capsys, "listfunds", *d)
            assert funds["outputs"]
        finally:
            await stop(process)
        filler = DiskFiller(disk)
        filler.fill()
        # The first store that cannot open: the gossip store (WAL needs room for its -shm file);
        # without gossip, the chain (the kernel's block index cannot be written).
        for options, named in (((), "gossip.sqlite3"), (("--no-gossip",), "chain")):
            await _start_refused(data_dir, named, *options)

        filler.free()
        process, info = await start_node_process(data_dir, "--chain", "regtest")
        try:
            assert info is not None
            assert (await cli_json(capsys, "getchaininfo", *d))[1] == chain
            assert (await cli_json(capsys, "listfunds", *d))[1] == funds
        finally:
            await stop(process)


async def _start_refused(data_dir: Path, named: str, *options: str) -> None:
    """``lnpmsg node`` on the full disk exits 1 with one error naming ``data_dir / named``, the cause
    and the cure, without a traceback and without calling the chain damaged."""
    process, info = await start_node_process(data_dir, "--chain", "regtest", *options)
    code, stderr = await finish_process(process)
    assert info is None and code == 1, stderr
    (error,) = [line for line in stderr.splitlines() if "[ERR]" in line]
    assert str(data_dir / named) in error and "No space left on device" in error and "free some space" in error
    assert "--reindex" not in stderr, stderr
    assert "state is damaged" not in stderr and "Traceback" not in stderr, stderr
