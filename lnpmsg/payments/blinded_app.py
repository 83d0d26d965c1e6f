"""Blinded payments, the payments app's part (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

Receiving: ``payments.blindedpath LABEL`` makes a blinded path to us for our
invoice LABEL, through one of our channels' peers (the introduction node; the
one named by ``introduction``, else the usable channel that can bring us the
most; ``introduction`` our own node id: a path of us alone), padded with dummy hops of ours
to the app's ``blinded_path_length`` (BOLT 4; each is peeled by us on receipt), with that peer's
policy towards us as its ``payment_relay`` (the ``blinded_payinfo`` handed out with it rounded up:
:data:`PAYINFO_ROUNDING`), ``payment_constraints`` (an expiry limit ``expiry_blocks`` ahead, the
channel's HTLC minimum) and a ``path_id`` tying it to the invoice's payment hash
(a MAC, no storage: :func:`~lnpmsg.payments.blinded.path_id_for`). It returns
the path as hex in BOLT 12's ``blinded_path`` encoding (BOLT 11 cannot carry one)
and its ``blinded_payinfo``. A payment through it settles like one of the
invoice (:mod:`.blinded_htlcs` decides it; its preimage is the invoice's).

Sending: ``payments.payblinded BLINDED_PATH AMOUNT_MSAT PAYMENT_HASH`` with the
path's payinfo (what a BOLT 12 payer has from an invoice): routes to the
introduction node as ``pay`` finds them (single part), continued through the
path (:mod:`.blinded_routes`: the path is one more channel to pathfinding); an introduction node
named by ``sciddir`` is found in the gossip graph or among our channels. ``listpayments``
shows it with ``blinded_path`` and the introduction node as destination; a
refusal inside the path comes back as ``invalid_onion_blinding``, which ends
the payment (the path is the recipient's, another route would meet it too).
:meth:`BlindedPayments.pay_blinded_paths` pays into several paths as one payment (what
the offers app does with a BOLT 12 invoice): into the one that costs least, a
part a path refused again into another, and with ``mpp`` split over several.

Failing an HTLC inside a path (:meth:`BlindedPayments._fail_blinded`): a node after the
introduction node always sends ``update_fail_malformed_htlc`` with ``invalid_onion_blinding``;
the introduction node sends its failure after a random delay of up to
:data:`~lnpmsg.payments.blinded_htlcs.BLINDED_FAILURE_DELAY` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import replace
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.payments.blinded import BlindedPayInfo, PathHop, PaymentRelay, PayInfoRounding, create_payment_path, path_id_for
from lnpmsg.payments.blinded_htlcs import BLINDED_FAILURE_DELAY, blinded_failure, introduction_secret
from lnpmsg.payments.blinded_routes import PathOffer
from lnpmsg.payments.htlcs import MAX_CLTV_AHEAD, FailOnion
from lnpmsg.payments.keysend import check_count, payment_target
from lnpmsg.payments.onion import BlindedPath, BlindingError, decode_blinded_path
from lnpmsg.payments.onion.blinding import dummy_hop_count
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.paying import PAY_TIMEOUT, Blinded
from lnpmsg.payments.sender import format_scid
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["BLINDED_PREFIX", "DEFAULT_PATH_BLOCKS", "PAYINFO_ROUNDING", "BlindedPayments"]

log = logging.getLogger("lnpmsg.payments.app")

#: blocks a blinded path we make stays usable by default (its max_cltv_expiry, past our final delta): a week
DEFAULT_PATH_BLOCKS = 1008
#: what the payinfo of our paths is rounded up to (fee base to whole satoshis, proportional fee to 100
#: millionths, CLTV delta to 24 blocks), so it does not give away the introducing peer's exact policy
PAYINFO_ROUNDING = PayInfoRounding(fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=24)
#: what a payment into a blinded path keeps in the store's ``bolt11`` column (it has no invoice text)
BLINDED_PREFIX = "blinded:"


class BlindedPayments:
    """``blindedpath`` and ``payblinded`` (see the module docs); mixed into the payments app."""

    async def _fail_blinded(self: PaymentsApp, ref: tuple[str, int], why: str, reason: bytes, delay: bool) -> bool:
        """Fail incoming HTLC ``ref`` as a hop inside a blinded path does, if it is one (False: it is not,
        nothing done). With ``delay`` (an introduction node's ``invalid_onion_blinding``), later, by a
        random delay: how soon a failure comes back would tell a prober how far into the path it was
        refused (BOLT 4). With ``update_add_htlc``'s path key, whatever the failure (a cancelled hold
        invoice's, an MPP timeout's): ``update_fail_malformed_htlc`` with ``invalid_onion_blinding`` (BOLT 2)."""
        if delay:
            async def later() -> None:
                await trio.sleep(random.uniform(0.0, BLINDED_FAILURE_DELAY))
                await self._fail(ref, reason, why)

            self.spawn(later)
            return True
        add = next((h.add for h in self.htlcs.pending_incoming() if (h.channel_key, h.add.id) == ref), None)
        if add is None:
            return False
        if add.tlvs.get("blinded_path") is None:
            # the introduction node of a path whose next hops are ours (dummy hops: a payment to us) is not its
            # final node to the payer: whatever fails it (an MPP timeout) goes back as invalid_onion_blinding
            secret = introduction_secret(self.node.key.secret, add.onion_routing_packet, add.payment_hash)
            if secret is None:
                return False
            failure = blinded_failure("introduction", secret, add.onion_routing_packet, why)
            assert isinstance(failure, FailOnion)
            await self._call(lambda: self.htlcs.fail(ref[0], ref[1], failure.reason), ref)
            return True
        onion_hash = hashlib.sha256(add.onion_routing_packet).digest()
        await self._call(lambda: self.htlcs.fail_malformed(ref[0], ref[1], onion_hash, InvalidOnionBlinding.TYPE), ref)
        return True

    async def blindedpath(self: PaymentsApp, label: str, introduction: str | None = None,
                          expiry_blocks: int = DEFAULT_PATH_BLOCKS) -> dict[str, Any]:  # fmt: skip
        """A blinded path to us for our invoice LABEL, through a peer (``introduction``: its node id) as the
        introduction node; as hex in BOLT 12's ``blinded_path`` encoding, with its ``payinfo``."""
        if not isinstance(label, str) or not label:
            raise ParamsError("label must be a non-empty string")
        check_count(expiry_blocks, "expiry_blocks", positive=True)
        payment_hash = next((h for h, name in self._labels.items() if name == label), None)
        terms = self._terms.get(payment_hash) if payment_hash is not None else None
        if terms is None or terms.keysend:
            raise ChainAppError(f"no invoice labelled {label!r}", {"error": "NoSuchInvoice", "label": label})
        peer = hex_param(introduction, "introduction", 33) if introduction is not None else None
        if peer == self.node.node_id:
            return await self._path_from_us(label, terms, expiry_blocks)
        # the path names the channel as the peer forwards over it: the alias it gave us if any, as a
        # route hint does (a private channel's real id may be refused, and should not be shown)
        usable = [c for c in self.htlcs.channels() if c.usable and c.hint_scid and (peer is None or c.peer_id == peer)]
        if not usable:
            raise ChainAppError("no usable channel to a peer" + (" with that node id" if peer else "") + " to introduce a blinded path",
                                {"error": "NoChannel"})  # fmt: skip
        channel = max(usable, key=lambda c: c.receivable_msat)
        # the peer relays to us at its policy towards us (its channel_update), as a route hint says
        fee = self.policies.of_peers([channel]).get(channel.short_channel_id, self.policy)
        relay = PaymentRelay(fee.cltv_expiry_delta, fee.fee_proportional_millionths, fee.fee_base_msat)
        height = await self._height()
        path, payinfo = create_payment_path(
            os.urandom(32), [PathHop(channel.peer_id, channel.hint_scid, relay, channel.htlc_minimum_msat)], self.node.node_id,
            path_id_for(self.node.key.secret, terms.payment_hash), height + terms.min_final_cltv + expiry_blocks, terms.min_final_cltv,
            dummy_hops=dummy_hop_count(2, self.blinded_path_length), rounding=PAYINFO_ROUNDING,
        )  # fmt: skip
        log.info("payments: blinded path for invoice %s through %s", label, channel.peer_id.hex()[:16])
        return {"blinded_path": path.encode().hex(), "payinfo": payinfo.to_dict(), "payment_hash": terms.payment_hash.hex(),
                "introduction_node_id": channel.peer_id.hex(), "amount_msat": terms.amount_msat}  # fmt: skip

    async def _path_from_us(self: PaymentsApp, label: str, terms: Any, expiry_blocks: int) -> dict[str, Any]:
        """A path of one hop, us (BOLT 12's path for a recipient that needs no privacy): any payer routes to
        us as to its introduction node, also the peer that would introduce a longer one."""
        height = await self._height()
        path, payinfo = create_payment_path(os.urandom(32), [], self.node.node_id, path_id_for(self.node.key.secret, terms.payment_hash),
                                            height + terms.min_final_cltv + expiry_blocks, terms.min_final_cltv,
                                            dummy_hops=dummy_hop_count(1, self.blinded_path_length), rounding=PAYINFO_ROUNDING)  # fmt: skip
        log.info("payments: blinded path for invoice %s introduced by us", label)
        return {"blinded_path": path.encode().hex(), "payinfo": payinfo.to_dict(), "payment_hash": terms.payment_hash.hex(),
                "introduction_node_id": self.node.node_id.hex(), "amount_msat": terms.amount_msat}  # fmt: skip

    def _introduced_by_node(self: PaymentsApp, path: BlindedPath) -> BlindedPath:
        """``path`` with its introduction node as a node id: a ``sciddir`` (BOLT 12's compact form: a
        direction and a short channel id) is the channel's first (0) or second (1) node, as the gossip
        graph or our own channels know it. ParamsError for a channel neither knows."""
        if path.introduction_is_node_id:
            return path
        direction, scid = path.first_node_id[0], int.from_bytes(path.first_node_id[1:], "big")
        lookup = getattr(self.graph, "channel", None)
        edge = lookup(scid, 0) if lookup is not None else None
        if edge is not None:  # direction 0 goes from node_id_1 to node_id_2
            nodes = (edge.source, edge.target)
        else:
            ours = self.htlcs.by_scid(scid)
            if ours is None:
                raise ParamsError(f"blinded_path: its introduction node is named by channel {format_scid(scid)}, which we do not know")
            nodes = tuple(sorted((self.node.node_id, ours.peer_id)))  # (node_id_1 is the lesser id, BOLT 7)
        return replace(path, first_node_id=nodes[direction])

    async def payblinded(self: PaymentsApp, blinded_path: str, amount_msat: int, payment_hash: str, fee_base_msat: int,
                         fee_proportional_millionths: int, cltv_expiry_delta: int, htlc_minimum_msat: int = 0,
                         max_fee_msat: int | None = None, timeout: float = PAY_TIMEOUT) -> dict[str, Any]:  # fmt: skip
        """Pay AMOUNT_MSAT for PAYMENT_HASH into BLINDED_PATH (hex, BOLT 12's encoding) whose payinfo says what it
        adds (fees, ``cltv_expiry_delta``); returns once paid (preimage) or failed, as ``pay``."""
        raw = hex_param(blinded_path, "blinded_path", None)
        try:
            path, end = decode_blinded_path(raw)
        except BlindingError as exc:
            raise ParamsError(f"blinded_path: {exc}") from None
        if end != len(raw):
            raise ParamsError(f"blinded_path: {len(raw) - end} bytes after the path")
        hashed = hex_param(payment_hash, "payment_hash", 32)
        check_count(amount_msat, "amount_msat", positive=True)
        for name, value in (("fee_base_msat", fee_base_msat), ("fee_proportional_millionths", fee_proportional_millionths),
                            ("cltv_expiry_delta", cltv_expiry_delta), ("htlc_minimum_msat", htlc_minimum_msat)):  # fmt: skip
            check_count(value, name)
        if max_fee_msat is not None:
            check_count(max_fee_msat, "max_fee_msat")
        payinfo = BlindedPayInfo(fee_base_msat, fee_proportional_millionths, cltv_expiry_delta, htlc_minimum_msat)
        return await self.pay_blinded_paths([(path, payinfo, 0)], amount_msat, hashed, max_fee_msat=max_fee_msat, timeout=timeout)

    async def pay_blinded_paths(self: PaymentsApp, paths: Sequence[PathOffer], amount_msat: int, payment_hash: bytes, *, mpp: bool = False,
                                max_fee_msat: int | None = None, timeout: float = PAY_TIMEOUT) -> dict[str, Any]:  # fmt: skip
        """Pay AMOUNT_MSAT for PAYMENT_HASH into ``paths`` (each a blinded path, its payinfo and its HTLC
        maximum, 0: none), as one payment: with ``mpp`` split over several of them if one does not carry
        it (BOLT 12's invoice with the MPP feature), else in one part into the path that costs least; a
        part a path refuses goes again into another. ``max_fee_msat`` bounds the whole fee (the paths'
        included) of a route, or of the parts found at once. Returns once paid (preimage) or failed, as ``pay``."""
        usable, refused = [], []
        for path, info, maximum in paths:
            try:
                path = self._introduced_by_node(path)
                if path.first_node_id == self.node.node_id:
                    raise ParamsError("blinded_path: this node is its introduction node; pay a path that starts at another node")
                if info.cltv_expiry_delta > MAX_CLTV_AHEAD:  # a path asking more would lock our funds for longer than any hop accepts
                    raise ParamsError(f"cltv_expiry_delta {info.cltv_expiry_delta} is more than {MAX_CLTV_AHEAD} blocks")
            except ParamsError as exc:
                refused.append(exc)
                continue
            usable.append((path, info, maximum))
        if not usable:
            raise refused[0] if refused else ParamsError("no blinded path to pay into")
        paths = usable
        earlier = await trio.to_thread.run_sync(self._store().payments, payment_hash)
        if payment_hash in self._paying or any(p["status"] in ("pending", "complete") for p in earlier):
            raise ChainAppError("a payment of this hash is in progress or done", {"error": "InProgress", "payment_hash": payment_hash.hex()})
        first, payinfo, _ = paths[0]
        # what the store and the route finder's checks need: the first path's introduction node stands for the payee
        target = payment_target(self, first.first_node_id, payment_hash, amount_msat + payinfo.fee(amount_msat), payinfo.cltv_expiry_delta,
                                "blinded path")  # fmt: skip
        log.info("payments: paying %d msat into %d blinded path(s)%s, the first introduced by %s", amount_msat, len(paths),
                 " (multi-part)" if mpp else "", first.first_node_id.hex()[:16])  # fmt: skip
        cheapest = min(info.fee(amount_msat) for _, info, _ in paths)
        if max_fee_msat is not None and cheapest > max_fee_msat:
            raise ChainAppError(f"the blinded path alone charges {cheapest} msat, over max_fee_msat",
                                {"error": "NoRoute", "payment_hash": payment_hash.hex()})  # fmt: skip
        stored = BLINDED_PREFIX + ",".join(p.encode().hex() for p, _, _ in paths)
        return await self._start_payment(target, stored, amount_msat, timeout, max_fee_msat=max_fee_msat, blinded=Blinded(tuple(paths), mpp))
