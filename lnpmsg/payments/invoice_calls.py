"""The payments app's control calls on invoices and its records (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

``invoice`` (a BOLT-11 invoice with route hints for our private channels; a hold invoice with a
payment hash), ``decodepay``, ``pay`` (the call; the payment itself is :mod:`.paying`'s),
``listinvoices``, ``delinvoice`` (an unpaid or expired invoice, never a paid one nor one whose
parts are held), ``listpayments`` and ``listforwards``: parameters checked with a clear error, the
store read or written from a worker thread, the rows shown through :mod:`.views`.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.payments.bolt11 import RouteHintHop
from lnpmsg.payments.bolt11_parts import prefix_for_network
from lnpmsg.payments.paying import PAY_TIMEOUT
from lnpmsg.payments.store import PaymentsStoreWriteFailed
from lnpmsg.payments.views import decode_invoice, forward_view, invoice_params, invoice_view, new_invoice, own_channel_names, payment_view, route_hints
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["DEFAULT_EXPIRY", "InvoiceCalls"]

log = logging.getLogger("lnpmsg.payments.app")

#: seconds an invoice stays payable unless asked otherwise
DEFAULT_EXPIRY = 3600


class InvoiceCalls:
    """The control calls on invoices, payments and forwards (see the module docs); mixed into the payments app."""

    async def invoice(self: PaymentsApp, amount_msat: int | None, label: str, description: str, expiry: int = DEFAULT_EXPIRY,
                      preimage: str | None = None, payment_hash: str | None = None, hold: bool = False,
                      min_final_cltv: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Make an invoice for AMOUNT_MSAT (None: any amount) labelled LABEL, with route hints for our private channels;
        with ``hold`` and a PAYMENT_HASH, a hold invoice: its payment is held until settleinvoice or cancelinvoice."""
        if amount_msat is not None and (not isinstance(amount_msat, int) or amount_msat <= 0):
            raise ParamsError(f"amount_msat must be a positive integer (or null for any amount), got {amount_msat!r}")
        if not isinstance(label, str) or not label:
            raise ParamsError("label must be a non-empty string")
        if not isinstance(expiry, int) or expiry <= 0:
            raise ParamsError(f"expiry must be a positive number of seconds, got {expiry!r}")
        chosen, hashed, cltv = invoice_params(preimage, payment_hash, hold, min_final_cltv)
        now = int(self._now())
        text, row = new_invoice(self.node.key.secret, prefix_for_network(self._network()), amount_msat, label, description, expiry, now,
                                self._route_hints(), chosen, hashed, cltv)  # fmt: skip
        payment_hash, payment_secret = row["payment_hash"], row["payment_secret"]
        try:
            await trio.to_thread.run_sync(lambda: self._store().add_invoice(**row))
        except sqlite3.IntegrityError:
            raise ParamsError(f"an invoice labelled {label!r} (or with this payment hash) exists already") from None
        except PaymentsStoreWriteFailed as exc:
            log.error("payments: invoice %r not made: %s (free some space)", label, exc)
            raise ChainAppError(f"cannot make the invoice: {exc}", {"error": "StoreWriteFailed", "label": label}) from None
        self._remember({**row, "status": "unpaid"})
        self._publish("invoice.created", payment_hash, amount_msat=amount_msat or 0, label=label)
        return {"bolt11": text, "payment_hash": payment_hash.hex(), "payment_secret": payment_secret.hex(),
                "expires_at": now + expiry, "label": label}  # fmt: skip

    def _route_hints(self: PaymentsApp) -> tuple[tuple[RouteHintHop, ...], ...]:
        """Our invoices' route hints: every channel payers cannot find in the gossip (views.route_hints)."""
        channels = self.htlcs.channels()
        return route_hints(channels, self.policy, self.policies.of_peers(channels), self.policies.announced)

    async def decodepay(self: PaymentsApp, bolt11: str) -> dict[str, Any]:
        """Decode and verify a BOLT-11 invoice."""
        return decode_invoice(bolt11).to_dict()

    async def pay(self: PaymentsApp, bolt11: str, amount_msat: int | None = None, timeout: float = PAY_TIMEOUT) -> dict[str, Any]:
        """Pay a BOLT-11 invoice; returns once it is paid (preimage) or failed (the error says which hop and why).

        New parts leave for ``timeout`` seconds; a payment still in flight when the call stops
        waiting goes on, its HTLCs in flight end as they will (``listpayments`` shows how): the
        payment is the app's, not the caller's."""
        return await self._pay_invoice(bolt11, amount_msat, timeout)

    async def listinvoices(self: PaymentsApp, label: str | None = None) -> dict[str, Any]:
        """Our invoices (status unpaid, paid or expired; a hold invoice's also accepted, with its held HTLCs, or cancelled)."""
        rows = await trio.to_thread.run_sync(self._store().invoices, label)
        await self._held_known.wait()
        return {"invoices": [invoice_view(r, self._now(), (h := self._held.get(r["payment_hash"])) and h.summary()) for r in rows]}

    async def delinvoice(self: PaymentsApp, label: str) -> dict[str, Any]:
        """Delete our unpaid (or expired) invoice LABEL: a payment of it fails from then on (unknown payment hash).

        A paid invoice is kept (it is the record of the payment), and so is one whose parts we hold.
        """
        if not isinstance(label, str) or not label:
            raise ParamsError("label must be a non-empty string")
        store = self._store()
        rows = await trio.to_thread.run_sync(store.invoices, label)
        if not rows:
            raise ChainAppError(f"no invoice labelled {label!r}", {"error": "NoSuchInvoice", "label": label})
        (row,) = rows
        if row["status"] == "paid":
            raise ChainAppError(f"the invoice {label!r} is paid: kept as the record of the payment", {"error": "InvoicePaid", "label": label})
        if self.mpp.holds(row["payment_hash"]) or row["payment_hash"] in self._held:
            raise ChainAppError(f"parts of a payment of {label!r} are held: try again once they settle or time out",
                                {"error": "InvoiceBusy", "label": label})  # fmt: skip
        try:
            deleted = await trio.to_thread.run_sync(store.delete_invoice, label)
        except PaymentsStoreWriteFailed as exc:
            raise ChainAppError(f"cannot delete the invoice {label!r}: {exc}", {"error": "StoreWriteFailed", "label": label}) from None
        if deleted is None:  # paid in the meantime
            raise ChainAppError(f"the invoice {label!r} is paid: kept as the record of the payment", {"error": "InvoicePaid", "label": label})
        self._terms.pop(deleted["payment_hash"], None)
        self._labels.pop(deleted["payment_hash"], None)
        log.info("payments: invoice %s deleted", label)
        self._publish("invoice.deleted", deleted["payment_hash"], amount_msat=deleted["amount_msat"] or 0, label=label)
        return {"deleted": invoice_view(deleted, self._now())}

    async def listpayments(self: PaymentsApp, payment_hash: str | None = None) -> dict[str, Any]:
        """Our payments: status, amount, fee, route(s), preimage."""
        wanted = hex_param(payment_hash, "payment_hash", 32) if payment_hash else None
        rows = await trio.to_thread.run_sync(self._store().payments, wanted)
        names = own_channel_names(self.htlcs.channels())
        return {"payments": [payment_view(r, names) for r in rows]}

    async def listforwards(self: PaymentsApp) -> dict[str, Any]:
        """HTLCs we forwarded: in and out channels, amounts, expiries, status."""
        rows = await trio.to_thread.run_sync(self._store().forwards)
        return {"forwards": [forward_view(r) for r in rows]}
