"""Forwarding, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

An incoming HTLC that :func:`~lnpmsg.payments.htlcs.decide` forwards is
recorded in the store, then offered on the next channel; what comes back
goes upstream (a preimage is stored first, a failure is wrapped with the
hop's shared secret). Across a restart: forwards still offered wait for
their outgoing HTLCs again (:meth:`Forwarding._adopt_forwards`), also one
whose outgoing HTLC left before its id was recorded (the outgoing onion's
key, recorded with the forward, finds it; a forward an older version
recorded without that key has it derived from its incoming onion; one
whose outgoing HTLC was fulfilled and left its channel before the restart
looked is settled with the preimage a channel monitor kept, also when its
incoming channel went on chain meanwhile: the fulfil hands the preimage to
that channel's monitor, which claims the HTLC on chain), so at
most one outgoing HTLC is ever offered per incoming HTLC; a replayed
incoming HTLC settles with the stored preimage, or waits, or is decided
again when its outgoing HTLC never got into a commitment.

A forward whose next channel is not usable (:meth:`Forwarding._next_channel_wait`): in our
start's grace (:mod:`.restart`: our peers are reconnecting) it waits for the channel as long as
that grace lasts; later it fails back at once with ``temporary_channel_failure`` when the next
peer is not connected (as lnd and Core Lightning do: the payer tries another route rather than
wait for a peer that may be gone for good), and waits a few seconds when it is connected and the
channel is being reestablished. It waits once: decided again, it forwards or fails back. So
does one whose next peer went away between the decision and the offer, or before the offer was
committed. A forward whose next channel could not write the offer (our full disk) waits as
long as it takes (:data:`AFTER_WRITE_FAILURE`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from lnpmsg.channels.htlc_hook import HtlcHook, HtlcNotWritten, HtlcRefused, IncomingHtlc
from lnpmsg.payments.blinded_htlcs import BlindedRole, blinded_failure, blinded_role
from lnpmsg.payments.htlcs import FailOnion, Forward
from lnpmsg.payments.onion import create_failure_onion, malformed_failure, next_ephemeral_key, wrap_failure_onion
from lnpmsg.payments.onion.failures import PermanentChannelFailure, TemporaryChannelFailure
from lnpmsg.payments.sender import OutgoingResult, onion_key
from lnpmsg.payments.recording import RETRY_MAX_DELAY, record
from lnpmsg.payments.restart import REPLAY_GRACE
from lnpmsg.payments.store import PaymentsStore

__all__ = ["AFTER_WRITE_FAILURE", "REESTABLISH_WAIT", "Forwarding"]

#: seconds a forward whose next channel could not write the offer waits before looking at that channel
#: again: the channel drops its peer to resume from its disk, and reads as usable until that is processed
AFTER_WRITE_FAILURE = 1.0
#: seconds a forward waits for its next channel when the peer is connected but the channel is not
#: usable yet: channel_reestablish is one message each way (plus what it retransmits), well under a
#: second on a direct link, a few seconds over Tor. Longer would hold the payer's HTLC (and its
#: other parts' liquidity) for a channel that may stay down, where a failure lets it route elsewhere.
REESTABLISH_WAIT = 5.0

log = logging.getLogger("lnpmsg.payments.app")


def _legacy_onion_keys(offering: list[dict[str, Any]], incoming: list[IncomingHtlc]) -> dict[tuple[str, int], bytes]:
    """The outgoing onion's key of each forward still "offering" that was recorded without it (before
    the store kept it), by incoming HTLC. The onion a hop passes on carries its incoming onion's key
    blinded with the hop's shared secret (BOLT 4), and the row keeps that secret, so the key is exact
    while the incoming HTLC is still committed; one whose incoming HTLC is gone is never decided again
    (nothing would offer it twice) and is left without."""
    onions = {(h.channel_key, h.add.id): h.add.onion_routing_packet for h in incoming}
    keys: dict[tuple[str, int], bytes] = {}
    for row in offering:
        ref = (row["in_channel"], row["in_htlc"])
        onion = onions.get(ref)
        if row["out_onion_key"] or onion is None:
            continue
        try:
            keys[ref] = next_ephemeral_key(onion_key(onion), row["shared_secret"])
        except ValueError:  # not a key on the curve: an onion we never peeled, so never forwarded
            continue
    return keys


class Forwarding:
    """Forwarding for the payments app, which supplies the state and helpers declared here."""

    htlcs: HtlcHook
    _forwards: dict[tuple[str, int], tuple[str, int, bytes, bytes]]
    _early: dict[tuple[str, int], OutgoingResult]
    _finished: set[tuple[str, int]]
    _settled_at_start: set[bytes]
    _deciding: set[tuple[str, int]]
    _waited: set[tuple[str, int]]
    _not_written: dict[tuple[str, int], float]
    _store: Callable[[], PaymentsStore]
    _now: Callable[[], float]
    _known_preimage: Callable[[bytes], bytes | None]
    _call: Callable[[Callable[[], Awaitable[None]], tuple[str, int]], Awaitable[None]]
    _fail: Callable[..., Awaitable[None]]
    _failure_recorded: Callable[[tuple[str, int], OutgoingResult], Awaitable[None]]
    _decide_later: Callable[[IncomingHtlc, int | None, float, float], Awaitable[None]]
    _publish: Callable[..., None]
    restarting: bool
    spawn: Callable[..., Any]
    node: Any

    async def _adopt_forwards(self, offered: list[IncomingHtlc], incoming: list[IncomingHtlc]) -> None:
        """At start, the forwards whose outgoing HTLC is still in a channel (or its failure kept): wait
        for it again. One still "offering" whose HTLC did leave (a stop came before its id was recorded)
        is found by its onion and recorded as offered now, before anything comes back for it: its
        result goes upstream, and a replay of its incoming HTLC finds it rather than offering it again.
        One whose HTLC is not found but whose preimage we know was fulfilled and has left its channel
        before we looked: it is settled now (:meth:`_settle_if_known`), also when its incoming
        channel went on chain meanwhile (that channel's monitor claims the HTLC with the preimage).
        A forward decided already (failed or settled) only has its outgoing HTLC's result released.
        ``incoming`` (the incoming HTLCs still committed) gives the outgoing onion's key of a forward
        recorded before that key was kept (:func:`_legacy_onion_keys`)."""
        store = self._store()
        onions = {(h.channel_key, h.add.id): h.add.onion_routing_packet for h in offered}
        by_key = {onion_key(onion): out for out, onion in onions.items()}
        for row in await trio.to_thread.run_sync(store.forwards, "offered"):
            out = (row["out_channel"], row["out_htlc"])
            if out in onions:
                self._forwards[out] = (row["in_channel"], row["in_htlc"], row["shared_secret"], onions[out])
        offering = await trio.to_thread.run_sync(store.forwards, "offering")
        derived = _legacy_onion_keys(offering, incoming)
        if derived:
            log.info("payments: %d forward(s) recorded without their outgoing onion's key: derived from their incoming onions", len(derived))
            await record(lambda: store.fill_out_onion_keys(derived), "the outgoing onions' keys of older forwards")
        hashes = {(h.channel_key, h.add.id): h.add.payment_hash for h in incoming}
        live = {h.channel_key for h in incoming}
        on_chain: dict[tuple[str, int], bytes] | None = None
        for row in offering:
            key = row["out_onion_key"] or derived.get((row["in_channel"], row["in_htlc"]))
            found = by_key.get(key) if key else None
            if found is None:
                if on_chain is None and row["in_channel"] not in live:  # (a channel with HTLCs committed is not on chain)
                    on_chain = {(h.channel_key, h.add.id): h.add.payment_hash for h in self.htlcs.incoming_on_chain()}
                await self._settle_if_known(row, hashes, on_chain or {})
                continue
            if found in self._forwards:
                continue
            log.info("payments: forward %s/%d was offered as %s/%d before the restart",
                     row["in_channel"][:16], row["in_htlc"], found[0][:16], found[1])  # fmt: skip
            await record(partial(store.forward_out, row["in_channel"], row["in_htlc"], *found), "a forward's outgoing HTLC")
            self._forwards[found] = (row["in_channel"], row["in_htlc"], row["shared_secret"], onions[found])
        # every other HTLC we offered (our own payments' too) in one look-up: a forward's already decided?
        unclaimed = onions.keys() - self._forwards.keys()
        if unclaimed:
            rows = await trio.to_thread.run_sync(store.forwards_by_out, unclaimed)
            self._finished.update(out for out, row in rows.items() if row["status"] in ("failed", "settled"))

    async def _settle_if_known(self, row: dict[str, Any], incoming: dict[tuple[str, int], bytes],
                               on_chain: dict[tuple[str, int], bytes]) -> None:
        """A forward still "offering" whose outgoing HTLC no channel lists at start: if we know its
        preimage, the HTLC was fulfilled and has left its channel before we looked (the channel
        monitor keeps a preimage on disk before anything is sent after it came): the forward is
        settled with it, recorded before the incoming HTLC is fulfilled, and never offered again
        (a second offer the next hop fulfilled would have us pay twice). Settling an incoming HTLC
        with its preimage is safe for us whatever became of the outgoing one. Without a preimage the
        outgoing HTLC never got into a commitment: the incoming one is decided again when replayed.
        ``incoming``: the payment hashes of the incoming HTLCs still committed (only those are
        replayed, so only those could be offered again). ``on_chain``: those of the incoming HTLCs
        whose channel went on chain meanwhile: never replayed, so nothing else would give the
        preimage to that channel's monitor, and the peer would time the HTLC out on chain after we
        paid downstream; it is settled the same way, the fulfil handing the preimage to the monitor,
        which claims the HTLC's output (as a forward's fulfil does for an incoming channel on chain)."""
        in_key, in_id = ref = (row["in_channel"], row["in_htlc"])
        payment_hash = incoming.get(ref) or on_chain.get(ref)
        if payment_hash is None:
            return
        preimage = self._known_preimage(payment_hash) or self.htlcs.known_preimage(payment_hash)
        if preimage is None:
            return
        log.info("payments: forward %s/%d was fulfilled downstream before the restart's look: settled with the known preimage",
                 in_key[:16], in_id)  # fmt: skip
        store = self._store()
        await record(lambda: store.forward_settled(in_key, in_id, preimage), "the preimage a forward learned")
        self._settled_at_start.add(payment_hash)
        self._publish("payment.forwarded", payment_hash, fee_msat=row["in_msat"] - row["out_msat"])
        self._deciding.add(ref)  # settled here: a replay of the incoming HTLC leaves it alone
        self.spawn(self._call, partial(self.htlcs.fulfill, in_key, in_id, preimage), ref)

    async def _forward(self, htlc: IncomingHtlc, fwd: Forward) -> None:
        ref, add = (htlc.channel_key, htlc.add.id), htlc.add
        store = self._store()
        # recorded before the outgoing HTLC is offered (already there when this forward is decided again)
        # with the outgoing onion's key: a restart finds the outgoing HTLC even if a stop comes before its id is recorded
        # (on a full disk the incoming HTLC is held until it is: nothing is offered before)
        created_at = int(self._now())
        await record(lambda: store.add_forward(ref[0], ref[1], add.amount_msat, fwd.amount_msat, fwd.shared_secret, created_at,
                                               add.payment_hash, add.cltv_expiry, fwd.cltv_expiry, onion_key(fwd.onion)),
                     "a forward")  # fmt: skip
        # no outgoing HTLC of this forward is in a channel now: one offered before a restart was found at
        # start by the onion's key (derived for a forward recorded without it, whose incoming HTLC is
        # committed, as this one is) and the forward is "offered", so it never comes here
        try:
            out_key, out_id = await self.htlcs.add_htlc(fwd.short_channel_id, fwd.amount_msat, add.payment_hash, fwd.cltv_expiry,
                                                        fwd.onion, upstream_cltv_expiry=add.cltv_expiry, path_key=fwd.path_key)  # fmt: skip
        except HtlcRefused as exc:
            channel = self.htlcs.by_scid(fwd.short_channel_id)
            # A next channel that could not write the offer (a full disk: ours, not the peer's fault) reconnects
            # to resume from its disk, and refuses (offline, reestablishing) or fails to write again until
            # there is space: the forward looks again, less often each time, for as long as the incoming
            # HTLC's deadline allows (each decision checks it), instead of failing upstream.
            not_written = isinstance(exc, HtlcNotWritten) or ref in self._not_written
            limit = 0.0
            if channel is not None and not_written:
                limit = REPLAY_GRACE
            elif channel is not None and not channel.usable and ref not in self._waited:
                # the next peer went away between the decision and the offer: back soon only if reconnecting
                limit = self._next_channel_wait(fwd.short_channel_id)
            if limit > 0:
                delay = 0.0
                if not_written:
                    delay = self._not_written[ref] = min(2 * self._not_written.get(ref, AFTER_WRITE_FAILURE / 2), RETRY_MAX_DELAY)
                else:
                    self._waited.add(ref)
                log.info("payments: forward %s/%d waits for its next channel: %s", ref[0][:16], ref[1], exc)
                self.spawn(self._decide_later, htlc, fwd.short_channel_id, delay, limit)
                return
            log.info("payments: cannot forward %s/%d: %s", ref[0][:16], ref[1], exc)
            if fwd.path_key is not None:  # inside a blinded path: invalid_onion_blinding, whatever went wrong
                role: BlindedRole = "inner" if add.tlvs.get("blinded_path") is not None else "introduction"
                await self._fail_in_path(ref, role, fwd.shared_secret, add.onion_routing_packet, str(exc))
                return
            reason = create_failure_onion(fwd.shared_secret, TemporaryChannelFailure())
            await record(lambda: store.forward_failed(ref[0], ref[1], reason), "a forward's failure")
            await self._fail(ref, reason, str(exc))
            return
        self._not_written.pop(ref, None)
        self._forwards[(out_key, out_id)] = (ref[0], ref[1], fwd.shared_secret, fwd.onion)
        await record(lambda: store.forward_out(ref[0], ref[1], out_key, out_id), "a forward's outgoing HTLC")
        early = self._early.pop((out_key, out_id), None)
        if early is not None:
            self._forwards.pop((out_key, out_id))
            forward = (ref[0], ref[1], fwd.shared_secret, fwd.onion)
            if early.local_error is None or early.on_chain or not await self._offer_again(forward, out_key):
                await self._forward_back(forward, early, (out_key, out_id))

    async def _forward_back(self, forward: tuple[str, int, bytes, bytes], result: OutgoingResult, out: tuple[str, int]) -> None:
        """The forward's outgoing HTLC ``out`` ended with ``result``: settle or fail the incoming one, stored first."""
        in_key, in_id, secret, onion = forward
        ref = (in_key, in_id)
        store = self._store()
        preimage = result.preimage
        if preimage is not None:
            # on disk before it goes upstream: a restart settles the incoming HTLC with it
            # (on a full disk the incoming HTLC is held until it is: the channel monitor keeps the preimage meanwhile)
            await record(lambda: store.forward_settled(in_key, in_id, preimage), "the preimage a forward learned")
            row = await trio.to_thread.run_sync(store.forward, in_key, in_id)
            fee = (row["in_msat"] - row["out_msat"]) if row else 0
            self._publish("payment.forwarded", hashlib.sha256(preimage).digest(), fee_msat=fee)
            await self._call(lambda: self.htlcs.fulfill(in_key, in_id, preimage), ref)
            return
        blinded = self._blinded_role_of(ref)
        if blinded is not None:  # inside a blinded path: what failed downstream is not passed on (BOLT 4)
            await self._fail_in_path(ref, blinded[0], secret, blinded[1], "the downstream HTLC failed", (out, result))
            return
        if result.reason is not None:
            reason = wrap_failure_onion(secret, result.reason)
        elif result.failure_code is not None:
            reason = create_failure_onion(secret, malformed_failure(result.failure_code, hashlib.sha256(onion).digest()))
        elif result.on_chain:
            reason = create_failure_onion(secret, PermanentChannelFailure())  # the next channel is closed
        else:
            reason = create_failure_onion(secret, TemporaryChannelFailure())
        # on disk before it goes upstream: a restart sends the same failure, not a guess
        await record(lambda: store.forward_failed(in_key, in_id, reason), "a forward's failure")
        await self._failure_recorded(out, result)
        await self._fail(ref, reason, "the downstream HTLC failed")

    def _blinded_role_of(self, ref: tuple[str, int]) -> tuple[BlindedRole, bytes] | None:
        """Whether incoming HTLC ``ref`` (still committed) is inside a blinded path: its role there and its
        onion (None: it is not, or it is gone). Read from the HTLC itself, so also right after a restart."""
        htlc = next((h for h in self.htlcs.pending_incoming() if (h.channel_key, h.add.id) == ref), None)
        if htlc is None:
            return None
        add = htlc.add
        role = blinded_role(self.node.key.secret, add.onion_routing_packet, add.payment_hash, add.tlvs.get("blinded_path"))
        return None if role is None else (role, add.onion_routing_packet)

    async def _fail_in_path(self, ref: tuple[str, int], role: BlindedRole, secret: bytes, onion: bytes, why: str,
                            downstream: tuple[tuple[str, int], OutgoingResult] | None = None) -> None:  # fmt: skip
        """Fail incoming HTLC ``ref`` of a blinded forward with ``invalid_onion_blinding``: recorded first
        (the introduction node's failure onion, to send the same after a restart), then sent.
        ``downstream``: the outgoing HTLC whose failure this is (the channel app may forget it once recorded)."""
        store = self._store()
        action = blinded_failure(role, secret, onion, why)
        log.info("payments: failing blinded forward %s/%d with invalid_onion_blinding: %s", ref[0][:16], ref[1], why)
        if isinstance(action, FailOnion):
            reason = action.reason
            await record(lambda: store.forward_failed(ref[0], ref[1], reason), "a forward's failure")
        else:
            await record(lambda: store.forward_status(ref[0], ref[1], "failed"), "a forward's failure")
        if downstream is not None:
            await self._failure_recorded(*downstream)
        if isinstance(action, FailOnion):  # (an introduction node's: after a random delay)
            await self._fail(ref, action.reason, why, True)
            return
        await self._call(lambda: self.htlcs.fail_malformed(ref[0], ref[1], action.sha256_of_onion, action.failure_code), ref)

    async def _resume_forward(self, htlc: IncomingHtlc, row: dict[str, Any]) -> None:
        """An incoming HTLC decided again (after a restart) whose forward we recorded: settle it with
        the preimage the forward learned, wait for its outgoing HTLC, or fail it back."""
        ref = (htlc.channel_key, htlc.add.id)
        secret = row["shared_secret"]
        # stored by the forward, our own invoice's, or one a channel monitor kept (learned while we were down)
        payment_hash = htlc.add.payment_hash
        preimage = row["preimage"] or self._known_preimage(payment_hash) or self.htlcs.known_preimage(payment_hash)
        if preimage is not None:
            await self._call(lambda: self.htlcs.fulfill(ref[0], ref[1], preimage), ref)
            return
        out = (row["out_channel"], row["out_htlc"])
        if row["status"] == "offered":
            if out in self._forwards:  # adopted at start: its result goes upstream when it comes
                return
            early = self._early.pop(out, None)
            if early is not None:
                await self._forward_back((ref[0], ref[1], secret, b""), early, out)
                return
            onion = next((h.add.onion_routing_packet for h in self.htlcs.offered() if (h.channel_key, h.add.id) == out), None)
            if onion is not None:
                self._forwards[out] = (ref[0], ref[1], secret, onion)
                return
        if row["status"] == "failed" and row["failure"]:
            await self._fail(ref, row["failure"], "the downstream HTLC failed (before a restart)")
            return
        kept = next((f for f in self.htlcs.failed_offered() if f.ref == out), None)
        if kept is not None:  # failed downstream, and the channel app kept the failure for us
            await self._forward_back((ref[0], ref[1], secret, b""), OutgoingResult(None, kept.reason, kept.failure_code), out)
            return
        # resolved while we were down without a preimage or failure we know: fail it back
        await self._forward_back((ref[0], ref[1], secret, b""), OutgoingResult(local_error="lost downstream"), out)

    async def _offer_again(self, forward: tuple[str, int, bytes, bytes], out_key: str) -> bool:
        """A forward's outgoing HTLC was dropped before any commitment held it (the next peer went
        away): decide the incoming HTLC again once the next channel is back (once per HTLC), if it
        may be waited for (:meth:`_next_channel_wait`); False: fail it back now."""
        ref = (forward[0], forward[1])
        htlc = next((h for h in self.htlcs.pending_incoming() if (h.channel_key, h.add.id) == ref), None)
        if htlc is None or ref in self._waited:
            return False
        scid = next((c.short_channel_id for c in self.htlcs.channels() if c.key == out_key), None)
        limit = self._next_channel_wait(scid) if scid is not None else 0.0
        if limit <= 0:
            return False
        log.info("payments: forward %s/%d was dropped with its next peer: offered again once it is back", ref[0][:16], ref[1])
        store = self._store()
        await record(lambda: store.forward_reset(*ref), "a forward to offer again")
        self._waited.add(ref)
        self.spawn(self._decide_later, htlc, scid, 0.0, limit)
        return True

    def _next_channel_wait(self, short_channel_id: int) -> float:
        """Seconds a forward may wait for its next channel ``short_channel_id``, not usable now, to come
        back before it is decided again (0: fail it back at once, ``temporary_channel_failure``).

        In our start's grace (:attr:`~.restart.Restarting.restarting`) the peer is most likely
        reconnecting to us: :data:`~.restart.REPLAY_GRACE`. Later, a connected peer whose channel
        is not usable is reestablishing it (or closing it, or quiescent): :data:`REESTABLISH_WAIT`.
        A peer that is not connected is not waited for: it may be gone for good, and the payer
        should not find out only after our grace (lnd and Core Lightning fail such a forward at once)."""
        if self.restarting:
            return REPLAY_GRACE
        channel = self.htlcs.by_scid(short_channel_id)
        peer = self.node.peers.get(channel.peer_id) if channel is not None else None
        return REESTABLISH_WAIT if peer is not None and peer.is_ready else 0.0
