"""A forwarded HTLC whose next channel goes on chain is never left hanging.

A pays C through B. C runs the channel app without a payments layer, so an
HTLC offered to it is never settled off chain: it stands for a peer that
stops answering. Then:

- the HTLC times out: B's deadline takes B-C on chain, B's HTLC-timeout
  transaction is mined and buried, and B fails A's HTLC at once with
  ``permanent_channel_failure``: A's payment fails, attributed to B, long
  before A's own HTLC would expire, and A-B stays open;
- C claims the HTLC on chain with its preimage: B's monitor reads the
  preimage from C's HTLC-success transaction and B settles A's HTLC with it:
  A's payment completes, A-B stays open.

Every transaction is mined on the embedded regtest chain (Bitcoin Core's
consensus code). Real clock; waits are for states.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.payments import bolt11
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from test_payments_app import Net, channels, net, paying, payments, wait_until

PERMANENT_CHANNEL_FAILURE = 0x4000 | 8


def silent_node(n: Net, name: str) -> Node:
    """A node with a wallet and channels but no payments app: it never settles an HTLC off chain."""
    n.keys.setdefault(name, NodeKey.generate())
    node = Node(n.keys[name], NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": n.network.transport()})
    node.mount(ChainApp(n.tmp / name / "wallet", source=n.source))
    node.mount(ChannelsApp(n.tmp / name / "channels", config=ChannelConfig(minimum_depth=1)))
    n.nodes[name] = node
    return node


async def invoice_of(n: Net, issuer: Node, payee: str, payment_hash: bytes, amount_msat: int) -> str:
    """An invoice of ``payee`` (signed with its key) for ``payment_hash``, shaped like ``issuer``'s invoices."""
    made = bolt11.decode((await payments(issuer).invoice(amount_msat, os.urandom(4).hex(), "held by a silent node"))["bolt11"])
    forged = replace(made, payment_hash=payment_hash, signature=None, payee=None)
    return bolt11.encode(bolt11.sign(forged, n.keys[payee].secret))


async def mine_until(n: Net, nodes: tuple[Node, ...], outcome: dict[str, Any], most: int) -> int:
    """Mine one block at a time (each seen by every node's channel monitors) until the payment has its
    ``outcome`` (:func:`~test_payments_app.paying`); the blocks mined."""
    for count in range(1, most + 1):
        await n.source.mine(1)
        height = (await n.source.tip()).height
        await wait_until(lambda: all(channels(x).onchain.done_height == height for x in nodes), f"block {height} seen")  # type: ignore[union-attr]
        if outcome:
            return count
        await trio.sleep(0.05)
    raise AssertionError(f"not done after {most} blocks")


def channel_with(node: Node, peer: Node):  # type: ignore[no-untyped-def]
    manager = channels(node).manager
    assert manager is not None
    return next(c for c in manager.channels.values() if c.peer_id == peer.node_id)


def holds_htlc(node: Node, peer: Node) -> bool:
    s = channel_with(node, peer).core.state
    return s.local_commit is not None and bool(s.local_commit.spec.htlcs) and s.remote_next_commit is None


async def setup(n: Net) -> tuple[Node, Node, Node]:
    a, b, c = n.node("a"), n.node("b"), silent_node(n, "c")
    return a, b, c


@pytest.mark.trio
async def test_the_next_channel_times_out_on_chain_and_the_incoming_htlc_fails_back_at_once(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c = await setup(n)
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 600_000, 600_000), (b, c, 600_000, 600_000)])
            start = (await n.source.tip()).height
            text = await invoice_of(n, b, "c", sha256(os.urandom(32)), 20_000_000)
            async with paying(a, text) as outcome:
                await wait_until(lambda: holds_htlc(c, b) and holds_htlc(b, c), "the HTLC held by C")
                (in_htlc,) = channel_with(b, a).core.state.local_commit.spec.htlcs
                (out_htlc,) = channel_with(b, c).core.state.local_commit.spec.htlcs
                # B's monitor of B-C knows which incoming expiry the outgoing HTLC answers
                monitor = channels(b).onchain.watched[channel_with(b, c).key].monitor  # type: ignore[union-attr]
                assert monitor.describe()["upstream"] == {out_htlc.add.id: in_htlc.add.cltv_expiry}
                mined = await mine_until(n, (a, b, c), outcome, most=in_htlc.add.cltv_expiry - start)
            error = outcome["error"]
            assert error.details["erring_index"] == 0 and error.details["erring_node"] == b.node_id.hex()
            assert error.details["code"] == PERMANENT_CHANNEL_FAILURE and "permanent_channel_failure" in str(error)
            # failed back well before A's own HTLC could have taken A-B on chain
            assert start + mined < in_htlc.add.cltv_expiry
            assert start + mined > out_htlc.add.cltv_expiry  # ... and only once B's HTLC timed out on chain
            await wait_until(lambda: not channel_with(a, b).core.state.local_commit.spec.htlcs, "A's HTLC removed")
            assert channel_with(a, b).phase is Phase.NORMAL and channel_with(b, c).phase in (Phase.FAILED, Phase.CLOSED)
            (fwd,) = (await payments(b).listforwards())["forwards"]
            assert fwd["status"] == "failed"
            (listed,) = (await payments(a).listpayments())["payments"]
            assert listed["status"] == "failed"


@pytest.mark.trio
async def test_the_preimage_revealed_on_chain_settles_the_incoming_htlc(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c = await setup(n)
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 600_000, 600_000), (b, c, 600_000, 600_000)])
            preimage = os.urandom(32)
            text = await invoice_of(n, b, "c", sha256(preimage), 20_000_000)
            async with paying(a, text) as outcome:
                await wait_until(lambda: holds_htlc(c, b) and holds_htlc(b, c), "the HTLC held by C")
                key = channel_with(c, b).key
                # C knows the preimage only on chain: its monitor claims the HTLC with it
                await channels(c).dev_preimage(key, preimage.hex())
                await channels(c).closechannel(key, force=True)
                (in_htlc,) = channel_with(b, a).core.state.local_commit.spec.htlcs
                start = (await n.source.tip()).height
                mined = await mine_until(n, (a, b, c), outcome, most=in_htlc.add.cltv_expiry - start)
            assert "paid" in outcome, outcome
            paid = outcome["paid"]
            assert paid["status"] == "complete" and paid["preimage"] == preimage.hex()
            assert start + mined < in_htlc.add.cltv_expiry
            await wait_until(lambda: not channel_with(a, b).core.state.local_commit.spec.htlcs, "A's HTLC removed")
            assert channel_with(a, b).phase is Phase.NORMAL
            (fwd,) = (await payments(b).listforwards())["forwards"]
            assert fwd["status"] == "settled"
