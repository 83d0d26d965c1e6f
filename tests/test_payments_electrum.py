"""Payments with Electrum 4.3.4 (Debian's, a separate process on Debian's Python), over a
direct channel lnpmsg opened to it: Electrum pays an lnpmsg invoice (``lnpay``), lnpmsg
pays an invoice Electrum made (``add_request``), and each decodes the other's invoice
(Electrum's ``decode_invoice``, ``lnpmsg decodepay``). Electrum syncs from the node's own
Electrum server on the node's embedded regtest chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lnpmsg.testing.electrum import ElectrumWallet
from test_channels_electrum import connected, electrum_channel, free_port, start_node
from test_channels_nodes import WAIT, cli, stop

pytestmark = pytest.mark.slow


async def test_electrum_pays_lnpmsg_and_lnpmsg_pays_electrum(tmp_path: Path) -> None:
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
        await cli("faucet", 3_000_000, *d)
        electrum_id = (await wallet.acall("nodeid")).split("@")[0]
        await cli("connect", f"{electrum_id}@127.0.0.1:{listen_port}", *d)
        opened = await cli("fundchannel", electrum_id, 600_000, "--push-msat", 100_000_000, *d)
        await cli("mine", 3, *d)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
        before = await connected(node_dir, opened["channel_id"])

        # Electrum pays our invoice over the channel
        invoice = await cli("invoice", 20_000_000, "from-electrum", "paid by Electrum", *d)
        decoded = await wallet.acall("decode_invoice", invoice=invoice["bolt11"])
        assert decoded["rhash"] == invoice["payment_hash"] and decoded["amount_msat"] == 20_000_000
        result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
        assert result["success"], result["log"]
        (ours,) = (await cli("listinvoices", "--label", "from-electrum", *d))["invoices"]
        assert ours["status"] == "paid" and ours["preimage"] == result["preimage"]

        # we pay Electrum's invoice
        request = await wallet.acall("add_request", amount="0.0001", memo="paid by lnpmsg")
        text = request.get("lightning_invoice") or request["invoice"]
        mine = await cli("decodepay", text)
        assert mine["amount_msat"] == 10_000_000 and mine["payee"] == electrum_id
        paid = await cli("pay", text, *d)
        assert paid["status"] == "complete" and paid["fee_msat"] == 0
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: wallet.call("get_request", request_id=request["request_id"])["status"] == 3, "Electrum paid", WAIT
        )
        after = await connected(node_dir, opened["channel_id"])
        assert after["to_local_msat"] == before["to_local_msat"] + 20_000_000 - 10_000_000
    finally:
        if wallet is not None:
            await trio.to_thread.run_sync(wallet.stop)
        await stop(node, node_dir)
