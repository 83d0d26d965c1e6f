"""BOLT 12 offers between nodes in memory, on one embedded regtest chain (:mod:`lnpmsg.payments.bolt12.app`).

Two nodes A-B: B's offer (an amount, and one of any amount) paid by A: the
invoice request and the invoice travel as onion messages, the payment goes
into the invoice's blinded path, B settles its own invoice. Three nodes
A-B-C: C's offer reachable along a blinded path B introduces (A is not C's
peer), paid through B; a request past its offer_quantity_max refused with
``invoice_error`` (field 86); one that does not name C at all (no
``offer_issuer_id``: the invoice signed by the path's last blinded id). What is refused: an expired offer (by the payer, and
by the issuer with an ``invoice_error`` naming the field), a disabled or
unknown one (``invoice_error``), an invoice with a broken signature or one
that does not mirror the request (the payer refuses it), and a payment into
the path with another invoice's hash (the path_id ties it to one), a
request for an offer with a path that came straight to the issuer (ignored). The
issuer restarted still answers along the path it gave out before. A refund
request with a blinded path: its invoice comes along it (and one that comes
another way is refused).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import coincurve
import pytest

from lnpmsg.node.node import Node
from lnpmsg.onion_messages import OnionMessagesApp
from lnpmsg.payments.bolt12 import Invoice, InvoiceRequest, Offer, decode_invoice, decode_offer
from lnpmsg.payments.bolt12.invoice_request import decode_invoice_request
from lnpmsg.payments.bolt12.app import OffersApp
from lnpmsg.payments.bolt12.keys import payer_id
from lnpmsg.payments.bolt12.tlvs import INVOICE_REQUEST_TLVS, INVOICE_TLVS, signed
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing.nodes import running
from lnpmsg.wire.bolt1 import CHAIN_HASH_REGTEST
from lnpmsg.wallet.calls import ChainAppError
from test_payments_app import channels, net, payments, quiet, wait_until

AMOUNT = 5_000_000


def _pub(secret: bytes) -> bytes:
    return coincurve.PrivateKey(secret).public_key.format()


def offers_app(n: Any, name: str) -> tuple[Node, OffersApp]:
    node = n.node(name)
    node.mount(OnionMessagesApp())
    return node, node.mount(OffersApp(n.tmp / name / "offers", fetch_timeout=20.0))


async def refused(call: Any, error: str) -> ChainAppError:
    with pytest.raises(ChainAppError) as info:
        await call
    assert info.value.details["error"] == error, info.value
    return info.value


@pytest.mark.trio
async def test_offers_paid_between_two_nodes(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        (a, pay_app), (b, offers) = offers_app(n, "a"), offers_app(n, "b")
        async with running(a, b):
            await n.fund(a)
            await n.open([(a, b, 1_000_000, 1_000_000)])
            made = await offers.create(AMOUNT, "a coffee", label="coffee")
            offer = decode_offer(made["bolt12"])
            assert offer.amount == AMOUNT and offer.issuer_id == b.node_id and not offer.paths and made["active"]
            assert (await offers.list_offers())["offers"][0]["offer_id"] == made["offer_id"] == offer.offer_id.hex()

            fetched = await pay_app.fetchinvoice(made["bolt12"])
            invoice = decode_invoice(fetched["invoice"])
            assert fetched["amount_msat"] == AMOUNT and invoice.node_id == b.node_id and fetched["description"] == "a coffee"
            # the request named a transient payer id, derived from A's secret and its metadata (A can sign with it again)
            metadata = invoice.tlvs["invreq_metadata"]
            assert invoice.tlvs["invreq_payer_id"] == payer_id(a.key.secret, metadata) != a.node_id
            # a second request is another invoice (new payer key and metadata), with its own hash
            paid = await pay_app.pay(made["bolt12"])
            assert paid["status"] == "complete" and paid["payment_hash"] != fetched["payment_hash"]
            rows = {r["payment_hash"]: r for r in (await payments(b).listinvoices())["invoices"]}
            assert rows[paid["payment_hash"]]["status"] == "paid" and rows[fetched["payment_hash"]]["status"] == "unpaid"
            assert (await offers.list_offers())["offers"][0]["invoices"] == 2
            # the very same request again (a repeated message): the same invoice, not a new one
            repeated = InvoiceRequest.for_offer(offer, b"\x09" * 32, b"\x02" * 16, chain=offer.chains[0])
            first = await pay_app.request_invoice(offer, repeated, 20.0)
            assert (await pay_app.request_invoice(offer, repeated, 20.0)).payment_hash == first.payment_hash
            assert (await offers.list_offers())["offers"][0]["invoices"] == 3

            # two paths: through B's peer (A itself here, so A cannot use it), and B alone
            (via_a, _), (path, info) = decode_invoice(fetched["invoice"]).usable_paths()
            assert via_a.first_node_id == a.node_id and path.first_node_id == b.node_id and len(path.hops) == len(via_a.hops) == 4  # (padded)
            # the first invoice's path carries only its own hash: paying it with the other's is refused
            with pytest.raises(ChainAppError) as err:
                await payments(a).payblinded(path.encode().hex(), AMOUNT, paid["payment_hash"], info.fee_base_msat,
                                             info.fee_proportional_millionths, info.cltv_expiry_delta)  # fmt: skip
            assert err.value.details["error"] == "InProgress"  # (it was paid: nothing leaves)
            other = await payments(b).invoice(AMOUNT, "plain", "not the offer's")
            with pytest.raises(ChainAppError) as err:
                await payments(a).payblinded(path.encode().hex(), AMOUNT, other["payment_hash"], info.fee_base_msat,
                                             info.fee_proportional_millionths, info.cltv_expiry_delta)  # fmt: skip
            assert err.value.details["code"] == InvalidOnionBlinding.TYPE
            await wait_until(lambda: quiet(a) and quiet(b), "settled")

            # the invoices of requests that expired unpaid are swept from the payments store (others kept)
            before = {r["label"]: r["status"] for r in (await payments(b).listinvoices())["invoices"]}
            later = payments(b)._now
            payments(b)._now = lambda: time.time() + 7201
            assert await offers.prune_invoices() == 2  # (the fetched one, and the repeated request's)
            payments(b)._now = later
            after = {r["label"]: r["status"] for r in (await payments(b).listinvoices())["invoices"]}
            assert "plain" in after and all(status == "paid" for label, status in after.items() if label.startswith("offer "))
            assert len(before) - len(after) == 2

            # an offer of any amount: the payer names it
            tip = await offers.create(None, "tips")
            assert decode_offer(tip["bolt12"]).amount is None
            with pytest.raises(ParamsError, match="invreq_amount"):
                await pay_app.pay(tip["bolt12"])
            paid = await pay_app.pay(tip["bolt12"], amount_msat=1_234_000)
            assert paid["status"] == "complete" and paid["amount_msat"] == 1_234_000
            assert decode_invoice(paid["bolt12_invoice"]).amount == 1_234_000

            # expired: the payer does not ask; an issuer whose clock says so refuses with invoice_error (field 14)
            soon = await offers.create(AMOUNT, "soon gone", expiry=60)
            pay_app.clock = lambda: time.time() + 120
            await refused(pay_app.fetchinvoice(soon["bolt12"]), "OfferExpired")
            pay_app.clock = time.time
            offers.clock = lambda: time.time() + 120
            err = await refused(pay_app.fetchinvoice(soon["bolt12"]), "InvoiceError")
            assert err.details["erroneous_field"] == 14 and "expired" in str(err)
            offers.clock = time.time

            # disabled, and unknown offers: invoice_error
            await offers.disable(made["offer_id"])
            assert not (await offers.list_offers())["offers"][0]["active"]
            err = await refused(pay_app.pay(made["bolt12"]), "InvoiceError")
            assert "no longer answered" in str(err)
            unknown = Offer.build(offer_issuer_id=b.node_id, offer_description="never made", offer_chains=offer.chains)
            err = await refused(pay_app.fetchinvoice(unknown.encode(), amount_msat=1000), "InvoiceError")
            assert "unknown offer" in str(err)

            # an offer with a path (A introduces it, A being B's only peer): a request sent straight to B is
            # ignored (BOLT 12: it must come along the path), the same request along the path is answered
            pathed = await offers.create(AMOUNT, "by the path only", blinded_path=True)
            pathed_offer = decode_offer(pathed["bolt12"])
            assert pathed_offer.paths[0].first_node_id == a.node_id
            straight = InvoiceRequest.for_offer(pathed_offer, b"\x0a" * 32, b"\x03" * 16, chain=offer.chains[0])
            onion_a = a.apps["onion_messages"]
            direct = await onion_a.send(b.node_id, {64: straight.to_bytes()}, reply_path=True)  # type: ignore[attr-defined]
            answered = await pay_app.request_invoice(pathed_offer, straight, 20.0)
            assert answered.node_id == b.node_id and (await offers.list_offers())["offers"][-1]["invoices"] == 1
            assert not [m for m in onion_a.recent if m.reply_to == direct["id"]]  # type: ignore[attr-defined]
            await wait_until(lambda: quiet(a) and quiet(b), "settled")


def _resigned(raw: bytes, secret: bytes, **changes: Any) -> bytes:
    invoice = Invoice.from_bytes(raw)
    return signed(INVOICE_TLVS, INVOICE_TLVS.stream({**dict(invoice.tlvs), **changes}, unknown=dict(invoice.tlvs.unknown)), "invoice", secret)


@pytest.mark.trio
async def test_an_offer_behind_a_blinded_path_and_bad_invoices(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        (a, pay_app), (b, _), (c, offers) = offers_app(n, "a"), offers_app(n, "b"), offers_app(n, "c")
        async with running(a, b, c) as nursery:
            await n.fund(a, b)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            made = await offers.create(AMOUNT, "a book", blinded_path=True, quantity_max=3)
            offer = decode_offer(made["bolt12"])
            assert offer.paths[0].first_node_id == b.node_id and made["blinded_paths"] == 1
            assert c.node_id not in a.peers  # A reaches C only along the path B introduces

            paid = await pay_app.pay(made["bolt12"], quantity=2)
            assert paid["status"] == "complete" and paid["amount_msat"] == 2 * AMOUNT
            invoice = decode_invoice(paid["bolt12_invoice"])
            assert invoice.tlvs["invreq_quantity"] == 2 and invoice.node_id == c.node_id
            assert paid["routes"][0][0]["node_id"] == b.node_id.hex() and len(paid["routes"][0]) == 4  # B, then C blinded (and 2 dummy hops)
            (row,) = [r for r in (await payments(c).listinvoices())["invoices"] if r["payment_hash"] == paid["payment_hash"]]
            assert row["status"] == "paid"
            with pytest.raises(ParamsError, match="invreq_quantity"):
                await pay_app.pay(made["bolt12"], quantity=4)
            # such a request made anyway (signed, but past offer_quantity_max): C answers invoice_error, field 86
            fields = {**dict(offer.tlvs), "invreq_metadata": b"\x01" * 16, "invreq_payer_id": _pub(b"\x07" * 32), "invreq_quantity": 4,
                      "invreq_chain": offer.chains[0]}  # fmt: skip
            too_many = InvoiceRequest.from_bytes(signed(INVOICE_REQUEST_TLVS, INVOICE_REQUEST_TLVS.stream(fields), "invoice_request", b"\x07" * 32))
            err = await refused(pay_app.request_invoice(offer, too_many, 20.0), "InvoiceError")
            assert err.details["erroneous_field"] == 86 and "invreq_quantity" in str(err)
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")

            # an offer that does not name C: only its path; the invoice signed by the path's last blinded id
            hidden = await offers.create(AMOUNT, "no names", hide_node_id=True)
            secret_offer = decode_offer(hidden["bolt12"])
            assert secret_offer.issuer_id is None and hidden["node_id_hidden"] and c.node_id.hex() not in hidden["bolt12"]
            paid = await pay_app.pay(hidden["bolt12"])
            invoice = decode_invoice(paid["bolt12_invoice"])
            assert paid["status"] == "complete" and invoice.node_id == secret_offer.paths[0].hops[-1].blinded_node_id != c.node_id
            assert [p.first_node_id for p, _ in invoice.usable_paths()] == [b.node_id]  # (no path of C alone: it would name C)
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")

            # B's offer not naming B, along two paths (A and C introduce them): A can send along its own only,
            # and B signs with that path's last blinded id
            b_offers = b.apps["offers"]
            two = await b_offers.create(AMOUNT, "two ways", hide_node_id=True)  # type: ignore[attr-defined]
            two_offer = decode_offer(two["bolt12"])
            assert sorted(p.first_node_id for p in two_offer.paths) == sorted([a.node_id, c.node_id])
            via_a = next(p for p in two_offer.paths if p.first_node_id == a.node_id)
            paid = await pay_app.pay(two["bolt12"])
            assert paid["status"] == "complete" and decode_invoice(paid["bolt12_invoice"]).node_id == via_a.hops[-1].blinded_node_id
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")

            # C's invoices broken on their way out: A refuses each and pays nothing
            make = offers._make_invoice

            async def broken(request: InvoiceRequest, ours: Any, arrived_by: str | None) -> bytes:
                good = await make(request, ours, arrived_by)
                return good[:-1] + bytes([good[-1] ^ 1])

            async def mismatched(request: InvoiceRequest, ours: Any, arrived_by: str | None) -> bytes:
                return _resigned(await make(request, ours, arrived_by), c.key.secret, invreq_payer_note="not what was asked")

            async def another_amount(request: InvoiceRequest, ours: Any, arrived_by: str | None) -> bytes:
                return _resigned(await make(request, ours, arrived_by), c.key.secret, invoice_amount=AMOUNT - 1)

            for fault, code in ((broken, "bad_signature"), (mismatched, "mismatch"), (another_amount, "wrong_amount")):
                offers._make_invoice = fault  # type: ignore[method-assign]
                err = await refused(pay_app.pay(made["bolt12"], quantity=1), "BadInvoice")
                assert err.details["code"] == code
            # (and told C why, each: invoice_error along the reply path C's invoice carried)
            onion_c = c.apps["onion_messages"]
            await wait_until(lambda: sum(68 in m.records for m in onion_c.recent) == 3, "C told")  # type: ignore[attr-defined]
            offers._make_invoice = make  # type: ignore[method-assign]
            assert len((await payments(a).listpayments())["payments"]) == 3

            # C restarts: its offer is still answered along the path it gave out before (its path_id still C's),
            # and an invoice it gave before is still paid through its payment path (nothing of it kept but the invoice)
            before = await pay_app.fetchinvoice(made["bolt12"], quantity=1)
            c.stop()
            await wait_until(lambda: c.node_id not in b.peers, "B sees C go")
            c, offers = offers_app(n, "c")
            await nursery.start(c.run)
            try:
                await c.connect(b.addresses[0])
                await wait_until(lambda: all(quiet(x) for x in (a, b, c)) and any(ch.usable for ch in channels(c).htlcs.channels()), "reconnected")
                assert (await offers.list_offers())["offers"][0]["offer_id"] == made["offer_id"]
                paid = await pay_app.pay(made["bolt12"], quantity=1)
                assert paid["status"] == "complete" and (await offers.list_offers())["offers"][0]["invoices"] == 6
                assert (await pay_app.pay(hidden["bolt12"]))["status"] == "complete"  # (its key derived again from the stored salt)
                paid = await pay_app._pay_invoice(decode_invoice(before["invoice"]))
                assert paid["status"] == "complete" and paid["payment_hash"] == before["payment_hash"]
            finally:
                c.stop()


@pytest.mark.trio
async def test_a_refund_request_paid_when_answered(tmp_path: Path) -> None:
    """B offers to pay A (an invoice request not for an offer); A answers with sendinvoice and B pays at
    once; another invoice for it gets an invoice_error and stays unpaid; an expired one is not answered."""
    async with net(tmp_path) as n:
        (a, receiver), (b, payer) = offers_app(n, "a"), offers_app(n, "b")
        async with running(a, b):
            await n.fund(b)
            await n.open([(b, a, 1_000_000, 1_000_000)])
            made = await payer.invoicerequest(30_000, "a refund", label="refund")
            assert made["status"] == "unpaid" and made["bolt12"].startswith("lnr1")
            assert decode_invoice_request(made["bolt12"]).payer_id == b.node_id  # (no path: the node id is where an answer goes)
            sent = await receiver.sendinvoice(made["bolt12"], label="my refund")
            await wait_until(lambda: payer._refunds[bytes.fromhex(made["id"])].status == "paid" and not payer._paying_refunds, "B paid")
            (row,) = (await payments(a).listinvoices("my refund"))["invoices"]
            assert row["status"] == "paid" and row["payment_hash"] == sent["payment_hash"] and sent["amount_msat"] == 30_000
            assert (await payer.listinvoicerequests())["invoice_requests"][0]["status"] == "paid"
            # a request left "paying" by a stop mid-payment is settled by what the payments app knows of it
            ours = payer._refunds[bytes.fromhex(made["id"])]
            ours.status = "paying"
            assert (await payer.listinvoicerequests())["invoice_requests"][0]["status"] == "paid"  # (its payment is complete)
            ours.status, ours.payment_hash = "paying", b"\x00" * 32
            assert (await payer.listinvoicerequests())["invoice_requests"][0]["status"] == "unpaid"  # (never started)
            ours.status, ours.payment_hash = "paid", bytes.fromhex(sent["payment_hash"])
            await wait_until(lambda: quiet(a) and quiet(b), "settled")

            # paid once: a second invoice is refused with invoice_error, and stays unpaid
            onion_a = a.apps["onion_messages"]
            again = await receiver.sendinvoice(made["bolt12"])
            await wait_until(lambda: any(68 in m.records for m in onion_a.recent), "A got an invoice_error")  # type: ignore[attr-defined]
            (row,) = (await payments(a).listinvoices(again["label"]))["invoices"]
            assert row["status"] == "unpaid" and len((await payments(b).listpayments())["payments"]) == 1

            late = await payer.invoicerequest(1000, "too late", expiry=60)
            receiver.clock = lambda: time.time() + 120
            await refused(receiver.sendinvoice(late["bolt12"]), "Expired")
            receiver.clock = time.time
            with pytest.raises(ParamsError, match="for an offer"):
                await receiver.sendinvoice(InvoiceRequest.for_offer(decode_offer((await receiver.create(1, "x"))["bolt12"]), b"\x0b" * 32,
                                                                    b"\x01" * 16, chain=CHAIN_HASH_REGTEST).encode())  # fmt: skip


@pytest.mark.trio
async def test_a_refund_request_with_a_blinded_path_is_answered_along_it(tmp_path: Path) -> None:
    """B's invoice request names a blinded path to B that A introduces (invreq_paths, padded with B's dummy
    hops); C, who is not B's peer, sends its invoice along it, and B pays it through A. An invoice for it
    that comes another way (straight to B) is refused."""
    async with net(tmp_path) as n:
        (a, _), (b, payer), (c, receiver) = offers_app(n, "a"), offers_app(n, "b"), offers_app(n, "c")
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(b, a, 1_000_000, 1_000_000), (a, c, 1_000_000, 1_000_000)])
            made = await payer.invoicerequest(40_000, "a refund", blinded_path=True)
            request = InvoiceRequest.from_bytes(payer._refunds[bytes.fromhex(made["id"])].request.to_bytes())
            (path,) = request.tlvs["invreq_paths"]
            assert made["blinded_paths"] == 1 and path.first_node_id == a.node_id and len(path.hops) == 4
            # the request does not name B: its payer id is transient, derived from B's secret and the request's metadata
            assert request.payer_id == payer_id(b.key.secret, request.metadata)
            assert request.payer_id != payer_id(b.key.secret, bytes(16))
            assert b.node_id not in c.peers  # C reaches B only along the path
            sent = await receiver.sendinvoice(made["bolt12"], label="to b")
            await wait_until(lambda: payer._refunds[bytes.fromhex(made["id"])].status == "paid" and not payer._paying_refunds, "B paid")
            (row,) = (await payments(c).listinvoices("to b"))["invoices"]
            assert row["status"] == "paid" and row["payment_hash"] == sent["payment_hash"]
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")

            # another request with a path: an invoice for it sent straight to B (A does, B's peer) is refused
            other = await payer.invoicerequest(30_000, "another", introduction=a.node_id.hex())
            onion_b = b.apps["onion_messages"]
            got = len(onion_b.recent)  # type: ignore[attr-defined]
            straight = decode_invoice_request(other["bolt12"])
            invoice = await a.apps["offers"]._issue(straight, "straight", "refund", a.key.secret, from_us=True)  # type: ignore[attr-defined]
            await a.apps["onion_messages"].send(b.node_id, {66: invoice}, reply_path=True)  # type: ignore[attr-defined]
            await wait_until(lambda: len(onion_b.recent) > got, "B got it")  # type: ignore[attr-defined]
            await wait_until(lambda: any(68 in m.records for m in a.apps["onion_messages"].recent), "A told why")  # type: ignore[attr-defined]
            assert payer._refunds[bytes.fromhex(other["id"])].status == "unpaid" and len((await payments(b).listpayments())["payments"]) == 1
