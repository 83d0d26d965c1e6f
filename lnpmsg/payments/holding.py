"""Hold invoices, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

A hold invoice is made for a payment hash whose preimage we do not know
(``payments.invoice`` with ``payment_hash`` and ``hold``; lnd's
``addholdinvoice``, Core Lightning's holdinvoice plugin), asking by default
for a final expiry of :data:`~lnpmsg.payments.views.HOLD_MIN_FINAL_CLTV`
blocks (room to hold). The HTLCs paying it get every check of a plain
invoice (:func:`~lnpmsg.payments.htlcs.decide`: payment secret, amount,
expiry) and are gathered like the parts of a multi-part payment (a
single-part payment too: a set of one); once they reach the total the set is
*accepted*: recorded so (``listinvoices`` shows the held HTLCs, their total
and the earliest expiry), ``invoice.accepted`` published, and held. Then:

- ``payments.settleinvoice PREIMAGE``: the preimage and the invoice paid are
  on disk first, then every held HTLC is fulfilled (``invoice.paid``). One
  whose channel went on chain meanwhile has its preimage handed to the
  channel's monitor by the same fulfil, which claims the HTLC's output there.
- ``payments.cancelinvoice HASH``: the held HTLCs fail back with
  ``incorrect_or_unknown_payment_details`` (what a node that does not know the
  hash answers), and so do the parts of a multi-part payment of it still
  gathering (at once, not at the MPP timeout); the invoice is ``cancelled``; an
  HTLC for it later fails at once.
- No answer in time: once the chain comes within
  :data:`~lnpmsg.payments.receiving.SETTLE_MARGIN_BLOCKS` of the earliest held
  HTLC's expiry (the margin an unpaid invoice's HTLCs are held to on a full
  disk, :func:`~lnpmsg.payments.receiving.near_expiry`), the set is cancelled
  so: failed back while the channel can still do it off chain. (Our channel
  monitor never takes a channel on chain for an HTLC whose preimage it does
  not have; the peer would, soon after the HTLC's expiry.)

An HTLC for an invoice whose payment is accepted already fails at once.
Across a restart an accepted invoice's HTLCs, still committed or in a
channel that went on chain, are held again at start (the replay of incoming
HTLCs leaves them alone); an accepted invoice none of whose HTLCs is left is
cancelled. Settling and cancelling take one lock: never both for one set.
Once a settle or a cancel is decided, its fulfils or fail-backs run as a
task of the app, which the call waits for: a call cut short (the control
server's time limit, a caller that stops waiting) cannot leave a held HTLC
in the channel, out of the held sets, until it times out on chain.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.payments.htlcs import CompleteSet, HoldPart
from lnpmsg.payments.onion import create_failure_onion, process_onion
from lnpmsg.payments.onion.failures import IncorrectOrUnknownPaymentDetails
from lnpmsg.payments.receiving import SETTLE_MARGIN_BLOCKS, near_expiry
from lnpmsg.payments.recording import record
from lnpmsg.payments.store import PaymentsStoreWriteFailed
from lnpmsg.rpc.params import hex_param
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["HOLD_POLL", "HeldSet", "Holding"]

log = logging.getLogger("lnpmsg.payments.app")

#: seconds between looks at the held sets' deadlines (a block is minutes: a look costs a tip query)
HOLD_POLL = 1.0


@dataclass
class HeldSet:
    """The HTLCs of an accepted hold invoice: ref -> (onion's shared secret, amount msat, cltv_expiry)."""

    parts: dict[tuple[str, int], tuple[bytes, int, int]] = field(default_factory=dict)

    @property
    def total_msat(self) -> int:
        return sum(p[1] for p in self.parts.values())

    @property
    def cltv_expiry(self) -> int:
        return min((p[2] for p in self.parts.values()), default=0)

    def summary(self) -> tuple[int, int, int]:
        """(HTLCs, their total msat, the earliest expiry): what ``listinvoices`` shows."""
        return len(self.parts), self.total_msat, self.cltv_expiry


def _error(message: str, kind: str, payment_hash: bytes, **details: Any) -> ChainAppError:
    return ChainAppError(message, {"error": kind, "payment_hash": payment_hash.hex(), **details})


class Holding:
    """Hold invoices (see the module docs); mixed into the payments app."""

    async def _gather(self: PaymentsApp, ref: tuple[str, int], part: HoldPart) -> None:
        """A part of a payment to us (:class:`HoldPart`): into its set; a complete set is settled, or held (a hold invoice)."""
        if part.payment_hash in self._held:  # a hold invoice's payment was accepted already: this one is not ours to take
            failure = IncorrectOrUnknownPaymentDetails(htlc_msat=part.amount_msat, height=await self._height())
            log.info("payments: failing HTLC %s/%d: its hold invoice's payment is held already", ref[0][:16], ref[1])
            await self._fail(ref, create_failure_onion(part.shared_secret, failure), "the invoice's payment is held already")
            return
        complete = self.mpp.add(ref, part, self._now())
        if complete is None:
            return
        if not isinstance(complete, CompleteSet):
            await self._fail(ref, complete.reason, complete.why)
            return
        terms = self._terms.get(part.payment_hash)
        if terms is None or terms.hold:  # (None: cancelled while the set gathered: _accept fails it back)
            self.spawn(self._accept, complete, part.payment_hash)
        else:
            secrets = {r: p.shared_secret for r, p in complete.parts.items()}
            self.spawn(self._settle, secrets, part.payment_hash, terms.preimage, part.total_msat, complete.started)

    async def _accept(self: PaymentsApp, complete: CompleteSet, payment_hash: bytes) -> None:
        """A hold invoice's payment arrived whole: record it accepted and hold its HTLCs."""
        held = HeldSet({ref: (p.shared_secret, p.amount_msat, p.cltv_expiry) for ref, p in complete.parts.items()})
        label = self._labels.get(payment_hash, "")
        async with self._hold_lock:
            terms = self._terms.get(payment_hash)
            if terms is None or not terms.hold or payment_hash in self._held:  # cancelled (or settled) while the set gathered
                await self._fail_held(held, "the invoice was cancelled")
                return
            self._held[payment_hash] = held
            store = self._store()
            await record(lambda: store.mark_accepted(payment_hash, held.total_msat), f"the hold invoice {label!r} accepted")
        log.info("payments: hold invoice %s accepted: %d HTLC(s), %d msat held until settleinvoice or cancelinvoice "
                 "(failed back at the latest %d blocks before height %d)", label, *held.summary()[:2],
                 SETTLE_MARGIN_BLOCKS, held.cltv_expiry)  # fmt: skip
        self._publish("invoice.accepted", payment_hash, amount_msat=held.total_msat, label=label)

    async def _fail_held(self: PaymentsApp, held: HeldSet, why: str) -> None:
        """Fail back the held HTLCs still in an open channel, as a node that does not know the payment hash
        (one whose channel went on chain ends there: the peer times it out)."""
        height = await self._height()
        for ref, (secret, amount_msat, _) in held.parts.items():
            if secret and self._still_incoming(ref):
                failure = IncorrectOrUnknownPaymentDetails(htlc_msat=amount_msat, height=height)
                await self._fail(ref, create_failure_onion(secret, failure), why)
            else:
                self._deciding.discard(ref)

    async def _cancel(self: PaymentsApp, payment_hash: bytes, why: str) -> HeldSet | None:
        """Give up a hold invoice (under the lock): later HTLCs for it fail at once (its terms are
        forgotten), the held ones fail back and so do the parts of a payment of it still gathering,
        then it is recorded ``cancelled`` (a restart before that finds none of its HTLCs and cancels it again).
        The HTLCs taken here are failed back by the app's own task, which the caller waits for: a caller
        that stops waiting (the control server's time limit) cannot leave them unresolved in the channel."""
        self._terms.pop(payment_hash, None)
        held = self._held.pop(payment_hash, None)
        # parts of a payment still gathering: failed back now, not left to the MPP timeout
        gathering = self.mpp.take(payment_hash)
        await self._as_the_apps(self._cancelled, payment_hash, held, gathering, why)
        return held

    async def _cancelled(self: PaymentsApp, payment_hash: bytes, held: HeldSet | None, gathering: dict[tuple[str, int], HoldPart],
                         why: str) -> None:  # fmt: skip
        if held is not None:
            await self._fail_held(held, why)
        if gathering:
            await self._fail_held(HeldSet({ref: (p.shared_secret, p.amount_msat, p.cltv_expiry) for ref, p in gathering.items()}), why)
        store = self._store()
        await record(lambda: store.mark_cancelled(payment_hash), "a hold invoice cancelled")
        self._publish("invoice.cancelled", payment_hash, amount_msat=held.total_msat if held else 0,
                      label=self._labels.get(payment_hash, ""), reason=why)  # fmt: skip

    async def _as_the_apps(self: PaymentsApp, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the app and wait for it: what a control call decided is carried
        out to its end even when the call is cut short (it ends with the app: a restart takes it up)."""
        done = trio.Event()

        async def run() -> None:
            try:
                await fn(*args)
            finally:
                done.set()

        self.spawn(run)
        await done.wait()

    async def _hold_timer(self: PaymentsApp) -> None:
        """Fail a held set back once the chain nears its earliest HTLC's expiry (the payee never answered)."""
        while True:
            await trio.sleep(HOLD_POLL)
            if not self._held:
                continue
            height = await self._height()
            for payment_hash, held in list(self._held.items()):
                # (a set far from its expiry needs no look at the channels: most are, most of the time)
                why = await near_expiry(self, held.parts.keys()) if height + SETTLE_MARGIN_BLOCKS >= held.cltv_expiry else None
                if why is None:
                    continue
                async with self._hold_lock:
                    if self._held.get(payment_hash) is not held:  # settled or cancelled meanwhile
                        continue
                    log.warning("payments: hold invoice %s neither settled nor cancelled in time (%s): its %d HTLC(s) fail back, "
                                "the invoice is cancelled", self._labels.get(payment_hash, ""), why, len(held.parts))  # fmt: skip
                    await self._cancel(payment_hash, f"held too long: {why}")

    async def _held_at_start(self: PaymentsApp) -> None:
        """A restart: the HTLCs of each accepted hold invoice are held again (the replay leaves them alone)."""
        store = self._store()
        accepted = [r for r in await trio.to_thread.run_sync(store.invoices) if r["status"] == "accepted"]
        try:
            await self._hold_again(accepted)
        finally:
            self._held_known.set()  # settleinvoice, cancelinvoice and listinvoices wait for it

    async def _hold_again(self: PaymentsApp, accepted: list[dict[str, Any]]) -> None:
        if not accepted:
            return
        htlcs = self.htlcs.pending_incoming() + self.htlcs.incoming_on_chain()
        for row in accepted:
            payment_hash, label = row["payment_hash"], row["label"]
            held = HeldSet()
            for h in htlcs:
                if h.add.payment_hash == payment_hash:
                    try:  # the onion's shared secret, to fail it back: decided already, so it reads
                        secret = process_onion(self.node.key.secret, h.add.onion_routing_packet, payment_hash).shared_secret
                    except Exception:  # noqa: BLE001 (never seen: it passed decide before; it could only time out then)
                        secret = b""
                    held.parts[(h.channel_key, h.add.id)] = (secret, h.add.amount_msat, h.add.cltv_expiry)
            if not held.parts:
                log.warning("payments: hold invoice %s was accepted but none of its HTLCs is left: cancelled", label)
                async with self._hold_lock:
                    await self._cancel(payment_hash, "its HTLCs were gone after a restart")
                continue
            self._held[payment_hash] = held
            self._deciding.update(held.parts)
            log.info("payments: hold invoice %s accepted before the restart: its %d HTLC(s) (%d msat) are held again",
                     label, len(held.parts), held.total_msat)  # fmt: skip

    # ------------------------------------------------------------ control calls

    async def settleinvoice(self: PaymentsApp, preimage: str, payment_hash: str | None = None) -> dict[str, Any]:
        """Settle our accepted hold invoice with its PREIMAGE (recorded first, then every held HTLC is fulfilled)."""
        secret = hex_param(preimage, "preimage", 32)
        hashed = hashlib.sha256(secret).digest()
        if payment_hash is not None and hex_param(payment_hash, "payment_hash", 32) != hashed:
            raise _error(f"the preimage does not match payment hash {payment_hash} (its sha256 is {hashed.hex()})", "WrongPreimage",
                         hashed)  # fmt: skip
        store = self._store()
        await self._held_known.wait()
        async with self._hold_lock:
            row = await trio.to_thread.run_sync(store.invoice, hashed)
            if row is None or not row["hold"]:
                raise _error(f"no hold invoice with payment hash {hashed.hex()} (the sha256 of this preimage): is the preimage right?",
                             "NoSuchInvoice", hashed)  # fmt: skip
            if row["status"] != "accepted":
                reason = {"unpaid": "no payment of it is held yet", "paid": "it is settled already", "cancelled": "it was cancelled"}
                raise _error(f"cannot settle the invoice {row['label']!r}: {reason.get(row['status'], row['status'])}",
                             "InvoiceNotAccepted", hashed, status=row["status"], label=row["label"])  # fmt: skip
            held = self._held.get(hashed)  # (an accepted invoice's HTLCs are held: since start-up at the latest)
            if held is None:  # a cancel decided it (its caller stopped waiting) and is recording it
                raise _error(f"cannot settle the invoice {row['label']!r}: it was cancelled", "InvoiceNotAccepted", hashed,
                             status="cancelled", label=row["label"])  # fmt: skip
            paid_at = int(self._now())
            try:  # persist, then send: the preimage and the invoice paid are on disk before any fulfil leaves
                await trio.to_thread.run_sync(store.settle_held, hashed, secret, held.total_msat, paid_at)
            except PaymentsStoreWriteFailed as exc:
                raise _error(f"cannot settle the invoice {row['label']!r}: {exc}", "StoreWriteFailed", hashed) from None
            terms = self._terms.get(hashed)
            if terms is not None:
                self._terms[hashed] = replace(terms, preimage=secret, paid=True, hold=False)
            self._held.pop(hashed, None)
            log.info("payments: hold invoice %s settled: fulfilling its %d HTLC(s) (%d msat)", row["label"], len(held.parts), held.total_msat)
            self._publish("invoice.paid", hashed, amount_msat=held.total_msat, label=row["label"])
            # the preimage is on disk: the fulfils are the app's task from here, carried out even if this call
            # is cut short (started before any wait: out of the held set, nothing else would ever settle them)
            await self._as_the_apps(self._fulfil_held, held, secret)
        return {"label": row["label"], "payment_hash": hashed.hex(), "status": "paid", "received_msat": held.total_msat,
                "htlcs": len(held.parts)}  # fmt: skip

    async def _fulfil_held(self: PaymentsApp, held: HeldSet, preimage: bytes) -> None:
        for ref in held.parts:  # (one whose channel went on chain: the fulfil hands the preimage to its monitor)
            await self._call(lambda ref=ref: self.htlcs.fulfill(ref[0], ref[1], preimage), ref)  # type: ignore[misc]

    async def cancelinvoice(self: PaymentsApp, payment_hash: str) -> dict[str, Any]:
        """Cancel our hold invoice PAYMENT_HASH: its held HTLCs fail back, and so does any later payment of it."""
        hashed = hex_param(payment_hash, "payment_hash", 32)
        store = self._store()
        await self._held_known.wait()
        async with self._hold_lock:
            row = await trio.to_thread.run_sync(store.invoice, hashed)
            if row is None or not row["hold"]:
                raise _error(f"no hold invoice with payment hash {payment_hash} (delinvoice removes a plain one)", "NoSuchInvoice", hashed)
            if row["status"] == "paid":
                raise _error(f"the invoice {row['label']!r} is settled: its payment is ours", "InvoicePaid", hashed, label=row["label"])
            held = await self._cancel(hashed, "cancelled by cancelinvoice") if row["status"] != "cancelled" else None
        log.info("payments: hold invoice %s cancelled%s", row["label"], f": {len(held.parts)} HTLC(s) failed back" if held else "")
        return {"label": row["label"], "payment_hash": hashed.hex(), "status": "cancelled", "htlcs": len(held.parts) if held else 0}
