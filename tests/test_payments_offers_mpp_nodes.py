"""BOLT 12 invoices paid across several blinded paths, and paths with dummy hops, between nodes in
memory on one embedded regtest chain (:mod:`lnpmsg.payments.blinded_routes`, the offers app).

A diamond A-{B,C}-D: D's offer is reached along blinded paths B and C introduce, each padded
with D's dummy hops (the invoice request travels through them as an onion message); its
invoice (with the MPP feature) has a payment path through each, padded too. A pays an amount
neither of its channels carries alone: one payment in parts into both paths, which D holds
until the total is there and then settles. Then A reaches B only through E: C's path is the
cheaper, but C cannot forward the amount to D (D funded that channel); C refuses the part as
the path's introduction node, and A sends it again into B's path. Last, a set that never
arrives whole: D holds the part that came until its MPP timeout, then fails it back; through a
path of D alone (D its introduction node) as invalid_onion_blinding. And a part D timed out
because the other came late: its path is used again, and the set arrives whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.payments.blinded import BlindedPayInfo
from lnpmsg.node.node import Node
from lnpmsg.payments.bolt12 import Invoice, decode_invoice, decode_offer
from lnpmsg.payments.bolt12.app import OffersApp
from lnpmsg.payments.onion import decode_blinded_path
from lnpmsg.payments.onion.failures import InvalidOnionBlinding, MppTimeout
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError
from test_payments_app import first_forward_late, net, payments, quiet, wait_until
from test_payments_offers_nodes import offers_app

#: more than A's channel to B or to C can send
AMOUNT = 800_000_000


@pytest.mark.trio
async def test_an_offer_paid_in_parts_over_two_paths_with_dummy_hops(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        (a, pay_app), (b, _), (c, _), (d, offers) = (offers_app(n, x) for x in "abcd")
        async with running(a, b, c, d):
            await n.fund(a, b, c)
            await n.open([(a, b, 500_000, 500_000), (a, c, 500_000, 500_000), (b, d, 1_000_000, 1_000_000), (c, d, 1_000_000, 1_000_000)])
            made = await offers.create(AMOUNT, "a bike", hide_node_id=True)
            offer = decode_offer(made["bolt12"])
            # B and C introduce the offer's paths; each ends with two dummy hops of D's (4 hops)
            assert sorted(p.first_node_id for p in offer.paths) == sorted([b.node_id, c.node_id])
            assert [len(p.hops) for p in offer.paths] == [4, 4]

            fetched = await pay_app.fetchinvoice(made["bolt12"])  # (the request and the invoice went through them)
            invoice = decode_invoice(fetched["invoice"])
            assert invoice.mpp and invoice.tlvs["invoice_features"] == (1 << 17).to_bytes(3, "big")
            assert invoice.node_id == next(p for p in offer.paths if p.first_node_id == b.node_id).hops[-1].blinded_node_id \
                or invoice.node_id == next(p for p in offer.paths if p.first_node_id == c.node_id).hops[-1].blinded_node_id
            paths = invoice.usable_paths()
            assert sorted(p.first_node_id for p, _ in paths) == sorted([b.node_id, c.node_id]) and all(len(p.hops) == 4 for p, _ in paths)

            paid = await pay_app._pay_invoice(invoice)
            assert paid["status"] == "complete" and paid["parts"] >= 2
            assert {r[0]["node_id"] for r in paid["routes"]} == {b.node_id.hex(), c.node_id.hex()}  # into both paths
            assert sum(r[-1]["amt_to_forward"] for r in paid["routes"]) == AMOUNT
            assert all(len(r) == 4 for r in paid["routes"])  # the introduction node, then 3 blinded hops (D and its 2 dummies)
            (row,) = [r for r in (await payments(d).listinvoices())["invoices"] if r["payment_hash"] == fetched["payment_hash"]]
            assert row["status"] == "paid" and row["received_msat"] >= AMOUNT
            (sent,) = (await payments(a).listpayments(fetched["payment_hash"]))["payments"]
            assert sent["status"] == "complete" and sent["blinded_paths"] == [p.encode().hex() for p, _ in paths]
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")


@pytest.mark.trio
async def test_a_part_a_path_cannot_carry_goes_into_another(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        (a, pay_app), (b, _), (c, _), (d, offers), (e, _) = (offers_app(n, x) for x in "abcde")
        async with running(a, b, c, d, e):
            await n.fund(a, b, d, e)
            # A reaches B through E only; D funded its channel with C, so C has almost nothing to send D
            await n.open([(a, e, 1_000_000, 1_000_000), (e, b, 1_000_000, 1_000_000), (a, c, 1_000_000, 1_000_000),
                          (b, d, 1_000_000, 1_000_000), (d, c, 1_000_000, 1_000_000)])  # fmt: skip
            made = await offers.create(200_000_000, "a lamp", hide_node_id=True)
            fetched = await pay_app.fetchinvoice(made["bolt12"])
            invoice = decode_invoice(fetched["invoice"])
            assert sorted(p.first_node_id for p, _ in invoice.usable_paths()) == sorted([b.node_id, c.node_id])

            paid = await pay_app._pay_invoice(invoice)
            assert paid["status"] == "complete" and paid["attempts"] == 2
            (route,) = paid["routes"]
            assert [h["node_id"] for h in route[:2]] == [e.node_id.hex(), b.node_id.hex()]  # the second try, into B's path
            (sent,) = (await payments(a).listpayments(fetched["payment_hash"]))["payments"]
            assert sent["status"] == "complete" and sent["attempts"] == 2
            # the first went into C's path (the cheaper: no hop before it) and C refused it as its introduction node
            (row,) = [r for r in (await payments(d).listinvoices())["invoices"] if r["payment_hash"] == fetched["payment_hash"]]
            assert row["status"] == "paid"
            (refused,) = (await payments(c).listforwards())["forwards"]
            assert refused["status"] == "failed" and refused["in_msat"] > 200_000_000  # (its channel to D could not take it)
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d, e)), "settled")


async def _invoice_in_two_parts(n: Any, pay_app: OffersApp, offers: OffersApp, funders: tuple[Node, ...], c_d: tuple[Node, Node],
                                description: str) -> Invoice:  # fmt: skip
    """The diamond with A's channels to B and C too small for AMOUNT alone, B-D funded by B and C-D by
    ``c_d[0]``; D's MPP timeout 3 s; the invoice A fetched for D's offer of AMOUNT (hiding D's id)."""
    a, b, c, d = (n.nodes[x] for x in "abcd")
    await n.fund(*funders)
    await n.open([(a, b, 500_000, 500_000), (a, c, 500_000, 500_000), (b, d, 1_000_000, 1_000_000), (*c_d, 1_000_000, 1_000_000)])
    payments(d).mpp.timeout = 3.0
    made = await offers.create(AMOUNT, description, hide_node_id=True)
    return decode_invoice((await pay_app.fetchinvoice(made["bolt12"]))["invoice"])


@pytest.mark.trio
async def test_a_set_that_never_arrives_whole_is_failed_back_by_the_issuer(tmp_path: Path) -> None:
    """A's channels carry the amount only in two parts; C cannot forward its part to D, nor can B's path
    take it as well: D holds the part that came (through B's path and its dummy hops) until its MPP timeout,
    then fails it back; A's payment fails, D's invoice stays unpaid and nothing is left in flight."""
    async with net(tmp_path) as n:
        (a, pay_app), (b, _), (c, _), (d, offers) = (offers_app(n, x) for x in "abcd")
        async with running(a, b, c, d):
            # (D funded its channel with C: C cannot forward to D)
            invoice = await _invoice_in_two_parts(n, pay_app, offers, (a, b, d), (d, c), "never whole")
            held = []

            async def watch() -> None:
                await wait_until(lambda: payments(d).mpp.holds(invoice.payment_hash), "D holds a part")
                held.append(True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                with pytest.raises(ChainAppError) as err:
                    await pay_app._pay_invoice(invoice)
                nursery.cancel_scope.cancel()
            assert held and not payments(d).mpp.holds(invoice.payment_hash)
            # (C's refusal and D's timeout both come back as invalid_onion_blinding: failures inside a path all look alike)
            assert sum(at["code"] == InvalidOnionBlinding.TYPE for at in err.value.details["attempts"]) >= 2
            (row,) = [r for r in (await payments(d).listinvoices())["invoices"] if r["payment_hash"] == invoice.payment_hash.hex()]
            assert row["status"] == "unpaid"
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "failed back")


@pytest.mark.trio
async def test_a_path_of_the_payee_alone_fails_a_held_part_as_its_introduction_node(tmp_path: Path) -> None:
    """D's path of itself and its 3 dummy hops: to A, D is that path's introduction node, not its final
    hop. A's part D holds (the rest never comes: B cannot forward it to D) fails back at D's MPP timeout
    as invalid_onion_blinding (BOLT 4), not as mpp_timeout from a node that would then show as the payee."""
    async with net(tmp_path) as n:
        a, b, d = (n.node(x) for x in "abd")
        async with running(a, b, d):
            await n.fund(a, d)
            await n.open([(a, d, 500_000, 500_000), (a, b, 500_000, 500_000), (d, b, 1_000_000, 1_000_000)])
            payments(d).mpp.timeout = 3.0
            inv = await payments(d).invoice(AMOUNT, "alone", "through D's own path")
            made = await payments(d).blindedpath("alone", introduction=d.node_id.hex())
            path, _ = decode_blinded_path(bytes.fromhex(made["blinded_path"]))
            assert path.first_node_id == d.node_id and len(path.hops) == 4
            with pytest.raises(ChainAppError) as err:
                await payments(a).pay_blinded_paths([(path, BlindedPayInfo(**made["payinfo"]), 0)], AMOUNT, bytes.fromhex(inv["payment_hash"]),
                                                    mpp=True)  # fmt: skip
            attempts = err.value.details["attempts"]
            held = [at for at in attempts if at["route"][0]["node_id"] == d.node_id.hex()]  # (the part over A's channel to D)
            assert held and all(at["code"] == InvalidOnionBlinding.TYPE and at["erring_node"] == d.node_id.hex() for at in held)
            assert not any(at.get("code") == MppTimeout.TYPE for at in attempts)
            assert (await payments(d).listinvoices("alone"))["invoices"][0]["status"] == "unpaid"
            await wait_until(lambda: all(quiet(x) for x in (a, b, d)), "failed back")


@pytest.mark.trio
async def test_a_part_the_issuer_timed_out_does_not_cost_its_path(tmp_path: Path) -> None:
    """The diamond again; C forwards A's first part to D late, past D's MPP timeout. D fails the part that
    came through B's path at its timeout: A hears invalid_onion_blinding from B, as for a refusal (BOLT 4
    hides which), but a part of several may have met the recipient's timeout, so B's path is not dropped:
    the missing amount goes into it again, joins C's late part at D, and the set is whole."""
    async with net(tmp_path) as n:
        (a, pay_app), (b, _), (c, _), (d, offers) = (offers_app(n, x) for x in "abcd")
        async with running(a, b, c, d):
            invoice = await _invoice_in_two_parts(n, pay_app, offers, (a, b, c), (c, d), "a late part")
            late = first_forward_late(c, payments(d).mpp.timeout + 1.0)
            paid = await pay_app._pay_invoice(invoice)
            assert paid["status"] == "complete" and late
            (sent,) = (await payments(a).listpayments(invoice.payment_hash.hex()))["payments"]
            # (one part into B's path failed back at D's timeout; the one after it, into the same path, was taken)
            assert sent["attempts"] >= 3 and {r[0]["node_id"] for r in paid["routes"]} == {b.node_id.hex(), c.node_id.hex()}
            (row,) = [r for r in (await payments(d).listinvoices())["invoices"] if r["payment_hash"] == invoice.payment_hash.hex()]
            assert row["status"] == "paid"
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")
