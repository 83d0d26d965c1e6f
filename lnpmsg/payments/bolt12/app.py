"""The offers app: BOLT 12 offers made, answered and paid over onion messages.

Mount :class:`OffersApp` after the payments and onion-messages apps (``lnpmsg
node`` with a chain does). It owns the onion-message records 64
(``invoice_request``), 66 (``invoice``) and 68 (``invoice_error``).

- **Issuing.** ``offers.create`` makes an offer (stored before it is shown):
  its ``offer_issuer_id`` is our node id (unless ``hide_node_id``); with
  ``blinded_path`` it also names blinded paths to us through peers
  (``offer_paths``), each with a ``path_id`` of the onion-messages app's
  (:meth:`~lnpmsg.onion_messages.app.OnionMessagesApp.blinded_path_to_us`).
  An ``invoice_request`` for an active offer of ours, unexpired, that came the
  way the offer says (along one of its paths if it has them, else not along
  any of ours), gets a signed ``invoice`` along its reply path: a payments-app
  invoice is made for the amount (its preimage and payment hash), and blinded
  payment paths to us for it (``payments.blindedpath``), whose ``path_id`` is
  a MAC of that payment hash, so a payment through it is
  accepted for that invoice alone. A request that fails a check gets an
  ``invoice_error`` naming the field; one that came the wrong way is ignored.
- **Paying.** ``offers.fetchinvoice`` sends an ``invoice_request`` (a fresh
  transient payer key of its own, derived from the node secret and 16 random
  bytes of metadata: :func:`.keys.payer_secret`) along each of the offer's
  paths (BOLT 12: never
  straight to an issuer that gave paths), else to its issuer, with reply paths,
  and waits for the first answer: an ``invoice`` that arrived along one of those
  reply paths, mirrors the request, is signed by the issuer and not expired,
  or an ``invoice_error`` (reported). ``offers.pay`` then pays it into its blinded
  paths as one payment (``payments.pay_blinded_paths``), split over several when
  the invoice has the MPP feature (ours do: the payments app gathers the parts).

Requests not for an offer (refunds) are :mod:`.refunds`'.

Control calls: ``offers.create``, ``offers.list``, ``offers.disable``,
``offers.fetchinvoice``, ``offers.pay``, ``offers.invoicerequest``,
``offers.listinvoicerequests``, ``offers.sendinvoice``; the CLI's ``offer``,
``listoffers``, ``disableoffer``, ``fetchinvoice``, ``pay lno1...``,
``invoicerequest``, ``listinvoicerequests``, ``sendinvoice``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.payments.blinded import BlindedPayInfo
from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.fields import PayInfo
from lnpmsg.payments.bolt12.invoice import DEFAULT_RELATIVE_EXPIRY, MPP_OPTIONAL, Invoice
from lnpmsg.payments.bolt12.invoice_error import InvoiceError
from lnpmsg.payments.bolt12.invoice_request import InvoiceRequest
from lnpmsg.payments.bolt12.keys import offer_path_session_key, payer_secret, recipient_blinded_secret
from lnpmsg.payments.bolt12.offer import Offer, decode_offer
from lnpmsg.payments.bolt12.refunds import Refunds, _OurRefund
from lnpmsg.payments.bolt12.refusal import Refused, refuse
from lnpmsg.payments.bolt12.store import OffersStore, OffersStoreError
from lnpmsg.payments.bolt12.tlvs import BITCOIN
from lnpmsg.payments.onion.blinding import BlindedPath, decode_blinded_path
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.calls import ChainAppError
from lnpmsg.wire.bolt1 import CHAIN_HASHES

__all__ = ["AUTO_LABELS", "FETCH_TIMEOUT", "INVOICE_ERROR_RECORD", "ISSUED_CACHE", "MAX_OFFER_PATHS", "MAX_PENDING", "PRUNE_INTERVAL", "INVOICE_RECORD", "INVOICE_REQUEST_RECORD", "OffersApp"]

log = logging.getLogger(__name__)

#: BOLT 4 ``onionmsg_tlv`` records of BOLT 12
INVOICE_REQUEST_RECORD = 64
INVOICE_RECORD = 66
INVOICE_ERROR_RECORD = 68
#: seconds fetchinvoice waits for the answer to an invoice request
FETCH_TIMEOUT = 30.0
#: invoices kept to answer a repeated request (the same bytes) with the same invoice, not a new one
ISSUED_CACHE = 256
#: requests waiting for their answer at most (each holds a fetchinvoice call)
MAX_PENDING = 64
#: seconds between sweeps of the payments-app invoices made for invoice requests that expired unpaid:
#: anyone may ask for invoices, so they must not pile up
PRUNE_INTERVAL = 600.0
#: blinded paths an offer carries at most (each through another peer): BOLT 12 has the payer send its
#: request along each
MAX_OFFER_PATHS = 3
#: the labels of the invoices this app makes (``invreq`` ones only when no label was given)
AUTO_LABELS = ("offer ", "invreq ")
#: the field each refusal is about, for ``invoice_error``'s ``erroneous_field``
_FIELD_OF = {"bad_quantity": 86, "amount_too_low": 82, "missing_amount": 82, "expired": 14, "wrong_chain": 80, "unsupported_currency": 6}


@dataclass(slots=True)
class _OurOffer:
    offer: Offer
    label: str | None
    active: bool
    #: the ids of its blinded paths (the onion-messages app's ``reply_to`` along each), in the offer's order
    path_ids: tuple[str, ...]
    path_salt: bytes | None
    created_at: int
    invoices: int

    def view(self) -> dict[str, Any]:
        o = self.offer
        return {"offer_id": o.offer_id.hex(), "bolt12": o.encode(), "label": self.label, "active": self.active,
                "amount_msat": o.amount, "description": o.description, "issuer": o.issuer, "quantity_max": o.quantity_max,
                "absolute_expiry": o.absolute_expiry, "blinded_paths": len(o.paths), "node_id_hidden": o.issuer_id is None,
                "created_at": self.created_at, "invoices": self.invoices}  # fmt: skip


class OffersApp(Refunds, App):
    """Make, answer and pay BOLT 12 offers (see the module docs).

    Args:
        directory: the offers store.
        payments_app / onion_messages_app: the apps that receive and pay, and that carry the messages.
        clock: wall-clock seconds (offer and invoice expiries).
        random: the source of request metadata (each request's payer key is derived from it and the node secret).
        fetch_timeout: seconds to wait for an invoice by default.
    """

    def __init__(self, directory: str | Path, *, payments_app: str = "payments", onion_messages_app: str = "onion_messages",
                 clock: Callable[[], float] = time.time, random: Callable[[int], bytes] = os.urandom,
                 fetch_timeout: float = FETCH_TIMEOUT) -> None:  # fmt: skip
        super().__init__("offers", handler_timeout=None)
        self.directory = Path(directory)
        self.payments_app_name = payments_app
        self.onion_messages_app_name = onion_messages_app
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        self._random = random
        self.store: OffersStore | None = None
        self._offers: dict[bytes, _OurOffer] = {}
        self._issued: OrderedDict[bytes, bytes] = OrderedDict()
        self._pending: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._refunds: dict[bytes, _OurRefund] = {}
        self._paying_refunds: set[bytes] = set()
        for name, fn in (("create", self.create), ("list", self.list_offers), ("disable", self.disable), ("fetchinvoice", self.fetchinvoice),
                         ("pay", self.pay), ("invoicerequest", self.invoicerequest), ("listinvoicerequests", self.listinvoicerequests),
                         ("sendinvoice", self.sendinvoice)):  # fmt: skip
            self.add_control_method(name, fn)

    # ------------------------------------------------------------ wiring

    def attach(self, node: Any) -> None:
        super().attach(node)
        onion = self._onion()
        onion.on_tlv(INVOICE_REQUEST_RECORD)(self._on_invoice_request)
        onion.on_tlv(INVOICE_RECORD)(self._on_answer)
        onion.on_tlv(INVOICE_ERROR_RECORD)(self._on_answer)

    def _onion(self) -> Any:
        onion = self.node.apps.get(self.onion_messages_app_name)
        if onion is None:
            raise AppError(f"the offers app needs the onion messages app {self.onion_messages_app_name!r} mounted before it")
        return onion

    def _payments(self) -> Any:
        payments = self.node.apps.get(self.payments_app_name)
        if payments is None:
            raise AppError(f"the offers app needs the payments app {self.payments_app_name!r}")
        return payments

    @property
    def chain(self) -> bytes:
        """Our chain's hash: the one our offers name and we pay offers on."""
        return CHAIN_HASHES.get(self.node.config.network, BITCOIN)

    async def starting(self) -> None:
        self.store = await trio.to_thread.run_sync(OffersStore, self.directory)
        for row in await trio.to_thread.run_sync(self.store.offers):
            offer = decode_offer(row["bolt12"])
            path_ids = tuple(row["path_id"].split(",")) if row["path_id"] else ()
            self._offers[offer.offer_id] = _OurOffer(offer, row["label"], bool(row["active"]), path_ids, row["path_salt"], row["created_at"],
                                                     row["invoices"])  # fmt: skip
        await self._load_refunds()
        await super().starting()

    async def serve(self) -> None:
        while True:
            await trio.sleep(PRUNE_INTERVAL)
            await self.prune_invoices()

    async def prune_invoices(self) -> int:
        """Delete the invoices made for invoice requests (their labels :data:`AUTO_LABELS`) that expired
        unpaid; how many."""
        payments, pruned = self._payments(), 0
        for row in (await payments.listinvoices())["invoices"]:
            if row["status"] == "expired" and row["label"].startswith(AUTO_LABELS) and await self._forget_invoice(row["label"]):
                pruned += 1
        if pruned:
            log.info("offers: %d expired unpaid invoice(s) of invoice requests deleted", pruned)
        return pruned

    async def stopping(self) -> None:
        await super().stopping()
        if self.store is not None:
            self.store.close()

    def _store(self) -> OffersStore:
        if self.store is None:
            raise ChainAppError("the offers store is not open yet", {"error": "NotReady"})
        return self.store

    # ------------------------------------------------------------ issuing

    async def create(self, amount_msat: int | None, description: str | None = None, label: str | None = None, issuer: str | None = None,
                     quantity_max: int | None = None, expiry: int | None = None, blinded_path: bool = False,
                     introduction: str | list[str] | None = None, hide_node_id: bool = False) -> dict[str, Any]:  # fmt: skip
        """Make an offer for AMOUNT_MSAT (None: any amount, the payer says), answered until ``expiry``
        seconds from now (None: always) or ``offers.disable``; with ``blinded_path`` (or an
        ``introduction`` peer, or list of them), reachable along blinded paths through peers reading onion
        messages (each named, else up to :data:`MAX_OFFER_PATHS` of them);
        with ``hide_node_id`` too, only so: the offer and its invoices do not name our node id."""
        if amount_msat is not None and (not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0):
            raise ParamsError(f"amount_msat must be a positive integer (or null for any amount), got {amount_msat!r}")
        if amount_msat is not None and not description:
            raise ParamsError("an offer with an amount needs a description (BOLT 12)")
        for name, value in (("description", description), ("label", label), ("issuer", issuer)):
            if value is not None and not isinstance(value, str):
                raise ParamsError(f"{name} must be a string, got {value!r}")
        for name, value in (("quantity_max", quantity_max), ("expiry", expiry)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "quantity_max" else 1)):
                raise ParamsError(f"{name} must be a {'non-negative' if name == 'quantity_max' else 'positive'} integer, got {value!r}")
        now = int(self.clock())
        paths: list[BlindedPath] = []
        path_ids: list[str] = []
        salt = None
        if blinded_path or introduction is not None or hide_node_id:
            salt = self._random(16)
            for i, intro in enumerate(self._introductions(self._named_introductions(introduction))):
                path, path_id = self._offer_path(intro, salt, i)
                paths.append(path)
                path_ids.append(path_id)
        fields: dict[str, Any] = {
            "offer_chains": None if self.chain == BITCOIN else (self.chain,),
            "offer_amount": amount_msat, "offer_description": description or None, "offer_issuer": issuer,
            "offer_quantity_max": quantity_max, "offer_absolute_expiry": None if expiry is None else now + expiry,
            "offer_paths": tuple(paths) or None, "offer_issuer_id": None if hide_node_id else self.node.node_id,
        }  # fmt: skip
        try:
            offer = Offer.build(**fields)
        except Bolt12Error as exc:
            raise ParamsError(f"cannot make the offer: {exc}") from None
        try:
            await trio.to_thread.run_sync(self._store().add, offer.offer_id, offer.encode(), label, ",".join(path_ids) or None, salt, now)
        except sqlite3.IntegrityError:
            raise ParamsError(f"an offer labelled {label!r} (or this very offer) exists already") from None
        except OffersStoreError as exc:
            raise ChainAppError(f"cannot make the offer: {exc}", {"error": "StoreWriteFailed"}) from None
        ours = self._offers[offer.offer_id] = _OurOffer(offer, label, True, tuple(path_ids), salt, now, 0)
        log.info("offers: offer %s made (%s)", offer.offer_id.hex()[:16], "any amount" if amount_msat is None else f"{amount_msat} msat")
        return ours.view()

    @staticmethod
    def _named_introductions(introduction: str | list[str] | None) -> list[bytes] | None:
        """The ``introduction`` parameter (a node id or a list of them) read, None if not given."""
        named = [introduction] if isinstance(introduction, str) else introduction
        if named is not None and (not isinstance(named, list) or not named):
            raise ParamsError("introduction is a node id or a non-empty list of them")
        return None if named is None else [hex_param(n, "introduction", 33) for n in named]

    def _introductions(self, named: list[bytes] | None) -> list[bytes]:
        """The peers to introduce an offer's paths: those ``named``, each a connected peer reading onion
        messages, else the first :data:`MAX_OFFER_PATHS` such peers."""
        peers = sorted(p.node_id for p in self._onion().peers())
        if named is None:
            if not peers:
                raise ChainAppError("no connected peer reads onion messages to introduce a blinded path", {"error": "NoPeer"})
            return peers[:MAX_OFFER_PATHS]
        if len(named) > MAX_OFFER_PATHS or len(set(named)) != len(named):
            raise ParamsError(f"at most {MAX_OFFER_PATHS} different introduction nodes")
        for intro in named:
            if intro not in peers:
                raise ChainAppError(f"{intro.hex()} is not a connected peer reading onion messages", {"error": "NoPeer"})
        return named

    def _offer_path(self, introduction: bytes, salt: bytes, index: int) -> tuple[BlindedPath, str]:
        key = offer_path_session_key(self.node.key.secret, salt + bytes([index]))
        return self._onion().blinded_path_to_us([introduction], blinding_key=key)  # type: ignore[no-any-return]

    async def list_offers(self) -> dict[str, Any]:
        """Our offers, oldest first."""
        return {"offers": [o.view() for o in self._offers.values()]}

    async def disable(self, offer_id: str) -> dict[str, Any]:
        """Stop answering offer OFFER_ID (its invoices already given stay payable until they expire)."""
        key = hex_param(offer_id, "offer_id", 32)
        ours = self._offers.get(key)
        if ours is None:
            raise ChainAppError(f"no offer {offer_id}", {"error": "NoSuchOffer"})
        try:
            await trio.to_thread.run_sync(self._store().disable, key)
        except OffersStoreError as exc:
            raise ChainAppError(f"cannot disable the offer: {exc}", {"error": "StoreWriteFailed"}) from None
        ours.active = False
        return ours.view()

    async def _on_invoice_request(self, received: Any) -> None:
        raw = received.records[INVOICE_REQUEST_RECORD]
        try:
            records = {INVOICE_RECORD: await self._answer(raw, received.reply_to)}
        except Refused as exc:
            log.info("offers: invoice request %s: %s", "ignored" if exc.error is None else "refused", exc)
            if exc.error is None:
                return
            records = {INVOICE_ERROR_RECORD: exc.error.to_bytes()}
        if received.reply_path is None:
            return
        try:
            # (with a reply path of its own: a payer that refuses the invoice can say why, BOLT 12's invoice_error)
            await self._onion().send(received.reply_path, records, reply_path=INVOICE_RECORD in records)
        except AppError as exc:
            log.info("offers: cannot answer an invoice request: %s", exc)

    async def _answer(self, raw: bytes, arrived_by: str | None) -> bytes:
        """The invoice for request ``raw`` (which came along our path ``arrived_by``, None: none of ours)."""
        try:
            request = InvoiceRequest.from_bytes(raw)
        except Bolt12Error as exc:
            raise refuse(f"invalid invoice_request: {exc}") from None
        if not request.is_for_offer:
            raise refuse("this node answers invoice requests for its offers only")
        ours = self._offers.get(request.offer().offer_id)
        # BOLT 12: along one of the offer's paths if it has them, else along none; checked first, so
        # that no answer tells who made an offer with a path (not even that it is disabled)
        if ours is not None and (arrived_by not in ours.path_ids if ours.path_ids else arrived_by is not None):
            raise Refused("it came another way than the offer's paths", None)
        if ours is None or not ours.active:
            raise refuse("unknown offer" if ours is None else "the offer is no longer answered")
        try:
            ours.offer.check_usable(self.chain, self.clock())
            if request.chain != self.chain:
                raise Bolt12Error("invreq_chain is not this node's chain", "wrong_chain")
            request.check_against_offer()
        except Bolt12Error as exc:
            raise refuse(str(exc), _FIELD_OF.get(exc.code)) from None
        key = hashlib.sha256(raw).digest()
        # the same request again (the messaging layer may repeat one): the same invoice, which BOLT 12
        # allows only for an offer with offer_issuer_id
        reuse = ours.offer.issuer_id is not None
        if reuse and key in self._issued:
            return self._issued[key]
        invoice = await self._make_invoice(request, ours, arrived_by)
        if reuse:
            self._issued[key] = invoice
            while len(self._issued) > ISSUED_CACHE:
                self._issued.popitem(last=False)
        ours.invoices += 1
        try:
            await trio.to_thread.run_sync(self._store().count_invoice, ours.offer.offer_id)
        except OffersStoreError as exc:  # (a count only: the invoice is made, and goes out)
            log.warning("offers: %s", exc)
        return invoice

    async def _make_invoice(self, request: InvoiceRequest, ours: _OurOffer, arrived_by: str | None) -> bytes:
        label = f"offer {ours.offer.offer_id.hex()[:16]} {self._random(8).hex()}"
        description = ours.offer.description or ours.offer.issuer or "offer"
        # (a path from us alone would name us: not for an offer that does not)
        # (the peers introducing the offer's paths introduce payment paths too: a payer that is the best one
        # cannot pay a path it introduces; a path from us alone would name us: not for an offer that does not)
        peers = [p.first_node_id for p in ours.offer.paths if p.introduction_is_node_id]
        return await self._issue(request, label, description, self._signing_key(ours, arrived_by), from_us=ours.offer.issuer_id is not None,
                                 also_through=peers)  # fmt: skip

    async def _issue(self, request: InvoiceRequest, label: str, description: str, signing_key: bytes, *, from_us: bool,
                     also_through: Sequence[bytes] = ()) -> bytes:  # fmt: skip
        """The signed invoice answering ``request``: a payments-app invoice LABEL for its amount, and blinded
        payment paths to us for it: through the peer that can bring us the most, the peers ``also_through``
        we have a channel with, and (``from_us``) from us alone (:class:`Refused` when we cannot receive)."""
        amount = request.amount if request.amount is not None else request.expected_amount()
        assert amount is not None  # (check_against_offer refused a request without either)
        payments = self._payments()
        try:
            made = await payments.invoice(amount, label, description, expiry=DEFAULT_RELATIVE_EXPIRY)
            # through the peer that can bring us the most, then (``from_us``) from us alone: for a payer
            # that is that peer (it cannot pay a path it introduces), or that finds no route to it
            made_paths = [await payments.blindedpath(label)]
            for peer in also_through:
                if peer.hex() not in {m["introduction_node_id"] for m in made_paths}:
                    with contextlib.suppress(ChainAppError):  # (no usable channel with that peer)
                        made_paths.append(await payments.blindedpath(label, introduction=peer.hex()))
            if from_us:
                made_paths.append(await payments.blindedpath(label, introduction=self.node.node_id.hex()))
        except (ChainAppError, ParamsError) as exc:
            await self._forget_invoice(label)
            raise refuse(f"cannot receive a payment now: {exc}") from None
        paths = []
        for made_path in made_paths:
            path, _ = decode_blinded_path(bytes.fromhex(made_path["blinded_path"]))
            info = made_path["payinfo"]
            # (htlc_maximum_msat: the receiver accepts up to twice the amount)
            paths.append((path, PayInfo(info["fee_base_msat"], info["fee_proportional_millionths"], info["cltv_expiry_delta"],
                                        info["htlc_minimum_msat"], 2 * amount)))  # fmt: skip
        invoice = Invoice.for_request(request, signing_key, payment_hash=bytes.fromhex(made["payment_hash"]), amount_msat=amount,
                                      created_at=int(self.clock()), paths=paths, features=MPP_OPTIONAL)  # fmt: skip
        log.info("offers: invoice %s for %d msat", label, amount)
        return invoice.to_bytes()

    def _signing_key(self, ours: _OurOffer, arrived_by: str | None) -> bytes:
        """The key of ``invoice_node_id``: our node's, or for an offer that does not name us the last
        blinded id of the path the request came along (BOLT 12)."""
        if ours.offer.issuer_id is not None:
            return self.node.key.secret
        assert ours.path_salt is not None and arrived_by is not None  # (an offer without an issuer id has paths, checked)
        index = ours.path_ids.index(arrived_by)
        intro = ours.offer.paths[index].first_node_id
        session = offer_path_session_key(self.node.key.secret, ours.path_salt + bytes([index]))
        # (us, and our dummy hops after us, if the path has them: the last one's id signs)
        ours_after = [self.node.node_id] * (len(ours.offer.paths[index].hops) - 1)
        return recipient_blinded_secret(session, [intro, *ours_after], self.node.key.secret)

    async def _forget_invoice(self, label: str) -> bool:
        """Delete our payments-app invoice LABEL if it is unpaid and nothing of it is held (True: deleted)."""
        try:
            await self._payments().delinvoice(label)
        except (ChainAppError, ParamsError):
            return False
        return True

    # ------------------------------------------------------------ paying

    def _read_offer(self, offer: str) -> Offer:
        if not isinstance(offer, str):
            raise ParamsError("offer must be an lno1... string")
        try:
            read = decode_offer(offer.strip())
        except Bolt12Error as exc:
            raise ParamsError(f"offer: {exc}") from None
        try:
            read.check_usable(self.chain, self.clock())
        except Bolt12Error as exc:
            error = {"expired": "OfferExpired", "wrong_chain": "WrongChain"}[exc.code]
            raise ChainAppError(f"cannot pay the offer: {exc}", {"error": error}) from None
        return read

    async def fetchinvoice(self, offer: str, amount_msat: int | None = None, quantity: int | None = None, payer_note: str | None = None,
                           timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Request an invoice for OFFER (an ``lno1...`` string) over onion messages and check it; ``amount_msat``
        for an offer without an amount (or to pay more), ``quantity`` for an offer that sells several."""
        invoice, _ = await self._fetch(offer, amount_msat, quantity, payer_note, timeout)
        return _invoice_view(invoice)

    async def _fetch(self, offer_text: str, amount_msat: int | None, quantity: int | None, payer_note: str | None,
                     timeout: float | None) -> tuple[Invoice, Offer]:  # fmt: skip
        offer = self._read_offer(offer_text)
        for name, value in (("amount_msat", amount_msat), ("quantity", quantity)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ParamsError(f"{name} must be a positive integer, got {value!r}")
        # (a transient payer key for each request, from the node secret and the request's metadata: nothing stored)
        metadata = self._random(16)
        try:
            request = InvoiceRequest.for_offer(offer, payer_secret(self.node.key.secret, metadata), metadata, amount_msat=amount_msat,
                                               quantity=quantity, chain=self.chain, payer_note=payer_note)  # fmt: skip
        except Bolt12Error as exc:
            raise ParamsError(f"cannot request an invoice of this offer: {exc}") from None
        invoice = await self.request_invoice(offer, request, self.fetch_timeout if timeout is None else timeout)
        return invoice, offer

    async def request_invoice(self, offer: Offer, request: InvoiceRequest, timeout: float) -> Invoice:
        """Send ``request`` for ``offer`` with a reply path (along each of its paths, as BOLT 12 asks when it
        has some, else to its issuer) and return the checked invoice of the first answer.
        :class:`ChainAppError`: ``NoPath`` (it could not be sent), ``Timeout``, ``InvoiceError`` (the
        issuer's refusal), ``BadInvoice`` (an answer to reject)."""
        if len(self._pending) >= MAX_PENDING:
            raise ChainAppError(f"{MAX_PENDING} invoice requests wait for an answer already", {"error": "Busy"})
        targets: list[tuple[bytes | BlindedPath, bytes | None]] = [(p, p.hops[-1].blinded_node_id) for p in offer.paths]
        if not targets and offer.issuer_id is not None:
            targets.append((offer.issuer_id, None))
        onion, failures = self._onion(), []
        event, box = trio.Event(), []
        sent_to: dict[str, bytes | None] = {}
        for destination, final_node in targets:
            try:
                sent = await onion.send(destination, {INVOICE_REQUEST_RECORD: request.to_bytes()}, reply_path=True)
            except AppError as exc:
                failures.append(str(exc))
                continue
            sent_to[sent["id"]] = final_node
            self._pending[sent["id"]] = (event, box)
        if not sent_to:
            raise ChainAppError(f"cannot send the invoice request: {'; '.join(failures)}", {"error": "NoPath"})
        try:
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            for message_id in sent_to:
                del self._pending[message_id]
        if not box:
            raise ChainAppError(f"no answer to the invoice request within {timeout:g} s", {"error": "Timeout"})
        kind, raw, received = box[0]
        answered = received.reply_to
        if kind == INVOICE_ERROR_RECORD:
            try:
                refusal = InvoiceError.from_bytes(raw)
            except Bolt12Error as exc:
                refusal = InvoiceError(f"(an unreadable invoice_error: {exc})")
            raise ChainAppError(f"the issuer refused the request: {refusal.error}",
                                {"error": "InvoiceError", "erroneous_field": refusal.erroneous_field})  # fmt: skip
        try:
            invoice = Invoice.from_bytes(raw)
            invoice.check_response(request, chain=self.chain, now=self.clock(), sent_to=sent_to[answered])
        except Bolt12Error as exc:
            await self._tell_refused(received, str(exc))
            raise ChainAppError(f"the invoice is refused: {exc}", {"error": "BadInvoice", "code": exc.code}) from None
        return invoice

    async def _tell_refused(self, received: Any, why: str) -> None:
        """Answer an invoice we refuse with an ``invoice_error`` saying why, if it came with a reply path."""
        if received.reply_path is None:
            return
        try:
            await self._onion().reply(received, {INVOICE_ERROR_RECORD: InvoiceError(why).to_bytes()})
        except AppError as exc:
            log.info("offers: cannot send invoice_error: %s", exc)

    def _on_answer(self, received: Any) -> None:
        waiting = self._pending.get(received.reply_to) if received.reply_to is not None else None
        if waiting is None and INVOICE_RECORD in received.records and (received.reply_to is None or self._refund_path(received.reply_to)):
            self.spawn(self._on_refund_invoice, received)  # (along no path of ours, or one of our requests': for a request of ours)
            return
        if waiting is None and INVOICE_ERROR_RECORD in received.records and received.reply_to is not None:
            with contextlib.suppress(Bolt12Error):  # (an answer to an invoice of ours: nothing to do but say so)
                log.info("offers: an invoice of ours was refused: %s", InvoiceError.from_bytes(received.records[INVOICE_ERROR_RECORD]).error)
            return
        if waiting is None:  # BOLT 12: an invoice must come along the reply path of a request of ours
            log.debug("offers: an invoice or invoice_error nobody waits for (reply_to %s) dropped", received.reply_to)
            return
        event, box = waiting
        if not box:
            kind = INVOICE_RECORD if INVOICE_RECORD in received.records else INVOICE_ERROR_RECORD
            box.append((kind, received.records[kind], received))
        event.set()

    async def pay(self, offer: str, amount_msat: int | None = None, quantity: int | None = None, payer_note: str | None = None,
                  max_fee_msat: int | None = None, timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Fetch an invoice for OFFER (as ``fetchinvoice``) and pay it into its blinded paths, in the invoice's
        order, until one succeeds; returns as ``payments.pay`` does, with the invoice."""
        invoice, _ = await self._fetch(offer, amount_msat, quantity, payer_note, timeout)
        return await self._pay_invoice(invoice, max_fee_msat)

    async def _pay_invoice(self, invoice: Invoice, max_fee_msat: int | None = None) -> dict[str, Any]:
        """Pay a checked invoice into its paths as one payment (``payments.pay_blinded_paths``: into the path
        that costs least, again into another if one refuses, split over several when the invoice has the MPP
        feature and one does not carry it); the payment's result."""
        paths = [(path, BlindedPayInfo(info.fee_base_msat, info.fee_proportional_millionths, info.cltv_expiry_delta, info.htlc_minimum_msat),
                  info.htlc_maximum_msat) for path, info in invoice.usable_paths()]  # fmt: skip
        paid = await self._payments().pay_blinded_paths(paths, invoice.amount, invoice.payment_hash, mpp=invoice.mpp, max_fee_msat=max_fee_msat)
        return {**paid, "bolt12_invoice": invoice.encode()}


def _invoice_view(invoice: Invoice) -> dict[str, Any]:
    return {"invoice": invoice.encode(), "amount_msat": invoice.amount, "payment_hash": invoice.payment_hash.hex(),
            "node_id": invoice.node_id.hex(), "created_at": invoice.created_at, "expires_at": invoice.expires_at,
            "description": invoice.tlvs.get("offer_description"), "quantity": invoice.tlvs.get("invreq_quantity"),
            "payer_note": invoice.tlvs.get("invreq_payer_note"), "blinded_paths": len(invoice.tlvs["invoice_paths"])}  # fmt: skip
