"""Channels on chain: two lnpmsg nodes in memory on one embedded regtest chain.

Each node runs the chain app (wallet) and the channel app with its channel
monitors. A channel carries HTLCs both ways (some whose preimage the payee
knows, some that time out); one side force-closes (``closechannel
--force``), a cheater broadcasts a revoked commitment, a peer's ``error``
or a protocol violation fails the channel, an HTLC deadline nears, a node
comes back from an old backup (data loss), blocks holding a commitment or a
sweep are reorged out. Blocks are mined
one at a time, each after both nodes' monitors processed the previous one
(their claims are in the mempool), until every output is resolved: every
transaction is mined and accepted by the consensus engine, and the funds
end in the wallets.

Real clock, as in test_channels_app.py: the chain and the stores work in
worker threads; waits are for states, never for durations.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.onchain import OnchainWatch
from lnpmsg.channels.commands import _print_list as print_channels
from lnpmsg.channels.monitor import CLTV_CLAIM_BUFFER
from lnpmsg.channels.onchain_events import OnchainEvent
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wire import Error
from lnpmsg.wallet.app import ChainApp
from test_channels_app import channels, only_channel, settled

FUNDING_SAT = 1_000_000
PUSH_MSAT = 300_000_000
TO_SELF_DELAY = 6
TIMEOUT = 90.0


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.02)


class Pair:
    def __init__(self, source: EmbeddedChainSource, tmp: Path, network: MemoryNetwork, minimum_depth: int = 1) -> None:
        self.source = source
        self.tmp = tmp
        self.network = network
        self.keys = {"alice": NodeKey.generate(), "bob": NodeKey.generate()}
        #: the confirmations each node asks of a funding (and a splice) before it is used
        self.minimum_depth = minimum_depth

    def node(self, name: str, listen: bool) -> Node:
        config = ChannelConfig(minimum_depth=self.minimum_depth, to_self_delay=TO_SELF_DELAY)
        node = Node(self.keys[name], NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
                    transports={"mem": self.network.transport()})  # fmt: skip
        node.mount(ChainApp(self.tmp / name / "wallet", source=self.source))
        node.mount(ChannelsApp(self.tmp / name / "channels", config=config))
        return node

    async def fund_wallet(self, node: Node, amount_sat: int) -> None:
        chain = node.apps["chain"]
        await self.source.faucet(chain.wallet.new_address(), amount_sat)  # type: ignore[attr-defined]
        await self.mine(1, node)

    async def mine(self, n: int, *nodes: Node) -> None:
        """Mine ``n`` blocks one at a time, each after every node's monitors acted on the previous one."""
        for _ in range(n):
            await self.source.mine(1)
            tip = (await self.source.tip()).height
            for node in nodes:
                onchain = channels(node).onchain
                await wait_until(lambda o=onchain: o is not None and o.done_height == tip, "the monitors follow")
        for node in nodes:
            await node.apps["chain"].wallet.sync()  # type: ignore[attr-defined]

    def wallet_sat(self, node: Node) -> int:
        return node.apps["chain"].wallet.balances().total_sat  # type: ignore[attr-defined]


@asynccontextmanager
async def alice_alone(tmp: Path, minimum_depth: int = 1) -> AsyncIterator[tuple[Pair, Node]]:
    """The chain and Alice running: Bob is the caller's to start, stop and start again."""
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp, MemoryNetwork(), minimum_depth)
        alice = pair.node("alice", True)
        async with running(alice):
            yield pair, alice


@asynccontextmanager
async def two_nodes(tmp: Path, minimum_depth: int = 1) -> AsyncIterator[tuple[Pair, Node, Node]]:
    network = MemoryNetwork()
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp, network, minimum_depth)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            yield pair, alice, bob


async def open_channel(pair: Pair, alice: Node, bob: Node, channel_type: str) -> str:
    await pair.fund_wallet(alice, 3_000_000)
    # anchor channels: the CPFP child and each batch of HTLC transactions take a wallet coin for their fee
    for node in (alice, bob):
        for _ in range(3):
            await pair.source.faucet(node.apps["chain"].wallet.new_address(), 100_000)  # type: ignore[attr-defined]
    await pair.mine(1, alice, bob)
    await bob.connect(alice.addresses[0])
    result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=PUSH_MSAT,
                                               channel_type=channel_type)  # fmt: skip
    assert result["channel_type"] == ("anchors_zero_fee_htlc_tx" if channel_type == "anchors" else "static_remotekey")
    await pair.mine(pair.minimum_depth, alice, bob)
    await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
    return str(result["channel_id"])


def idle(node: Node) -> bool:
    """Every job of the node's channel manager is done: its records on disk and in the monitors."""
    manager = channels(node).manager
    return manager is not None and manager.idle


async def add_htlc(pair: Pair, payer: Node, payee: Node, channel_id: str, amount_msat: int, expiry: int) -> dict[str, Any]:
    """Add an HTLC and wait until it is committed both ways and every job of it is done: a core is settled
    before its job's records reach the disk and the monitor, so the payee's monitor may not know yet of
    the payer's revocation of its previous commitment (a revoked commitment on chain then looks current)."""
    count = len(only_channel(payee).core.state.local_commit.spec.htlcs)  # type: ignore[union-attr]
    added = await channels(payer).dev_addhtlc(channel_id, amount_msat, cltv_expiry=expiry)
    await wait_until(
        lambda: settled(payer) and settled(payee) and idle(payer) and idle(payee)
        and len(only_channel(payee).core.state.local_commit.spec.htlcs) == count + 1,  # type: ignore[union-attr]
        "HTLC committed",
    )
    return added


def resolved(node: Node) -> bool:
    """The node's monitor saw a commitment and has nothing left to claim."""
    onchain = channels(node).onchain
    assert onchain is not None
    status = onchain.status(only_channel(node))
    return status is not None and status["state"] != "open" and status["locked_sat"] == 0


async def spent_everything(source: EmbeddedChainSource, commitment_txid: bytes) -> list[Tx]:
    """Every transaction in the chain that spends the commitment or its descendants."""
    tip = (await source.tip()).height
    found: list[Tx] = []
    interesting = {commitment_txid}
    for height in range(tip - 80, tip + 1):
        block = Block.parse(await source.block_at(height))
        for tx in block.txs:
            if any(i.prevout.txid in interesting for i in tx.inputs):
                found.append(tx)
                interesting.add(tx.txid)
    return found


async def force_close_scenario(tmp: Path, channel_type: str, closer: str) -> None:
    async with two_nodes(tmp) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, channel_type)
        height = (await pair.source.tip()).height
        expiry = height + 20
        # alice -> bob: one bob can claim with its preimage, one that times out back to alice
        a_known = await add_htlc(pair, alice, bob, channel_id, 50_000_000, expiry)
        a_timeout = await add_htlc(pair, alice, bob, channel_id, 60_000_000, expiry)
        # bob -> alice: the same both ways
        b_known = await add_htlc(pair, bob, alice, channel_id, 40_000_000, expiry + 2)
        b_timeout = await add_htlc(pair, bob, alice, channel_id, 30_000_000, expiry + 2)
        await channels(bob).dev_preimage(channel_id, a_known["preimage"])
        await channels(alice).dev_preimage(channel_id, b_known["preimage"])
        del a_timeout, b_timeout
        before = {"alice": pair.wallet_sat(alice), "bob": pair.wallet_sat(bob)}
        closing, other = (alice, bob) if closer == "alice" else (bob, alice)
        with record_events(closing) as closer_events, record_events(other) as other_events:
            result = await channels(closing).closechannel(channel_id, force=True)
            assert result["state"] == "failed" and result["commitment_txid"]
            commitment_txid = bytes.fromhex(result["commitment_txid"])[::-1]
            await pair.mine(1, alice, bob)
            # while the closer's to_local waits for its CSV: listfunds and listchannels say so
            (locked,) = (await closing.apps["chain"].listfunds())["channels"]  # type: ignore[attr-defined]
            assert locked["state"] == "resolving" and locked["locked_sat"] > 0
            (to_local,) = [o for o in locked["outputs"] if o["what"] == "to_local"]
            assert to_local["state"] == "awaiting_timelock" and to_local["spendable_at"] == (await pair.source.tip()).height + TO_SELF_DELAY
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                print_channels(await channels(closing).listchannels())
            assert f"awaiting CSV until {to_local['spendable_at']}" in printed.getvalue()
            assert "awaiting HTLC timeout until" in printed.getvalue()
            for _ in range(60):
                await pair.mine(1, alice, bob)
                if resolved(alice) and resolved(bob):
                    break
            assert resolved(alice) and resolved(bob), (channels(alice).listchannels, channels(bob).onchain)
            await pair.mine(2, alice, bob)
        kinds = {e.detail["kind"] for e in closer_events.events if isinstance(e, OnchainEvent) and e.topic == "onchain.commitment"}
        assert kinds == {"ours"}
        kinds = {e.detail["kind"] for e in other_events.events if isinstance(e, OnchainEvent) and e.topic == "onchain.commitment"}
        assert kinds == {"theirs_current"}
        # every output of the commitment was spent on chain (anchors may stay: anyone can spend them later)
        commitment = None
        for height in range((await pair.source.tip()).height - 80, (await pair.source.tip()).height + 1):
            for tx in Block.parse(await pair.source.block_at(height)).txs:
                if tx.txid == commitment_txid:
                    commitment = tx
        assert commitment is not None, "the commitment was mined"
        spends = await spent_everything(pair.source, commitment_txid)
        spent = {i.prevout for tx in spends for i in tx.inputs}
        for vout, out in enumerate(commitment.outputs):
            if out.amount_sat == 330:
                continue  # an anchor
            assert any(op.txid == commitment_txid and op.vout == vout for op in spent), f"output {vout} unspent"
        # the funds are in the wallets: alice had 700k - 110k offered + 40k claimed;
        # bob 300k - 70k offered + 50k claimed; fees (commitment, claims) are small
        gained = {"alice": pair.wallet_sat(alice) - before["alice"], "bob": pair.wallet_sat(bob) - before["bob"]}
        expected = {"alice": 700_000 - 110_000 + 60_000 + 40_000, "bob": 300_000 - 70_000 + 30_000 + 50_000}
        for name in ("alice", "bob"):
            assert expected[name] - 40_000 < gained[name] <= expected[name], (name, gained, expected)
        # nothing is locked any more and listchannels says how it went
        listed = (await channels(other).listchannels())["channels"][0]["onchain"]
        assert listed["locked_sat"] == 0 and all(o["state"] in ("swept", "in_wallet") for o in listed["outputs"])


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
@pytest.mark.parametrize("closer", ["alice", "bob"])
async def test_force_close_with_htlcs_both_ways(tmp_path: Path, channel_type: str, closer: str) -> None:
    await force_close_scenario(tmp_path, channel_type, closer)


async def run_until_resolved(pair: Pair, *nodes: Node, max_blocks: int = 60) -> None:
    for _ in range(max_blocks):
        await pair.mine(1, *nodes)
        if all(resolved(n) for n in nodes):
            return
    raise AssertionError("the monitors did not resolve the channel")


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
async def test_a_revoked_commitment_on_chain_loses_everything_to_the_penalty(tmp_path: Path, channel_type: str,
                                                                           caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "lnpmsg.channels.onchain")
    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, channel_type)
        expiry = (await pair.source.tip()).height + 30
        await add_htlc(pair, alice, bob, channel_id, 50_000_000, expiry)
        await add_htlc(pair, bob, alice, channel_id, 40_000_000, expiry)
        # the cheater (alice) keeps this commitment, as if read from her channel store now ...
        old = only_channel(alice).core.latest_commitment_tx()
        assert old is not None
        # ... then pays bob more: her kept commitment is revoked
        await add_htlc(pair, alice, bob, channel_id, 100_000_000, expiry)
        before = {"alice": pair.wallet_sat(alice), "bob": pair.wallet_sat(bob)}
        with record_events(bob) as bob_events:
            await pair.source.broadcast(old)
            await run_until_resolved(pair, bob)
            await pair.mine(2, alice, bob)
        (seen,) = [e for e in bob_events.events if isinstance(e, OnchainEvent) and e.topic == "onchain.commitment"]
        assert seen.detail["kind"] == "revoked"
        gained = {"alice": pair.wallet_sat(alice) - before["alice"], "bob": pair.wallet_sat(bob) - before["bob"]}
        # bob takes the whole channel but the fees (the commitment's, the penalty's, the anchors' 660 sat)
        assert FUNDING_SAT - 25_000 < gained["bob"] < FUNDING_SAT, gained
        assert gained["alice"] <= 0, gained
        listed = (await channels(bob).listchannels())["channels"][0]["onchain"]
        assert listed["commitment"]["kind"] == "revoked" and listed["locked_sat"] == 0
    # a claim is broadcast again each block until mined: the log tells of each once (then at debug)
    claims = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("onchain: broadcast claim")]
    assert claims and len(claims) == len(set(claims)), claims


@pytest.mark.trio
async def test_an_added_htlc_leaves_the_payers_previous_commitment_revoked_in_the_payees_monitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payee's core settles before its monitor learns of the payer's revocation (the job writes to
    disk in between): ``add_htlc`` returns only once the monitor knows, however slow the disk."""
    write = OnchainWatch.persisted

    async def slow_disk(self: OnchainWatch, channel: Any) -> None:
        await trio.sleep(0.5)
        await write(self, channel)

    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, "static_remotekey")
        previous = only_channel(alice).core.state.local_commit.number  # type: ignore[union-attr]
        monkeypatch.setattr(OnchainWatch, "persisted", slow_disk)
        await add_htlc(pair, alice, bob, channel_id, 50_000_000, (await pair.source.tip()).height + 30)
        onchain = channels(bob).onchain
        assert onchain is not None
        assert onchain.watched[only_channel(bob).key].monitor.revocations_through > previous


async def invalidate(source: EmbeddedChainSource, height: int) -> None:
    block_hash = await source.block_hash(height)
    assert block_hash is not None
    await trio.to_thread.run_sync(source.core.invalidate_block, block_hash)


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
async def test_reorgs_of_the_commitment_and_of_a_sweep_are_followed(tmp_path: Path, channel_type: str) -> None:
    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, channel_type)
        before = pair.wallet_sat(alice)
        with record_events(alice) as events:
            result = await channels(alice).closechannel(channel_id, force=True)
            commitment_txid = result["commitment_txid"]
            await pair.mine(1, alice, bob)
            height = (await pair.source.tip()).height
            assert only_status(alice)["commitment"]["height"] == height
            # the block holding the commitment leaves the chain: the monitors forget it, the commitment
            # goes back to the mempool (or is broadcast again) and confirms in the next block
            await invalidate(pair.source, height)
            await wait_until(lambda: channels(alice).onchain.done_height == height - 1, "the monitor follows the reorg")  # type: ignore[union-attr]
            assert only_status(alice)["state"] == "open"
            await pair.mine(1, alice, bob)
            assert only_status(alice)["commitment"]["txid"] == commitment_txid
            # to_local waits for its CSV, then is swept; that sweep's block is reorged out too
            for _ in range(TO_SELF_DELAY + 3):
                await pair.mine(1, alice, bob)
                if any(o["what"] == "to_local" and o["state"] == "swept" for o in only_status(alice)["outputs"]):
                    break
            (sweep,) = [o for o in only_status(alice)["outputs"] if o["what"] == "to_local"]
            assert sweep["state"] == "swept"
            await invalidate(pair.source, sweep["height"])
            await wait_until(lambda: channels(alice).onchain.done_height == sweep["height"] - 1, "the monitor follows")  # type: ignore[union-attr]
            (pending,) = [o for o in only_status(alice)["outputs"] if o["what"] == "to_local"]
            assert pending["state"] == "broadcast"
            await run_until_resolved(pair, alice, bob)
        assert any(isinstance(e, OnchainEvent) and e.topic == "onchain.reorged" for e in events.events)
        assert pair.wallet_sat(alice) - before > 700_000 - 10_000


def only_status(node: Node) -> dict[str, Any]:
    status = channels(node).onchain.status(only_channel(node))  # type: ignore[union-attr]
    assert status is not None
    return status


@pytest.mark.trio
async def test_a_peer_error_takes_the_channel_on_chain(tmp_path: Path) -> None:
    """BOLT 1/5: an ``error`` for the channel fails it; our latest commitment goes on chain and is swept."""
    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, "anchors")
        before = pair.wallet_sat(bob)
        await channels(alice).send(bob.node_id, Error(channel_id=bytes.fromhex(channel_id), data=b"test: go away"))
        await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "bob fails the channel")
        assert only_channel(bob).core.state.failure == "peer: test: go away"
        await run_until_resolved(pair, alice, bob)
        assert only_status(bob)["commitment"]["kind"] == "ours" and only_status(alice)["commitment"]["kind"] == "theirs_current"
        assert 300_000 - 10_000 < pair.wallet_sat(bob) - before < 300_000


@pytest.mark.trio
async def test_an_htlc_with_a_known_preimage_goes_on_chain_before_its_deadline(tmp_path: Path) -> None:
    """The payee holds the preimage but the HTLC stays committed (the payer does not take the fulfill):
    CLTV_CLAIM_BUFFER blocks before its expiry the payee's monitor takes the channel on chain and claims it."""
    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, "static_remotekey")
        expiry = (await pair.source.tip()).height + CLTV_CLAIM_BUFFER + 4
        added = await add_htlc(pair, alice, bob, channel_id, 80_000_000, expiry)
        await channels(bob).dev_preimage(channel_id, added["preimage"])
        for _ in range(4):
            await pair.mine(1, alice, bob)
        await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "bob goes on chain")
        assert "must be claimed on chain" in (only_channel(bob).core.state.failure or "")
        await run_until_resolved(pair, alice, bob)
        # bob's HTLC-success transaction confirmed before the expiry, its delayed output swept after the CSV
        (claimed,) = [o for o in only_status(bob)["outputs"] if o["what"] == "htlc_success:0"]
        assert claimed["by"] == "us" and claimed["height"] < expiry
        (delayed,) = [o for o in only_status(bob)["outputs"] if o["what"] == "htlc_success:0:delayed"]
        assert delayed["by"] == "us" and delayed["state"] == "swept"
        # alice learned the preimage from the chain
        learned = [o for o in only_status(alice)["outputs"] if o["what"].startswith("htlc")]
        assert learned and learned[0]["by"] == "peer"


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
async def test_after_data_loss_we_never_broadcast_and_sweep_the_peers_commitment(tmp_path: Path, channel_type: str) -> None:
    """Bob comes back from an old backup of his channel store: the peer proves it, Bob never broadcasts his
    stale commitment; the peer goes on chain with its latest one and Bob's monitor sweeps his output."""
    import shutil

    network = MemoryNetwork()
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp_path, network)
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                channel_id = await open_channel(pair, alice, bob, channel_type)
                expiry = (await source.tip()).height + 50
                await add_htlc(pair, alice, bob, channel_id, 50_000_000, expiry)
                shutil.copytree(tmp_path / "bob" / "channels", tmp_path / "backup")  # the backup, now
                await add_htlc(pair, alice, bob, channel_id, 70_000_000, expiry)
            shutil.rmtree(tmp_path / "bob" / "channels")
            shutil.copytree(tmp_path / "backup", tmp_path / "bob" / "channels")
            bob = pair.node("bob", False)
            async with running(bob):
                before = pair.wallet_sat(bob)
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: only_channel(bob).core.state.behind, "bob learns he is behind")
                await wait_until(lambda: only_channel(alice).phase is Phase.FAILED, "alice goes on chain")
                await run_until_resolved(pair, bob)
                await pair.mine(1, alice, bob)
                status = only_status(bob)
                assert status["commitment"]["kind"] in ("theirs_current", "theirs_unknown")
                # Alice's latest commitment, not Bob's stale one
                assert status["commitment"]["number"] == only_channel(alice).core.state.local_commit.number  # type: ignore[union-attr]
                gained = pair.wallet_sat(bob) - before
                assert PUSH_MSAT // 1000 - 10_000 < gained <= PUSH_MSAT // 1000, gained


@pytest.mark.trio
async def test_a_protocol_violation_takes_the_channel_on_chain(tmp_path: Path) -> None:
    """The channel core's RemoteFault path: a commitment_signed with nothing to sign and a bad signature
    fails the channel (an error to the peer); our latest commitment goes on chain and is swept.

    The peer fails the channel on our error and broadcasts its own commitment: which of the two
    reaches the mempool first is a race the protocol leaves open (the loser conflicts with it). Here
    the peer takes our error only once ours is in the mempool, so that ours is the one mined."""
    from lnpmsg.channels.messages import CommitmentSigned

    async with two_nodes(tmp_path) as (pair, alice, bob):
        channel_id = await open_channel(pair, alice, bob, "static_remotekey")
        before = pair.wallet_sat(bob)
        alice_app = channels(alice)
        take_the_error = alice_app.channel_error
        errors_taken: list[str] = []

        async def once_bobs_commitment_is_in_the_mempool(peer: Any, cid: bytes, text: str) -> None:
            commitment = Tx.parse(only_channel(bob).core.latest_commitment_tx())  # type: ignore[arg-type]
            await wait_until(lambda: pair.source.core.find_transaction(commitment.txid) is not None, "bob's commitment")
            await take_the_error(peer, cid, text)
            errors_taken.append(text)

        alice_app.channel_error = once_bobs_commitment_is_in_the_mempool  # type: ignore[method-assign]
        bogus = CommitmentSigned(channel_id=bytes.fromhex(channel_id), signature=bytes(63) + b"\x01")
        await channels(alice).send(bob.node_id, bogus)
        await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "bob fails the channel")
        failure = only_channel(bob).core.state.failure
        assert failure and not failure.startswith("peer:")  # our verdict on the peer, not the peer's error
        await run_until_resolved(pair, alice, bob)
        assert errors_taken and only_channel(alice).phase is Phase.FAILED  # Alice failed it too, on Bob's error
        assert only_status(bob)["commitment"]["kind"] == "ours"
        assert PUSH_MSAT // 1000 - 10_000 < pair.wallet_sat(bob) - before < PUSH_MSAT // 1000
