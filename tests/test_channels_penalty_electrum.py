"""Revoked commitments on chain with Electrum 4.3.4 (Debian's, a separate process): the
penalty (justice) path against an implementation written elsewhere.

Each way the old state holds no HTLC, an HTLC lnpmsg offered (the first part of a two-part
payment to Electrum, which Electrum holds until the second arrives) or an HTLC Electrum offered
(Electrum pays a hold invoice of lnpmsg's, which lnpmsg holds, then settles in 1, cancels in 2).

1. Electrum cheats: lnpmsg opens a channel to Electrum and pays it; Electrum's signed
   commitment of that state is taken (``get_channel_ctx --iknowwhatimdoing``: the one it would
   force-close with). Further payments revoke it; then Electrum broadcasts it. lnpmsg's
   monitor recognises it as revoked and claims every output of Electrum's (its to_local, the
   HTLC) with the revocation key in the next block, long before Electrum's to_self_delay (and
   before the HTLC's expiry; the preimage of the one Electrum offered is ours by then):
   lnpmsg's wallet ends with the whole channel but the fees, Electrum's with nothing.
2. lnpmsg cheats: its channel store is copied (node stopped) at an old state; payments later
   the commitment that copy holds (the one a node restored from it would broadcast) is
   revoked, and is broadcast. Electrum's watcher takes our to_local (and the HTLC, offered or
   received) with the revocation key: its channel ends REDEEMED, its wallet holds the channel
   but the fees. lnpmsg's monitor knows the commitment as an old one of its own
   (``ours_revoked``), its to_local swept by the peer.

Electrum pays 180 sat/vB on regtest (hard-coded): an output of ours worth less than its sweep
(an HTLC under about 37,000 sat) it leaves, so the HTLC it punishes is larger.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.manager import channel_secrets
from lnpmsg.channels.store import ChannelStore
from lnpmsg.payments.onion.payloads import HopPayload
from lnpmsg.payments.onion.sphinx import construct_onion
from lnpmsg.testing.electrum import ElectrumError, ElectrumWallet
from test_channels_electrum import connected, electrum_channel, lightning_wallet
from test_channels_nodes import WAIT, cli, stop
from test_channels_onchain_electrum import by_point, onchain, start_node
from test_payments_hold_electrum import held

pytestmark = pytest.mark.slow

#: the to_self_delay each side asks of the other: a cheater's to_local waits this long
DELAY = 20
CHANNEL_SAT = 500_000
PUSH_MSAT = 100_000_000
#: the commitment's fee and our sweeps' at regtest's rates
FEES_SAT = 25_000
#: Electrum's fee for one sweep of a revoked output: its regtest feerate is fixed at 180 sat/vB and it
#: counts 121 vbytes for a to_local sweep, 200 for an HTLC's (an HTLC worth less is left: "dust")
ELECTRUM_SWEEP_SAT = 36_000
#: the HTLC the old state holds: none, one lnpmsg offered, one Electrum offered (lnpmsg holds it)
WITH_HTLC = pytest.mark.parametrize("htlc", [None, "we_offered", "electrum_offered"], ids=["no_htlc", "htlc_we_offered", "htlc_electrum_offered"])


def btc(sat: int) -> str:
    """An amount in satoshis as Electrum's commands take it (BTC, as text)."""
    return str(Decimal(sat) / 100_000_000)


def electrum_sat(wallet: ElectrumWallet) -> int:
    """Electrum's confirmed on-chain balance in satoshis."""
    return round(Decimal(wallet.call("getbalance")["confirmed"]) * 100_000_000)


async def mempool(node_dir: Path) -> int:
    return int((await cli("getchaininfo", "--data-dir", node_dir))["mempool"])


async def wait_mempool(node_dir: Path, count: int, what: str) -> None:
    with trio.move_on_after(WAIT):
        while await mempool(node_dir) < count:
            await trio.sleep(0.2)
        return
    raise AssertionError(f"{what}: not in the mempool after {WAIT} s")


async def electrum_ctx(wallet: ElectrumWallet, point: str) -> Tx:
    """Electrum's latest signed commitment of the channel at ``point`` (what it force-closes with)."""
    raw = await wallet.acall("get_channel_ctx", channel_point=point, iknowwhatimdoing=True)
    return Tx.parse(bytes.fromhex(raw))


async def ctx_with(wallet: ElectrumWallet, point: str, outputs: int) -> Tx:
    """Electrum's latest commitment once it has ``outputs`` outputs (an update may still be settling)."""
    with trio.fail_after(WAIT):
        while len((ctx := await electrum_ctx(wallet, point)).outputs) != outputs:
            await trio.sleep(0.2)
    return ctx


async def pay_electrum(wallet: ElectrumWallet, node_dir: Path, sat: int) -> None:
    """lnpmsg pays an invoice Electrum made (``pay``), and Electrum sees it paid."""
    request = await wallet.acall("add_request", amount=btc(sat), memo="to electrum", expiration=1800)
    paid = await cli("pay", request["lightning_invoice"], "--data-dir", node_dir)
    assert paid["status"] == "complete", paid
    await trio.to_thread.run_sync(
        wallet.wait_for, lambda: wallet.call("get_request", request_id=request["request_id"])["status"] == 3, "Electrum paid", WAIT
    )


async def electrum_pays(wallet: ElectrumWallet, node_dir: Path, msat: int, label: str) -> None:
    """Electrum pays an lnpmsg invoice (``lnpay``)."""
    invoice = await cli("invoice", msat, label, "from electrum", "--data-dir", node_dir)
    result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
    assert result["success"], result["log"]


class Setup:
    """An lnpmsg node (``DELAY`` asked of its peers) and an Electrum wallet (``DELAY`` asked of
    lnpmsg), with a channel lnpmsg opened to Electrum pushing it ``PUSH_MSAT``."""

    node: trio.Process
    info: dict[str, Any]
    wallet: ElectrumWallet
    electrum_id: str
    electrum_address: str
    channel_id: str
    point: str

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.node_dir = tmp_path / "node"
        self.d = ("--data-dir", self.node_dir)
        #: the node whose chain this is (``mine``, the mempool): here our own
        self.chain_dir = self.node_dir

    async def start_node(self, again: bool = False) -> None:
        """Start our node (``again``: its Electrum server on the same port as before)."""
        self.node, self.info = await start_node(self.node_dir, DELAY, **({"electrum": self.info["electrum"]} if again else {}))

    @property
    def electrum_server(self) -> str:
        """The Electrum server Electrum syncs from (``host:port``)."""
        return str(self.info["electrum"])

    async def start(self) -> None:
        await self.start_node()
        await cli("mine", 101, *self.d)
        self.wallet, port = await lightning_wallet(self.tmp_path / "electrum", self.electrum_server, lightning_to_self_delay=DELAY)
        await cli("faucet", 3_000_000, *self.d)
        await cli("mine", 1, *self.d)
        self.electrum_id = (await self.wallet.acall("nodeid")).split("@")[0]
        self.electrum_address = f"{self.electrum_id}@127.0.0.1:{port}"
        await cli("connect", self.electrum_address, *self.d)
        opened = await cli("fundchannel", self.electrum_id, CHANNEL_SAT, "--push-msat", PUSH_MSAT, *self.d)
        self.channel_id = opened["channel_id"]
        await cli("mine", 3, *self.d)
        await trio.to_thread.run_sync(self.wallet.wait_for, lambda: electrum_channel(self.wallet, "OPEN"), "open in Electrum", WAIT)
        await connected(self.node_dir, self.channel_id)
        (listed,) = [c for c in (await cli("listchannels", *self.d))["channels"] if c["channel_id"] == self.channel_id]
        self.point = listed["funding_outpoint"]

    async def restart_node(self, htlcs: int = 0) -> None:
        """Start the node again (its Electrum server on the same port), dial Electrum, wait for the
        channel (with ``htlcs`` HTLCs) to be normal again."""
        await self.start_node(again=True)
        await cli("connect", self.electrum_address, *self.d)
        await connected(self.node_dir, self.channel_id, htlcs)

    async def copy_channels(self, to: Path, htlcs: int) -> None:
        """Copy our channel store to ``to`` once the channel is quiet with ``htlcs`` HTLCs (the node stopped, then
        started again)."""
        await ctx_with(self.wallet, self.point, 2 + htlcs)
        await connected(self.node_dir, self.channel_id, htlcs)
        await stop(self.node, self.node_dir)
        shutil.copytree(self.node_dir / "channels", to)
        await self.restart_node(htlcs)

    async def close(self) -> None:
        if hasattr(self, "wallet"):
            await trio.to_thread.run_sync(self.wallet.stop)
        if hasattr(self, "node") and self.node.returncode is None:
            await stop(self.node, self.node_dir)


async def hold_first_part(s: Setup, total_sat: int) -> tuple[str, bytes, int]:
    """An invoice of Electrum's for ``total_sat``, half of it sent (an HTLC lnpmsg offers with
    ``channels.dev_addhtlc``, onion for Electrum, total_msat the whole): Electrum holds the part
    until the rest comes. Returns the request id, the payment secret and the HTLC's expiry."""
    request = await s.wallet.acall("add_request", amount=btc(total_sat), memo="in two parts", expiration=1800)
    decoded = await cli("decodepay", request["lightning_invoice"])
    expiry = (await cli("getchaininfo", *s.d))["height"] + 200  # Electrum wants 144 blocks at least
    secret = bytes.fromhex(decoded["payment_secret"])
    await send_part(s, request["rhash"], secret, expiry, total_sat * 1000 // 2, total_sat * 1000)
    return request["request_id"], secret, expiry


@asynccontextmanager
async def electrum_pays_held(s: Setup, sat: int, settle: bool) -> AsyncIterator[None]:
    """Electrum pays a hold invoice of lnpmsg's for ``sat`` (``lnpay``, under way meanwhile): the block runs while
    lnpmsg holds the HTLC (one Electrum offered); then lnpmsg settles it (or cancels it), and Electrum's payment
    ends so."""
    outcome: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        preimage = await held(s.node_dir, s.wallet, "held", nursery, outcome, sat * 1000)
        yield
        if settle:
            done = await cli("settleinvoice", preimage.hex(), *s.d)
        else:
            done = await cli("cancelinvoice", sha256(preimage).hex(), *s.d)
        assert (done["status"], done["htlcs"]) == ("paid" if settle else "cancelled", 1), done
    assert outcome["success"] is settle, outcome
    await connected(s.node_dir, s.channel_id)


async def revocation_spends(wallet: ElectrumWallet, txids: Iterable[str], commitment: Tx) -> dict[int, bool]:
    """The outputs of ``commitment`` that transactions ``txids`` spend (Electrum fetches them), by index: whether
    by the revocation path (BOLT 3 witnesses: a to_local's ``<sig> 1``, an HTLC's ``<sig> <revocationpubkey>``,
    where a preimage would be 32 bytes)."""
    spent = {}
    for txid in set(txids):
        try:
            tx = Tx.parse(bytes.fromhex(await wallet.acall("gettransaction", txid=txid)))
        except ElectrumError:
            continue  # replaced since the listing (a claim's re-bid, BIP 125): the caller looks again
        for txin in tx.inputs:
            if txin.prevout.txid == commitment.txid:
                w = txin.witness
                spent[txin.prevout.vout] = len(w) == 3 and (w[1] == b"\x01" or len(w[1]) == 33)
    return spent


def revocable(commitment: Tx) -> dict[int, int]:
    """The P2WSH outputs of a commitment (its holder's to_local and the HTLCs; the other side's to_remote is
    P2WPKH: static_remotekey), amounts by index."""
    return {vout: o.amount_sat for vout, o in enumerate(commitment.outputs) if len(o.script_pubkey) == 34}


async def send_part(s: Setup, payment_hash: str, secret: bytes, expiry: int, msat: int, total_msat: int) -> None:
    final = HopPayload.final(msat, expiry, payment_secret=secret, total_msat=total_msat)
    onion = construct_onion(os.urandom(32), [bytes.fromhex(s.electrum_id)], [final.encode()], bytes.fromhex(payment_hash)).packet
    params = {"channel": s.channel_id, "amount_msat": msat, "payment_hash": payment_hash, "cltv_expiry": expiry, "onion": onion.hex()}
    await cli("call", "channels.dev_addhtlc", json.dumps(params), *s.d)


async def electrum_revoked_state(s: Setup, htlc: str | None) -> tuple[Tx, int]:
    """Electrum's commitment of a state in its favour (holding ``htlc``: see WITH_HTLC), revoked by the
    payments that follow (Electrum pays most of what it has back): the commitment, and our wallet's
    satoshis after them."""
    await pay_electrum(s.wallet, s.node_dir, 50_000)  # Electrum: 150k sat, lnpmsg 350k
    await ctx_with(s.wallet, s.point, 2)
    htlc_sat = 40_000
    back_sat = 120_000
    if htlc == "we_offered":
        request_id, secret, expiry = await hold_first_part(s, htlc_sat)
        # Electrum's commitment holding the part: to_local, to_remote and the HTLC
        old = await ctx_with(s.wallet, s.point, 3)
        request = await s.wallet.acall("get_request", request_id=request_id)
        assert request["status"] != 3  # Electrum waits for the rest
        await send_part(s, request["rhash"], secret, expiry, htlc_sat * 1000 // 2, htlc_sat * 1000)
        await trio.to_thread.run_sync(
            s.wallet.wait_for, lambda: s.wallet.call("get_request", request_id=request_id)["status"] == 3, "both parts taken", WAIT
        )
        await connected(s.node_dir, s.channel_id)
    elif htlc == "electrum_offered":  # Electrum's commitment with the HTLC held; then settled, ours
        async with electrum_pays_held(s, htlc_sat, settle=True):
            old = await ctx_with(s.wallet, s.point, 3)
        back_sat -= htlc_sat
    else:
        old = await ctx_with(s.wallet, s.point, 2)
    # further payments revoke it: Electrum pays most of what it has back to lnpmsg
    await electrum_pays(s.wallet, s.node_dir, back_sat * 1000, "back")
    await connected(s.node_dir, s.channel_id)
    assert old.txid != (await electrum_ctx(s.wallet, s.point)).txid
    start_sat = (await cli("listfunds", *s.d))["total_sat"]
    assert await trio.to_thread.run_sync(electrum_sat, s.wallet) == 0
    return old, start_sat


async def penalty_broadcast(s: Setup, old: Tx, htlc: str | None) -> dict[str, Any]:
    """Once our monitor has seen Electrum's revoked commitment ``old`` on chain and its penalty waits in
    the mempool: its status, the penalty checked to claim every output of Electrum's."""
    with trio.fail_after(WAIT):
        while not ((status := await onchain(s.node_dir, s.channel_id)) and status.get("commitment") and await penalty_waits(s, old)):
            await trio.sleep(0.2)
    seen = status["commitment"]
    assert (seen["kind"], seen["txid"]) == ("revoked", old.txid_hex), status
    claims = [o for o in status["outputs"] if o["state"] == "broadcast"]
    # Electrum's to_local and the HTLC, not our to_remote (the wallet's)
    outputs = revocable(old)
    assert len(outputs) == (2 if htlc else 1) and sorted(o["amount_sat"] for o in claims) == sorted(outputs.values()), status
    # on Electrum's commitment an HTLC we offered is one it received, and the other way round
    tags = {"we_offered": "received", "electrum_offered": "offered"}
    whats = sorted(o["what"].rsplit(":", 1)[0] if o["what"].startswith("penalty:htlc:") else o["what"] for o in claims)
    assert whats == sorted(["penalty:to_local", *([f"penalty:htlc:{tags[htlc]}"] if htlc else [])]), status
    return status


async def penalty_waits(s: Setup, old: Tx) -> bool:
    """Whether the mempool spends every output of Electrum's in ``old`` (the sweep of our to_remote to the
    wallet may get there first)."""
    txids = (await cli("call", "chain.getrawmempool", "--data-dir", s.chain_dir))["txids"]
    return set(revocable(old)) <= set(await revocation_spends(s.wallet, txids, old))


async def penalty_mined(s: Setup, old: Tx, htlc: str | None) -> dict[str, Any]:
    """Mine the penalty's block: every output of Electrum's is then ours, taken with the revocation key in
    that block; our monitor's status."""
    height = (await cli("mine", 1, "--data-dir", s.chain_dir))["height"]
    with trio.fail_after(WAIT):  # a node on another's chain reads the block when it next polls
        while (status := await onchain(s.node_dir, s.channel_id)) is None or status["locked_sat"] != 0:
            await trio.sleep(0.2)
    swept = [o for o in status["outputs"] if o["state"] == "swept"]
    outputs = revocable(old)
    assert len(swept) == (2 if htlc else 1) and all(o["by"] == "us" and o["height"] == height for o in swept), status
    assert await revocation_spends(s.wallet, [o["txid"] for o in swept], old) == dict.fromkeys(outputs, True)
    (to_remote,) = [o for o in status["outputs"] if o["state"] == "in_wallet"]
    assert to_remote["height"] == status["commitment"]["height"]
    return status


async def nothing_left_for_electrum(s: Setup, old: Tx, start_sat: int) -> None:
    """Past Electrum's delay: our wallet holds the channel but the fees, Electrum's nothing of it, and our
    channel is failed by Electrum's revoked commitment ``old``."""
    await cli("mine", DELAY + 2, "--data-dir", s.chain_dir)
    height = (await cli("getchaininfo", *s.d))["height"]
    await trio.to_thread.run_sync(s.wallet.wait_synced, height)
    gained = (await cli("listfunds", *s.d))["total_sat"] - start_sat
    assert CHANNEL_SAT - FEES_SAT < gained < CHANNEL_SAT, gained
    assert await trio.to_thread.run_sync(electrum_sat, s.wallet) == 0
    listed = await onchain(s.node_dir, s.channel_id)
    assert listed is not None and listed["commitment"]["kind"] == "revoked" and listed["locked_sat"] == 0
    assert by_point(s.wallet, s.point)["state"] == "CLOSED"
    (ours,) = [c for c in (await cli("listchannels", *s.d))["channels"] if c["channel_id"] == s.channel_id]
    assert ours["state"] == "failed" and ours["failure"].startswith(f"the peer's commitment {old.txid_hex}"), ours


@WITH_HTLC
async def test_electrum_broadcasts_a_revoked_commitment_and_lnpmsg_takes_everything(tmp_path: Path, htlc: str | None) -> None:
    s = Setup(tmp_path)
    try:
        await s.start()
        old, start_sat = await electrum_revoked_state(s, htlc)

        # Electrum broadcasts its revoked commitment
        txid = await s.wallet.acall("broadcast", tx=old.raw.hex())
        assert txid == old.txid_hex
        await wait_mempool(s.chain_dir, 1, "the revoked commitment")
        await cli("mine", 1, *s.d)
        # lnpmsg recognises it and broadcasts its penalty within that block's processing
        seen = (await penalty_broadcast(s, old, htlc))["commitment"]
        # every output of Electrum's taken by our penalty in the block after the commitment, with the revocation key
        status = await penalty_mined(s, old, htlc)
        assert status["commitment"]["height"] == seen["height"] and {o["height"] for o in status["outputs"] if o["state"] == "swept"} == {seen["height"] + 1}

        # past Electrum's delay nothing is left for it
        await nothing_left_for_electrum(s, old, start_sat)
    finally:
        await s.close()


def stored_commitment(channels_dir: Path) -> bytes:
    """The signed commitment of ours a store holds (its one channel): the one a node started from
    that store would broadcast. The store's seed and log give it as the node builds it."""
    store = ChannelStore(channels_dir)
    seed = (channels_dir / "channel_seed").read_bytes()
    (key,) = store.keys()
    with store.open(key) as log:
        core = log.restore(channel_secrets(seed, key))
    raw = core.latest_commitment_tx()
    assert raw is not None
    return bytes(raw)


async def lnpmsg_revoked_state(s: Setup, htlc: str | None) -> tuple[Tx, int]:
    """Our commitment from a copy of our channel store at a state in our favour (holding ``htlc``: see
    WITH_HTLC), revoked by the payments that follow (to Electrum): the commitment (what a node
    restored from that copy would broadcast), and our to_local in it."""
    await pay_electrum(s.wallet, s.node_dir, 50_000)  # Electrum: 150k sat, lnpmsg 350k
    await connected(s.node_dir, s.channel_id)
    htlc_sat = 100_000  # it, and halves of it, Electrum can sweep at its fee
    backup = s.tmp_path / "channels-old"
    if htlc == "we_offered":  # half of it offered, which Electrum holds for the rest
        request_id, secret, expiry = await hold_first_part(s, htlc_sat)
    # a copy of our channel store at this state (the HTLC Electrum offered held meanwhile, then failed back)
    async with electrum_pays_held(s, htlc_sat, settle=False) if htlc == "electrum_offered" else nullcontext():
        await s.copy_channels(backup, htlcs=1 if htlc else 0)
    # payments later that state is revoked
    if htlc == "we_offered":
        request = await s.wallet.acall("get_request", request_id=request_id)
        await send_part(s, request["rhash"], secret, expiry, htlc_sat * 1000 // 2, htlc_sat * 1000)
        await trio.to_thread.run_sync(
            s.wallet.wait_for, lambda: s.wallet.call("get_request", request_id=request_id)["status"] == 3, "both parts taken", WAIT
        )
    await pay_electrum(s.wallet, s.node_dir, 100_000)
    await connected(s.node_dir, s.channel_id)
    old = Tx.parse(stored_commitment(backup))
    # ours and the HTLC, and Electrum's to_remote
    outputs = revocable(old)
    assert len(old.outputs) == len(outputs) + 1 == (3 if htlc else 2)
    # our balance then (now 250k), less the commitment's fee
    to_local = max(outputs.values())
    then = 350_000 - (htlc_sat // 2 if htlc == "we_offered" else 0)
    assert then - 1_000 < to_local < then
    assert await trio.to_thread.run_sync(electrum_sat, s.wallet) == 0
    return old, to_local


async def electrum_takes_everything(s: Setup, old: Tx, to_local: int, htlc: str | None) -> None:
    """Our revoked commitment ``old`` is mined: once Electrum's penalties (our to_local and the HTLC, with the
    revocation key) wait in the mempool, mine them; our monitor knows ``old`` as an old commitment of ours whose
    to_local the peer took, Electrum's wallet holds the channel but the fees, and its channel ends REDEEMED."""
    outputs = revocable(old)
    await wait_mempool(s.chain_dir, len(outputs), "Electrum's penalties")
    penalties = (await cli("call", "chain.getrawmempool", "--data-dir", s.chain_dir))["txids"]
    height = (await cli("mine", 1, "--data-dir", s.chain_dir))["height"]
    # our monitor knows the commitment as an old one of ours: its to_local, which would be ours
    # after Electrum's delay, went to Electrum in that block
    with trio.fail_after(WAIT):
        while (status := await onchain(s.node_dir, s.channel_id)) is None or status["height"] < height:
            await trio.sleep(0.2)
    seen = status["commitment"]
    assert (seen["kind"], seen["txid"]) == ("ours_revoked", old.txid_hex), status
    (swept,) = status["outputs"]
    assert (swept["what"], swept["state"], swept["by"], swept["amount_sat"]) == ("to_local", "swept", "peer", to_local)
    assert swept["height"] == height and status["locked_sat"] == 0
    (ours,) = [c for c in (await cli("listchannels", *s.d))["channels"] if c["channel_id"] == s.channel_id]
    # stopped: no update on a channel whose funding is spent
    assert ours["state"] == "failed" and ours["failure"].startswith(f"an old commitment of ours {old.txid_hex}"), ours
    # Electrum's to_remote (its wallet's at once), our to_local and the HTLC, but the fees
    least = CHANNEL_SAT - 1_000 - len(outputs) * ELECTRUM_SWEEP_SAT
    got = await trio.to_thread.run_sync(
        s.wallet.wait_for, lambda: (sat := electrum_sat(s.wallet)) > least and sat, "Electrum's penalty confirmed", WAIT
    )
    assert got < CHANNEL_SAT
    log = s.wallet.log(50_000)
    assert "to_local_for_revoked_ctx" in log and ("their_ctx_htlc_" in log) == bool(htlc)
    assert await revocation_spends(s.wallet, penalties, old) == dict.fromkeys(outputs, True)
    # the penalty buried deep enough, Electrum stops watching: REDEEMED
    await cli("mine", 101, "--data-dir", s.chain_dir)
    await trio.to_thread.run_sync(s.wallet.wait_for, lambda: by_point(s.wallet, s.point)["state"] == "REDEEMED", "REDEEMED", WAIT)


@WITH_HTLC
async def test_lnpmsg_broadcasts_a_revoked_commitment_and_electrum_takes_everything(tmp_path: Path, htlc: str | None) -> None:
    s = Setup(tmp_path)
    try:
        await s.start()
        old, to_local = await lnpmsg_revoked_state(s, htlc)

        # our chain broadcasts the old commitment
        await cli("call", "chain.broadcast", json.dumps({"tx_hex": old.raw.hex()}), *s.d)
        commitment_height = (await cli("mine", 1, *s.d))["height"]
        # Electrum's watcher sees it and takes our to_local (and the HTLC) with the revocation key at once
        await electrum_takes_everything(s, old, to_local, htlc)
        status = await onchain(s.node_dir, s.channel_id)
        assert status is not None and status["commitment"]["height"] == commitment_height, status
        assert status["outputs"][0]["height"] == commitment_height + 1, status
    finally:
        await s.close()
