"""Electrum 4.3.4 (Debian's, a separate process) as a wallet on lnpmsg's chain:
it syncs headers from our Electrum server, receives faucet coins and checks
their merkle proofs, pays an lnpmsg wallet, and follows a reorg."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.chain.electrum.server import ElectrumServer
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.cli import main
from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import finish_process, start_node_process

pytestmark = pytest.mark.slow


async def cli_json(capsys: pytest.CaptureFixture[str], *argv: object) -> Any:
    code = await trio.to_thread.run_sync(main, [*map(str, argv), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def confirmed_entry(wallet: ElectrumWallet, txid: str, height: int | None = None) -> dict[str, Any] | None:
    """The wallet's history entry for ``txid`` once Electrum has verified its proof."""
    for entry in wallet.history():
        if entry["txid"] == txid and entry["confirmations"] > 0 and height in (None, entry["height"]):
            return entry
    return None


@pytest.fixture
async def electrum(tmp_path: Path) -> AsyncIterator[list[ElectrumWallet]]:
    """Wallets started by a test, stopped (and their logs shown on failure) after it."""
    wallets: list[ElectrumWallet] = []
    yield wallets
    for wallet in wallets:
        await trio.to_thread.run_sync(wallet.stop)


async def test_electrum_syncs_receives_and_pays_an_lnpmsg_node(capsys, tmp_path, electrum) -> None:
    data_dir = tmp_path / "node"
    process, info = await start_node_process(data_dir, "--chain", "regtest", "--electrum-listen", "127.0.0.1:0", "--no-gossip")
    d = ("--data-dir", data_dir)
    try:
        assert info is not None and info["electrum"].startswith("127.0.0.1:")
        await cli_json(capsys, "mine", 101, *d)
        wallet = ElectrumWallet(tmp_path / "electrum", info["electrum"])
        electrum.append(wallet)
        await trio.to_thread.run_sync(wallet.create)
        await trio.to_thread.run_sync(wallet.start)
        synced = await trio.to_thread.run_sync(wallet.wait_synced, 101)
        assert synced["connected"] and synced["blockchain_height"] == 101

        # faucet coins: seen waiting, then confirmed once Electrum has checked their proof
        address = await wallet.acall("getunusedaddress")
        paid = await cli_json(capsys, "faucet", 1_000_000, "--address", address, "--no-confirm", *d)
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: wallet.call("getbalance").get("unconfirmed") == "0.01", "the waiting payment")
        await cli_json(capsys, "mine", 1, *d)
        entry = await trio.to_thread.run_sync(
            wallet.wait_for, lambda: confirmed_entry(wallet, paid["txid"], 102), "the payment's proof")
        assert entry["txpos_in_block"] == 1
        assert f"verified {paid['txid']}" in wallet.log(10_000)
        assert (await wallet.acall("getbalance")) == {"confirmed": "0.01"}

        # Electrum pays the lnpmsg node's wallet; the node sees it confirmed
        lnpmsg_address = (await cli_json(capsys, "newaddr", *d))["address"]
        tx = await wallet.acall("payto", destination=lnpmsg_address, amount="0.004", feerate=2)
        txid = await wallet.acall("broadcast", tx=tx)
        await cli_json(capsys, "mine", 1, *d)
        funds = await cli_json(capsys, "listfunds", *d)
        [received] = [o for o in funds["outputs"] if o["txid"] == txid]
        assert received["amount_sat"] == 400_000 and received["confirmations"] == 1
        await trio.to_thread.run_sync(wallet.wait_for, lambda: confirmed_entry(wallet, txid, 103), "its own payment confirmed")
        balance = Decimal((await wallet.acall("getbalance"))["confirmed"])
        assert Decimal("0.0059") < balance < Decimal("0.006")  # less the fee
    finally:
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 0, stderr


async def test_electrum_follows_a_reorg(tmp_path, electrum) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as chain, trio.open_nursery() as nursery:
        await chain.mine(101)
        server = ElectrumServer(chain)
        port = await nursery.start(server.run)
        wallet = ElectrumWallet(tmp_path / "electrum", f"127.0.0.1:{port}")
        electrum.append(wallet)
        await trio.to_thread.run_sync(wallet.create)
        await trio.to_thread.run_sync(wallet.start)
        await trio.to_thread.run_sync(wallet.wait_synced, 101)
        address = await wallet.acall("getunusedaddress")
        outpoint = await chain.faucet(address, 500_000)
        await chain.mine(1)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: confirmed_entry(wallet, outpoint.txid_hex, 102), "confirmation at 102")

        # a longer branch of two empty blocks from 101 replaces block 102: the payment waits again
        core = chain.core
        await trio.to_thread.run_sync(lambda: core.mine(2, parent=core.block_hash(101)))
        assert (await chain.tip()).height == 103

        def back_to_waiting() -> bool:
            info = wallet.call("getinfo")
            [entry] = [e for e in wallet.history() if e["txid"] == outpoint.txid_hex]
            return info["blockchain_height"] == 103 and entry["confirmations"] == 0

        await trio.to_thread.run_sync(wallet.wait_for, back_to_waiting, "the reorg")
        assert "new fork at bad height 102" in wallet.log(10_000)  # Electrum's own fork handling ran
        # and it confirms on the new branch, proved again
        await chain.mine(1)
        entry = await trio.to_thread.run_sync(
            wallet.wait_for, lambda: confirmed_entry(wallet, outpoint.txid_hex, 104), "confirmation at 104")
        assert entry["confirmations"] == 1
        # a restarted daemon reconnects and keeps what it verified
        await trio.to_thread.run_sync(wallet.restart)
        await trio.to_thread.run_sync(wallet.wait_synced, 104)
        assert confirmed_entry(wallet, outpoint.txid_hex, 104) is not None
        nursery.cancel_scope.cancel()
