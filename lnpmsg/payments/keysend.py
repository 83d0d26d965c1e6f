"""Keysend (bLIP 3): spontaneous payments, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

A keysend needs no invoice: the payer picks a random preimage and puts it in
the final hop's payload (TLV type 5482373484, ``keysend_preimage``); the
HTLC's payment hash is its sha256.

Sending (``payments.keysend NODE_ID AMOUNT_MSAT``, Core Lightning's
``keysend``, lnd's ``sendpayment --keysend``): a payment like ``pay``'s
(:mod:`.paying`: the same route finding over our channels and the graph,
retries, the store and a restart's adoption), to the node itself with what an
invoice would have said filled in: a final expiry of
:data:`KEYSEND_FINAL_CLTV` blocks (no invoice says what the payee wants), no route
hints, a single part (no multi-part keysend), and no ``payment_data``: lnd
and Core Lightning send none, and some receivers refuse one next to a keysend
preimage. ``listpayments`` shows it (no bolt11); its preimage is ours from the
start, and recorded once the payee's fulfil brings it back (a payment row with
a preimage is a completed one, also after a restart).

Before any HTLC leaves, the payee's ``node_announcement`` is looked up in the
gossip app's store (as Core Lightning's ``keysend`` checks the destination's
features): one that sets neither keysend bit (54/55) means the payee would
refuse, so the call fails at once (``data.error`` ``KeysendNotSupported``)
unless ``force``. A payee with no known announcement (a private peer, a node
without a gossip app) is tried: nothing says it refuses.

Receiving, with ``accept_keysend`` (``lnpmsg node --accept-keysend``; off by
default, as lnd: see the option's help): we announce feature bit
:data:`KEYSEND_FEATURE_BIT` in our ``node_announcement`` (bLIP 2's table: 54/55,
context N only, so not in ``init``), and a final-hop HTLC whose keysend
preimage hashes to its payment hash, for a hash none of our invoices has,
whole (``total_msat``, if given, its own amount), expiring at least
:data:`~lnpmsg.payments.views.DEFAULT_MIN_FINAL_CLTV` blocks ahead
(:func:`~lnpmsg.payments.htlcs.decide`) is recorded first, as a paid
invoice-like row (label ``keysend-`` and the hash's first 16 hex digits,
``keysend`` true: ``listinvoices`` shows it), then fulfilled (persist, then
send); ``invoice.paid`` is published. A restart between the two settles it
then: the replayed HTLC finds the row. Any other keysend fails with
``incorrect_or_unknown_payment_details`` (what bLIP 3 asks for a keysend a
node does not want, or whose preimage does not match); one for the hash of
one of our invoices is that invoice's payment, and goes by its terms.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import partial
from typing import TYPE_CHECKING, Any

from lnpmsg.payments.bolt11 import Invoice
from lnpmsg.payments.bolt11_parts import prefix_for_network
from lnpmsg.payments.htlcs import Spontaneous
from lnpmsg.payments.onion import create_failure_onion
from lnpmsg.payments.onion.failures import IncorrectOrUnknownPaymentDetails, TemporaryNodeFailure
from lnpmsg.payments.paying import PAY_TIMEOUT
from lnpmsg.payments.receiving import near_expiry
from lnpmsg.payments.recording import RecordAbandoned, record
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.calls import ChainAppError
from lnpmsg.wire import Features

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["KEYSEND_FEATURE_BIT", "KEYSEND_FINAL_CLTV", "Keysending", "check_count", "keysend_row", "payee_of", "payment_target",
           "takes_keysend"]

log = logging.getLogger("lnpmsg.payments.app")

#: bLIP 3's feature bit (optional), in node_announcement only
KEYSEND_FEATURE_BIT = 55
#: bLIP 3's pair (54 compulsory, 55 optional): a payee setting either takes keysends
_KEYSEND_BITS = (KEYSEND_FEATURE_BIT - 1, KEYSEND_FEATURE_BIT)
#: the final expiry a keysend asks for, in blocks: the payee names none, so ample room above the
#: 18-24 blocks invoices ask (lnpmsg's receiving side asks 24 of a keysend)
KEYSEND_FINAL_CLTV = 40
#: var_onion_optin only: what the stand-in invoice of a payment to a node offers (no basic_mpp: one part)
_ONE_PART = Features.from_bits([8])


def keysend_row(payment_hash: bytes, preimage: bytes, action: Spontaneous, now: int) -> dict[str, Any]:
    """The store row of a keysend we received (a paid invoice without bolt11 or payment secret):
    ``amount_msat`` what the payer's onion says, ``received_msat`` what the HTLC carries."""
    return dict(payment_hash=payment_hash, label=f"keysend-{payment_hash.hex()[:16]}", bolt11="", preimage=preimage, payment_secret=b"",
                amount_msat=action.amt_to_forward, description="keysend", created_at=now, expires_at=now,
                min_final_cltv=DEFAULT_MIN_FINAL_CLTV, received_msat=action.amount_msat, paid_at=now)  # fmt: skip


def takes_keysend(announced: Features | None) -> bool:
    """Whether a payee may take a keysend, by the features of its ``node_announcement`` (None: none known,
    so nothing says it refuses; a private node announces nothing)."""
    return announced is None or any(announced.has(bit) for bit in _KEYSEND_BITS)


def payee_of(app: PaymentsApp, node_id: str, amount_msat: Any, max_fee_msat: Any, what: str) -> bytes:
    """The node id of a payment to a node without an invoice (keysend, getroute), its parameters checked."""
    payee = hex_param(node_id, "node_id", 33)
    check_count(amount_msat, "amount_msat", positive=True)
    if max_fee_msat is not None:
        check_count(max_fee_msat, "max_fee_msat")
    if payee == app.node.node_id:
        raise ParamsError(f"node_id is this node: {what} goes to another node")
    return payee


def check_count(value: Any, name: str, *, positive: bool = False) -> None:
    """``value`` is an integer (not a bool), at least 1 if ``positive``, else at least 0; ParamsError if not."""
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        raise ParamsError(f"{name} must be a {'positive' if positive else 'non-negative'} integer, got {value!r}")


def payment_target(app: PaymentsApp, payee: bytes, payment_hash: bytes, amount_msat: int, final_cltv: int, description: str) -> Invoice:
    """What an invoice for a payment to ``payee`` would say, for the route finder and the payment
    (never signed nor shown): single-part, no route hints."""
    return Invoice(currency=prefix_for_network(app._network()), timestamp=int(app._now()), payment_hash=payment_hash,
                   payment_secret=bytes(32), amount_msat=amount_msat, description=description,
                   min_final_cltv_expiry_delta=final_cltv, features=_ONE_PART, payee=payee)  # fmt: skip


class Keysending:
    """Keysend, sent and received (see the module docs); mixed into the payments app."""

    async def keysend(self: PaymentsApp, node_id: str, amount_msat: int, max_fee_msat: int | None = None,
                      timeout: float = PAY_TIMEOUT, force: bool = False) -> dict[str, Any]:  # fmt: skip
        """Pay AMOUNT_MSAT to NODE_ID without an invoice (bLIP 3 keysend: our random preimage rides in its onion);
        ``max_fee_msat`` bounds the route's fees. Returns once paid (preimage) or failed, as ``pay``.
        Refused before any HTLC leaves when the payee's known node_announcement lacks keysend's bit, unless ``force``."""
        payee = payee_of(self, node_id, amount_msat, max_fee_msat, "a keysend")
        if not isinstance(force, bool):
            raise ParamsError(f"force must be true or false, got {force!r}")
        announced = None if force else await self._announced_features(payee)
        if not takes_keysend(announced):
            assert announced is not None
            raise ChainAppError(f"{payee.hex()} does not take keysends: its node_announcement lacks feature bit {KEYSEND_FEATURE_BIT} "
                                "(it would fail the payment); force (lnpmsg keysend --force) sends it anyway",
                                {"error": "KeysendNotSupported", "node_id": payee.hex(), "features": announced.to_bytes().hex()})  # fmt: skip
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).digest()
        target = payment_target(self, payee, payment_hash, amount_msat, KEYSEND_FINAL_CLTV, "keysend")
        log.info("payments: keysend of %d msat to %s (payment hash %s)", amount_msat, payee.hex()[:16], payment_hash.hex()[:16])
        return await self._start_payment(target, "", amount_msat, timeout, keysend_preimage=preimage, max_fee_msat=max_fee_msat)

    async def _announced_features(self: PaymentsApp, node_id: bytes) -> Features | None:
        """The features of ``node_id``'s node_announcement in the gossip app's store (None: no gossip app,
        or no announcement of it known)."""
        announced_features = getattr(self.node.apps.get("gossip"), "announced_features", None)
        return None if announced_features is None else await announced_features(node_id)

    async def _keysend_received(self: PaymentsApp, ref: tuple[str, int], payment_hash: bytes, action: Spontaneous) -> None:
        """A keysend to us (:class:`Spontaneous`): recorded as a paid invoice, then fulfilled (persist, then send).
        On a full disk it waits for the write as long as the HTLC may, then fails back (``temporary_node_failure``)."""
        store, now, started = self._store(), int(self._now()), self._now()
        row = keysend_row(payment_hash, action.preimage, action, now)
        give_up = partial(self._keysend_deadline, ref, started)
        try:
            stored = await record(lambda: store.add_keysend(**row), f"the keysend {row['label']!r} received", give_up)
        except RecordAbandoned as exc:
            log.error("payments: keysend %s not recorded, %s: failing it back with temporary_node_failure", row["label"], exc.why)
            await self._fail(ref, create_failure_onion(action.shared_secret, TemporaryNodeFailure()), f"not recorded: {exc.why}")
            return
        # (a row of this hash may be there already: a twin keysend recorded it meanwhile, settled as this one)
        if stored is None or not stored["keysend"] or stored["preimage"] != action.preimage:
            failure = IncorrectOrUnknownPaymentDetails(htlc_msat=action.amount_msat, height=await self._height())
            await self._fail(ref, create_failure_onion(action.shared_secret, failure), "a keysend whose hash or label is another invoice's")
            return
        if payment_hash not in self._terms:  # recorded now
            self._remember(stored)
            log.info("payments: keysend %s received (%d msat)", stored["label"], stored["received_msat"])
            self._publish("invoice.paid", payment_hash, amount_msat=stored["received_msat"], label=stored["label"])
        await self._call(lambda: self.htlcs.fulfill(ref[0], ref[1], action.preimage), ref)

    async def _keysend_deadline(self: PaymentsApp, ref: tuple[str, int], started: float) -> str | None:
        """Why a keysend's HTLC may wait no longer for its row to be written (None: it may): as an invoice's."""
        if self._now() >= started + self.mpp.timeout:
            return f"not written within {self.mpp.timeout:g} s"
        return await near_expiry(self, [ref])
