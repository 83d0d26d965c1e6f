"""Settling payments to us, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

An HTLC that pays our invoice, or every part of a multi-part payment once
they reach its total, is fulfilled only once the invoice is paid on disk:
the preimage never leaves before. On a full disk that write is tried again
(:mod:`.recording`) and the HTLCs are held meanwhile, not failed, as long as
their deadline allows: the MPP timeout counted from the first part's arrival
(what a payer waits for a set), or the chain coming within
:data:`SETTLE_MARGIN_BLOCKS` of the earliest part's ``cltv_expiry`` (a
fulfil after that would send the channel on chain). Past it every part fails
back together with ``temporary_node_failure`` (the payee's own trouble: the
set did arrive whole, so not ``mpp_timeout``): never some parts settled and
others failed. An invoice already paid on disk is never given up on (its
preimage may have left already): its HTLCs are only ever settled. The same
margin (:func:`near_expiry`) bounds how long a hold invoice's payment is
held (:mod:`.holding`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import trio

from lnpmsg.channels.monitor import CLTV_CLAIM_BUFFER
from lnpmsg.payments.onion import create_failure_onion
from lnpmsg.payments.onion.failures import TemporaryNodeFailure
from lnpmsg.payments.recording import RecordAbandoned, record

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["SETTLE_MARGIN_BLOCKS", "Receiving", "near_expiry"]

log = logging.getLogger("lnpmsg.payments.app")

#: an unpaid invoice's HTLCs fail back once the chain is this close to the earliest one's expiry:
#: a fulfil within CLTV_CLAIM_BUFFER blocks of it would send the channel on chain at once (the
#: channel monitor claims such an HTLC there), and the failure needs a block or two to settle
SETTLE_MARGIN_BLOCKS = CLTV_CLAIM_BUFFER + 2


async def near_expiry(app: PaymentsApp, refs: Collection[tuple[str, int]]) -> str | None:
    """Why HTLCs ``refs`` may be held no longer (None: they may): the chain is within
    :data:`SETTLE_MARGIN_BLOCKS` of the earliest one's expiry. Only HTLCs still committed in an open
    channel count (one whose channel went on chain cannot be failed back: it ends there)."""
    expiries = [h.add.cltv_expiry for h in app.htlcs.pending_incoming() if (h.channel_key, h.add.id) in refs]
    if expiries:
        height = await app._height()
        if height + SETTLE_MARGIN_BLOCKS >= min(expiries):
            return f"an HTLC of it expires at height {min(expiries)} (the chain is at {height})"
    return None


class Receiving:
    """Settling the HTLCs that pay our invoices (see the module docs); mixed into the payments app."""

    async def _settle(self: PaymentsApp, parts: dict[tuple[str, int], bytes], payment_hash: bytes, preimage: bytes,
                      amount_msat: int, started: float) -> None:  # fmt: skip
        """Mark the invoice paid, then fulfil every HTLC of ``parts`` (ref -> its onion's shared secret);
        ``started``: when the first of them arrived. Fails them all if the invoice cannot be marked paid in time."""
        store, paid_at, label = self._store(), int(self._now()), self._labels.get(payment_hash, "")
        give_up = partial(self._settle_deadline, list(parts), payment_hash, started)
        try:
            await record(lambda: store.mark_paid(payment_hash, amount_msat, paid_at), f"the invoice {label!r} paid", give_up)
        except RecordAbandoned as exc:
            log.error("payments: invoice %s not paid, %s: failing its %d HTLC(s) back together with temporary_node_failure",
                      label, exc.why, len(parts))  # fmt: skip
            failure = TemporaryNodeFailure()
            for ref, secret in parts.items():
                await self._fail(ref, create_failure_onion(secret, failure), f"the invoice could not be marked paid: {exc.why}")
            return
        terms = self._terms.get(payment_hash)
        if terms is not None and not terms.paid:
            self._terms[payment_hash] = replace(terms, paid=True)
            self._publish("invoice.paid", payment_hash, amount_msat=amount_msat, label=label)
            log.info("payments: invoice %s paid (%d msat)", label, amount_msat)
        for ref in parts:
            await self._call(lambda ref=ref: self.htlcs.fulfill(ref[0], ref[1], preimage), ref)  # type: ignore[misc]

    async def _settle_deadline(self: PaymentsApp, refs: list[tuple[str, int]], payment_hash: bytes, started: float) -> str | None:
        """Why the HTLCs ``refs`` of an unpaid invoice may wait no longer for it to be marked paid (None: they may)."""
        terms = self._terms.get(payment_hash)
        if terms is None or terms.paid:
            return None
        if self._now() >= started + self.mpp.timeout:
            return f"not written within the MPP timeout ({self.mpp.timeout:g} s from the first part)"
        return await near_expiry(self, refs)

    async def _mpp_timer(self: PaymentsApp) -> None:
        """Fail the parts of sets that did not arrive whole in time (``mpp_timeout``)."""
        while True:
            await trio.sleep(1.0)
            for ref, failure in self.mpp.expire(self._now()):
                log.info("payments: failing HTLC %s/%d: its multi-part payment did not arrive whole within %g s (mpp_timeout)",
                         ref[0][:16], ref[1], self.mpp.timeout)  # fmt: skip
                await self._fail(ref, failure.reason, failure.why)
