"""What a restart left in flight, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

At start, before the first HTLC result is read (results queue from the moment the app is the channel
app's HTLC handler): the forwards whose outgoing HTLCs are still offered wait for them again
(:mod:`.forwarding`), the payments left pending are adopted with their parts in flight
(:mod:`.orphans`: a preimage that comes back completes one, a failure is read and attributed, and
the end is recorded), the hold invoices' held HTLCs are found (:mod:`.holding`), the preimages the
channels hold for our HTLCs are read again, and so are the failures the channel app kept for HTLCs of
ours that left their channels while we were not listening. Then every committed incoming HTLC is
decided again (:meth:`Restarting._replay`), after up to :data:`REPLAY_GRACE` seconds for the
peers to reconnect, so none is left hanging. Until then (every channel usable again, or the grace
over) a forward whose next channel is down waits for it as long too (:attr:`Restarting.restarting`):
its peer is most likely reconnecting to us; afterwards it fails back at once when that peer is not
connected (:mod:`.forwarding`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.channels.htlc_hook import IncomingHtlc
from lnpmsg.payments.orphans import PaymentEnded
from lnpmsg.payments.recording import record
from lnpmsg.payments.sender import OutgoingResult, onion_key
from lnpmsg.payments.views import name_failure, name_own_channels, own_channel_names

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["REPLAY_GRACE", "Restarting"]

log = logging.getLogger("lnpmsg.payments.app")

#: seconds a restarted node waits for its peers before deciding the HTLCs it holds
REPLAY_GRACE = 30.0


class Restarting:
    """Taking up what a restart left in flight (see the module docs); mixed into the payments app."""

    #: our own start's grace is on: our peers are reconnecting (set at start, cleared by :meth:`_replay`)
    restarting: bool = True

    async def _start_up(self: PaymentsApp) -> None:
        """What a restart left in flight, known before the first result is read (results queue meanwhile,
        from the moment the handler is set): the forwards and payments whose HTLCs are still offered,
        the preimages and failures the channel app kept for them."""
        # an HTLC a peer failed while we were not listening (or before we recorded what it meant) is
        # among the offered ones, with its failure
        self._queued_before_start = self._resolved_in.statistics().current_buffer_used
        failed = self.htlcs.failed_offered()
        offered = self.htlcs.offered() + [IncomingHtlc(f.channel_key, b"", 0, f.add) for f in failed]
        await self._adopt_forwards(offered, self.htlcs.pending_incoming())
        await self._orphaned_payments(offered)
        await self._held_at_start()
        for key, htlc_id, preimage in self.htlcs.fulfilled_offered():  # preimages we may have missed while down
            self._resolved_in.send_nowait((key, htlc_id, OutgoingResult(preimage)))
        for f in failed:
            if f.ref in self._forwards or self._orphans.owns(f.ref):
                self._resolved_in.send_nowait((f.channel_key, f.add.id, OutgoingResult(None, f.reason, f.failure_code)))
            else:  # what it meant was recorded before the restart (or nothing of ours waits for it)
                self._finished.discard(f.ref)
                await self.htlcs.failure_handled(*f.ref)

    async def _orphaned_payments(self: PaymentsApp, offered: list[IncomingHtlc]) -> None:
        """Payments left pending by a restart: adopted with their parts' HTLCs still in flight (see :mod:`.orphans`)."""
        store = self._store()
        pending = [p for p in await trio.to_thread.run_sync(store.payments) if p["status"] == "pending"]
        by_onion = {onion_key(h.add.onion_routing_packet): (h.channel_key, h.add.id) for h in offered}
        for p in pending:
            if not p["preimage"]:  # a preimage a channel monitor kept (a part fulfilled while we were down) is the proof
                p["preimage"] = self.htlcs.known_preimage(p["payment_hash"])
            parts = await trio.to_thread.run_sync(store.parts, p["id"])
            ended = self._orphans.adopt(p, parts, by_onion)
            if ended is not None:
                await self._payment_ended(ended)
        if len(self._orphans):
            log.info("payments: %d payment(s) in flight across the restart", len(self._orphans))

    async def _orphan_resolved(self: PaymentsApp, ref: tuple[str, int], result: OutgoingResult) -> None:
        """An HTLC of a payment a restart left pending ended."""
        part, ended = self._orphans.result(ref, result, self._now())
        store = self._store()
        await record(lambda: store.part_status(part.onion_key, part.status, part.failure), "the end of a payment's part")
        await self._failure_recorded(ref, result)
        if ended is not None:
            await self._payment_ended(ended)

    async def _failure_recorded(self: PaymentsApp, ref: tuple[str, int], result: OutgoingResult) -> None:
        """Our store holds what the peer's failure of our HTLC ``ref`` meant: the channel app may forget it."""
        if result.reason is not None or result.failure_code is not None:
            await self.htlcs.failure_handled(*ref)

    async def _payment_ended(self: PaymentsApp, ended: PaymentEnded) -> None:
        store = self._store()
        values: dict[str, Any] = {"status": ended.status, "completed_at": int(self._now())}
        if ended.preimage is not None:
            values["preimage"] = ended.preimage
        names = own_channel_names(self.htlcs.channels())
        if ended.routes:
            values.update(routes=name_own_channels([r.to_dict() for r in ended.routes], names), fee_msat=ended.fee_msat)
        if ended.error is not None:
            values["error"], _ = name_failure(ended.error, {}, names)
        await record(lambda: store.update_payment(ended.payment_id, **values), "the end of a payment")
        if ended.status == "complete":
            log.info("payments: payment %s complete after a restart", ended.payment_hash.hex()[:16])
            self._publish("payment.sent", ended.payment_hash, fee_msat=ended.fee_msat, preimage=ended.preimage)
        else:
            log.info("payments: payment %s %s after a restart: %s", ended.payment_hash.hex()[:16], ended.status, ended.error)
            self._publish("payment.failed", ended.payment_hash, reason=ended.error or ended.status)

    async def _replay(self: PaymentsApp) -> None:
        """After a restart: decide every committed incoming HTLC again (forwards already offered are
        found in the store). First give the peers a moment to reconnect, so a forward finds its
        next channel up rather than failing back at once; that moment ends our start's grace
        (:attr:`restarting`, set at start), with or without HTLCs to decide."""
        pending = self.htlcs.pending_incoming()
        if pending:
            log.info("payments: %d incoming HTLC(s) to decide after the restart", len(pending))
        with trio.move_on_after(REPLAY_GRACE):
            while not all(c.usable for c in self.htlcs.channels()):
                await trio.sleep(0.2)
        self.restarting = False
        if pending:
            for htlc in self.htlcs.pending_incoming():
                self._incoming_in.send_nowait(htlc)
