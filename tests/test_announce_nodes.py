"""A public channel between ``lnpmsg node`` processes, driven by the CLI as a user would.

A owns the embedded regtest chain; B and C use it over ``--bitcoind-rpc``.
A opens an announced channel to B (``fundchannel --announce``); C, with no
channel, is connected to both. After 6 confirmations ``lnpmsg gossip
listchannels`` on every node shows the channel with both policies, C's
``listnodes`` both announced nodes (A's alias and color from
``--alias``/``--rgb``); ``lnpmsg setchannelfee`` on A reaches C (A allows
itself a channel_update a second, ``--dev-update-interval 1``: the new fee
follows the first update at once instead of after the usual 10 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.processes import start_logged_node

from tests.test_channels_nodes import FUNDING_SAT, WAIT, cli, owner_argv, quiet, stop, user_argv, wait_channel

pytestmark = pytest.mark.slow


async def start(data_dir: Path, *options: str) -> tuple[trio.Process, dict[str, Any]]:
    """A node with gossip on loopback TCP (its log in DATA_DIR.log) and its summary."""
    return await start_logged_node(data_dir, "--listen", "127.0.0.1:0", *options, wait=WAIT)


async def gossip_channel(data_dir: Path, check: Any) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        while True:
            channels = (await cli("gossip", "listchannels", "--data-dir", data_dir))["channels"]
            if channels and check(channels[0]):
                return channels[0]
            await trio.sleep(0.3)


def both_policies(channel: dict[str, Any]) -> bool:
    return all(p is not None and p["active"] for p in channel["policies"])


async def test_announced_channel_in_every_nodes_gossip(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in "abc"}
    processes: list[tuple[trio.Process, Path]] = []
    try:
        a, a_info = await start(dirs["a"], *owner_argv("127.0.0.1:0"), "--alias", "alpha", "--rgb", "112233", "--dev-update-interval", "1")
        processes.append((a, dirs["a"]))
        rpc = user_argv(a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"]))
        b, b_info = await start(dirs["b"], *rpc)
        processes.append((b, dirs["b"]))
        c, c_info = await start(dirs["c"], *rpc)
        processes.append((c, dirs["c"]))
        await cli("faucet", 3_000_000, "--data-dir", dirs["a"])
        await cli("connect", a_info["addresses"][0], "--data-dir", dirs["b"])
        await cli("connect", a_info["addresses"][0], "--data-dir", dirs["c"])
        await cli("connect", b_info["addresses"][0], "--data-dir", dirs["c"])
        opened = await cli("fundchannel", b_info["node_id"], FUNDING_SAT, "--announce", "--data-dir", dirs["a"])
        assert opened["state"] == "await_ready"
        await cli("mine", 6, "--data-dir", dirs["a"])
        ours = await wait_channel(dirs["a"], "ready", quiet(0))

        for name in "abc":
            seen = await gossip_channel(dirs[name], both_policies)
            assert seen["short_channel_id"] == ours["short_channel_id"] and seen["capacity_sat"] == FUNDING_SAT
            assert {seen["node_id_1"], seen["node_id_2"]} == {a_info["node_id"], b_info["node_id"]}
        with trio.fail_after(WAIT):
            while True:
                nodes = {n["node_id"]: n for n in (await cli("gossip", "listnodes", "--data-dir", dirs["c"]))["nodes"]}
                if all(nodes.get(n, {}).get("announced") for n in (a_info["node_id"], b_info["node_id"])):
                    break
                await trio.sleep(0.3)
        # A's node_announcement carries the TCP address C dialled
        host_port = a_info["addresses"][0].split("@")[1]
        assert host_port in nodes[a_info["node_id"]]["addresses"]
        assert (nodes[a_info["node_id"]]["alias"], nodes[a_info["node_id"]]["rgb_color"]) == ("alpha", "112233")
        assert nodes[b_info["node_id"]]["alias"].startswith("lnpmsg-")

        set_fee = await cli("setchannelfee", ours["short_channel_id"], "--base-msat", 4242, "--ppm", 17, "--data-dir", dirs["a"])
        assert set_fee["channels"][0]["fee_base_msat"] == 4242
        a_dir = 0 if a_info["node_id"] < b_info["node_id"] else 1
        seen = await gossip_channel(dirs["c"], lambda ch: ch["policies"][a_dir]["fee_base_msat"] == 4242)
        assert seen["policies"][a_dir]["fee_proportional_millionths"] == 17
        listed = await cli("listchannelfees", "--data-dir", dirs["a"])
        assert listed["channels"][0]["public"] and listed["channels"][0]["fee_base_msat"] == 4242
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)
