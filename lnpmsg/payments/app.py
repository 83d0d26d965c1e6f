"""The payments app: invoices, paying, receiving and forwarding over the channel app (the trio shell).

Mount it after the chain and channel apps::

    node.mount(ChainApp(...)); node.mount(ChannelsApp(...))
    node.mount(PaymentsApp(data_dir / "payments"))

It plugs into the channel app's HTLC interface
(:class:`~lnpmsg.channels.htlc_hook.HtlcHook`): every incoming HTLC, once
irrevocably committed, goes through :func:`~lnpmsg.payments.htlcs.decide`
(peel the onion; settle, hold for MPP, fail, or forward by
``short_channel_id`` with our :class:`~lnpmsg.payments.htlcs.FeePolicy`);
resolutions of the HTLCs we offered come back to the payment or the forward
that made them. The store (:mod:`.store`) keeps invoices, payments and
forwards across restarts; at start every incoming HTLC still committed is
decided again, so none is left hanging.

Routes come from :func:`~lnpmsg.payments.plan.plan_payment` over our
channels, the invoice's route hints and the routing graph: ``graph`` if
given, else the gossip app's ``routing_graph`` when it has one.

Control calls (``payments.<call>``; the CLI's ``invoice``, ``pay``,
``decodepay``, ``listinvoices``, ``delinvoice``, ``listpayments``, ``listforwards``).
Events: ``invoice.created``, ``invoice.paid``, ``invoice.deleted``, ``payment.sent``,
``payment.failed``, ``payment.forwarded``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.channels.htlc_hook import HtlcHook, HtlcRefused, IncomingHtlc
from lnpmsg.payments.graph import ChannelGraphView, RoutingGraph
from lnpmsg.payments.htlcs import NEXT_CHANNEL_DOWN, FailMalformed, FailOnion, FeePolicy, Forward, HoldPart, InvoiceTerms, MppSets, Settle, decide
from lnpmsg.payments.onion import create_failure_onion, malformed_failure, wrap_failure_onion
from lnpmsg.payments.onion.failures import TemporaryChannelFailure
from lnpmsg.payments.paying import PAY_TIMEOUT, Paying
from lnpmsg.payments.policy import ChannelPolicies
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import OutgoingResult
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.payments.views import decode_invoice, new_invoice, route_hints, forward_view, invoice_view, payment_view
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.calls import ChainAppError
from lnpmsg.wire import Features

__all__ = ["PaymentEvent", "PaymentsApp"]

log = logging.getLogger(__name__)

#: seconds an invoice stays payable unless asked otherwise
DEFAULT_EXPIRY = 3600
#: seconds a restarted node waits for its peers before deciding the HTLCs it holds
REPLAY_GRACE = 30.0
_HRP = {"regtest": "bcrt", "testnet": "tb", "signet": "tbs", "bitcoin": "bc", "mainnet": "bc"}
#: the channel app's dev_addhtlc sends an all-zero onion: such an HTLC is left to dev_fulfill/dev_fail
#: (tests of channels without payments) for this long, then fails as malformed
DEV_HOLD_SECONDS = 600.0
_DEV_ONION = bytes(1366)
_INVALID_ONION_KEY = 0x8000 | 0x4000 | 6
#: what we offer in init: var_onion_optin, payment_secret, basic_mpp (optional bits; BOLT 9 assumes the
#: first two, and Electrum 4.3 sends a legacy hop payload to a node that does not set var_onion_optin)
_NODE_FEATURES = Features.from_bits([9, 15, 17])


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """An ``invoice.*`` / ``payment.*`` event."""

    topic: str
    payment_hash: bytes
    amount_msat: int = 0
    fee_msat: int = 0
    label: str = ""
    preimage: bytes = b""
    reason: str = ""


class PaymentsApp(Paying, App):
    """Invoices, payments and forwarding (see the module docs).

    Args:
        directory: the payments store.
        policy: our forwarding fee and ``cltv_expiry_delta`` when no announce app (``announce_app``) is
            mounted; with one, forwards meet the policy it announces for each channel
            (``lnpmsg setchannelfee``), and route hints carry the peer's own channel_update.
        graph: the routing graph to plan over (default: the gossip app's, if any).
        mpp_timeout: seconds a multi-part payment to us may take to arrive whole.
        now: wall clock for invoices and the scorer.
    """

    def __init__(self, directory: str | Path, *, channels_app: str = "channels", chain_app: str = "chain", announce_app: str = "announce",
                 policy: FeePolicy | None = None, graph: ChannelGraphView | None = None, mpp_timeout: float = 60.0,
                 now: Callable[[], float] = time.time) -> None:  # fmt: skip
        super().__init__("payments", handler_timeout=None, features=_NODE_FEATURES)
        self.directory = Path(directory)
        self.channels_app_name = channels_app
        self.chain_app_name = chain_app
        self.announce_app_name = announce_app
        self.policy = policy or FeePolicy()
        self.policies = ChannelPolicies(self._announce, self.policy)
        self._graph = graph
        self._now = now
        self.scorer = MissionControl()
        self.mpp = MppSets(mpp_timeout)
        self.store: PaymentsStore | None = None
        self._terms: dict[bytes, InvoiceTerms] = {}
        self._labels: dict[bytes, str] = {}
        self._incoming_in, self._incoming = trio.open_memory_channel[IncomingHtlc](math.inf)
        self._resolved_in, self._resolved = trio.open_memory_channel[tuple[str, int, OutgoingResult]](math.inf)
        #: our HTLCs in flight: (channel key, htlc id) -> where the result goes
        self._waiting: dict[tuple[str, int], trio.MemorySendChannel[OutgoingResult]] = {}
        self._early: dict[tuple[str, int], OutgoingResult] = {}
        #: forwards in flight: outgoing (key, id) -> (incoming key, id, shared secret, outgoing onion)
        self._forwards: dict[tuple[str, int], tuple[str, int, bytes, bytes]] = {}
        self._deciding: set[tuple[str, int]] = set()
        self._paying: set[bytes] = set()
        #: incoming HTLCs that waited once for their next channel to come up
        self._waited: set[tuple[str, int]] = set()
        #: payments a restart left pending, by hash -> payment id
        self._orphans: dict[bytes, int] = {}
        self._orphan_refs: dict[tuple[str, int], bytes] = {}
        #: outgoing (key, id) of a forward -> the incoming HTLC it answers and that HTLC's cltv_expiry
        self._upstream: dict[tuple[str, int], tuple[str, int, int]] = {}
        for call, fn in {
            "invoice": self.invoice, "pay": self.pay, "decodepay": self.decodepay, "listinvoices": self.listinvoices,
            "listpayments": self.listpayments, "listforwards": self.listforwards, "delinvoice": self.delinvoice,
        }.items():  # fmt: skip
            self.add_control_method(call, fn)

    # ------------------------------------------------------------ wiring

    @property
    def htlcs(self) -> HtlcHook:
        channels = self.node.apps.get(self.channels_app_name)
        if channels is None:
            raise AppError(f"the payments app needs the channels app {self.channels_app_name!r} mounted before it")
        return channels.htlcs  # type: ignore[attr-defined, no-any-return]

    @property
    def graph(self) -> ChannelGraphView:
        if self._graph is not None:
            return self._graph
        gossip = self.node.apps.get("gossip")
        graph = getattr(gossip, "routing_graph", None)
        return graph if graph is not None else RoutingGraph()

    def _announce(self) -> Any:
        """The app that announces our channels' policies (the announce app), if mounted."""
        app = self.node.apps.get(self.announce_app_name)
        return app if hasattr(app, "forwarding_policies") else None

    async def _height(self) -> int:
        return (await self.node.apps[self.chain_app_name].source.tip()).height  # type: ignore[attr-defined, no-any-return]

    def _network(self) -> str:
        return "bitcoin" if self.node.config.network == "mainnet" else self.node.config.network

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.store = await trio.to_thread.run_sync(PaymentsStore, self.directory)
        for row in await trio.to_thread.run_sync(self.store.invoices):
            self._remember(row)
        hook = self.htlcs
        hook.set_handler(self)
        try:
            await super().run(task_status=task_status)
        finally:
            hook.set_handler(None)
            self.store.close()
            self.store = None

    async def serve(self) -> None:
        self.spawn(self._resolve_loop)
        self.spawn(self._mpp_timer)
        self.spawn(self._replay)
        await self._orphaned_payments()
        async for htlc in self._incoming:
            await self._on_incoming(htlc)

    async def _orphaned_payments(self) -> None:
        """Payments left pending by a restart: complete when a preimage still comes back for one of
        their HTLCs; with no HTLC of theirs left in flight, ``interrupted`` (the outcome is unknown)."""
        store = self._store()
        pending = [p for p in await trio.to_thread.run_sync(store.payments) if p["status"] == "pending"]
        if not pending:
            return
        in_flight: dict[bytes, set[tuple[str, int]]] = {}
        for c in self.htlcs.channels():
            for h in self.htlcs.outgoing(c.key):
                in_flight.setdefault(h.add.payment_hash, set()).add((h.channel_key, h.add.id))
        for p in pending:
            if p["payment_hash"] in in_flight:
                self._orphans[p["payment_hash"]] = p["id"]
                for ref in in_flight[p["payment_hash"]]:
                    self._orphan_refs[ref] = p["payment_hash"]
                for ref in [r for r in in_flight[p["payment_hash"]] if r in self._early]:  # resolved before we looked
                    await self._orphan_resolved(ref, self._early.pop(ref))
            else:
                await trio.to_thread.run_sync(lambda p=p: store.update_payment(
                    p["id"], status="interrupted", error="the node restarted during the payment and no HTLC of it is left"))  # fmt: skip

    async def _orphan_resolved(self, ref: tuple[str, int], result: OutgoingResult) -> None:
        """An HTLC of a payment a restart left pending ended: a preimage completes the payment;
        when its last HTLC failed, the payment failed (the failure onion's secrets died with the process)."""
        payment_hash = self._orphan_refs.pop(ref)
        payment_id = self._orphans.get(payment_hash)
        if payment_id is None:
            return
        store = self._store()
        if result.preimage is not None:
            del self._orphans[payment_hash]
            await trio.to_thread.run_sync(lambda: store.update_payment(payment_id, status="complete", preimage=result.preimage,
                                                                       completed_at=int(self._now())))  # fmt: skip
            self._publish("payment.sent", payment_hash, preimage=result.preimage)
        elif payment_hash not in self._orphan_refs.values():
            del self._orphans[payment_hash]
            error = "failed after a restart of this node (the failure could not be read)"
            await trio.to_thread.run_sync(lambda: store.update_payment(payment_id, status="failed", error=error, completed_at=int(self._now())))
            self._publish("payment.failed", payment_hash, reason=error)

    async def _replay(self) -> None:
        """After a restart: decide every committed incoming HTLC again (forwards already offered are
        found in the store). First give the peers a moment to reconnect, so a forward finds its
        next channel up rather than failing back at once."""
        pending = self.htlcs.pending_incoming()
        if not pending:
            return
        log.info("payments: %d incoming HTLC(s) to decide after the restart", len(pending))
        with trio.move_on_after(REPLAY_GRACE):
            while not all(c.usable for c in self.htlcs.channels()):
                await trio.sleep(0.2)
        for htlc in self.htlcs.pending_incoming():
            self._incoming_in.send_nowait(htlc)

    def _remember(self, row: dict[str, Any]) -> None:
        self._terms[row["payment_hash"]] = InvoiceTerms(
            row["payment_hash"], row["preimage"], row["payment_secret"], row["amount_msat"], row["min_final_cltv"],
            row["expires_at"], paid=row["status"] == "paid",
        )  # fmt: skip
        self._labels[row["payment_hash"]] = row["label"]

    def _store(self) -> PaymentsStore:
        if self.store is None:
            raise AppError("the payments app is not running")
        return self.store

    # ------------------------------------------------------------ the channel app's calls (inside its actor: queue only)

    def htlc_incoming(self, htlc: IncomingHtlc) -> None:
        self._incoming_in.send_nowait(htlc)

    def htlc_resolved(self, channel_key: str, htlc_id: int, preimage: bytes | None, reason: bytes | None,
                      failure_code: int | None) -> None:  # fmt: skip
        local = None if preimage or reason is not None or failure_code is not None else "dropped before it was committed"
        self._resolved_in.send_nowait((channel_key, htlc_id, OutgoingResult(preimage, reason, failure_code, local)))

    def upstream_of(self, channel_key: str, htlc_id: int) -> tuple[str, int, int] | None:
        """For an HTLC we offered as a forward: the incoming HTLC (channel key, id, cltv_expiry) it answers.

        The channel layer's deadline: the upstream HTLC must be settled (with a preimage learned on
        chain) or failed before that expiry, whatever the downstream peer does."""
        return self._upstream.get((channel_key, htlc_id))

    async def _resolve_loop(self) -> None:
        async for key, htlc_id, result in self._resolved:
            ref = (key, htlc_id)
            forward = self._forwards.pop(ref, None)
            self._upstream.pop(ref, None)
            if forward is not None:
                await self._forward_back(forward, result)
                continue
            waiter = self._waiting.pop(ref, None)
            if waiter is not None:
                waiter.send_nowait(result)
            elif ref in self._orphan_refs:
                await self._orphan_resolved(ref, result)
            else:
                self._early[ref] = result
                while len(self._early) > 1000:
                    self._early.pop(next(iter(self._early)))

    # ------------------------------------------------------------ incoming HTLCs

    async def _on_incoming(self, htlc: IncomingHtlc) -> None:
        ref = (htlc.channel_key, htlc.add.id)
        if ref in self._deciding:
            return
        self._deciding.add(ref)
        add = htlc.add
        known = await trio.to_thread.run_sync(self._store().forward, *ref)
        if known is not None:
            await self._resume_forward(htlc, known)
            return
        if add.onion_routing_packet == _DEV_ONION:
            log.warning("payments: HTLC %s/%d has an all-zero onion (lnpmsg's dev_addhtlc): left to dev_fulfill/dev_fail "
                        "for %g s", ref[0][:16], ref[1], DEV_HOLD_SECONDS)  # fmt: skip
            self.spawn(self._expire_dev_htlc, ref, hashlib.sha256(_DEV_ONION).digest())
            return
        height = await self._height()
        channels = {c.short_channel_id: c for c in self.htlcs.channels()}

        def next_channel(scid: int) -> tuple[bool, int] | None:
            c = channels.get(scid)
            return None if c is None else (c.usable, c.htlc_minimum_msat)

        action = decide(
            node_secret=self.node.key.secret, amount_msat=add.amount_msat, payment_hash=add.payment_hash,
            cltv_expiry=add.cltv_expiry, onion=add.onion_routing_packet, height=height, now=self._now(),
            invoice=self._terms.get, next_channel=next_channel, policy=self.policy, policies=self.policies.forwarding,
        )  # fmt: skip
        if isinstance(action, FailOnion) and action.why == NEXT_CHANNEL_DOWN and ref not in self._waited:
            # the next peer may be reconnecting (after a restart of either side): give it a moment
            self._waited.add(ref)
            self.spawn(self._decide_later, htlc)
        elif isinstance(action, Settle):
            await self._settle([ref], add.payment_hash, action.preimage, action.amount_msat)
        elif isinstance(action, HoldPart):
            complete = self.mpp.add(ref, action, self._now())
            if isinstance(complete, FailOnion):
                await self._fail(ref, complete.reason, complete.why)
            elif complete is not None:
                total = action.total_msat
                await self._settle(complete, add.payment_hash, self._terms[add.payment_hash].preimage, total)
        elif isinstance(action, FailOnion):
            log.info("payments: failing HTLC %s/%d: %s", ref[0][:16], ref[1], action.why)
            await self._fail(ref, action.reason, action.why)
        elif isinstance(action, FailMalformed):
            log.info("payments: HTLC %s/%d has a malformed onion: %s", ref[0][:16], ref[1], action.why)
            await self._call(self.htlcs.fail_malformed(ref[0], ref[1], action.sha256_of_onion, action.failure_code), ref)
        elif isinstance(action, Forward):
            await self._forward(ref, add.amount_msat, add.payment_hash, add.cltv_expiry, action)

    async def _decide_later(self, htlc: IncomingHtlc) -> None:
        with trio.move_on_after(REPLAY_GRACE):
            while not all(c.usable for c in self.htlcs.channels()):
                await trio.sleep(0.2)
        self._deciding.discard((htlc.channel_key, htlc.add.id))
        self._incoming_in.send_nowait(htlc)

    async def _expire_dev_htlc(self, ref: tuple[str, int], onion_hash: bytes) -> None:
        """A developer's HTLC nobody settled in time fails as malformed (invalid_onion_key): never held forever."""
        await trio.sleep(DEV_HOLD_SECONDS)
        if any((h.channel_key, h.add.id) == ref for h in self.htlcs.pending_incoming()):
            await self._call(self.htlcs.fail_malformed(ref[0], ref[1], onion_hash, _INVALID_ONION_KEY), ref)
        self._deciding.discard(ref)

    async def _call(self, awaitable: Any, ref: tuple[str, int]) -> None:
        try:
            await awaitable
        except HtlcRefused as exc:
            log.warning("payments: cannot resolve HTLC %s/%d now: %s", ref[0][:16], ref[1], exc)
        finally:
            self._deciding.discard(ref)

    async def _fail(self, ref: tuple[str, int], reason: bytes, why: str) -> None:
        await self._call(self.htlcs.fail(ref[0], ref[1], reason), ref)

    async def _settle(self, refs: list[tuple[str, int]], payment_hash: bytes, preimage: bytes, amount_msat: int) -> None:
        # the invoice is paid on disk before the preimage leaves
        await trio.to_thread.run_sync(self._store().mark_paid, payment_hash, amount_msat, int(self._now()))
        terms = self._terms.get(payment_hash)
        if terms is not None and not terms.paid:
            self._terms[payment_hash] = InvoiceTerms(terms.payment_hash, terms.preimage, terms.payment_secret, terms.amount_msat,
                                                     terms.min_final_cltv, terms.expires_at, paid=True)  # fmt: skip
            self._publish("invoice.paid", payment_hash, amount_msat=amount_msat, label=self._labels.get(payment_hash, ""))
            log.info("payments: invoice %s paid (%d msat)", self._labels.get(payment_hash, ""), amount_msat)
        for ref in refs:
            await self._call(self.htlcs.fulfill(ref[0], ref[1], preimage), ref)

    async def _mpp_timer(self) -> None:
        while True:
            await trio.sleep(1.0)
            for ref, failure in self.mpp.expire(self._now()):
                await self._fail(ref, failure.reason, failure.why)

    # ------------------------------------------------------------ forwarding

    async def _forward(self, ref: tuple[str, int], in_msat: int, payment_hash: bytes, in_cltv: int, fwd: Forward) -> None:
        store = self._store()
        await trio.to_thread.run_sync(store.add_forward, ref[0], ref[1], in_msat, fwd.amount_msat, fwd.shared_secret, int(self._now()),
                                     payment_hash, in_cltv, fwd.cltv_expiry)  # fmt: skip
        try:
            out_key, out_id = await self.htlcs.add_htlc(fwd.short_channel_id, fwd.amount_msat, payment_hash, fwd.cltv_expiry, fwd.onion)
        except HtlcRefused as exc:
            log.info("payments: cannot forward %s/%d: %s", ref[0][:16], ref[1], exc)
            await trio.to_thread.run_sync(store.forward_status, ref[0], ref[1], "failed")
            await self._fail(ref, create_failure_onion(fwd.shared_secret, TemporaryChannelFailure()), str(exc))
            return
        self._forwards[(out_key, out_id)] = (ref[0], ref[1], fwd.shared_secret, fwd.onion)
        self._upstream[(out_key, out_id)] = (ref[0], ref[1], in_cltv)
        await trio.to_thread.run_sync(store.forward_out, ref[0], ref[1], out_key, out_id)
        early = self._early.pop((out_key, out_id), None)
        if early is not None:
            self._forwards.pop((out_key, out_id))
            await self._forward_back((ref[0], ref[1], fwd.shared_secret, fwd.onion), early)

    async def _forward_back(self, forward: tuple[str, int, bytes, bytes], result: OutgoingResult) -> None:
        in_key, in_id, secret, onion = forward
        ref = (in_key, in_id)
        store = self._store()
        if result.preimage is not None:
            await trio.to_thread.run_sync(store.forward_status, in_key, in_id, "settled")
            row = await trio.to_thread.run_sync(store.forward, in_key, in_id)
            fee = (row["in_msat"] - row["out_msat"]) if row else 0
            self._publish("payment.forwarded", hashlib.sha256(result.preimage).digest(), fee_msat=fee)
            await self._call(self.htlcs.fulfill(in_key, in_id, result.preimage), ref)
            return
        await trio.to_thread.run_sync(store.forward_status, in_key, in_id, "failed")
        if result.reason is not None:
            reason = wrap_failure_onion(secret, result.reason)
        elif result.failure_code is not None:
            reason = create_failure_onion(secret, malformed_failure(result.failure_code, hashlib.sha256(onion).digest()))
        else:
            reason = create_failure_onion(secret, TemporaryChannelFailure())
        await self._fail(ref, reason, "the downstream HTLC failed")

    async def _resume_forward(self, htlc: IncomingHtlc, row: dict[str, Any]) -> None:
        """After a restart: a forward we recorded. Wait for its outgoing HTLC, or fail back if it never left."""
        ref = (htlc.channel_key, htlc.add.id)
        secret = row["shared_secret"]
        done = self._early.pop((row["out_channel"], row["out_htlc"]), None) if row["out_htlc"] is not None else None
        if done is not None:
            # the outgoing HTLC was resolved (after the restart) before we got here: its preimage or failure goes back
            await self._forward_back((ref[0], ref[1], secret, b""), done)
            return
        if row["status"] == "offered" and row["out_htlc"] is not None and row["out_htlc"] in self.htlcs.outgoing_ids(row["out_channel"]):
            out = (row["out_channel"], row["out_htlc"])
            self._forwards[out] = (ref[0], ref[1], secret, b"")
            self._upstream[out] = (ref[0], ref[1], htlc.add.cltv_expiry)
            early = self._early.pop(out, None)
            if early is not None:
                self._forwards.pop(out)
                await self._forward_back((ref[0], ref[1], secret, b""), early)
            return
        preimage = await trio.to_thread.run_sync(self._known_preimage, htlc.add.payment_hash)
        if preimage is not None:
            await self._call(self.htlcs.fulfill(ref[0], ref[1], preimage), ref)
            return
        # never offered, or resolved while we were down without a preimage we know: fail it back
        await self._forward_back((ref[0], ref[1], secret, b""), OutgoingResult(local_error="lost downstream"))

    def _known_preimage(self, payment_hash: bytes) -> bytes | None:
        terms = self._terms.get(payment_hash)
        return terms.preimage if terms is not None else None

    # ------------------------------------------------------------ control calls

    async def invoice(self, amount_msat: int | None, label: str, description: str, expiry: int = DEFAULT_EXPIRY,
                      preimage: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Make an invoice for AMOUNT_MSAT (None: any amount) labelled LABEL, with route hints for our private channels."""
        if amount_msat is not None and (not isinstance(amount_msat, int) or amount_msat <= 0):
            raise ParamsError(f"amount_msat must be a positive integer (or null for any amount), got {amount_msat!r}")
        if not isinstance(label, str) or not label:
            raise ParamsError("label must be a non-empty string")
        if not isinstance(expiry, int) or expiry <= 0:
            raise ParamsError(f"expiry must be a positive number of seconds, got {expiry!r}")
        now = int(self._now())
        text, row = new_invoice(self.node.key.secret, _HRP.get(self._network(), "bcrt"), amount_msat, label, description, expiry, now,
                                route_hints(self.htlcs.channels(), self.policy, self.policies.of_peers(self.htlcs.channels())), preimage)  # fmt: skip
        payment_hash, payment_secret = row["payment_hash"], row["payment_secret"]
        try:
            await trio.to_thread.run_sync(lambda: self._store().add_invoice(**row))
        except sqlite3.IntegrityError:
            raise ParamsError(f"an invoice labelled {label!r} (or with this preimage) exists already") from None
        self._remember({**row, "status": "unpaid"})
        self._publish("invoice.created", payment_hash, amount_msat=amount_msat or 0, label=label)
        return {"bolt11": text, "payment_hash": payment_hash.hex(), "payment_secret": payment_secret.hex(),
                "expires_at": now + expiry, "label": label}  # fmt: skip

    async def decodepay(self, bolt11: str) -> dict[str, Any]:
        """Decode and verify a BOLT-11 invoice."""
        return decode_invoice(bolt11).to_dict()

    async def pay(self, bolt11: str, amount_msat: int | None = None, timeout: float = PAY_TIMEOUT) -> dict[str, Any]:
        """Pay a BOLT-11 invoice; returns once it is paid (preimage) or failed (the error says which hop and why).

        New parts leave for ``timeout`` seconds; a payment still in flight when the call stops
        waiting goes on (``listpayments`` shows how it ends)."""
        return await self._pay_invoice(bolt11, amount_msat, timeout)

    async def listinvoices(self, label: str | None = None) -> dict[str, Any]:
        """Our invoices (status unpaid, paid or expired)."""
        rows = await trio.to_thread.run_sync(self._store().invoices, label)
        return {"invoices": [invoice_view(r, self._now()) for r in rows]}

    async def delinvoice(self, label: str) -> dict[str, Any]:
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
        if self.mpp.holds(row["payment_hash"]):
            raise ChainAppError(f"parts of a payment of {label!r} are held: try again once they settle or time out",
                                {"error": "InvoiceBusy", "label": label})  # fmt: skip
        deleted = await trio.to_thread.run_sync(store.delete_invoice, label)
        if deleted is None:  # paid in the meantime
            raise ChainAppError(f"the invoice {label!r} is paid: kept as the record of the payment", {"error": "InvoicePaid", "label": label})
        self._terms.pop(deleted["payment_hash"], None)
        self._labels.pop(deleted["payment_hash"], None)
        log.info("payments: invoice %s deleted", label)
        self._publish("invoice.deleted", deleted["payment_hash"], amount_msat=deleted["amount_msat"] or 0, label=label)
        return {"deleted": invoice_view(deleted, self._now())}

    async def listpayments(self, payment_hash: str | None = None) -> dict[str, Any]:
        """Our payments: status, amount, fee, route(s), preimage."""
        rows = await trio.to_thread.run_sync(self._store().payments, bytes.fromhex(payment_hash) if payment_hash else None)
        return {"payments": [payment_view(r) for r in rows]}

    async def listforwards(self) -> dict[str, Any]:
        """HTLCs we forwarded: in and out channels, amounts, expiries, status."""
        rows = await trio.to_thread.run_sync(self._store().forwards)
        return {"forwards": [forward_view(r) for r in rows]}

    def _publish(self, topic: str, payment_hash: bytes, **fields: Any) -> None:
        self.node.events.publish(PaymentEvent(topic, payment_hash, **fields))
