"""Paying an invoice: the payments app's sending side (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

``payments.pay`` checks the invoice, then runs the payment as the app's own task
(a caller that stops waiting, as the control server does after a minute,
leaves it running to its end, recorded in the store) and waits for its
outcome for a while. The payment (:class:`~lnpmsg.payments.sender.Payment`,
sans-IO) asks for routes over our channels, the invoice's route hints and the
routing graph, offers each part on its first channel, and learns from each
failure; after :data:`PAY_TIMEOUT` no new part leaves and the parts in
flight are waited for. Every part is stored (its route and the onion's
shared secrets) before its HTLC leaves, so a restart of this node still
completes the payment or reads its failures (:mod:`.orphans`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.channels.htlc_hook import HtlcNotWritten, HtlcRefused
from lnpmsg.payments.blinded_routes import PathOffer, blinded_paths_finder
from lnpmsg.payments.bolt11 import Invoice
from lnpmsg.payments.graph import DirectedChannel, OverlayGraph, hint_channels, local_channel
from lnpmsg.payments.pathfind import find_route, find_routes
from lnpmsg.payments.plan import PaymentPlanError
from lnpmsg.payments.route import Route
from lnpmsg.payments.recording import record
from lnpmsg.payments.sender import OutgoingResult, Part, Payment, onion_key
from lnpmsg.payments.store import PaymentsStoreWriteFailed
from lnpmsg.payments.views import check_invoice, decode_invoice, name_failure, name_own_channels, own_channel_names
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["PAY_TIMEOUT", "PAY_WAIT", "Paying"]

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Blinded:
    """A payment into blinded paths: each path, what it adds and its HTLC maximum; ``mpp``: it may be
    split over several of them (and routes), else one route into one path carries it."""

    paths: tuple[PathOffer, ...]
    mpp: bool = False

#: seconds a payment sends new parts (those in flight then are still waited for)
PAY_TIMEOUT = 40.0
#: seconds the ``pay`` call waits at most for the outcome (the control server ends calls at 60 s);
#: and how much longer than the payment's timeout it waits for the parts in flight
PAY_WAIT = 55.0
PAY_WAIT_MARGIN = 10.0


class Paying:
    """``pay`` and what it runs (see the module docs); mixed into the payments app, whose state it uses."""

    def _payable(self: PaymentsApp, bolt11: str, amount_msat: int | None) -> tuple[Invoice, int]:
        """The invoice ``bolt11`` after the payer's checks (an ``InvoiceError`` that says which failed),
        and the amount a payment of it sends."""
        invoice = decode_invoice(bolt11)
        try:
            check_invoice(invoice, amount_msat, self.node.node_id, self._network(), self._now())
        except PaymentPlanError as exc:
            raise ChainAppError(f"cannot pay: {exc}", {"error": "InvoiceError", "code": exc.code}) from None
        total = amount_msat if amount_msat is not None else invoice.amount_msat
        assert total is not None and invoice.payee is not None
        return invoice, total

    async def _pay_invoice(self: PaymentsApp, bolt11: str, amount_msat: int | None, timeout: float) -> dict[str, Any]:
        """``payments.pay`` (see :meth:`PaymentsApp.pay`)."""
        invoice, total = self._payable(bolt11, amount_msat)
        store = self._store()
        earlier = await trio.to_thread.run_sync(store.payments, invoice.payment_hash)
        if invoice.payment_hash in self._paying or any(p["status"] in ("pending", "complete") for p in earlier):
            done = next((p for p in earlier if p["status"] == "complete"), None)
            details = {"error": "AlreadyPaid" if done else "InProgress", "payment_hash": invoice.payment_hash.hex()}
            if done is not None:
                details["preimage"] = done["preimage"].hex()
            raise ChainAppError("this invoice is already paid" if done else "a payment of this invoice is in progress", details)
        return await self._start_payment(invoice, bolt11, total, timeout)

    async def _start_payment(self: PaymentsApp, invoice: Invoice, bolt11: str, total: int, timeout: float,
                             keysend_preimage: bytes | None = None, max_fee_msat: int | None = None,
                             blinded: Blinded | None = None) -> dict[str, Any]:  # fmt: skip
        """Run the payment of ``total`` msat to ``invoice`` (a keysend's has no bolt11: see :mod:`.keysend`) as the
        app's task; its result once it ends, or an error saying it goes on. ``blinded``: a payment into
        those blinded paths (``invoice`` then stands for the first one's introduction node: see :mod:`.blinded_app`)."""
        # the payment is the app's task, not the caller's: a caller that stops waiting (the control
        # server ends a call after a minute) leaves it running to its end, recorded in the store
        self._paying.add(invoice.payment_hash)
        outcome: dict[str, Any] = {}
        finished = trio.Event()
        self.spawn(self._pay_task, invoice, bolt11, total, timeout, outcome, finished, keysend_preimage, max_fee_msat, blinded)
        with trio.move_on_after(min(timeout + PAY_WAIT_MARGIN, PAY_WAIT)):
            await finished.wait()
        if not finished.is_set():
            raise ChainAppError(f"the payment is still in flight after {min(timeout + PAY_WAIT_MARGIN, PAY_WAIT):g} s; "
                                "'lnpmsg listpayments' shows how it ends",
                                {"error": "InProgress", "payment_hash": invoice.payment_hash.hex()})  # fmt: skip
        if "error" in outcome:
            raise outcome["error"]
        if "result" not in outcome:  # the app stopped (the node shuts down) with the payment in flight
            raise ChainAppError("the payments app stopped before the payment ended; after a restart "
                                "'lnpmsg listpayments' shows how it ends",
                                {"error": "Interrupted", "payment_hash": invoice.payment_hash.hex()})  # fmt: skip
        return outcome["result"]  # type: ignore[no-any-return]

    async def _pay_task(self: PaymentsApp, invoice: Invoice, bolt11: str, total: int, timeout: float, outcome: dict[str, Any], finished: trio.Event,
                        keysend_preimage: bytes | None = None, max_fee_msat: int | None = None, blinded: Blinded | None = None) -> None:  # fmt: skip
        try:
            outcome["result"] = await self._pay(invoice, bolt11, total, timeout, keysend_preimage, max_fee_msat, blinded)
        except Exception as exc:  # noqa: BLE001 - the caller gets it (as when it ran in the call); never the app's failure
            if not isinstance(exc, ChainAppError):
                log.warning("payments: paying %s failed: %s", invoice.payment_hash.hex()[:16], exc, exc_info=True)
            outcome["error"] = exc
        finally:
            self._paying.discard(invoice.payment_hash)
            finished.set()

    async def _pay(self: PaymentsApp, invoice: Invoice, bolt11: str, total: int, timeout: float, keysend_preimage: bytes | None = None,
                   max_fee_msat: int | None = None, blinded: Blinded | None = None) -> dict[str, Any]:  # fmt: skip
        assert invoice.payee is not None
        height = await self._height()
        if blinded is None:
            find = self._route_finder(invoice, height, max_fee_msat)
        else:  # routes to the paths' introduction nodes, continued through a path (or several: mpp)
            find = blinded_paths_finder(self._our_view, self.node.node_id, blinded.paths, height=height, now=self._now, scorer=self.scorer,
                                        mpp=blinded.mpp, max_fee_msat=max_fee_msat)  # fmt: skip
        store = self._store()
        try:
            payment_id = await trio.to_thread.run_sync(store.add_payment, invoice.payment_hash, bolt11.strip(), invoice.payee, total,
                                                       int(self._now()))  # fmt: skip
        except PaymentsStoreWriteFailed as exc:  # nothing has left: the caller hears why
            log.error("payments: not paying %s: %s (free some space)", invoice.payment_hash.hex()[:16], exc)
            raise ChainAppError(f"cannot pay: {exc}", {"error": "StoreWriteFailed", "payment_hash": invoice.payment_hash.hex()}) from None
        # (a keysend sends no payment_data, as lnd and Core Lightning: some receivers refuse one with a keysend preimage)
        # (nor does a payment into a blinded path: its path_id stands for the secret)
        secret = invoice.payment_secret if keysend_preimage is None and blinded is None else None
        payment = Payment(invoice.payment_hash, secret, total, find, self.scorer, invoice.payment_metadata, keysend_preimage=keysend_preimage)
        failed: list[tuple[tuple[str, int], OutgoingResult]] = []
        await self._run_payment(payment, payment_id, trio.current_time() + timeout, timeout, failed)
        try:
            done = await self._payment_done(invoice, payment, payment_id, total)
        except ChainAppError:  # failed, and stored so
            await self._parts_recorded(failed)
            raise
        await self._parts_recorded(failed)
        return done

    async def _parts_recorded(self: PaymentsApp, failed: list[tuple[tuple[str, int], OutgoingResult]]) -> None:
        """The payment's outcome is stored: the channel app may forget the failures of its parts (a
        restart before this reads them again, and attributes them to the payment)."""
        for ref, result in failed:
            await self._failure_recorded(ref, result)

    async def _payment_done(self: PaymentsApp, invoice: Invoice, payment: Payment, payment_id: int, total: int) -> dict[str, Any]:
        """Store how the payment ended; its result for ``pay``."""
        store = self._store()
        preimage, error = payment.preimage, payment.final_error
        # our channel as users know it (listchannels), not by our alias of a private one; kept so (it may close)
        names = own_channel_names(self.htlcs.channels())
        routes = name_own_channels([r.to_dict() for r in payment.succeeded], names) or []
        fee = sum(r.fee_msat for r in payment.succeeded)
        completed_at = int(self._now())
        if preimage is not None:
            await self._record_end(invoice, lambda: store.update_payment(payment_id, status="complete", preimage=preimage, routes=routes,
                                                                         fee_msat=fee, attempts=len(payment.attempts), completed_at=completed_at))  # fmt: skip
            self._publish("payment.sent", invoice.payment_hash, amount_msat=total, fee_msat=fee, preimage=preimage)
            return {"status": "complete", "payment_hash": invoice.payment_hash.hex(), "preimage": preimage.hex(), "amount_msat": total,
                    "fee_msat": fee, "parts": len(routes), "routes": routes, "attempts": len(payment.attempts)}  # fmt: skip
        assert error is not None
        text, details = name_failure(str(error), error.details, names)  # (its attempts' routes: our channel as pay names it)
        await self._record_end(invoice, lambda: store.update_payment(payment_id, status="failed", error=text,
                                                                     attempts=len(payment.attempts), completed_at=completed_at))  # fmt: skip
        self._publish("payment.failed", invoice.payment_hash, amount_msat=total, reason=text)
        raise ChainAppError(f"payment failed: {text}", {**details, "payment_hash": invoice.payment_hash.hex()})

    async def _record_end(self: PaymentsApp, invoice: Invoice, write: Callable[[], None]) -> None:
        """Write how the payment ended. It has ended (a preimage came, or no part is in flight and none
        may leave), so the caller hears it even when the disk is full; the write is then tried again in
        the background until it lands. Until then the store shows the payment pending, so a new ``pay``
        of the invoice is refused as in progress: never a second payment of one that may be paid."""
        try:
            await trio.to_thread.run_sync(write)
        except PaymentsStoreWriteFailed as exc:
            log.error("payments: the end of the payment %s could not be written yet: %s", invoice.payment_hash.hex()[:16], exc)
            self.spawn(record, write, f"the end of the payment {invoice.payment_hash.hex()[:16]}")

    async def _send_part(self: PaymentsApp, part: Part, payment_hash: bytes) -> tuple[tuple[str, int] | None, OutgoingResult]:
        """Offer the part's HTLC and wait for its result: (its channel key and id, or None if not offered; the result)."""
        first = part.route.hops[0]
        try:
            key, htlc_id = await self.htlcs.add_htlc(first.short_channel_id, first.amount_msat, payment_hash, first.cltv_expiry, part.onion)
        except HtlcNotWritten:
            raise  # (the payment stops: see _run_payment)
        except HtlcRefused as exc:
            return None, OutgoingResult(local_error=str(exc))
        send, receive = trio.open_memory_channel[OutgoingResult](1)
        early = self._early.pop((key, htlc_id), None)
        if early is not None:
            return (key, htlc_id), early
        self._waiting[(key, htlc_id)] = send
        return (key, htlc_id), await receive.receive()

    async def _run_payment(self: PaymentsApp, payment: Payment, payment_id: int, deadline: float, timeout: float,
                           failed: list[tuple[tuple[str, int], OutgoingResult]]) -> None:  # fmt: skip
        """Offer the payment's parts, feed back each result, until it is done. After ``deadline`` no
        new part leaves, but the parts in flight are waited for: each ends, settled or failed (those
        go to ``failed`` with their HTLCs).

        Each part is stored (route, onion secrets) before its HTLC is offered, and the first preimage
        as soon as it comes: a restart still completes the payment or reads its failures."""
        results_in, results = trio.open_memory_channel[tuple[Part, OutgoingResult]](math.inf)
        store = self._store()

        def not_written(part: Part, why: str) -> None:
            """The part is not offered, and no other part leaves: the disk they would be written to is full."""
            log.error("payments: a part of the payment %s is not offered: %s (free some space)", payment.payment_hash.hex()[:16], why)
            payment.stop(f"{why}; free some space and pay again", error="StoreWriteFailed")
            results_in.send_nowait((part, OutgoingResult(local_error=f"not offered: {why}")))

        async def offer(part: Part) -> None:
            try:
                # a part the store does not hold would be lost to a restart: never offered
                await trio.to_thread.run_sync(lambda: store.add_part(payment_id, onion_key(part.onion), part.route.to_dict(), part.shared_secrets,
                                                                     part.route.final_amount_msat, int(self._now())))  # fmt: skip
                ref, result = await self._send_part(part, payment.payment_hash)
            except PaymentsStoreWriteFailed as exc:
                not_written(part, str(exc))
                return
            except HtlcNotWritten as exc:  # the channel could not write the HTLC: nothing of it left
                not_written(part, f"our channel could not write the HTLC: {exc}")
                return
            if ref is not None and result.preimage is None:
                failed.append((ref, result))
            results_in.send_nowait((part, result))

        async with trio.open_nursery() as nursery:
            while True:
                if trio.current_time() >= deadline:
                    payment.stop(f"no result in {timeout:g} s")
                for part in payment.next_parts():
                    nursery.start_soon(offer, part)
                if payment.done:
                    break
                with trio.move_on_at(deadline if not payment.stopped else math.inf):
                    part, result = await results.receive()
                    if result.preimage is not None and payment.preimage is None:
                        preimage = result.preimage
                        try:
                            await trio.to_thread.run_sync(lambda: store.update_payment(payment_id, preimage=preimage))
                        except PaymentsStoreWriteFailed as exc:  # the payment's end records it; a channel monitor keeps it meanwhile
                            log.warning("payments: the preimage of %s is not written yet: %s", payment.payment_hash.hex()[:16], exc)
                    payment.on_result(part, result, self._now())

    def _our_view(self: PaymentsApp, excluded: frozenset[int], extra: list[DirectedChannel] | None = None) -> OverlayGraph:
        """The routing graph with our channels as they are now (those ``excluded`` unusable), and ``extra``."""
        me = self.node.node_id
        local = [local_channel(c.short_channel_id, me, c.peer_id, c.spendable_msat if c.usable and c.short_channel_id not in excluded else 0,
                               htlc_minimum_msat=c.htlc_minimum_msat) for c in self.htlcs.channels()]  # fmt: skip
        return OverlayGraph(self.graph, local + (extra or []))

    def _route_finder(self: PaymentsApp, invoice: Invoice, height: int,
                      max_fee_msat: int | None = None) -> Callable[[int, frozenset[int]], list[Route]]:  # fmt: skip
        """Routes for what is missing; ``max_fee_msat`` bounds a single route's fees (a keysend: no basic_mpp, so one route)."""
        def find(amount_msat: int, excluded: frozenset[int]) -> list[Route]:
            me = self.node.node_id
            known = getattr(self.graph, "channel", None)
            extra = []
            for hint in invoice.route_hints:
                # a channel the graph knows has its owner's signed policy: the payee's hint is only a guess;
                # a hop from us is our own channel, with what it can send now: the hint's
                # copy, of unknown size, would let a part ask the channel for more than it holds (and never split)
                extra.extend(e for e in hint_channels(hint, invoice.payee)  # type: ignore[arg-type]
                             if e.source != me and (known is None or known(e.short_channel_id, e.direction) is None))
            view = self._our_view(excluded, extra)
            options: dict[str, Any] = dict(current_height=height, now=self._now(), scorer=self.scorer, final_cltv_delta=invoice.min_final_cltv)
            if invoice.features.supports("basic_mpp"):
                return find_routes(view, me, invoice.payee, amount_msat, **options)  # type: ignore[arg-type]
            return [find_route(view, me, invoice.payee, amount_msat, max_fee_msat=max_fee_msat, **options)]  # type: ignore[arg-type]

        return find
