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
that made them. The store (:mod:`.store`) keeps invoices, payments (with
each part's route and onion secrets) and forwards (with the preimage they
learned) across restarts. At start the forwards still offered wait for
their outgoing HTLCs again (one whose outgoing HTLC was fulfilled and left
its channel before the app looked is settled with the preimage the channel
monitor kept, never offered again), the payments left pending are adopted
with their parts in flight (:mod:`.orphans`: a preimage that comes back
completes one, a failure is read and attributed), the preimages the
channels hold for our HTLCs are read again, and so are the failures the
channel app kept for HTLCs of ours that left their channels while we were
not listening or before we recorded what they meant (the channel app
forgets each once our store has it), and every incoming HTLC still
committed is decided again, so none is left hanging (:mod:`.restart`). A resolution whose
channel is down (a preimage or a failure to send upstream) waits for the channel rather than
being lost. A forward whose next channel is down waits for it in our start's grace or while
its peer reestablishes it; a forward whose next peer is not connected otherwise fails back at
once (``temporary_channel_failure``, :mod:`.forwarding`).
On a full disk nothing is sent that the store could not record: the write
is tried again until it lands (:mod:`.recording`), and a settlement or an
offer the channel could not write is made again once the channel is back;
the HTLCs paying an invoice that cannot be marked paid are held until their
deadline, then all fail back together (:mod:`.receiving`). A hold invoice's payment is held until
``settleinvoice`` or ``cancelinvoice`` (or that same deadline), also across a restart
(:mod:`.holding`). Keysends (bLIP 3) are sent, and received when ``accept_keysend`` (:mod:`.keysend`);
payments into blinded paths, ours too (BOLT 4 route blinding, :mod:`.blinded_app`).

Routes come from :func:`~lnpmsg.payments.plan.plan_payment` over our
channels, the invoice's route hints and the routing graph: ``graph`` if
given, else the gossip app's ``routing_graph`` when it has one.

Control calls (``payments.<call>``; the CLI's ``invoice``, ``pay``, ``decodepay``, ``listinvoices``, ``delinvoice``,
``listpayments``, ``listforwards`` (:mod:`.invoice_calls`),
``settleinvoice``, ``cancelinvoice``, ``keysend``, ``getroute`` (:mod:`.getroute`),
``blindedpath``, ``payblinded`` (:mod:`.blinded_app`)).
Events: ``invoice.created``, ``invoice.accepted``, ``invoice.paid``, ``invoice.cancelled``,
``invoice.deleted``, ``payment.sent``, ``payment.failed``, ``payment.forwarded``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.channels.htlc_hook import HtlcHook, HtlcNotWritten, HtlcRefused, IncomingHtlc
from lnpmsg.payments.blinded_app import BlindedPayments
from lnpmsg.payments.events import PaymentEvent
from lnpmsg.payments.forwarding import Forwarding
from lnpmsg.payments.getroute import RouteQueries
from lnpmsg.payments.graph import ChannelGraphView, RoutingGraph
from lnpmsg.payments.holding import HeldSet, Holding
from lnpmsg.payments.invoice_calls import InvoiceCalls
from lnpmsg.payments.onion.blinding import DEFAULT_PATH_LENGTH
from lnpmsg.payments.htlcs import NEXT_CHANNEL_DOWN, FailMalformed, FailOnion, FeePolicy, Forward, HoldPart, InvoiceTerms, MppSets, Settle, Spontaneous, decide
from lnpmsg.payments.keysend import KEYSEND_FEATURE_BIT, Keysending
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.orphans import Orphans
from lnpmsg.payments.paying import Paying
from lnpmsg.payments.policy import ChannelPolicies
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import OutgoingResult
from lnpmsg.payments.receiving import Receiving
from lnpmsg.payments.restart import REPLAY_GRACE, Restarting
from lnpmsg.payments.recording import RETRY_MAX_DELAY, RETRY_MIN_DELAY, record
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV
from lnpmsg.wire import Features

__all__ = ["PaymentEvent", "PaymentsApp"]

log = logging.getLogger(__name__)

#: seconds between looks at a channel an HTLC's resolution waits for
_CHANNEL_POLL = 0.2
#: the channel app's dev_addhtlc sends an all-zero onion: such an HTLC is left to dev_fulfill/dev_fail
#: (tests of channels without payments) for this long, then fails as malformed
DEV_HOLD_SECONDS = 600.0
_DEV_ONION = bytes(1366)
_INVALID_ONION_KEY = 0x8000 | 0x4000 | 6
#: what we offer in init: var_onion_optin, payment_secret, basic_mpp (optional bits; BOLT 9 assumes the
#: first two, and Electrum 4.3 sends a legacy hop payload to a node that does not set var_onion_optin)
_NODE_FEATURES = Features.from_bits([9, 15, 17])


class PaymentsApp(Restarting, InvoiceCalls, Forwarding, Paying, Receiving, Holding, Keysending, BlindedPayments, RouteQueries, App):
    """Invoices, payments and forwarding (see the module docs).

    Args:
        directory: the payments store.
        policy: our forwarding fee and ``cltv_expiry_delta`` when no announce app (``announce_app``) is
            mounted; with one, forwards meet the policy it announces for each channel
            (``lnpmsg setchannelfee``), and route hints carry the peer's own channel_update.
        graph: the routing graph to plan over (default: the gossip app's, if any).
        mpp_timeout: seconds a multi-part payment to us may take to arrive whole.
        accept_keysend: settle keysends to us (bLIP 3; announced in our node_announcement), else refuse them.
        blinded_path_length: the hops the blinded paths to us (``blindedpath``) have at least: shorter ones end
            with dummy hops of ours (0 or 1: none).
        now: wall clock for invoices and the scorer.
    """

    def __init__(self, directory: str | Path, *, channels_app: str = "channels", chain_app: str = "chain", announce_app: str = "announce",
                 policy: FeePolicy | None = None, graph: ChannelGraphView | None = None, mpp_timeout: float = 60.0,
                 accept_keysend: bool = False, blinded_path_length: int = DEFAULT_PATH_LENGTH,
                 now: Callable[[], float] = time.time) -> None:  # fmt: skip
        super().__init__("payments", handler_timeout=None, features=_NODE_FEATURES)
        self.blinded_path_length = blinded_path_length
        self.accept_keysend = accept_keysend
        self.node_announcement_features = Features.from_bits([KEYSEND_FEATURE_BIT]) if accept_keysend else Features()
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
        #: outgoing HTLCs a restart found of forwards already failed or settled: their results are only released
        self._finished: set[tuple[str, int]] = set()
        #: payment hashes of forwards a restart settled with a preimage a channel knew, their outgoing HTLC
        #: gone before it looked (:meth:`_settle_if_known`): the result of that HTLC, queued before the
        #: look (one of the first ``_queued_before_start``), is only released
        self._settled_at_start: set[bytes] = set()
        self._queued_before_start = 0
        #: forwards in flight: outgoing (key, id) -> (incoming key, id, shared secret, outgoing onion)
        self._forwards: dict[tuple[str, int], tuple[str, int, bytes, bytes]] = {}
        self._deciding: set[tuple[str, int]] = set()
        self._paying: set[bytes] = set()
        #: incoming HTLCs that waited once for their next channel to come up
        self._waited: set[tuple[str, int]] = set()
        #: forwards whose next channel could not write the offer (a full disk): the next wait's delay
        self._not_written: dict[tuple[str, int], float] = {}
        #: payments a restart left pending, with their parts in flight
        self._orphans = Orphans(self.scorer)
        #: accepted hold invoices' HTLCs, by payment hash (:mod:`.holding`); one lock settles or cancels them
        self._held: dict[bytes, HeldSet] = {}
        self._hold_lock = trio.Lock()
        self._held_known = trio.Event()  # (set once a restart's held HTLCs are found)
        for call, fn in {
            "invoice": self.invoice, "pay": self.pay, "decodepay": self.decodepay, "listinvoices": self.listinvoices,
            "listpayments": self.listpayments, "listforwards": self.listforwards, "delinvoice": self.delinvoice, "blindedpath": self.blindedpath,
            "settleinvoice": self.settleinvoice, "cancelinvoice": self.cancelinvoice, "keysend": self.keysend, "getroute": self.getroute, "payblinded": self.payblinded,
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
        self._held_known = trio.Event()
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
        self.restarting = True  # (our start's grace, until _replay ends it)
        await self._start_up()
        self.spawn(self._resolve_loop)
        self.spawn(self._mpp_timer)
        self.spawn(self._hold_timer)
        self.spawn(self._replay)
        async for htlc in self._incoming:
            await self._on_incoming(htlc)

    def _remember(self, row: dict[str, Any]) -> None:
        if row["status"] == "cancelled":  # (a payment of it fails as for an unknown hash)
            return
        self._terms[row["payment_hash"]] = InvoiceTerms(
            row["payment_hash"], row["preimage"], row["payment_secret"], row["amount_msat"], row["min_final_cltv"],
            row["expires_at"], paid=row["status"] == "paid", hold=bool(row["hold"]) and row["status"] != "paid", keysend=bool(row.get("keysend")),
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

    def htlc_resolved_on_chain(self, channel_key: str, htlc_id: int, preimage: bytes | None) -> None:
        """An HTLC we offered ended on chain: a forward's incoming HTLC is settled with the revealed
        preimage or failed (``permanent_channel_failure``) at once, long before its own expiry."""
        result = OutgoingResult(preimage, local_error=None if preimage else "timed out there", on_chain=True)
        self._resolved_in.send_nowait((channel_key, htlc_id, result))

    async def _resolve_loop(self) -> None:
        async for key, htlc_id, result in self._resolved:
            ref = (key, htlc_id)
            before_start = self._queued_before_start > 0  # came for an HTLC of before the start-up's look
            if before_start:
                self._queued_before_start -= 1
            elif self._settled_at_start:
                self._settled_at_start.clear()  # their results are read
            forward = self._forwards.pop(ref, None)
            if forward is not None:
                self._deciding.add((forward[0], forward[1]))  # resolved here: a replay of the incoming HTLC waits
                if result.local_error is not None and not result.on_chain and await self._offer_again(forward, key):
                    continue
                await self._forward_back(forward, result, ref)
                continue
            waiter = self._waiting.pop(ref, None)
            if waiter is not None:
                waiter.send_nowait(result)
            elif self._orphans.owns(ref):
                await self._orphan_resolved(ref, result)
            elif before_start and result.preimage is not None and hashlib.sha256(result.preimage).digest() in self._settled_at_start:
                # the outgoing HTLC of a forward the start-up settled with this preimage (its id never recorded); one
                # offered since (the same payment hash) has its result come after the look: it may be early for its forward
                pass
            elif ref in self._finished:
                # its forward failed or settled before the restart: nothing waits for it, and what it meant is on disk
                # (a preimage too: the forward's row, or a channel monitor, has it)
                self._finished.discard(ref)
                await self._failure_recorded(ref, result)
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
        if known is not None and known["status"] != "offering":
            await self._resume_forward(htlc, known)
            return
        # (a forward still "offering" has no outgoing HTLC in a channel: one offered before a restart was found
        # by its onion at start and is "offered", one fulfilled and gone before that look was settled then with
        # the preimage a channel monitor kept and is "settled"; this one is decided again)
        if add.onion_routing_packet == _DEV_ONION:
            log.warning("payments: HTLC %s/%d has an all-zero onion (lnpmsg's dev_addhtlc): left to dev_fulfill/dev_fail "
                        "for %g s", ref[0][:16], ref[1], DEV_HOLD_SECONDS)  # fmt: skip
            self.spawn(self._expire_dev_htlc, ref, hashlib.sha256(_DEV_ONION).digest())
            return
        height = await self._height()
        channels = {scid: c for c in self.htlcs.channels() for scid in (c.short_channel_id, *c.scids)}  # (aliases too: BOLT 2)

        asked: list[int] = []

        def next_channel(scid: int) -> tuple[bool, int] | None:
            asked.append(scid)
            c = channels.get(scid)
            return None if c is None else (c.usable, c.htlc_minimum_msat)

        def peer_channel(node_id: bytes) -> int | None:
            """Our channel to ``node_id`` that can send the most now (a blinded hop may name the next node, not a channel)."""
            to_peer = [c for c in channels.values() if c.peer_id == node_id]
            return max(to_peer, key=lambda c: (c.usable, c.spendable_msat)).short_channel_id if to_peer else None

        action = decide(
            node_secret=self.node.key.secret, amount_msat=add.amount_msat, payment_hash=add.payment_hash,
            cltv_expiry=add.cltv_expiry, onion=add.onion_routing_packet, height=height, now=self._now(),
            invoice=self._terms.get, next_channel=next_channel, policy=self.policy, policies=self.policies.forwarding,
            keysend_min_final_cltv=DEFAULT_MIN_FINAL_CLTV if self.accept_keysend else None, path_key=add.tlvs.get("blinded_path"),
            peer_channel=peer_channel,
        )  # fmt: skip
        limit = 0.0  # how long to wait for the next channel, not usable now (0: decided as it is)
        if isinstance(action, FailOnion) and action.why == NEXT_CHANNEL_DOWN:
            if ref in self._not_written:  # (our disk: the channel reconnects to resume from it, however long it takes)
                limit = REPLAY_GRACE
            elif ref not in self._waited:  # (after one wait it fails back: BOLT 4 temporary_channel_failure)
                limit = self._next_channel_wait(asked[-1] if asked else 0)
        wait = limit > 0
        if known is not None and not isinstance(action, Forward) and not wait:
            # a recorded forward decided otherwise now: its failure is on disk before it goes upstream
            # (a restart sends the same one, not a guess); an onion we cannot read has no failure onion
            failure = action.reason if isinstance(action, FailOnion) else None
            store = self._store()
            if failure is not None:
                await record(lambda: store.forward_failed(ref[0], ref[1], failure), "a forward's failure")
            else:
                await record(lambda: store.forward_status(ref[0], ref[1], "failed"), "a forward's failure")
        if wait:
            # the next peer may be reconnecting (after our restart, or reestablishing the channel): give it a moment
            self._waited.add(ref)
            self.spawn(self._decide_later, htlc, asked[-1] if asked else None, 0.0, limit)
        elif isinstance(action, Settle):
            # (a task: HTLCs waiting for their invoice to be marked paid on a full disk hold up no other HTLC)
            self.spawn(self._settle, {ref: action.shared_secret}, add.payment_hash, action.preimage, action.amount_msat, self._now())
        elif isinstance(action, Spontaneous):  # (a task, as Settle's)
            self.spawn(self._keysend_received, ref, add.payment_hash, action)
        elif isinstance(action, HoldPart):
            await self._gather(ref, action)
        elif isinstance(action, FailOnion):
            log.info("payments: failing HTLC %s/%d: %s", ref[0][:16], ref[1], action.why)
            await self._fail(ref, action.reason, action.why, delay=isinstance(action.failure, InvalidOnionBlinding))
        elif isinstance(action, FailMalformed):
            log.info("payments: HTLC %s/%d has a malformed onion: %s", ref[0][:16], ref[1], action.why)
            await self._call(lambda: self.htlcs.fail_malformed(ref[0], ref[1], action.sha256_of_onion, action.failure_code), ref)
        elif isinstance(action, Forward):
            await self._forward(htlc, action)

    async def _decide_later(self, htlc: IncomingHtlc, short_channel_id: int | None = None, after: float = 0.0,
                            limit: float = REPLAY_GRACE) -> None:  # fmt: skip
        """Decide ``htlc`` again once the channel it waits for is usable (None: all), looking first
        ``after`` seconds from now, or after ``limit`` more seconds."""

        def up() -> bool:
            if short_channel_id is None:
                return all(c.usable for c in self.htlcs.channels())
            channel = self.htlcs.by_scid(short_channel_id)
            return channel is None or channel.usable  # (gone: the decision says so)

        await trio.sleep(after)
        with trio.move_on_after(limit):
            while not up():
                await trio.sleep(_CHANNEL_POLL)
        self._deciding.discard((htlc.channel_key, htlc.add.id))
        self._incoming_in.send_nowait(htlc)

    async def _expire_dev_htlc(self, ref: tuple[str, int], onion_hash: bytes) -> None:
        """A developer's HTLC nobody settled in time fails as malformed (invalid_onion_key): never held forever."""
        await trio.sleep(DEV_HOLD_SECONDS)
        if any((h.channel_key, h.add.id) == ref for h in self.htlcs.pending_incoming()):
            await self._call(lambda: self.htlcs.fail_malformed(ref[0], ref[1], onion_hash, _INVALID_ONION_KEY), ref)
        self._deciding.discard(ref)

    async def _call(self, make: Callable[[], Awaitable[None]], ref: tuple[str, int], delay: float = RETRY_MIN_DELAY) -> None:
        """Resolve incoming HTLC ``ref`` with ``make()``; while its channel is down (the peer
        reconnecting), again once it is back: a preimage or a failure is never dropped. A change
        the channel could not write (a full disk) is made again, after ``delay`` (doubled each time),
        once the channel is back: it reconnects to resume from its disk, and may still read as
        usable until its disconnection is processed."""
        try:
            await make()
        except HtlcRefused as exc:
            not_written = isinstance(exc, HtlcNotWritten)
            channel = next((c for c in self.htlcs.channels() if c.key == ref[0]), None)
            if channel is not None and (not_written or not channel.usable) and self._still_incoming(ref):
                log.info("payments: HTLC %s/%d is resolved once its channel is back (%s)", ref[0][:16], ref[1], exc)
                self.spawn(self._call_when_up, make, ref, delay if not_written else 0.0)
                return  # still being decided: a replay leaves it alone
            log.warning("payments: cannot resolve HTLC %s/%d now: %s", ref[0][:16], ref[1], exc)
        self._deciding.discard(ref)
        self._waited.discard(ref)  # resolved: its id never comes again (keeps the set bounded)
        self._not_written.pop(ref, None)

    async def _call_when_up(self, make: Callable[[], Awaitable[None]], ref: tuple[str, int], delay: float = 0.0) -> None:
        """``make()`` for ``ref`` again once its channel is usable, ``delay`` seconds from now at the
        earliest (a write that failed is not tried again at once: the disk may still be full)."""
        await trio.sleep(delay)
        while True:
            await trio.sleep(_CHANNEL_POLL)
            if not self._still_incoming(ref):  # settled some other way (on chain, a replay after a restart)
                self._deciding.discard(ref)
                return
            if any(c.key == ref[0] and c.usable for c in self.htlcs.channels()):
                break
        await self._call(make, ref, min(max(delay, RETRY_MIN_DELAY) * 2, RETRY_MAX_DELAY))

    def _still_incoming(self, ref: tuple[str, int]) -> bool:
        return any((h.channel_key, h.add.id) == ref for h in self.htlcs.pending_incoming())

    async def _fail(self, ref: tuple[str, int], reason: bytes, why: str, delay: bool = False) -> None:
        if not await self._fail_blinded(ref, why, reason, delay):  # (one inside a blinded path fails its own way)
            await self._call(lambda: self.htlcs.fail(ref[0], ref[1], reason), ref)

    def _known_preimage(self, payment_hash: bytes) -> bytes | None:
        terms = self._terms.get(payment_hash)
        return terms.preimage or None if terms is not None else None  # (a hold invoice's is empty until settled)

    def _publish(self, topic: str, payment_hash: bytes, **fields: Any) -> None:
        self.node.events.publish(PaymentEvent(topic, payment_hash, **fields))
