"""A hold invoice's HTLC resolved on chain, with Electrum 4.3.4 (Debian's, a separate process) paying.

An ``lnpmsg node`` (embedded regtest chain, its own Electrum server) opens a channel to
Electrum and makes a hold invoice; Electrum pays it (``lnpay``) and lnpmsg holds the HTLC.
Then the channel goes on chain with the HTLC in it, and only then lnpmsg settles
(``settleinvoice``): its channel monitor claims the HTLC with the preimage, and Electrum
learns the preimage from the chain (its watcher reads it in the claim's witness) and
reports the payment a success.

- lnpmsg force-closes (``closechannel --force``): the HTLC is claimed from lnpmsg's own
  commitment by an HTLC-success transaction, whose output is swept to lnpmsg's wallet once
  Electrum's ``to_self_delay`` has passed;
- Electrum force-closes (``close_channel`` with ``force``): lnpmsg claims the HTLC from
  Electrum's commitment directly with the preimage, no delay.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.testing.electrum import ElectrumWallet
from test_channels_electrum import electrum_channel, lightning_wallet
from test_channels_nodes import WAIT, cli, stop
from test_channels_onchain_electrum import mine_until, onchain, start_node

pytestmark = pytest.mark.slow

CHANNEL_SAT = 400_000
PUSH_MSAT = 100_000_000
AMOUNT_MSAT = 30_000_000
#: Electrum's to_self_delay asked of us (our HTLC-success output waits this long)
ELECTRUM_DELAY = 10
#: Electrum's lnpay call may wait this long (the payment is held, then settled on chain)
PAY_WAIT = 300.0


async def electrum_channel_to(node_dir: Path, tmp_path: Path, info: dict[str, Any]) -> tuple[ElectrumWallet, str, str]:
    """Electrum, and an open channel lnpmsg funded to it (with PUSH_MSAT on Electrum's side): (wallet, channel id, point)."""
    d = ("--data-dir", node_dir)
    await cli("mine", 101, *d)
    wallet, port = await lightning_wallet(tmp_path / "electrum", info["electrum"], lightning_to_self_delay=ELECTRUM_DELAY)
    try:
        await cli("faucet", 3_000_000, *d)
        await cli("mine", 1, *d)
        electrum_id = (await wallet.acall("nodeid")).split("@")[0]
        await cli("connect", f"{electrum_id}@127.0.0.1:{port}", *d)
        opened = await cli("fundchannel", electrum_id, CHANNEL_SAT, "--push-msat", PUSH_MSAT, *d)
        await cli("mine", 3, *d)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
        (listed,) = (await cli("listchannels", *d))["channels"]
        return wallet, opened["channel_id"], listed["funding_outpoint"]
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(wallet.stop)
        raise


async def held(node_dir: Path, wallet: ElectrumWallet, label: str, nursery: trio.Nursery, outcome: dict[str, Any],
               msat: int = AMOUNT_MSAT) -> bytes:  # fmt: skip
    """A hold invoice for ``msat`` Electrum pays (``lnpay`` in the background, its result in ``outcome``), once lnpmsg
    holds the HTLC; the preimage."""
    preimage = os.urandom(32)
    invoice = await cli("invoice", msat, label, "held", "--hold", "--payment-hash", sha256(preimage).hex(), "--data-dir", node_dir)

    async def pay() -> None:
        outcome.update(await trio.to_thread.run_sync(lambda: wallet.call("lnpay", invoice=invoice["bolt11"], timeout=PAY_WAIT)))

    nursery.start_soon(pay)
    with trio.fail_after(WAIT):
        while (row := (await cli("listinvoices", "--label", label, "--data-dir", node_dir))["invoices"][0])["status"] != "accepted":
            await trio.sleep(0.3)
    assert row["held_htlcs"] == 1 and row["held_msat"] == msat
    return preimage


async def settled_on_chain(h: HeldOnAChannel, label: str, htlc_claim: str) -> dict[str, Any]:
    """Settle once the commitment is on chain; mine until lnpmsg has swept everything and Electrum's payment
    succeeded; lnpmsg's on-chain view of the channel."""
    node_dir, wallet, channel_id, point, preimage, outcome = h.node_dir, h.wallet, h.channel_id, h.point, h.preimage, h.outcome
    d = ("--data-dir", node_dir)

    async def commitment_mined() -> bool:
        status = await onchain(node_dir, channel_id)
        return bool(status) and "commitment" in status
    await mine_until(node_dir, wallet, commitment_mined, "the commitment mined")
    settled = await cli("settleinvoice", preimage.hex(), *d)
    assert settled["status"] == "paid" and settled["htlcs"] == 1

    async def resolved() -> bool:
        status = await onchain(node_dir, channel_id)
        return bool(outcome) and bool(status) and status["locked_sat"] == 0 and any(
            o["what"].startswith(htlc_claim) and o["state"] == "swept" and o["by"] == "us" for o in status["outputs"])
    await mine_until(node_dir, wallet, resolved, "the HTLC claimed and Electrum's payment settled", ELECTRUM_DELAY + 30)
    assert outcome["success"] is True and outcome["preimage"] == preimage.hex(), outcome
    # (the channel was on chain before lnpmsg knew the preimage: Electrum read it in our claim's witness)
    assert f"found preimage for {sha256(preimage).hex()} in witness" in await trio.to_thread.run_sync(wallet.log, 100_000)
    (row,) = (await cli("listinvoices", "--label", label, *d))["invoices"]
    assert row["status"] == "paid" and row["preimage"] == preimage.hex()

    async def electrum_done() -> bool:
        return await trio.to_thread.run_sync(lambda: next(c for c in wallet.call("list_channels") if c["channel_point"] == point)["state"]
                                             in ("CLOSED", "REDEEMED"))  # fmt: skip
    await mine_until(node_dir, wallet, electrum_done, "Electrum's channel ended", ELECTRUM_DELAY + 30)
    status = await onchain(node_dir, channel_id)
    assert status is not None
    return status


@dataclass
class HeldOnAChannel:
    """A node with a channel to Electrum whose payment of a hold invoice it holds (Electrum's ``lnpay`` is
    under way: its result comes into ``outcome``); ``before_sat``: our wallet's total then."""

    node_dir: Path
    wallet: ElectrumWallet
    channel_id: str
    point: str
    preimage: bytes
    outcome: dict[str, Any]
    before_sat: int


@asynccontextmanager
async def held_on_a_channel(tmp_path: Path, label: str) -> AsyncIterator[HeldOnAChannel]:
    """Start the node and Electrum, open the channel, hold Electrum's payment; stop both on the way out."""
    node_dir = tmp_path / "node"
    node, info = await start_node(node_dir)
    wallet: ElectrumWallet | None = None
    try:
        wallet, channel_id, point = await electrum_channel_to(node_dir, tmp_path, info)
        outcome: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            preimage = await held(node_dir, wallet, label, nursery, outcome)
            before = (await cli("listfunds", "--data-dir", node_dir))["total_sat"]
            yield HeldOnAChannel(node_dir, wallet, channel_id, point, preimage, outcome, before)
    finally:
        if wallet is not None:
            await trio.to_thread.run_sync(wallet.stop)
        await stop(node, node_dir)


async def test_lnpmsg_force_closes_with_a_held_htlc_then_settles_and_claims_it_on_chain(tmp_path: Path) -> None:
    async with held_on_a_channel(tmp_path, "ours") as h:
        forced = await cli("closechannel", h.channel_id, "--force", "--data-dir", h.node_dir)
        assert forced["state"] == "failed" and forced["commitment_txid"]
        status = await settled_on_chain(h, "ours", "htlc_success")
        assert status["commitment"]["kind"] == "ours"
        # the HTLC's amount came to our wallet, less the fees of the claims (HTLC-success, then the sweep after the delay)
        swept = {o["what"]: o for o in status["outputs"]}
        assert swept.keys() == {"to_local", "htlc_success:0", "htlc_success:0:delayed"}, status["outputs"]
        assert swept["htlc_success:0"]["amount_sat"] == AMOUNT_MSAT // 1000
        assert all(o["state"] == "swept" and o["by"] == "us" for o in swept.values())
        await wallet_got(h.node_dir, h.before_sat, swept["htlc_success:0:delayed"]["txid"])


async def wallet_got(node_dir: Path, before_sat: int, htlc_claim: str) -> None:
    """Our wallet holds the HTLC's amount, less the claims' fees, in the output of ``htlc_claim`` (the last
    transaction claiming it), and our balance of the channel besides: nothing is left locked."""
    funds = await cli("listfunds", "--data-dir", node_dir)
    by_tx = {o["txid"]: o["amount_sat"] for o in funds["outputs"]}
    assert AMOUNT_MSAT // 1000 - 3_000 < by_tx[htlc_claim] < AMOUNT_MSAT // 1000, funds["outputs"]
    ours = (CHANNEL_SAT * 1000 - PUSH_MSAT) // 1000  # (less the commitment's fee, which we paid as the funder)
    assert ours + AMOUNT_MSAT // 1000 - 10_000 < funds["total_sat"] - before_sat < ours + AMOUNT_MSAT // 1000
    assert all(c["locked_sat"] == 0 for c in funds["channels"])


async def test_electrum_force_closes_with_a_held_htlc_then_lnpmsg_settles_and_claims_it_from_electrums_commitment(
    tmp_path: Path,
) -> None:
    async with held_on_a_channel(tmp_path, "theirs") as h:
        await h.wallet.acall("close_channel", channel_point=h.point, force=True)
        status = await settled_on_chain(h, "theirs", "htlc_success")
        assert status["commitment"]["kind"] == "theirs_current"
        # the HTLC claimed from Electrum's commitment with the preimage, straight to our wallet; our balance is ours at once
        outputs = {o["what"]: o for o in status["outputs"]}
        assert outputs.keys() == {"to_remote", "htlc_success:0"}, status["outputs"]
        assert outputs["to_remote"]["state"] == "in_wallet"
        claim = outputs["htlc_success:0"]
        assert claim["amount_sat"] == AMOUNT_MSAT // 1000 and claim["state"] == "swept" and claim["by"] == "us"
        await wallet_got(h.node_dir, h.before_sat, claim["txid"])
