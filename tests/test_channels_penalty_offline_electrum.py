"""Revoked commitments mined while the victim is offline, with Electrum 4.3.4 (Debian's, a
separate process): the cheater broadcasts when the other side is down, and the victim, back
before the cheater's to_self_delay runs out, punishes from the blocks it missed.

The chain is a node of its own, C (``--chain regtest``, serving it to Electrum with
``--electrum-listen`` and to our node B over Bitcoin Core's JSON-RPC, ``--chain-rpc-listen``),
so that it goes on while B is down. Old states and the HTLCs they hold are made as in
tests/test_channels_penalty_electrum.py.

1. Electrum cheats while lnpmsg is down: B opens a channel to Electrum and pays it; Electrum's
   commitment of that state is taken and revoked by later payments. B is stopped (cleanly, or
   killed with SIGKILL), Electrum broadcasts its revoked commitment, C mines half of Electrum's
   to_self_delay (once all of it but two blocks). B starts: its monitor reads the blocks it
   missed from C, finds the commitment and claims every output of Electrum's with the
   revocation key, mined before the delay runs out: B's wallet ends with the channel but the
   fees, Electrum's with nothing. Once B kills itself (SIGKILL) the moment it has stored the
   revoke_and_ack by which Electrum revokes the commitment, before answering: the secret
   stored is enough.
2. lnpmsg cheats while Electrum is down: our commitment from an old copy of our channel store
   is broadcast and mined with the Electrum daemon stopped; C mines half of our to_self_delay
   and Electrum starts again: its watcher punishes (our to_local and the HTLC), and our
   monitor knows the commitment as ``ours_revoked``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.channels.manager import CRASH_ENV
from lnpmsg.testing.electrum import ElectrumError
from lnpmsg.testing.processes import start_logged_node
from test_channels_onchain_electrum import onchain
from test_channels_nodes import WAIT, cli, owner_argv, start, stop, user_argv
from test_channels_penalty_electrum import (
    DELAY,
    Setup,
    WITH_HTLC,
    ctx_with,
    electrum_revoked_state,
    electrum_takes_everything,
    lnpmsg_revoked_state,
    mempool,
    nothing_left_for_electrum,
    pay_electrum,
    penalty_broadcast,
    penalty_mined,
    wait_mempool,
)

pytestmark = pytest.mark.slow


class ChainSetup(Setup):
    """``Setup`` with the chain in a node of its own, C, which serves it to Electrum and to our node."""

    chain: trio.Process
    chain_info: dict[str, Any]

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.chain_dir = tmp_path / "chain"
        #: added to our node's environment when it starts (fault injection)
        self.env: dict[str, str] = {}

    async def start_node(self, again: bool = False) -> None:
        """Start C the first time, and our node on C's chain (with its gossip app: Electrum wants gossip_queries)."""
        if not again:
            self.chain, self.chain_info = await start(self.chain_dir, "127.0.0.1:0", *owner_argv("127.0.0.1:0"), "--electrum-listen", "127.0.0.1:0")
        rpc = self.chain_info["chain_rpc"]
        self.node, self.info = await start_logged_node(
            self.node_dir, "--listen", "127.0.0.1:0", *user_argv(rpc["url"], Path(rpc["cookie"])), "--channel-to-self-delay", DELAY,
            env=self.env, wait=WAIT,
        )  # fmt: skip

    @property
    def electrum_server(self) -> str:
        return str(self.chain_info["electrum"])

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if hasattr(self, "chain") and self.chain.returncode is None:
                await stop(self.chain, self.chain_dir)


async def down(s: ChainSetup, how: str) -> None:
    """Our node goes down: a clean stop, or SIGKILL."""
    if how == "stop":
        await stop(s.node, s.node_dir)
        return
    s.node.kill()
    with trio.fail_after(WAIT):
        await s.node.wait()
    assert s.node.returncode == -9


@pytest.mark.parametrize(
    ("htlc", "how", "missed"),
    [(None, "stop", DELAY // 2), (None, "sigkill", DELAY - 2), ("we_offered", "stop", DELAY // 2), ("electrum_offered", "sigkill", DELAY // 2)],
    ids=["no_htlc-stop", "no_htlc-sigkill-near_the_deadline", "htlc_we_offered-stop", "htlc_electrum_offered-sigkill"],
)
async def test_electrum_broadcasts_a_revoked_commitment_while_lnpmsg_is_down_and_lnpmsg_takes_everything_at_start(
    tmp_path: Path, htlc: str | None, how: str, missed: int
) -> None:
    """Our node misses ``missed`` blocks from the commitment's on (``DELAY - 2``: its penalty is mined two
    blocks before Electrum could spend its to_local)."""
    s = ChainSetup(tmp_path)
    try:
        await s.start()
        old, start_sat = await electrum_revoked_state(s, htlc)
        await down(s, how)

        # Electrum broadcasts its revoked commitment; C mines it and the blocks after it
        txid = await s.wallet.acall("broadcast", tx=old.raw.hex())
        assert txid == old.txid_hex
        await wait_mempool(s.chain_dir, 1, "the revoked commitment")
        commitment_height = (await cli("mine", 1, "--data-dir", s.chain_dir))["height"]
        await cli("mine", missed - 1, "--data-dir", s.chain_dir)
        assert await mempool(s.chain_dir) == 0  # nobody claimed anything meanwhile

        # our node starts: its monitor finds the commitment in the blocks it missed and claims at once
        await s.start_node(again=True)
        status = await penalty_broadcast(s, old, htlc)
        assert status["commitment"]["height"] == commitment_height, status
        status = await penalty_mined(s, old, htlc)
        # Electrum's to_local is spendable by it from block commitment_height + DELAY on
        assert {o["height"] for o in status["outputs"] if o["state"] == "swept"} == {commitment_height + missed}, status

        await nothing_left_for_electrum(s, old, start_sat)
    finally:
        await s.close()


async def lnpay_unanswered(s: ChainSetup, invoice: str) -> None:
    """Electrum pays ``invoice`` (``lnpay``), which nobody settles: we stop waiting for its answer after 5 s."""
    with contextlib.suppress(OSError, ElectrumError):  # (``timeout`` is the call's own, over HTTP)
        await s.wallet.acall("lnpay", invoice=invoice, timeout=5)


async def test_lnpmsg_killed_as_it_stores_the_revocation_then_electrum_broadcasts_the_commitment_it_revoked(tmp_path: Path) -> None:
    """Our node kills itself (SIGKILL) right after storing the revoke_and_ack by which Electrum revokes its
    commitment, before answering; while it is down Electrum broadcasts that commitment. The secret it
    stored is enough: at start our monitor punishes."""
    s = ChainSetup(tmp_path)
    try:
        await s.start()
        await pay_electrum(s.wallet, s.node_dir, 50_000)  # Electrum: 150k sat, lnpmsg 350k
        old = await ctx_with(s.wallet, s.point, 2)
        s.env = {CRASH_ENV: "RevokeAndAck"}
        await stop(s.node, s.node_dir)
        await s.restart_node()
        s.env = {}
        start_sat = (await cli("listfunds", *s.d))["total_sat"]
        # Electrum pays us: its HTLC, our revoke_and_ack and commitment_signed, then its revoke_and_ack
        # of the commitment before (``old``): stored, and we die
        invoice = await cli("invoice", 120_000_000, "back", "from electrum", *s.d)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lnpay_unanswered, s, invoice["bolt11"])
            with trio.fail_after(WAIT):
                await s.node.wait()
        assert s.node.returncode == -9
        latest = await ctx_with(s.wallet, s.point, 3)  # with Electrum's HTLC: ``old`` is revoked
        assert latest.txid != old.txid

        txid = await s.wallet.acall("broadcast", tx=old.raw.hex())
        assert txid == old.txid_hex
        await wait_mempool(s.chain_dir, 1, "the revoked commitment")
        commitment_height = (await cli("mine", 1, "--data-dir", s.chain_dir))["height"]
        await cli("mine", DELAY // 2 - 1, "--data-dir", s.chain_dir)

        await s.start_node(again=True)
        status = await penalty_broadcast(s, old, None)
        assert status["commitment"]["height"] == commitment_height, status
        status = await penalty_mined(s, old, None)
        assert {o["height"] for o in status["outputs"] if o["state"] == "swept"} == {commitment_height + DELAY // 2}, status
        await nothing_left_for_electrum(s, old, start_sat)
    finally:
        await s.close()


@WITH_HTLC
async def test_lnpmsg_broadcasts_a_revoked_commitment_while_electrum_is_down_and_electrum_takes_everything_at_start(
    tmp_path: Path, htlc: str | None
) -> None:
    s = ChainSetup(tmp_path)
    try:
        await s.start()
        old, to_local = await lnpmsg_revoked_state(s, htlc)
        await trio.to_thread.run_sync(s.wallet.stop)

        # our old commitment is broadcast and mined with half of our delay while Electrum is down
        await cli("call", "chain.broadcast", json.dumps({"tx_hex": old.raw.hex()}), *s.d)
        commitment_height = (await cli("mine", 1, "--data-dir", s.chain_dir))["height"]
        await cli("mine", DELAY // 2 - 1, "--data-dir", s.chain_dir)
        with trio.fail_after(WAIT):  # our monitor sees it (nothing of it is ours before the delay)
            while (status := await onchain(s.node_dir, s.channel_id)) is None or status["height"] < commitment_height + DELAY // 2 - 1:
                await trio.sleep(0.2)
        assert (status["commitment"]["kind"], status["commitment"]["height"]) == ("ours_revoked", commitment_height), status
        assert await mempool(s.chain_dir) == 0

        # Electrum starts: its watcher finds the commitment in the blocks it missed and punishes
        await trio.to_thread.run_sync(s.wallet.start)
        await electrum_takes_everything(s, old, to_local, htlc)
        status = await onchain(s.node_dir, s.channel_id)
        assert status is not None and status["outputs"][0]["height"] == commitment_height + DELAY // 2, status
    finally:
        await s.close()
