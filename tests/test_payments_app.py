"""The payments app on nodes in memory, on one embedded regtest chain.

A line A-B-C-D-E of channels (each funded by its left node) carries
payments over 1 to 4 hops; failures (unknown payment hash, too little
liquidity, a CLTV delta below a hop's policy, no route, an expired invoice, a
malformed onion, an invoice the payee deleted) are attributed to the right hop and reported by ``pay``.
A diamond A-{B,C}-D carries a multi-part payment no single path could,
then a payment whose first route fails (a hop's policy is not what the
graph says) and whose retry takes the other path; then every node stops
with a payment in flight and restarts from its stores: the payment
completes, nothing is left pending.

The routing graph is filled by the test with what gossip would announce
(the gossip-fed graph is the gossip app's business): the payer plans over
it plus its own channels and the invoice's route hints.

Real clock (the chain and stores work in threads); waits are for states.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.payments import bolt11
from lnpmsg.payments.app import PaymentEvent, PaymentsApp
from lnpmsg.payments.forwarding import REESTABLISH_WAIT
from lnpmsg.payments.graph import RoutingGraph
from lnpmsg.payments.htlcs import FeePolicy
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

TIMEOUT = 90.0
POLICY = FeePolicy(fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=40)


def payments(node: Node) -> PaymentsApp:
    return node.apps["payments"]  # type: ignore[return-value]


def channels(node: Node) -> ChannelsApp:
    return node.apps["channels"]  # type: ignore[return-value]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.02)


def first_forward_late(forwarder: Node, seconds: float) -> list[bool]:
    """FORWARDER offers its first outgoing HTLC ``seconds`` late, the others at once (e.g. a part that
    reaches the payee past its MPP timeout); the list returned holds True once one was held back."""
    htlcs = payments(forwarder).htlcs
    add_htlc = htlcs.add_htlc
    late: list[bool] = []

    async def first_one_late(*args: Any, **kwargs: Any) -> Any:
        if not late:
            late.append(True)
            await trio.sleep(seconds)
        return await add_htlc(*args, **kwargs)

    htlcs.add_htlc = first_one_late  # type: ignore[method-assign]
    return late


def quiet(node: Node) -> bool:
    """Every channel of the node is normal, connected, with nothing pending and no HTLC."""
    manager = channels(node).manager
    assert manager is not None
    for c in manager.channels.values():
        s = c.core.state
        if c.phase is Phase.NEW:
            continue
        if not (c.phase is Phase.NORMAL and s.connected and not s.awaiting_reestablish and not s.local_changes.all()
                and not s.remote_changes.all() and s.remote_next_commit is None and s.local_commit is not None
                and not s.local_commit.spec.htlcs):  # fmt: skip
            return False
    return True


class Net:
    """Nodes with a wallet, channels and payments on one chain and one in-memory network."""

    def __init__(self, source: EmbeddedChainSource, tmp: Path) -> None:
        self.source = source
        self.tmp = tmp
        self.network = MemoryNetwork()
        self.graph = RoutingGraph()
        self.nodes: dict[str, Node] = {}
        self.keys: dict[str, NodeKey] = {}

    def node(self, name: str, policy: FeePolicy = POLICY, accept_keysend: bool = False) -> Node:
        """Node ``name`` (the same key and directories each time), forwarding under ``policy``."""
        self.keys.setdefault(name, NodeKey.generate())
        node = Node(self.keys[name], NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": self.network.transport()})
        node.mount(ChainApp(self.tmp / name / "wallet", source=self.source))
        node.mount(ChannelsApp(self.tmp / name / "channels", config=ChannelConfig(minimum_depth=1)))
        node.mount(PaymentsApp(self.tmp / name / "payments", policy=policy, graph=self.graph, mpp_timeout=20.0, accept_keysend=accept_keysend))
        self.nodes[name] = node
        return node

    async def fund(self, *nodes: Node) -> None:
        for node in nodes:
            await self.source.faucet(node.apps["chain"].wallet.new_address(), 3_000_000)  # type: ignore[attr-defined]
        await self.source.mine(1)
        for node in nodes:
            await node.apps["chain"].wallet.sync()  # type: ignore[attr-defined]

    async def open(self, links: list[tuple[Node, Node, int, int | None]]) -> dict[tuple[str, str], int]:
        """Open each (funder, peer, sat, graph capacity) channel, confirm, and announce it to the test graph."""
        for funder, peer, sat, _ in links:
            if peer.node_id not in funder.peers:
                await funder.connect(peer.addresses[0])
            await channels(funder).fundchannel(peer.node_id.hex(), sat, push_msat=10_000_000)
            await self.source.mine(1)  # one at a time: each funding spends the wallet's change
            await funder.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
        await self.source.mine(1)
        await wait_until(lambda: all(quiet(n) for n in self.nodes.values()) and all(
            c.core.state.short_channel_id for n in self.nodes.values() for c in channels(n).manager.channels.values()  # type: ignore[union-attr]
            if c.phase is not Phase.NEW), "channels ready")  # fmt: skip
        scids: dict[tuple[str, str], int] = {}
        for funder, peer, _, capacity in links:
            info = next(c for c in channels(funder).htlcs.channels() if c.peer_id == peer.node_id)
            a, b = sorted([funder.node_id, peer.node_id])
            self.graph.add_channel(info.short_channel_id, a, b, capacity)
            for direction in (0, 1):
                self.graph.update(info.short_channel_id, direction, fee_base_msat=POLICY.fee_base_msat,
                                  fee_proportional_millionths=POLICY.fee_proportional_millionths,
                                  cltv_expiry_delta=POLICY.cltv_expiry_delta, htlc_minimum_msat=1, htlc_maximum_msat=sat * 1000)  # fmt: skip
            scids[(self.name(funder), self.name(peer))] = info.short_channel_id
        return scids

    def name(self, node: Node) -> str:
        return next(k for k, v in self.nodes.items() if v is node)


@asynccontextmanager
async def net(tmp: Path) -> AsyncIterator[Net]:
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        yield Net(source, tmp)


def spendable(node: Node, peer: Node) -> int:
    return next(c.spendable_msat for c in channels(node).htlcs.channels() if c.peer_id == peer.node_id)


async def pay_error(payer: Node, text: str, **kwargs: Any) -> ChainAppError:
    with pytest.raises(ChainAppError) as info:
        await payments(payer).pay(text, **kwargs)
    return info.value


@pytest.mark.trio
async def test_payments_over_a_line_of_five_nodes_and_failures_attributed(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c, d, e = (n.node(x) for x in "abcde")
        async with running(a, b, c, d, e):
            await n.fund(a, b, c, d)
            scids = await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000),
                                  (c, d, 300_000, None), (d, e, 1_000_000, 1_000_000)])  # fmt: skip

            # direct: A pays B
            inv = await payments(b).invoice(50_000_000, "direct", "coffee")
            assert inv["bolt11"].startswith("lnbcrt500u")
            with record_events(b) as events:
                paid = await payments(a).pay(inv["bolt11"])
                got = await events.wait_for(lambda ev: isinstance(ev, PaymentEvent) and ev.topic == "invoice.paid")
            assert paid["status"] == "complete" and sha256(bytes.fromhex(paid["preimage"])).hex() == inv["payment_hash"]
            assert paid["fee_msat"] == 0 and len(paid["routes"][0]) == 1 and got.amount_msat == 50_000_000
            (row,) = (await payments(b).listinvoices())["invoices"]
            assert row["status"] == "paid" and row["received_msat"] == 50_000_000
            again = await pay_error(a, inv["bolt11"])  # never twice
            assert again.details["error"] == "AlreadyPaid" and again.details["preimage"] == paid["preimage"]

            # four hops: A-B-C-D-E, each forwarder keeps its fee
            inv = await payments(e).invoice(100_000_000, "far", "four hops")
            before = spendable(b, c)
            with record_events(c) as events:
                paid = await payments(a).pay(inv["bolt11"])
                fwd = await events.wait_for(lambda ev: isinstance(ev, PaymentEvent) and ev.topic == "payment.forwarded")
            hops = paid["routes"][0]
            assert [h["node_id"] for h in hops] == [x.node_id.hex() for x in (b, c, d, e)]
            assert paid["fee_msat"] == 3 * 1000 + sum(h["amt_to_forward"] * 100 // 1_000_000 for h in hops[:-1])
            assert fwd.fee_msat == hops[1]["amount_msat"] - hops[1]["amt_to_forward"]
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d, e)), "settled")
            assert spendable(b, c) < before - 100_000_000  # B forwarded the amount plus the later hops' fees
            (listed,) = [p for p in (await payments(a).listpayments())["payments"] if p["payment_hash"] == inv["payment_hash"]]
            assert listed["status"] == "complete" and listed["preimage"] == paid["preimage"] and listed["routes"] == paid["routes"]
            assert (await payments(e).listinvoices("far"))["invoices"][0]["status"] == "paid"
            (fwd_row,) = (await payments(c).listforwards())["forwards"]
            assert fwd_row["status"] == "settled" and fwd_row["in_cltv"] - fwd_row["out_cltv"] == POLICY.cltv_expiry_delta
            assert fwd_row["payment_hash"] == inv["payment_hash"] and "shared_secret" not in fwd_row

            # unknown payment hash: an invoice E signed but never stored; the payee (hop 3) refuses it
            fake = bolt11.decode(inv["bolt11"])
            from dataclasses import replace
            forged = bolt11.encode(bolt11.sign(replace(fake, payment_hash=os.urandom(32), signature=None, payee=None), n.keys["e"].secret))
            err = await pay_error(a, forged)
            assert err.details["code"] == 0x4000 | 15 and err.details["erring_index"] == 3
            assert err.details["erring_node"] == e.node_id.hex() and "incorrect_or_unknown_payment_details" in str(err)

            # too little liquidity: C-D holds 300k sat (the graph does not know): C fails, attributed to hop 1 on C-D
            inv = await payments(e).invoice(400_000_000, "big", "too big for C-D")
            err = await pay_error(a, inv["bolt11"])
            assert err.details["erring_index"] == 1 and err.details["erring_node"] == c.node_id.hex()
            assert err.details["code"] == 0x1000 | 7 and err.details["erring_channel"] == _scid(scids[("c", "d")])
            assert "temporary_channel_failure" in str(err)

            # a CLTV delta below B's policy: the graph says 10 blocks for B-C, B wants 40: incorrect_cltv_expiry from hop 0
            scid_bc = scids[("b", "c")]
            direction = 0 if b.node_id < c.node_id else 1
            n.graph.update(scid_bc, direction, fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=10,
                           htlc_minimum_msat=1, htlc_maximum_msat=10**9)  # fmt: skip
            inv = await payments(e).invoice(1_000_000, "cltv", "cltv too close")
            err = await pay_error(a, inv["bolt11"])
            assert err.details["erring_index"] == 0 and err.details["code"] == 0x1000 | 13
            assert "incorrect_cltv_expiry" in str(err)
            n.graph.update(scid_bc, direction, **dict(fee_base_msat=1000, fee_proportional_millionths=100,
                                                      cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**9))  # fmt: skip

            # no route: a node with no channel
            f = n.node("f")
            async with running(f):
                inv = await payments(f).invoice(1_000, "lonely", "no channels")
                err = await pay_error(a, inv["bolt11"])
            assert err.details["error"] == "NoRoute" and "no route" in str(err)

            # an expired invoice is refused before anything is sent
            inv = await payments(e).invoice(1_000, "short", "expires", expiry=1)
            await trio.sleep(1.5)
            err = await pay_error(a, inv["bolt11"])
            assert err.details["code"] == "expired"

            # a malformed onion (version 1) gets update_fail_malformed_htlc back
            with record_events(a) as events:
                await channels(a).dev_addhtlc(_scid(scids[("a", "b")]), 10_000, onion="01" + "00" * 1365)
                await events.wait_for(lambda ev: getattr(ev, "topic", "") == "channel.htlc" and getattr(ev, "reason", "") == "failed")
                await wait_until(lambda: quiet(a) and quiet(b), "the malformed HTLC failed back")
            failed = [p for p in (await payments(a).listpayments())["payments"] if p["status"] == "failed"]
            assert len(failed) == 4

            # an invoice the payee deleted: its hash is unknown to the payee (hop 3) from then on; a paid one is kept
            inv = await payments(e).invoice(1_000, "gone", "deleted before it is paid")
            deleted = await payments(e).delinvoice("gone")
            assert deleted["deleted"]["payment_hash"] == inv["payment_hash"] and not (await payments(e).listinvoices("gone"))["invoices"]
            err = await pay_error(a, inv["bolt11"])
            assert err.details["erring_index"] == 3 and err.details["code"] == 0x4000 | 15
            with pytest.raises(ChainAppError, match="is paid"):
                await payments(e).delinvoice("far")
            with pytest.raises(ChainAppError, match="no invoice"):
                await payments(e).delinvoice("gone")

            # a caller that stops waiting (the control server ends a call after a minute) does not stop the
            # payment: it goes on as the app's task, ends paid, and is recorded so
            inv = await payments(e).invoice(2_000_000, "patient", "paid after the caller left")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(payments(a).pay, inv["bolt11"])
                await wait_until(lambda: any(h.add.payment_hash.hex() == inv["payment_hash"] for ch in channels(a).htlcs.channels()
                                             for h in channels(a).htlcs.outgoing(ch.key)), "the HTLC left")  # fmt: skip
                nursery.cancel_scope.cancel()
            with trio.fail_after(TIMEOUT):
                while (await payments(a).listpayments(inv["payment_hash"]))["payments"][0]["status"] != "complete":
                    await trio.sleep(0.05)
            assert (await payments(e).listinvoices("patient"))["invoices"][0]["status"] == "paid"
            assert (await pay_error(a, inv["bolt11"])).details["error"] == "AlreadyPaid"

            # bad input: a clear error
            with pytest.raises(ParamsError):
                await payments(a).pay("lnbcrt1nonsense")
            with pytest.raises(ParamsError):
                await payments(e).invoice(1_000, "far", "label reused")
            chosen = await payments(e).invoice(1_000, "chosen", "a preimage given", preimage="22" * 32)
            assert chosen["payment_hash"] == hashlib.sha256(bytes.fromhex("22" * 32)).hexdigest()
            with pytest.raises(ParamsError, match="preimage must be 32 bytes"):
                await payments(e).invoice(1_000, "short", "a preimage of 31 bytes", preimage="22" * 31)
            with pytest.raises(ParamsError, match="payment_hash is not hex"):
                await payments(a).listpayments("zz" * 32)


def _scid(scid: int) -> str:
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


@asynccontextmanager
async def paying(payer: Node, bolt11_text: str) -> AsyncIterator[dict[str, Any]]:
    """Pay in the background; ``outcome`` gets ``paid`` or ``error`` (the block waits for it on the way out)."""
    outcome: dict[str, Any] = {}
    done = trio.Event()

    async def pay() -> None:
        try:
            outcome["paid"] = await payments(payer).pay(bolt11_text)
        except ChainAppError as exc:
            outcome["error"] = exc
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pay)
        yield outcome
        with trio.fail_after(TIMEOUT):
            await done.wait()


@asynccontextmanager
async def diamond(n: Net) -> AsyncIterator[tuple[Node, Node, Node, Node]]:
    """Nodes A, B, C and D running, with channels A-B, A-C (600,000 sat a side) and B-D, C-D (1,000,000):
    two paths from A to D, neither able to carry 900,000 sat alone (a multi-part payment's)."""
    a, b, c, d = (n.node(x) for x in "abcd")
    async with running(a, b, c, d):
        await n.fund(a, b, c)
        await n.open([(a, b, 600_000, 600_000), (a, c, 600_000, 600_000), (b, d, 1_000_000, 1_000_000), (c, d, 1_000_000, 1_000_000)])
        yield a, b, c, d


@pytest.mark.trio
async def test_mpp_over_a_diamond_and_the_store_survives_a_restart(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        async with diamond(n) as (a, b, c, d):
            inv = await payments(d).invoice(900_000_000, "mpp", "needs two paths")
            paid = await payments(a).pay(inv["bolt11"])
            assert paid["status"] == "complete" and paid["parts"] >= 2
            assert {r[0]["node_id"] for r in paid["routes"]} == {b.node_id.hex(), c.node_id.hex()}
            assert sum(r[-1]["amt_to_forward"] for r in paid["routes"]) == 900_000_000
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")

            # the graph says B forwards to D for free (B asks 1000 msat + 100 ppm): the cheap route via B fails
            # with fee_insufficient from hop 0; mission control learns it and the retry goes via C
            scid_bd = next(ch.short_channel_id for ch in channels(b).htlcs.channels() if ch.peer_id == d.node_id)
            n.graph.update(scid_bd, 0 if b.node_id < d.node_id else 1, fee_base_msat=0, fee_proportional_millionths=0,
                           cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**9)  # fmt: skip
            scid_cd = next(ch.short_channel_id for ch in channels(c).htlcs.channels() if ch.peer_id == d.node_id)
            n.graph.update(scid_cd, 0 if c.node_id < d.node_id else 1, fee_base_msat=50_000, fee_proportional_millionths=100,
                           cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**9)  # C looks dear  # fmt: skip
            inv2 = await payments(d).invoice(1_000_000, "retry", "learns from a failure")
            retried = await payments(a).pay(inv2["bolt11"])
            assert retried["status"] == "complete" and retried["attempts"] == 2
            assert [h["node_id"] for h in retried["routes"][0]] == [c.node_id.hex(), d.node_id.hex()] and retried["fee_msat"] == 50_100
            (p2,) = [p for p in (await payments(a).listpayments())["payments"] if p["payment_hash"] == inv2["payment_hash"]]
            assert p2["attempts"] == 2 and p2["status"] == "complete"
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")
            # A stops with a payment's HTLC in flight; after its restart the preimage comes back and the payment completes
            inv3 = await payments(d).invoice(2_000_000, "restart", "the payer restarts")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(payments(a).pay, inv3["bolt11"])
                await wait_until(lambda: any(h.add.payment_hash.hex() == inv3["payment_hash"] for ch in channels(a).htlcs.channels()
                                             for h in channels(a).htlcs.outgoing(ch.key)), "the HTLC left")  # fmt: skip
                nursery.cancel_scope.cancel()
        # every node restarts from its stores: invoices and payments are still there, the HTLC in flight completes
        a2, b2, c2, d2 = (n.node(x) for x in "abcd")
        async with running(a2, b2, c2, d2):
            for x, y in ((a2, b2), (a2, c2), (d2, b2), (d2, c2)):
                await x.connect(y.addresses[0])
            with trio.fail_after(TIMEOUT):
                while (pays := (await payments(a2).listpayments())["payments"])[-1]["status"] != "complete":
                    await trio.sleep(0.05)
            assert pays[-1]["preimage"] is not None and sha256(bytes.fromhex(pays[-1]["preimage"])).hex() == inv3["payment_hash"]
            row = (await payments(d2).listinvoices())["invoices"][0]
            assert row["status"] == "paid" and row["received_msat"] == 900_000_000
            p = pays[0]
            assert p["status"] == "complete" and p["preimage"] == paid["preimage"] and len(p["routes"]) == paid["parts"]
            await wait_until(lambda: all(quiet(x) for x in (a2, b2, c2, d2)), "no HTLC left")


def waits_at(node: Node, payment_hash: str) -> bool:
    """The node holds an incoming HTLC of this payment irrevocably committed (in its commitment and in
    the peer's latest revoked-to one: its payments app was told), not yet resolved."""
    manager = channels(node).manager
    assert manager is not None
    for channel in manager.channels.values():
        s = channel.core.state
        if s.local_commit is None or s.remote_commit is None:
            continue
        for h in s.local_commit.spec.htlcs:
            if h.incoming and h.add.payment_hash.hex() == payment_hash and s.remote_commit.spec.htlc(False, h.add.id) is not None:
                return True
    return False


def forward_status(node: Node, payment_hash: str) -> str | None:
    store = payments(node).store
    assert store is not None
    return next((f["status"] for f in store.forwards() if f["payment_hash"].hex() == payment_hash), None)


async def pay_until_it_waits_at(payer: Node, hop: Node, bolt11_text: str, payment_hash: str) -> None:
    """Start paying, and leave the payment once its HTLC waits at ``hop`` (the payer then stops)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(payments(payer).pay, bolt11_text)
        await wait_until(lambda: waits_at(hop, payment_hash), "the HTLC waits at the hop")
        nursery.cancel_scope.cancel()


async def payment_ended(payer: Node, payment_hash: str) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        while (row := (await payments(payer).listpayments(payment_hash))["payments"][-1])["status"] == "pending":
            await trio.sleep(0.05)
    return row


@pytest.mark.trio
async def test_what_comes_back_while_the_payer_or_a_forwarder_is_down_is_not_lost(tmp_path: Path) -> None:
    """A line A-B-C. A pays C's hold invoice through B and stops once C holds the HTLC (a forward
    whose next peer is away would not wait at B: it fails back at once, see
    ``test_a_forward_to_a_peer_that_is_not_connected_fails_back_at_once``).

    1. C cancels the invoice: B's failure waits for A; A restarts and reads it with the part's
       stored secrets: the payment failed, the payee refused it.
    2. C settles: B keeps the preimage; B stops too while its fulfill waits for A, and its payments
       store loses the preimage (as if B had crashed after its channel took the fulfill and before
       the store kept it); both restart: B settles upstream with the preimage its channel monitor
       kept, and A's payment completes.
    """
    async with net(tmp_path) as n:
        a, b, c = (n.node(x) for x in "abc")
        async with running(c):
            async with running(b):
                async with running(a):
                    await n.fund(a, b)
                    await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                    refused = sha256(os.urandom(32))
                    inv = await payments(c).invoice(1_000_000, "refused", "held, then cancelled", payment_hash=refused.hex(), hold=True)
                    await pay_until_it_waits_at(a, c, inv["bolt11"], refused.hex())
                # A is down; C refuses: B's failure waits for A
                await payments(c).cancelinvoice(refused.hex())
                await wait_until(lambda: forward_status(b, refused.hex()) == "failed", "C refused")
                assert waits_at(b, refused.hex())
                a2 = n.node("a")
                async with running(a2):
                    await a2.connect(b.addresses[0])
                    row = await payment_ended(a2, refused.hex())
                    assert row["status"] == "failed" and row["preimage"] is None
                    assert "the payee" in row["error"] and "incorrect_or_unknown_payment_details" in row["error"], row["error"]

                    preimage = os.urandom(32)
                    inv = await payments(c).invoice(5_000_000, "while down", "the payer and a forwarder restart",
                                                    payment_hash=sha256(preimage).hex(), hold=True)  # fmt: skip
                    await pay_until_it_waits_at(a2, c, inv["bolt11"], inv["payment_hash"])
                await payments(c).settleinvoice(preimage.hex())
                await wait_until(lambda: forward_status(b, inv["payment_hash"]) == "settled", "C settled, B has the preimage")
                assert waits_at(b, inv["payment_hash"])  # A is down: B's fulfill waits
            # B stops too; its payments store forgets the preimage: the channel monitor's copy must do
            db = sqlite3.connect(tmp_path / "b" / "payments" / "payments.sqlite3")
            with db:
                db.execute("UPDATE forwards SET status = 'offered', preimage = NULL WHERE payment_hash = ?", (bytes.fromhex(inv["payment_hash"]),))
            db.close()
            b2, a3 = n.node("b"), n.node("a")
            async with running(b2, a3):
                await a3.connect(b2.addresses[0])
                await b2.connect(c.addresses[0])
                row = await payment_ended(a3, inv["payment_hash"])
                assert row["status"] == "complete" and sha256(bytes.fromhex(row["preimage"])).hex() == inv["payment_hash"]
                assert (await payments(c).listinvoices("while down"))["invoices"][0]["status"] == "paid"
                await wait_until(lambda: all(quiet(x) for x in (a3, b2, c)), "no HTLC left")


@pytest.mark.trio
async def test_a_forward_to_a_peer_that_is_not_connected_fails_back_at_once(tmp_path: Path) -> None:
    """A line A-B-C, past B's start grace (every channel of B was usable). C stops: B does not hold
    A's HTLC for C (it may be gone for good) but fails it back at once with ``temporary_channel_failure``
    for B-C (no channel_update: BOLT 4 no longer asks for one), so A's payment fails while C is still
    down. (Event-based: the payment ends, or B waits for C, before C restarts. Before, B waited up
    to 30 s for C.) Once C is back B forwards again."""
    async with net(tmp_path) as n:
        a, b, c = (n.node(x) for x in "abc")
        async with running(a, b):
            async with running(c):
                await n.fund(a, b)
                scids = await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                inv = await payments(c).invoice(5_000_000, "offline", "C is down at first")
                await wait_until(lambda: not getattr(payments(b), "restarting", False), "B's start grace is over")
            await wait_until(lambda: not any(ch.usable for ch in channels(b).htlcs.channels() if ch.peer_id == c.node_id), "B sees C gone")
            assert payments(b)._next_channel_wait(scids[("b", "c")]) == 0.0  # (not connected: not waited for)
            async with paying(a, inv["bolt11"]) as outcome:
                # B decided: the payment ended, or B waits for its next channel (_waited: the old behaviour)
                await wait_until(lambda: bool(outcome) or bool(payments(b)._waited), "B decided")
                assert "error" in outcome, "B held the forward for C, which is not connected"
            err = outcome["error"]
            assert err.details["erring_index"] == 0 and err.details["erring_node"] == b.node_id.hex()
            assert err.details["code"] == 0x1000 | 7 and err.details["erring_channel"] == _scid(scids[("b", "c")])
            await wait_until(lambda: quiet(a), "nothing left on A-B")  # (B-C is down: B is not quiet)
            assert [f["status"] for f in (await payments(b).listforwards())["forwards"]] in ([], ["failed"])

            # C is back: B forwards again (less than the failed amount: A's mission control took the failure
            # as too little liquidity on B-C for a while)
            c2 = n.node("c")
            async with running(c2):
                await b.connect(c2.addresses[0])
                # (connected: a channel not usable yet is being reestablished, and is waited for a few seconds)
                assert payments(b)._next_channel_wait(scids[("b", "c")]) == REESTABLISH_WAIT
                await wait_until(lambda: all(ch.usable for ch in channels(b).htlcs.channels()), "B-C is back")
                inv = await payments(c2).invoice(1_000_000, "back", "C is back")
                paid = await payments(a).pay(inv["bolt11"])
                assert paid["status"] == "complete"
                await wait_until(lambda: all(quiet(x) for x in (a, b, c2)), "settled")


@pytest.mark.trio
async def test_our_own_channel_is_named_as_listchannels_names_it(tmp_path: Path) -> None:
    """A pays B and C over its own private channels: ``pay``, ``listpayments`` and ``getroute`` name
    the first hop's channel by its real short channel id (listchannels' ``short_channel_id``), not by
    our local alias; an ``option_scid_alias`` channel, whose real id is never to be named, by the alias."""
    async with net(tmp_path) as n:
        a, b, c = (n.node(x) for x in "abc")
        async with running(a, b, c):
            await n.fund(a)
            await a.connect(c.addresses[0])
            await channels(a).fundchannel(c.node_id.hex(), 500_000, push_msat=10_000_000, channel_type="scid_alias")
            await n.source.mine(1)
            await a.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            await n.open([(a, b, 500_000, 500_000)])
            listed = {ch["peer_id"]: ch for ch in (await channels(a).listchannels())["channels"]}
            ab, ac = listed[b.node_id.hex()], listed[c.node_id.hex()]
            assert ab["short_channel_id"] and ab["local_alias"] and ab["short_channel_id"] != ab["local_alias"] and not ab["scid_alias"]
            assert ac["scid_alias"] and ac["short_channel_id"] and ac["local_alias"]

            for payee, name in ((b, ab["short_channel_id"]), (c, ac["local_alias"])):
                inv = await payments(payee).invoice(1_000_000, "direct", "over A's own channel")
                paid = await payments(a).pay(inv["bolt11"])
                assert [hop["short_channel_id"] for hop in paid["routes"][0]] == [name]
                (row,) = (await payments(a).listpayments(inv["payment_hash"]))["payments"]
                assert row["routes"] == paid["routes"]
                assert [hop["short_channel_id"] for hop in (await payments(a).getroute(payee.node_id.hex(), 1_000))["route"]] == [name]
                await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")
                # a failure's details name it so too: the last attempt's route and every attempt's
                gone = await payments(payee).invoice(1_000_000, "gone", "deleted before it is paid")
                await payments(payee).delinvoice("gone")
                err = await pay_error(a, gone["bolt11"])
                assert err.details["erring_index"] == 0 and err.details["code"] == 0x4000 | 15
                assert [hop["short_channel_id"] for hop in err.details["route"]] == [name]  # type: ignore[attr-defined]
                assert [[hop["short_channel_id"] for hop in t["route"]] for t in err.details["attempts"]] == [[name]]  # type: ignore[attr-defined]
                await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")


def test_a_failure_names_our_channel_where_our_channel_refused_it() -> None:
    from lnpmsg.payments.views import name_failure

    hop = {"node_id": "02" * 33, "short_channel_id": "16760366x1x0", "amount_msat": 5}
    ours = {"route": [hop], "amount_msat": 5, "status": "failed", "failure": "our channel 16760366x1x0 did not take the HTLC: x",
            "erring_index": -1, "erring_channel": "16760366x1x0"}  # fmt: skip
    text, details = name_failure("gave up; last failure: our channel 16760366x1x0 did not take the HTLC: x",
                                 {"error": "PaymentFailed", "attempts": [ours], **ours}, {"16760366x1x0": "104x1x0"})  # fmt: skip
    assert text == "gave up; last failure: our channel 104x1x0 did not take the HTLC: x"
    assert details["erring_channel"] == "104x1x0" and details["route"][0]["short_channel_id"] == "104x1x0"
    assert details["attempts"][0]["erring_channel"] == "104x1x0" and details["attempts"][0]["route"][0]["short_channel_id"] == "104x1x0"
    assert details["failure"] == details["attempts"][0]["failure"] == "our channel 104x1x0 did not take the HTLC: x"
    assert ours["erring_channel"] == "16760366x1x0" and hop["short_channel_id"] == "16760366x1x0"  # (the payment's own record is left as it is)
