"""Channels with Electrum 4.3.4 (Debian's, a separate process on Debian's Python):
Electrum opens a channel to an ``lnpmsg node`` and closes it cooperatively;
then lnpmsg opens one to Electrum (which listens: ``lightning_listen``) and
closes it; reestablish after Electrum restarts, after lnpmsg restarts (also
with the channel Electrum opened) and after lnpmsg is killed
(SIGKILL) mid-update; lnpmsg restored from an old copy of its channel store
(Electrum force-closes, lnpmsg broadcasts nothing); once with an HTLC Electrum fails (a real onion, built
by lnpmsg.payments, for a payment hash Electrum does not know) and once with
an update_fee. Electrum syncs from the node's own Electrum server
(``--electrum-listen``) on the node's embedded regtest chain.

Electrum talks only to peers offering data_loss_protect, gossip_queries and
static_remotekey (the node runs its gossip app for gossip_queries), and with
``use_gossip`` false it refuses non-trampoline peers, so it is set true.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.channels.manager import CRASH_ENV
from lnpmsg.payments.onion.payloads import HopPayload
from lnpmsg.payments.onion.sphinx import construct_onion
from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import start_logged_node
from test_channels_nodes import WAIT, cli, stop, wait_channel

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def lightning_wallet(directory: Path, server: str, **config: Any) -> tuple[ElectrumWallet, int]:
    """An Electrum wallet of its own server ``server`` with Lightning listening on a free loopback
    port, created, started and synced to block 101 (the node mined 101); the wallet and its port.
    It is stopped again if it does not get there."""
    port = free_port()
    wallet = ElectrumWallet(directory, server, config={"use_gossip": True, "lightning_listen": f"127.0.0.1:{port}", **config})
    try:
        await trio.to_thread.run_sync(wallet.create)
        await trio.to_thread.run_sync(wallet.start)
        await trio.to_thread.run_sync(wallet.wait_synced, 101)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(wallet.stop)
        raise
    return wallet, port


@dataclass
class ElectrumChannel:
    """A Lightning Electrum wallet and the open channel the node funded to it."""

    wallet: ElectrumWallet
    electrum_id: str  # Electrum's node id (hex)
    address: str  # where the node dials it: ``electrum_id@127.0.0.1:port``
    channel_id: str


async def channel_to_electrum(tmp_path: Path, data_dir: Path, server: str, push_msat: int) -> ElectrumChannel:
    """From a node just started in ``data_dir`` with its Electrum server at ``server``: 101 blocks,
    a Lightning Electrum wallet in ``tmp_path / "electrum"`` (``lightning_wallet``), 3M sat from the
    faucet to the node, the node connected to Electrum and a 600k sat channel funded to it pushing
    ``push_msat``, 3 blocks deep and open in Electrum. The wallet is stopped again if it does not
    get there (the caller stops it after)."""
    d = ("--data-dir", data_dir)
    await cli("mine", 101, *d)
    wallet, listen_port = await lightning_wallet(tmp_path / "electrum", server)
    try:
        await cli("faucet", 3_000_000, *d)
        electrum_id = (await wallet.acall("nodeid")).split("@")[0]
        address = f"{electrum_id}@127.0.0.1:{listen_port}"
        await cli("connect", address, *d)
        opened = await cli("fundchannel", electrum_id, 600_000, "--push-msat", push_msat, *d)
        await cli("mine", 3, *d)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(wallet.stop)
        raise
    return ElectrumChannel(wallet, electrum_id, address, opened["channel_id"])


@asynccontextmanager
async def node_with_electrum_channel(tmp_path: Path, push_msat: int) -> AsyncIterator[tuple[Path, dict[str, Any], ElectrumChannel]]:
    """A node started in ``tmp_path / "node"`` with ``channel_to_electrum``'s channel to Electrum
    (pushing ``push_msat``): its data directory, its start info and the channel; Electrum and the
    node stopped at the end (for tests that do not restart the node)."""
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    opened: ElectrumChannel | None = None
    try:
        opened = await channel_to_electrum(tmp_path, node_dir, info["electrum"], push_msat)
        yield node_dir, info, opened
    finally:
        if opened is not None:
            await trio.to_thread.run_sync(opened.wallet.stop)
        await stop(node, node_dir)


async def start_node(data_dir: Path, env: dict[str, str] | None = None, electrum: str = "127.0.0.1:0", *extra: str) -> tuple[trio.Process, dict[str, Any]]:
    return await start_logged_node(data_dir, "--listen", "127.0.0.1:0", "--chain", "regtest", "--electrum-listen", electrum, *extra, env=env, wait=WAIT)


def electrum_channel(wallet: ElectrumWallet, state: str) -> dict[str, Any] | None:
    for c in wallet.call("list_channels"):
        if c["state"] == state:
            return c  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("dual_fund", [False, True], ids=["default", "dual_fund"])
async def test_electrum_opens_to_lnpmsg_and_lnpmsg_to_electrum_each_side_closes(tmp_path: Path, dual_fund: bool) -> None:
    # with --dual-fund too: Electrum 4.3.4 does not offer option_dual_fund, so both ways stay v1
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir, None, "127.0.0.1:0", *(["--dual-fund"] if dual_fund else []))
    d = ("--data-dir", node_dir)
    wallet: ElectrumWallet | None = None
    try:
        await cli("mine", 101, *d)
        wallet, listen_port = await lightning_wallet(tmp_path / "electrum", info["electrum"])
        address = await wallet.acall("getunusedaddress")
        await cli("faucet", 3_000_000, "--address", address, *d)
        await cli("faucet", 3_000_000, *d)
        await trio.to_thread.run_sync(wallet.wait_synced, 103)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: wallet.call("getbalance").get("confirmed") == "0.03", "coins")

        # Electrum opens a channel to lnpmsg
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


async def connected(data_dir: Path, channel_id: str, htlcs: int = 0) -> dict[str, Any]:
    """Our channel once normal, with the peer back and ``htlcs`` HTLCs."""
    with trio.fail_after(WAIT):
        while True:
            for c in (await cli("listchannels", "--data-dir", data_dir))["channels"]:
                if c["channel_id"] == channel_id and c["state"] == "normal" and c["connected"] and len(c["htlcs"]) == htlcs:
                    return c
            await trio.sleep(0.2)


async def test_reestablish_with_electrum_after_restarts_and_a_sigkill_mid_update(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    d = ("--data-dir", node_dir)
    wallet: ElectrumWallet | None = None
    try:
        opened = await channel_to_electrum(tmp_path, node_dir, info["electrum"], 50_000_000)
        wallet, electrum_id, electrum_address, cid = opened.wallet, opened.electrum_id, opened.address, opened.channel_id
        before = await connected(node_dir, cid)

        # Electrum restarts: we dial it again, both reestablish.
        await trio.to_thread.run_sync(wallet.restart)
        await trio.to_thread.run_sync(wallet.wait_synced)
        await cli("connect", electrum_address, *d)
        assert (await connected(node_dir, cid))["to_local_msat"] == before["to_local_msat"]
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open after its restart", WAIT)

        # An HTLC to Electrum whose payment hash it does not know: lnpmsg is killed (SIGKILL) right
        # after storing Electrum's commitment_signed for it, restarts, reestablishes; Electrum
        # fails the HTLC (update_fail_htlc) and the balances are back where they were.
        await stop(node, node_dir)
        electrum_server = info["electrum"]
        node, info = await start_node(node_dir, env={CRASH_ENV: "CommitmentSigned"}, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        await connected(node_dir, cid)
        tip = (await cli("getchaininfo", *d))["height"]
        payment_hash = os.urandom(32)
        final = HopPayload.final(20_000_000, tip + 144, payment_secret=os.urandom(32))
        onion = construct_onion(os.urandom(32), [bytes.fromhex(electrum_id)], [final.encode()], payment_hash).packet
        params = {"channel": cid, "amount_msat": 20_000_000, "payment_hash": payment_hash.hex(), "cltv_expiry": tip + 144, "onion": onion.hex()}
        await cli("call", "channels.dev_addhtlc", json.dumps(params), *d)
        with trio.fail_after(WAIT):
            await node.wait()
        assert node.returncode == -9
        node, info = await start_node(node_dir, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        after = await connected(node_dir, cid)
        assert (after["to_local_msat"], after["to_remote_msat"]) == (before["to_local_msat"], before["to_remote_msat"])
        assert "Sending UPDATE_FAIL_HTLC" in wallet.log(20_000)

        # lnpmsg restarts (its Electrum server on the same port) and kills itself (SIGKILL) the moment
        # it has stored the commitment_signed Electrum sends back for our update_fee.
        await stop(node, node_dir)
        node, info = await start_node(node_dir, env={CRASH_ENV: "CommitmentSigned"}, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        await connected(node_dir, cid)
        new_feerate = before["feerate_per_kw"] * 2
        await cli("call", "channels.dev_updatefee", json.dumps({"channel": cid, "feerate_per_kw": new_feerate}), *d)
        with trio.fail_after(WAIT):
            await node.wait()
        assert node.returncode == -9

        node, info = await start_node(node_dir, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        with trio.fail_after(WAIT):
            while (after := await connected(node_dir, cid))["feerate_per_kw"] != new_feerate:
                await trio.sleep(0.2)
        # balances exact (the fee comes off the funder's output when the commitment is built)
        assert (after["to_local_msat"], after["to_remote_msat"]) == (before["to_local_msat"], before["to_remote_msat"])
        assert (await cli("getchaininfo", *d))["mempool"] == 0  # nothing broadcast
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open after our crash", WAIT)

        result = await cli("closechannel", cid, *d)
        assert result["state"] == "closed" and result["closing_txid"]
    finally:
        if wallet is not None:
            await trio.to_thread.run_sync(wallet.stop)
        if node.returncode is None:
            await stop(node, node_dir)


async def test_a_channel_electrum_opened_survives_our_restart_and_an_old_store_of_ours_never_broadcasts(tmp_path: Path) -> None:
    """Electrum opens (pushing us 200k sat); lnpmsg restarts normally and dials Electrum back: both
    reestablish. After an update (an HTLC Electrum fails), lnpmsg comes back from a copy of its
    channel store taken before it. Electrum 4.3.4, seeing from our channel_reestablish that it is
    ahead, force-closes at once with its own commitment without sending its channel_reestablish
    (so lnpmsg gets no proof to show: the lnpmsg-to-lnpmsg case is test_channels_dataloss.py);
    lnpmsg never broadcasts its stale commitment: Electrum's is the only spend of the funding."""
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    d = ("--data-dir", node_dir)
    wallet: ElectrumWallet | None = None
    try:
        await cli("mine", 101, *d)
        wallet, listen_port = await lightning_wallet(tmp_path / "electrum", info["electrum"])
        await cli("faucet", 3_000_000, "--address", await wallet.acall("getunusedaddress"), *d)
        await trio.to_thread.run_sync(wallet.wait_synced, 102)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: wallet.call("getbalance").get("confirmed") == "0.03", "coins")
        electrum_id = (await wallet.acall("nodeid")).split("@")[0]
        electrum_address = f"{electrum_id}@127.0.0.1:{listen_port}"

        await wallet.acall("open_channel", connection_string=info["addresses"][0], amount="0.01", push_amount="0.002")
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPENING") or electrum_channel(wallet, "FUNDED"), "opening")
        await cli("mine", 3, *d)
        ours = await wait_channel(node_dir, "ready", lambda c: c["state"] == "normal")
        cid = ours["channel_id"]
        assert ours["opener"] == "remote" and ours["to_local_msat"] == 200_000_000
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)

        # lnpmsg restarts (a plain stop): we dial Electrum, both reestablish. The store is copied meanwhile.
        await stop(node, node_dir)
        backup = tmp_path / "channels-backup"
        shutil.copytree(node_dir / "channels", backup)
        electrum_server = info["electrum"]
        node, info = await start_node(node_dir, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        before = await connected(node_dir, cid)
        assert (before["to_local_msat"], before["to_remote_msat"]) == (ours["to_local_msat"], ours["to_remote_msat"])

        # An update after the copy: an HTLC to Electrum it cannot route (it fails it).
        tip = (await cli("getchaininfo", *d))["height"]
        payment_hash = os.urandom(32)
        final = HopPayload.final(20_000_000, tip + 144, payment_secret=os.urandom(32))
        onion = construct_onion(os.urandom(32), [bytes.fromhex(electrum_id)], [final.encode()], payment_hash).packet
        params = {"channel": cid, "amount_msat": 20_000_000, "payment_hash": payment_hash.hex(), "cltv_expiry": tip + 144, "onion": onion.hex()}
        await cli("call", "channels.dev_addhtlc", json.dumps(params), *d)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: "Sending UPDATE_FAIL_HTLC" in wallet.log(50_000), "Electrum fails the HTLC", WAIT)
        after = await connected(node_dir, cid)
        assert after["to_local_msat"] == before["to_local_msat"]

        # lnpmsg comes back from the old copy of its channel store.
        await stop(node, node_dir)
        shutil.rmtree(node_dir / "channels")
        shutil.copytree(backup, node_dir / "channels")
        node, info = await start_node(node_dir, electrum=electrum_server)
        await cli("connect", electrum_address, *d)
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: electrum_channel(wallet, "FORCE_CLOSING") or electrum_channel(wallet, "CLOSED"), "Electrum force-closes", WAIT
        )
        assert "we are ahead of remote" in wallet.log(50_000)
        with trio.fail_after(WAIT):
            while (await cli("getchaininfo", *d))["mempool"] != 1:  # Electrum's commitment
                await trio.sleep(0.2)
        await cli("mine", 1, *d)
        await trio.sleep(1.0)  # room for a (wrong) broadcast of ours after the block
        # what may follow is our monitor's sweep of Electrum's commitment, never a commitment of ours
        assert "commitment transaction" not in Path(f"{node_dir}.log").read_text()  # we never tried to broadcast ours
    finally:
        if wallet is not None:
            await trio.to_thread.run_sync(wallet.stop)
        if node.returncode is None:
            await stop(node, node_dir)


async def channel_state(data_dir: Path, channel_id: str) -> str:
    (c,) = [c for c in (await cli("listchannels", "--data-dir", data_dir))["channels"] if c["channel_id"] == channel_id]
    return str(c["state"])
