"""Channels on chain with Electrum 4.3.4 (Debian's, a separate process): an
``lnpmsg node`` (embedded regtest chain, its own Electrum server) opens
channels to Electrum; Electrum force-closes one (``close_channel`` with
``force``), lnpmsg force-closes another (``closechannel --force``), and
Electrum's ``request_force_close`` makes lnpmsg close a third. After the
delays both wallets hold their funds: lnpmsg's monitor sweeps its outputs,
Electrum's watcher its own (its channels end REDEEMED).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import start_logged_node
from test_channels_electrum import lightning_wallet
from test_channels_nodes import WAIT, cli, stop

pytestmark = pytest.mark.slow

DELAY = 6
CHANNEL_SAT = 400_000
PUSH_MSAT = 100_000_000


async def start_node(data_dir: Path, delay: int = DELAY, electrum: str = "127.0.0.1:0") -> tuple[trio.Process, dict[str, Any]]:
    """A node on its embedded regtest chain with its Electrum server (on ``electrum``: keep the
    port across a restart), asking its peers for a ``delay``-block to_self_delay."""
    return await start_logged_node(data_dir, "--listen", "127.0.0.1:0", "--chain", "regtest", "--electrum-listen", electrum,
                                   "--channel-to-self-delay", delay, wait=WAIT)


def by_point(wallet: ElectrumWallet, point: str) -> dict[str, Any]:
    (c,) = [c for c in wallet.call("list_channels") if c["channel_point"] == point]
    return c


async def onchain(node_dir: Path, channel_id: str) -> dict[str, Any] | None:
    for c in (await cli("listchannels", "--data-dir", node_dir))["channels"]:
        if c["channel_id"] == channel_id:
            return c.get("onchain")  # type: ignore[no-any-return]
    raise AssertionError(channel_id)


async def failed(node_dir: Path, channel_id: str) -> bool:
    for c in (await cli("listchannels", "--data-dir", node_dir))["channels"]:
        if c["channel_id"] == channel_id:
            return bool(c["state"] == "failed")
    raise AssertionError(channel_id)


async def mine_until(node_dir: Path, wallet: ElectrumWallet, check: Any, what: str, max_blocks: int = 200) -> None:
    """Mine a block at a time (letting both sides react) until ``check()`` holds."""
    for _ in range(max_blocks):
        if await check():
            return
        await cli("mine", "--data-dir", node_dir)
        await trio.sleep(0.3)
    raise AssertionError(f"{what}: not after {max_blocks} blocks\n{wallet.log(100)}")


@dataclass
class ElectrumPeer:
    """A node (restartable: replace ``node`` and ``info``) connected to an Electrum wallet."""

    node_dir: Path
    node: trio.Process
    info: dict[str, Any]
    wallet: ElectrumWallet
    electrum_id: str
    listen_port: int


@asynccontextmanager
async def electrum_peer(tmp_path: Path) -> AsyncIterator[ElectrumPeer]:
    """A node with 5 BTC in its wallet, connected to an Electrum wallet that asks for a 10-block
    to_self_delay; both stopped at the end."""
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    d = ("--data-dir", node_dir)
    peer: ElectrumPeer | None = None
    try:
        await cli("mine", 101, *d)
        wallet, listen_port = await lightning_wallet(tmp_path / "electrum", info["electrum"], lightning_to_self_delay=10)
        peer = ElectrumPeer(node_dir, node, info, wallet, (await wallet.acall("nodeid")).split("@")[0], listen_port)
        await cli("faucet", 5_000_000, *d)
        await cli("mine", 1, *d)
        await cli("connect", f"{peer.electrum_id}@127.0.0.1:{listen_port}", *d)
        yield peer
    finally:
        if peer is not None:
            node = peer.node
            await trio.to_thread.run_sync(peer.wallet.stop)
        await stop(node, node_dir)


async def test_force_closes_both_ways_and_request_force_close_with_electrum(tmp_path: Path) -> None:
    async with electrum_peer(tmp_path) as peer:
        node_dir, wallet, w, electrum_id, listen_port = peer.node_dir, peer.wallet, peer.wallet, peer.electrum_id, peer.listen_port
        d = ("--data-dir", node_dir)
        ids: list[str] = []
        for _ in range(3):
            opened = await cli("fundchannel", electrum_id, CHANNEL_SAT, "--push-msat", PUSH_MSAT, *d)
            ids.append(opened["channel_id"])
            await cli("mine", 1, *d)
        await cli("mine", 3, *d)
        await trio.to_thread.run_sync(
            w.wait_for, lambda: len([c for c in w.call("list_channels") if c["state"] == "OPEN"]) == 3, "3 open", WAIT
        )
        listed = {c["channel_id"]: c["funding_outpoint"] for c in (await cli("listchannels", *d))["channels"]}
        points = [listed[i] for i in ids]
        start_sat = (await cli("listfunds", *d))["total_sat"]

        # 1. Electrum force-closes: its commitment; our to_remote goes to our wallet at once
        await wallet.acall("close_channel", channel_point=points[0], force=True)
        async def theirs_resolved() -> bool:
            status = await onchain(node_dir, ids[0])
            return bool(status) and status["state"] != "open" and status["locked_sat"] == 0 and status["commitment"]["kind"] == "theirs_current"
        await mine_until(node_dir, wallet, theirs_resolved, "our to_remote from Electrum's commitment")

        # 2. lnpmsg force-closes: Electrum's to_remote is its at once, our to_local waits Electrum's delay
        forced = await cli("closechannel", ids[1], "--force", *d)
        assert forced["state"] == "failed" and forced["commitment_txid"]
        async def ours_resolved() -> bool:
            status = await onchain(node_dir, ids[1])
            return bool(status) and status["state"] != "open" and status["locked_sat"] == 0 and status["commitment"]["kind"] == "ours"
        await mine_until(node_dir, wallet, ours_resolved, "our to_local after Electrum's to_self_delay")

        # 3. Electrum asks us to force-close (request_force_close): we broadcast our commitment
        # (Electrum drops the connection; when we dial it again it sends a channel_reestablish from
        # commitment 0 and an error for the channel: we fail it and broadcast our latest commitment)
        await wallet.acall("request_force_close", channel_point=points[2])
        with trio.fail_after(WAIT):
            while not await failed(node_dir, ids[2]):
                await trio.sleep(0.5)
                try:
                    await cli("connect", f"{electrum_id}@127.0.0.1:{listen_port}", *d)
                except AssertionError:
                    pass  # still connected, or Electrum not listening again yet
        async def requested_resolved() -> bool:
            status = await onchain(node_dir, ids[2])
            return bool(status) and status["state"] != "open" and status["locked_sat"] == 0 and status["commitment"]["kind"] == "ours"
        await mine_until(node_dir, wallet, requested_resolved, "our to_local after request_force_close")

        # Electrum redeems its side of each: its to_local after our delay (channel 1), its to_remote
        # (channels 2 and 3, static_remotekey: its wallet's at once)
        def electrum_sat() -> int:
            balance = w.call("getbalance")
            return round(float(balance["confirmed"]) * 100_000_000)

        async def electrum_has_its_funds() -> bool:
            # Electrum's own sweep of its to_local pays Electrum's fee (its regtest default is high)
            return await trio.to_thread.run_sync(electrum_sat) > 3 * PUSH_MSAT // 1000 - 30_000
        await mine_until(node_dir, wallet, electrum_has_its_funds, "Electrum's funds", 30)
        assert electrum_sat() <= 3 * PUSH_MSAT // 1000
        states = {by_point(w, p)["state"] for p in points}
        assert states <= {"CLOSED", "REDEEMED", "FORCE_CLOSING"}, states
        # every satoshi of the three channels is in one of the two wallets, but for fees
        ours = (await cli("listfunds", *d))["total_sat"] - start_sat
        assert 3 * (CHANNEL_SAT - PUSH_MSAT // 1000) - 20_000 < ours <= 3 * (CHANNEL_SAT - PUSH_MSAT // 1000)
        assert all(c["state"] != "open" and c["locked_sat"] == 0 for c in (await cli("listfunds", *d))["channels"])
