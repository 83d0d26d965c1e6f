"""Payments with Electrum 4.3.4 (Debian's, a separate process on Debian's Python), over a
direct channel lnpmsg opened to it: Electrum pays an lnpmsg invoice (``lnpay``), lnpmsg
pays an invoice Electrum made (``add_request``), and each decodes the other's invoice
(Electrum's ``decode_invoice``, ``lnpmsg decodepay``: the fields each shows, Electrum's route
hint and fallback address); and Electrum pays an lnpmsg node (B, without the gossip app) one
private hop beyond the lnpmsg node it has a channel with (A, whose private channel_update to B
must not cost their connection). Electrum syncs from the node's own Electrum server on the
node's embedded regtest chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import start_logged_node
from test_channels_electrum import connected, electrum_channel, node_with_electrum_channel
from test_channels_nodes import LISTEN, WAIT, cli, owner_argv, start, stop, user_argv

pytestmark = pytest.mark.slow


async def test_electrum_pays_lnpmsg_and_lnpmsg_pays_electrum(tmp_path: Path) -> None:
    async with node_with_electrum_channel(tmp_path, 100_000_000) as (node_dir, info, opened):
        d = ("--data-dir", node_dir)
        wallet, electrum_id = opened.wallet, opened.electrum_id
        before = await connected(node_dir, opened.channel_id)

        # Electrum reads our invoice (its decode_invoice) as we do, and pays it over the channel
        invoice = await cli("invoice", 20_000_000, "from-electrum", "paid by Electrum", "--expiry", 1800, *d)
        decoded = await wallet.acall("decode_invoice", invoice=invoice["bolt11"])
        ours_decoded = await cli("decodepay", invoice["bolt11"])
        assert (decoded["rhash"], decoded["amount_msat"], decoded["pubkey"]) == (invoice["payment_hash"], 20_000_000, info["node_id"])
        assert (decoded["description"], decoded["exp"], decoded["time"]) == ("paid by Electrum", 1800, ours_decoded["timestamp"])
        result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
        assert result["success"], result["log"]
        (ours,) = (await cli("listinvoices", "--label", "from-electrum", *d))["invoices"]
        assert ours["status"] == "paid" and ours["preimage"] == result["preimage"]

        # we read Electrum's invoice (`lnpmsg decodepay`) and pay it
        request = await wallet.acall("add_request", amount="0.0001", memo="paid by lnpmsg", expiration=1800)
        text = request["lightning_invoice"]
        mine = await cli("decodepay", text)
        assert (mine["network"], mine["amount_msat"], mine["payee"], mine["payment_hash"]) == ("regtest", 10_000_000, electrum_id, request["rhash"])
        assert (mine["description"], mine["expiry"], mine["timestamp"]) == ("paid by lnpmsg", 1800, request["timestamp"])
        assert mine["fallbacks"] == [request["address"]]
        # Electrum 4.3.4's invoice features, its trampoline bit (151) among them
        assert mine["features"] == ["var_onion_optin (optional)", "payment_secret (optional)", "basic_mpp (optional)", "bit 151 (unknown, optional)"]
        # its route hint: the private channel from us (its policy is whatever Electrum knew then)
        assert [[(h["node_id"], h["short_channel_id"]) for h in r] for r in mine["route_hints"]] == [[(info["node_id"], before["short_channel_id"])]]
        paid = await cli("pay", text, *d)
        assert paid["status"] == "complete" and paid["fee_msat"] == 0
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: wallet.call("get_request", request_id=request["request_id"])["status"] == 3, "Electrum paid", WAIT
        )
        after = await connected(node_dir, opened.channel_id)
        assert after["to_local_msat"] == before["to_local_msat"] + 20_000_000 - 10_000_000


@dataclass
class Line:
    """Electrum's node A (the chain's owner, with its gossip app and an Electrum server) and a node B
    on A's chain, 101 blocks mined; ``wallet``, once made, is Electrum's."""

    tmp_path: Path
    a_info: dict[str, Any]
    processes: list[tuple[trio.Process, Path]]
    b_info: dict[str, Any] = field(default_factory=dict)
    wallet: ElectrumWallet | None = None

    @property
    def a_dir(self) -> Path:
        return self.tmp_path / "a"

    @property
    def b_dir(self) -> Path:
        return self.tmp_path / "b"

    async def start_b(self) -> None:
        """(Re)start B on A's chain."""
        b, self.b_info = await start(self.b_dir, LISTEN["tcp"], *user_argv(self.a_info["chain_rpc"]["url"], Path(self.a_info["chain_rpc"]["cookie"])))
        self.processes[1:] = [(b, self.b_dir)]

    async def funded_electrum(self) -> ElectrumWallet:
        """Electrum's wallet on A's server, synced, with 0.03 BTC confirmed from A's faucet."""
        self.wallet = wallet = ElectrumWallet(self.tmp_path / "electrum", self.a_info["electrum"], config={"use_gossip": True})
        await trio.to_thread.run_sync(wallet.create)
        await trio.to_thread.run_sync(wallet.start)
        await trio.to_thread.run_sync(wallet.wait_synced, 101)
        await cli("faucet", 3_000_000, "--address", await wallet.acall("getunusedaddress"), "--data-dir", self.a_dir)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: wallet.call("getbalance").get("confirmed") == "0.03", "coins")
        return wallet


@asynccontextmanager
async def electrum_line(tmp_path: Path) -> AsyncIterator[Line]:
    """A :class:`Line`; Electrum and the nodes are stopped at the end."""
    a, a_info = await start_with_gossip(tmp_path / "a", *owner_argv("127.0.0.1:0"), "--electrum-listen", "127.0.0.1:0")
    line = Line(tmp_path, a_info, [(a, tmp_path / "a")])
    try:
        await line.start_b()
        await cli("mine", 101, "--data-dir", line.a_dir)
        yield line
    finally:
        if line.wallet is not None:
            await trio.to_thread.run_sync(line.wallet.stop)
        for process, data_dir in reversed(line.processes):
            if process.returncode is None:
                await stop(process, data_dir)


async def start_with_gossip(data_dir: Path, *options: str) -> tuple[trio.Process, dict[str, Any]]:
    """A node process with its gossip app (Electrum wants gossip_queries from its peers)."""
    return await start_logged_node(data_dir, "--listen", "127.0.0.1:0", *options, wait=WAIT)


async def normal_channels(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """The node's ``count`` channels once all are normal with their peers connected
    (a failure shows the last listing)."""
    channels: list[dict[str, Any]] = []
    with trio.move_on_after(WAIT):
        while True:
            channels = (await cli("listchannels", "--data-dir", data_dir))["channels"]
            if len(channels) == count and all(c["state"] == "normal" and c["connected"] for c in channels):
                return channels
            await trio.sleep(0.2)
    seen = [(c["short_channel_id"], c["state"], "connected" if c["connected"] else "disconnected") for c in channels]
    raise AssertionError(f"{data_dir}: not {count} normal channels with their peers connected after {WAIT} s: {seen}")


async def test_electrum_pays_through_an_lnpmsg_node(tmp_path: Path) -> None:
    """Electrum -> A -> B: Electrum opens a channel to A, A one to B (private); B's invoice
    carries the route hint A -> B, and A forwards Electrum's HTLC."""
    async with electrum_line(tmp_path) as line:
        a_dir, b_dir, a_info = line.a_dir, line.b_dir, line.a_info
        wallet = await line.funded_electrum()
        await cli("faucet", 3_000_000, "--data-dir", a_dir)
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        await cli("fundchannel", line.b_info["node_id"], 800_000, "--data-dir", a_dir)
        await wallet.acall("open_channel", connection_string=a_info["addresses"][0], amount="0.01")
        # both channels' acceptors are lnpmsg nodes: 3 confirmations is their minimum_depth
        await cli("mine", 3, "--data-dir", a_dir)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
        await normal_channels(a_dir, 2)

        invoice = await cli("invoice", 15_000_000, "via-a", "Electrum through lnpmsg", "--data-dir", b_dir)
        result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
        assert result["success"], result["log"]
        (ours,) = (await cli("listinvoices", "--data-dir", b_dir))["invoices"]
        assert ours["status"] == "paid" and ours["preimage"] == result["preimage"]
        (fwd,) = (await cli("listforwards", "--data-dir", a_dir))["forwards"]
        assert fwd["status"] == "settled" and fwd["out_msat"] == 15_000_000 and fwd["in_msat"] > fwd["out_msat"]
