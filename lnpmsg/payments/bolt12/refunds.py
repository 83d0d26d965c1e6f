"""Invoice requests not for an offer (BOLT 12's merchant-pays-user flow: refunds, withdrawals), the
offers app's part (a mixin of :class:`~lnpmsg.payments.bolt12.app.OffersApp`).

The payer publishes an ``lnr1...`` (``offers.invoicerequest``: an amount, a
description, and as ``invreq_payer_id`` a transient key derived from the node
secret and the request's metadata when the request carries blinded paths to us,
so it does not name the node, else the node id, the one place an answer could
go; unsigned, as BOLT 12's writer must); the one it is for answers with an
invoice sent as an onion message along one of those paths, else to that node
id (``offers.sendinvoice``), and the payer pays it at once: an
invoice that arrived along no blinded path (BOLT 12, for a request without
paths) or, for one made with ``blinded_path`` (``invreq_paths``: blinded paths
to us through peers, as an offer's), along one of its paths, mirrors a
request of ours that is not paid yet, and is not expired.
One payment per request; another invoice for it gets an ``invoice_error``.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.app import AppError
from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.invoice import Invoice
from lnpmsg.payments.bolt12.invoice_request import InvoiceRequest, decode_invoice_request
from lnpmsg.payments.bolt12.keys import payer_id
from lnpmsg.payments.bolt12.refusal import Refused
from lnpmsg.payments.bolt12.store import OffersStoreError
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.bolt12.app import OffersApp

__all__ = ["Refunds"]

log = logging.getLogger("lnpmsg.payments.bolt12.app")

_INVOICE_RECORD = 66


def _path_nonce(metadata: bytes) -> bytes:
    """The nonce of the path ids of an invoice request's paths: the first 8 bytes of its ``invreq_metadata``
    (16 random bytes), so the path an invoice comes along names the request."""
    return metadata[:8]


@dataclass(slots=True)
class _OurRefund:
    request: InvoiceRequest
    label: str | None
    status: str  # unpaid, paying, paid
    created_at: int
    #: the invoice being paid (or paid)
    payment_hash: bytes | None = None

    def view(self) -> dict[str, Any]:
        r = self.request
        return {"id": r.metadata.hex(), "bolt12": r.encode(), "label": self.label, "amount_msat": r.amount, "description": r.tlvs.get("offer_description"),
                "absolute_expiry": r.tlvs.get("offer_absolute_expiry"), "status": self.status, "created_at": self.created_at,
                "blinded_paths": len(r.tlvs.get("invreq_paths") or ())}  # fmt: skip


class Refunds:
    """``invoicerequest``, ``listinvoicerequests``, ``sendinvoice`` and paying what answers ours (see the module docs)."""

    async def _load_refunds(self: OffersApp) -> None:
        for row in await trio.to_thread.run_sync(self._store().refunds):
            request = decode_invoice_request(row["bolt12"])
            # (a payment cut short by a stop is "paying" until the payments app says how it ended: _settle_paying)
            self._refunds[request.metadata] = _OurRefund(request, row["label"], row["status"], row["created_at"], row["payment_hash"])

    async def invoicerequest(self: OffersApp, amount_msat: int, description: str, label: str | None = None, expiry: int | None = None,
                             blinded_path: bool = False, introduction: str | list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Offer to pay AMOUNT_MSAT (a refund, a withdrawal): an ``lnr1...`` for whoever it is meant for to answer
        with ``sendinvoice``; its invoice is paid once, until ``expiry`` seconds from now (None: no limit).
        With ``blinded_path`` (or an ``introduction`` peer, or list of them) it carries blinded paths to us
        (``invreq_paths``) through peers reading onion messages, as an offer's: the invoice comes along one."""
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0:
            raise ParamsError(f"amount_msat must be a positive integer, got {amount_msat!r}")
        if not isinstance(description, str) or not description:
            raise ParamsError("an invoice request needs a description (BOLT 12)")
        if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool) or expiry <= 0):
            raise ParamsError(f"expiry must be a positive integer, got {expiry!r}")
        now = int(self.clock())
        metadata = self._random(16)
        paths = []
        if blinded_path or introduction is not None:
            # (each path's id is the request's own: an invoice along it names the request it answers, nothing stored)
            for intro in self._introductions(self._named_introductions(introduction)):
                paths.append(self._onion().blinded_path_to_us([intro], nonce=_path_nonce(metadata))[0])
        # (with paths the invoice comes along them: a transient payer id keeps the node id out of the request;
        # without, BOLT 12 sends it to invreq_payer_id, so only the node id can be reached)
        payer = payer_id(self.node.key.secret, metadata) if paths else self.node.node_id
        request = InvoiceRequest.refund(payer, metadata, amount_msat, description, chain=self.chain,
                                        absolute_expiry=None if expiry is None else now + expiry, paths=paths)  # fmt: skip
        try:
            await trio.to_thread.run_sync(self._store().add_refund, request.metadata, request.encode(), label, now)
        except sqlite3.IntegrityError:
            raise ParamsError(f"an invoice request labelled {label!r} exists already") from None
        except OffersStoreError as exc:
            raise ChainAppError(f"cannot make the invoice request: {exc}", {"error": "StoreWriteFailed"}) from None
        ours = self._refunds[request.metadata] = _OurRefund(request, label, "unpaid", now)
        return ours.view()

    async def listinvoicerequests(self: OffersApp) -> dict[str, Any]:
        """Our invoice requests not for an offer, oldest first: unpaid, paying or paid."""
        for ours in list(self._refunds.values()):
            await self._settle_paying(ours)
        return {"invoice_requests": [r.view() for r in self._refunds.values()]}

    async def sendinvoice(self: OffersApp, invreq: str, label: str | None = None) -> dict[str, Any]:
        """Answer INVREQ (an ``lnr1...`` not for an offer) with an invoice for its amount, sent to its payer
        over onion messages; its payment shows in ``listinvoices`` (LABEL)."""
        if not isinstance(invreq, str):
            raise ParamsError("invreq must be an lnr1... string")
        try:
            request = decode_invoice_request(invreq.strip())
        except Bolt12Error as exc:
            raise ParamsError(f"invreq: {exc}") from None
        if request.is_for_offer:
            raise ParamsError("invreq: a request for an offer goes to the offer's issuer, not from here")
        expiry = request.tlvs.get("offer_absolute_expiry")
        if request.chain != self.chain:
            raise ChainAppError("the invoice request is for another chain", {"error": "WrongChain"})
        if expiry is not None and self.clock() > expiry:
            raise ChainAppError(f"the invoice request expired at {expiry}", {"error": "Expired"})
        label = label or f"invreq {request.metadata.hex()[:16]} {self._random(8).hex()}"
        try:
            invoice = await self._issue(request, label, request.tlvs.get("offer_description") or "refund", self.node.key.secret, from_us=True)
        except Refused as exc:
            raise ChainAppError(str(exc), {"error": "CannotReceive"}) from None
        # (BOLT 12: along one of its paths if it has them, else to its payer)
        destinations = list(request.tlvs.get("invreq_paths") or ()) or [request.payer_id]
        failures = []
        for destination in destinations:
            try:
                await self._onion().send(destination, {_INVOICE_RECORD: invoice}, reply_path=True)
                break
            except AppError as exc:
                failures.append(str(exc))
        else:
            raise ChainAppError(f"cannot send the invoice: {'; '.join(failures)}", {"error": "NoPath", "label": label})
        sent = Invoice.from_bytes(invoice)
        return {"invoice": sent.encode(), "label": label, "amount_msat": sent.amount, "payment_hash": sent.payment_hash.hex()}

    def _refund_path(self: OffersApp, reply_to: str) -> bool:
        """Whether ``reply_to`` (the path a message came along) is one of the paths of our invoice requests."""
        return any(_path_nonce(m).hex() == reply_to for m, r in self._refunds.items() if r.request.tlvs.get("invreq_paths"))

    async def _on_refund_invoice(self: OffersApp, received: Any) -> None:
        """An invoice that came along no path of ours, or along one of our invoice requests' paths: one
        answering an invoice request of ours not for an offer? (BOLT 12: along one of its paths if it has
        them, else along none.)"""
        why = None
        try:
            invoice = Invoice.from_bytes(received.records[_INVOICE_RECORD])
            ours = self._refunds.get(invoice.tlvs.get("invreq_metadata") or b"")
            if ours is None:
                raise Bolt12Error("it answers no invoice request of ours", "unknown_request")
            expected = _path_nonce(ours.request.metadata).hex() if ours.request.tlvs.get("invreq_paths") else None
            if received.reply_to != expected:
                raise Bolt12Error("it did not come the way our invoice request asks (along one of its paths, if it has them)", "wrong_path")
            invoice.check_response(ours.request, chain=self.chain, now=self.clock())
            expiry = ours.request.tlvs.get("offer_absolute_expiry")
            if expiry is not None and self.clock() > expiry:
                raise Bolt12Error("our invoice request expired", "expired")
            await self._settle_paying(ours)
            if ours.status != "unpaid":
                raise Bolt12Error(f"our invoice request is {ours.status} already", "already_paid")
        except Bolt12Error as exc:
            why = str(exc)
        if why is not None:
            log.info("offers: an invoice refused: %s", why)
            await self._tell_refused(received, why)
            return
        # (from here this run pays it: no other task takes the request, nor reads its status as a stopped run's)
        self._paying_refunds.add(ours.request.metadata)
        try:
            if not await self._set_refund(ours, "paying", invoice.payment_hash):
                ours.status, ours.payment_hash = "unpaid", None  # (persist, then pay: a restart must not pay it again)
                return
            try:
                await self._pay_invoice(invoice)
            except (ChainAppError, ParamsError) as exc:
                log.warning("offers: paying the invoice for our invoice request %s failed: %s", ours.request.metadata.hex()[:16], exc)
                await self._set_refund(ours, "unpaid", None)
                return
            await self._set_refund(ours, "paid", invoice.payment_hash)
        finally:
            self._paying_refunds.discard(ours.request.metadata)

    async def _settle_paying(self: OffersApp, ours: _OurRefund) -> None:
        """A request left ``paying`` (by a stop in the middle of its payment): ``paid`` once the payments app
        has its payment complete, ``unpaid`` when it has none left pending nor complete."""
        if ours.status != "paying" or ours.payment_hash is None or self._paying_now(ours):
            return
        done = (await self._payments().listpayments(ours.payment_hash.hex()))["payments"]
        if ours.status != "paying" or self._paying_now(ours):  # (changed while we looked)
            return
        statuses = {p["status"] for p in done}
        if "complete" in statuses:
            await self._set_refund(ours, "paid", ours.payment_hash)
        elif "pending" not in statuses:
            await self._set_refund(ours, "unpaid", None)

    def _paying_now(self: OffersApp, ours: _OurRefund) -> bool:
        """Whether this run pays the request now (its status is this run's, not a stopped one's)."""
        return ours.request.metadata in self._paying_refunds

    async def _set_refund(self: OffersApp, ours: _OurRefund, status: str, payment_hash: bytes | None) -> bool:
        """Record the request's new status (False: it could not be written)."""
        ours.status, ours.payment_hash = status, payment_hash
        try:
            await trio.to_thread.run_sync(self._store().set_refund_status, ours.request.metadata, status, payment_hash)
        except OffersStoreError as exc:
            log.warning("offers: %s", exc)
            return False
        return True
