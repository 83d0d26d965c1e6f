"""Channels with Electrum 4.3.4 (Debian's, a separate process on Debian's Python):
Electrum opens a channel to an ``lnpmsg node`` and closes it cooperatively;
then lnpmsg opens one to Electrum (which listens: ``lightning_listen``) and
closes it. Electrum syncs from the node's own Electrum server
(``--electrum-listen``) on the node's embedded regtest chain.

Electrum talks only to peers offering data_loss_protect, gossip_queries and
static_remotekey (the node runs its gossip app for gossip_queries), and with
``use_gossip`` false it refuses non-trampoline peers, so it is set true.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import lnpmsg_argv
from test_channels_nodes import wait_channel
from test_chain_rpc_nodes import WAIT, cli, stop

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_node(data_dir: Path) -> tuple[trio.Process, dict[str, Any]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(f"{data_dir}.log", "ab")  # noqa: SIM115 (the process writes it while it runs)
    try:
        process = await trio.lowlevel.open_process(
            lnpmsg_argv("node", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--json", "--chain", "regtest",
                        "--electrum-listen", "127.0.0.1:0"),
            stdout=subprocess.PIPE, stderr=log, env=dict(os.environ),
        )  # fmt: skip
    finally:
        log.close()
    assert process.stdout is not None
    line = b""
    with trio.fail_after(WAIT):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, Path(f"{data_dir}.log").read_text()[-3000:]
            line += chunk
    return process, json.loads(line)


def electrum_channel(wallet: ElectrumWallet, state: str) -> dict[str, Any] | None:
    for c in wallet.call("list_channels"):
        if c["state"] == state:
            return c  # type: ignore[no-any-return]
    return None


async def test_electrum_opens_to_lnpmsg_and_lnpmsg_to_electrum_each_side_closes(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    d = ("--data-dir", node_dir)
    wallet: ElectrumWallet | None = None
    try:
        await cli("mine", 101, *d)
        listen_port = free_port()
        wallet = ElectrumWallet(tmp_path / "electrum", info["electrum"],
                                config={"use_gossip": True, "lightning_listen": f"127.0.0.1:{listen_port}"})  # fmt: skip
        await trio.to_thread.run_sync(wallet.create)
        await trio.to_thread.run_sync(wallet.start)
        await trio.to_thread.run_sync(wallet.wait_synced, 101)
        address = await wallet.acall("getunusedaddress")
        await cli("faucet", 3_000_000, "--address", address, *d)
        await cli("faucet", 3_000_000, *d)
        await trio.to_thread.run_sync(wallet.wait_synced, 103)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: wallet.call("getbalance").get("confirmed") == "0.03", "coins")

        # Electrum opens a channel to lnpmsg
        node_id = info["node_id"]
        tcp = info["addresses"][0]
        point = await wallet.acall("open_channel", connection_string=tcp, amount="0.01")
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPENING") or electrum_channel(wallet, "FUNDED"), "opening")
        await cli("mine", 3, *d)
        ours = await wait_channel(node_dir, "ready", lambda c: c["state"] == "normal")
        assert ours["opener"] == "remote" and ours["capacity_sat"] == 1_000_000 and ours["funding_outpoint"] == point
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)

        # Electrum closes it
        closing_txid = await wallet.acall("close_channel", channel_point=point)
        closed = await wait_channel(node_dir, "closed", lambda c: c["state"] == "closed")
        assert closed["channel_id"] == ours["channel_id"] and closing_txid
        await cli("mine", 1, *d)

        # lnpmsg opens a channel to Electrum, and closes it
        electrum_id = await wallet.acall("nodeid")
        await cli("connect", f"{electrum_id.split('@')[0]}@127.0.0.1:{listen_port}", *d)
        opened = await cli("fundchannel", electrum_id.split("@")[0], 500_000, "--push-msat", 10_000_000, *d)
        await cli("mine", 3, *d)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
        listed = (await cli("listchannels", *d))["channels"]
        (ours,) = [c for c in listed if c["channel_id"] == opened["channel_id"]]
        with trio.fail_after(WAIT):
            while ours["state"] != "normal":
                await trio.sleep(0.2)
                (ours,) = [c for c in (await cli("listchannels", *d))["channels"] if c["channel_id"] == opened["channel_id"]]
        result = await cli("closechannel", opened["channel_id"], *d)
        assert result["state"] == "closed" and result["closing_txid"]
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: electrum_channel(wallet, "CLOSING") or electrum_channel(wallet, "CLOSED"), "closed in Electrum", WAIT
        )
    finally:
        if wallet is not None:
            await trio.to_thread.run_sync(wallet.stop)
        await stop(node, node_dir)
