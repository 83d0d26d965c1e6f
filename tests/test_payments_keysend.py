"""Keysend (bLIP 3, :mod:`lnpmsg.payments.keysend`) between nodes in memory, on one embedded regtest chain.

A line A-B-C; C accepts keysends, B does not. A keysends to C through B (B
forwards it as any HTLC): C records it as a paid invoice-like row, then
fulfils; A's payment completes with the preimage it chose, the balances moved.
Then what is refused, with ``incorrect_or_unknown_payment_details``: a keysend
to B (it accepts none; as C before it is started with ``accept_keysend``), a forged one (its preimage is not the payment hash's),
one for the hash of one of C's invoices without that invoice's secret (it goes
by the invoice), a multi-part one; a keysend over a fee limit finds no route.
C stops after recording a keysend but before its fulfil left (its channel
app's fulfil made to hang), and settles it after a restart; a keysend to C on
a full disk is settled only once its row could be written. Real clock; waits are for states.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.gossip.app import GossipApp
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.sign import sign_channel_announcement, sign_node_announcement
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.node import Node
from lnpmsg.payments.app import PaymentEvent
from lnpmsg.payments.keysend import KEYSEND_FEATURE_BIT, KEYSEND_FINAL_CLTV
from lnpmsg.payments.onion import decrypt_failure_onion
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.payments.sender import Part, build_part
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError
from lnpmsg.wire import Features, ShortChannelId
from lnpmsg.wire.bolt1 import CHAIN_HASHES
from test_payments_app import TIMEOUT, Net, channels, net, payment_ended, payments, quiet, wait_until
from test_payments_disk_full import full_disk_under
from test_payments_onchain import channel_with

UNKNOWN_PAYMENT_DETAILS = 0x4000 | 15
AMOUNT = 30_000_000


def to_local(node: Node, peer: Node) -> int:
    return channel_with(node, peer).core.state.local_commit.spec.to_local_msat  # type: ignore[no-any-return]


async def keysend_htlc(n: Net, payer: Node, payee: Node, payment_hash: bytes, preimage: bytes, amount_msat: int,
                       payment_secret: bytes | None = None, total_msat: int | None = None) -> tuple[Part, tuple[str, int]]:  # fmt: skip
    """The payer offers, over its channel to the payee, an HTLC of ``payment_hash`` whose onion carries ``preimage``
    as a keysend's (whatever its hash); with ``payment_secret``, also a ``payment_data`` (``total_msat``: the amount)."""
    scid = next(c.short_channel_id for c in channels(payer).htlcs.channels() if c.peer_id == payee.node_id)
    expiry = (await n.source.tip()).height + KEYSEND_FINAL_CLTV
    route = Route((RouteHop(scid, 0, payee.node_id, amount_msat, expiry, amount_msat, expiry),))
    part = build_part(route, payment_hash, payment_secret, total_msat or amount_msat, keysend_preimage=preimage)
    return part, await channels(payer).htlcs.add_htlc(scid, amount_msat, payment_hash, expiry, part.onion)


async def failure_code(payer: Node, part: Part, ref: tuple[str, int]) -> int:
    """The code of the failure the payee sent back for the payer's HTLC ``ref`` (nothing of the payer's waits for it)."""
    await wait_until(lambda: ref in payments(payer)._early, "the HTLC failed back")
    failed = decrypt_failure_onion(part.shared_secrets, payments(payer)._early.pop(ref).reason or b"")
    assert failed.hop_index == len(part.route.hops) - 1 and failed.failure is not None
    return failed.failure.code


async def keysend_error(payer: Node, payee: Node, amount_msat: int, **kwargs: Any) -> ChainAppError:
    with pytest.raises(ChainAppError) as info:
        await payments(payer).keysend(payee.node_id.hex(), amount_msat, **kwargs)
    return info.value


@pytest.mark.trio
async def test_a_keysend_through_a_forwarding_node_and_what_is_refused(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c", accept_keysend=True)
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            # bLIP 3: announced in node_announcement only, never in init
            assert payments(c).node_announcement_features.bits() == [KEYSEND_FEATURE_BIT]
            assert not payments(b).node_announcement_features.bits()
            assert KEYSEND_FEATURE_BIT not in c.local_features().bits()
            a_before, c_before = to_local(a, b), to_local(c, b)
            with record_events(c) as events:
                paid = await payments(a).keysend(c.node_id.hex(), AMOUNT)
                got = await events.wait_for(lambda ev: isinstance(ev, PaymentEvent) and ev.topic == "invoice.paid", timeout=TIMEOUT)
            preimage = bytes.fromhex(paid["preimage"])
            assert paid["status"] == "complete" and sha256(preimage).hex() == paid["payment_hash"] and paid["amount_msat"] == AMOUNT
            (route,) = paid["routes"]
            assert [h["node_id"] for h in route] == [b.node_id.hex(), c.node_id.hex()] and paid["fee_msat"] > 0
            label = f"keysend-{paid['payment_hash'][:16]}"
            assert got.label == label and got.amount_msat == AMOUNT
            (row,) = (await payments(c).listinvoices())["invoices"]
            assert row["label"] == label and row["status"] == "paid" and row["keysend"] is True and row["bolt11"] == ""
            assert row["received_msat"] == row["amount_msat"] == AMOUNT and row["preimage"] == paid["preimage"]
            (sent,) = (await payments(a).listpayments())["payments"]
            assert sent["status"] == "complete" and sent["keysend"] is True and sent["bolt11"] is None
            assert sent["preimage"] == paid["preimage"] and sent["destination"] == c.node_id.hex() and sent["fee_msat"] == paid["fee_msat"]
            (fwd,) = (await payments(b).listforwards())["forwards"]
            assert fwd["status"] == "settled" and fwd["in_msat"] - fwd["out_msat"] == paid["fee_msat"]
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
            assert to_local(a, b) == a_before - AMOUNT - paid["fee_msat"] and to_local(c, b) == c_before + AMOUNT

            # B accepts no keysend: A's fails as for a hash B does not know (the payee's refusal: no retry)
            err = await keysend_error(a, b, 1_000_000)
            assert err.details["code"] == UNKNOWN_PAYMENT_DETAILS and err.details["erring_node"] == b.node_id.hex()
            assert not (await payments(b).listinvoices())["invoices"]
            # a forged keysend: its preimage is not the payment hash's
            part, ref = await keysend_htlc(n, b, c, os.urandom(32), os.urandom(32), 2_000_000)
            assert await failure_code(b, part, ref) == UNKNOWN_PAYMENT_DETAILS
            # the hash of one of C's invoices: it is that invoice's payment (which needs its secret), not a keysend
            mine = os.urandom(32)
            invoice = await payments(c).invoice(2_000_000, "mine", "an invoice", preimage=mine.hex())
            part, ref = await keysend_htlc(n, b, c, sha256(mine), mine, 2_000_000)
            assert await failure_code(b, part, ref) == UNKNOWN_PAYMENT_DETAILS
            assert (await payments(c).listinvoices("mine"))["invoices"][0]["status"] == "unpaid"
            # a multi-part keysend (payment_data's total above its amount) is refused
            other = os.urandom(32)
            part, ref = await keysend_htlc(n, b, c, sha256(other), other, 2_000_000, payment_secret=os.urandom(32), total_msat=4_000_000)
            assert await failure_code(b, part, ref) == UNKNOWN_PAYMENT_DETAILS
            # a whole one with a payment_data (a sender's random secret, as some send) is taken
            part, ref = await keysend_htlc(n, b, c, sha256(other), other, 2_000_000, payment_secret=os.urandom(32))
            await wait_until(lambda: ref in payments(b)._early, "settled")
            assert payments(b)._early.pop(ref).preimage == other
            (row,) = (await payments(c).listinvoices(f"keysend-{sha256(other).hex()[:16]}"))["invoices"]
            assert row["status"] == "paid" and row["received_msat"] == 2_000_000
            # the payer's limit on fees: no route through B costs nothing
            err = await keysend_error(a, c, 1_000_000, max_fee_msat=0)
            assert err.details["error"] == "NoRoute"
            assert len((await payments(c).listinvoices())["invoices"]) == 3  # two keysends and "mine": nothing else recorded
            assert invoice["payment_hash"] == sha256(mine).hex()
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "nothing left")


async def reconnected(node: Node, peer: Node) -> None:
    await node.connect(peer.addresses[0])
    await wait_until(lambda: all(c.usable for c in channels(node).htlcs.channels()), "reconnected")


@pytest.mark.trio
async def test_c_refuses_keysends_until_it_accepts_them_and_settles_one_recorded_before_a_restart(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b = n.node("a"), n.node("b")
        async with running(a, b):
            c = n.node("c")  # without accept_keysend (lnpmsg node's default)
            async with running(c):
                await n.fund(a, b)
                await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                err = await keysend_error(a, c, AMOUNT)
                assert err.details["code"] == UNKNOWN_PAYMENT_DETAILS and err.details["erring_node"] == c.node_id.hex()
                assert err.details["erring_index"] == 1 and "the payee refused" in str(err)
                assert not (await payments(c).listinvoices())["invoices"]
                await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "failed back")
            c = n.node("c", accept_keysend=True)
            async with running(c):
                await reconnected(c, b)
                # C stops between the record and the fulfil: its fulfils never leave (the channel app's call hangs)
                channels(c).htlcs.fulfill = lambda *args: trio.sleep_forever()  # type: ignore[method-assign]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(payments(a).keysend, c.node_id.hex(), AMOUNT)
                    with record_events(c) as events:
                        got = await events.wait_for(lambda ev: isinstance(ev, PaymentEvent) and ev.topic == "invoice.paid", timeout=TIMEOUT)
                    nursery.cancel_scope.cancel()  # (the payment goes on in A)
                assert channel_with(c, b).core.state.local_commit.spec.htlcs  # recorded, not settled
            c2 = n.node("c", accept_keysend=True)
            async with running(c2):
                (row,) = (await payments(c2).listinvoices())["invoices"]
                assert row["status"] == "paid" and row["keysend"] is True and row["payment_hash"] == got.payment_hash.hex()
                await c2.connect(b.addresses[0])
                ended = await payment_ended(a, got.payment_hash.hex())
                assert ended["status"] == "complete" and ended["preimage"] == row["preimage"]
                await wait_until(lambda: quiet(a) and quiet(b) and quiet(c2), "settled")
                assert (await payments(c2).listinvoices())["invoices"] == [row]  # counted once


@pytest.mark.trio
async def test_a_keysend_to_a_full_disk_is_settled_only_once_it_is_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """C's payments store on a small tmpfs, filled: the keysend's row cannot be written, so nothing is
    fulfilled (persist, then send); once there is space it is recorded, then settled, once."""
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "c" / "payments") as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c", accept_keysend=True)
            async with running(a, b, c):
                await n.fund(a, b)
                await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                c_before = to_local(c, b)
                caplog.set_level(logging.INFO)
                assert filler.fill() > 0
                outcome: dict[str, Any] = {}

                async def pay() -> None:
                    outcome["paid"] = await payments(a).keysend(c.node_id.hex(), AMOUNT)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pay)
                    await wait_until(lambda: "could not be written" in caplog.text, "C's write error")
                    await trio.sleep(1.0)  # time enough to settle, were it wrong to
                    assert not outcome and channel_with(c, b).core.state.local_commit.spec.htlcs
                    assert to_local(c, b) == c_before and payments(c).failures == 0
                    filler.free()
                assert outcome["paid"]["status"] == "complete"
                await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
                (row,) = (await payments(c).listinvoices())["invoices"]
                assert row["keysend"] is True and row["preimage"] == outcome["paid"]["preimage"] and row["received_msat"] == AMOUNT
                assert to_local(c, b) == c_before + AMOUNT


def announce_to(store: GossipStore, net_: Net, features: list[int], timestamp: int) -> None:
    """``store`` (a gossip app's) learns the channel B-C and C's node_announcement setting ``features``,
    as gossip would bring them (validly signed, through the gossip graph's checks)."""
    graph = Graph(store.chain_hash)
    store.load_into(graph)
    b, c = net_.keys["b"], net_.keys["c"]
    messages: list[Any] = [] if store.get_node(c.node_id) else [sign_channel_announcement(b.secret, c.secret, os.urandom(32), os.urandom(32),
                                                                                          ShortChannelId(103, 1, 0), store.chain_hash)]  # fmt: skip
    messages.append(sign_node_announcement(c.secret, timestamp, features=Features.from_bits(features).to_bytes()))
    decisions = [graph.process(m, now=time.time()) for m in messages]
    assert all(d.accepted for d in decisions), decisions
    store.apply(decisions)


@pytest.mark.trio
async def test_a_keysend_to_a_node_whose_announcement_lacks_the_bit_is_refused_before_any_htlc_leaves(tmp_path: Path) -> None:
    """Core Lightning's check: A's gossip graph holds C's node_announcement without bit 54/55, so A refuses
    (KeysendNotSupported) and sends nothing, though C would take it (the announcement is stale); ``force``
    sends it anyway; once C's newer announcement sets bit 55 it goes without. B, whose announcement A does
    not know (a private peer), is tried (and refuses, as it takes none)."""
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c", accept_keysend=True)
        store = GossipStore(":memory:", CHAIN_HASHES["regtest"])
        a.mount(GossipApp(store))
        announce_to(store, n, [8, 14], int(time.time()) - 60)
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            a_before = to_local(a, b)
            err = await keysend_error(a, c, AMOUNT)
            assert err.details == {"error": "KeysendNotSupported", "node_id": c.node_id.hex(), "features": Features.from_bits([8, 14]).to_bytes().hex()}
            assert f"feature bit {KEYSEND_FEATURE_BIT}" in str(err) and "force" in str(err)
            assert not (await payments(a).listpayments())["payments"] and to_local(a, b) == a_before  # nothing left A
            assert not channel_with(a, b).core.state.local_commit.spec.htlcs
            forced = await payments(a).keysend(c.node_id.hex(), AMOUNT, force=True)
            assert forced["status"] == "complete"
            announce_to(store, n, [8, 14, KEYSEND_FEATURE_BIT], int(time.time()))
            paid = await payments(a).keysend(c.node_id.hex(), AMOUNT)
            assert paid["status"] == "complete"
            assert {p["payment_hash"] for p in (await payments(c).listinvoices())["invoices"]} == {forced["payment_hash"], paid["payment_hash"]}
            err = await keysend_error(a, b, 1_000_000)  # no announcement of B known: tried, and B refuses it
            assert err.details["code"] == UNKNOWN_PAYMENT_DETAILS and err.details["erring_node"] == b.node_id.hex()
            with pytest.raises(ParamsError):
                await payments(a).keysend(c.node_id.hex(), AMOUNT, force="yes")  # type: ignore[arg-type]
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
