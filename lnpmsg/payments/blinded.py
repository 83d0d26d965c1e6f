"""Blinded payments (BOLT 4 "Route Blinding" for payments), sans-IO.

What a node inside a blinded path reads from its ``encrypted_recipient_data``
(:func:`read_blinded_hop`: the next channel, ``payment_relay``,
``payment_constraints``, ``allowed_features``, ``path_id``) and what it
forwards (:func:`forward_amount`, :func:`forward_expiry`: BOLT 4's formulas,
the amount rounded up); what a recipient hands out
(:func:`create_payment_path`: a blinded path to itself through a peer, and the
aggregate fees and CLTV delta a payer adds, :class:`BlindedPayInfo`); what a
payer puts in the onion for the blinded part of a route
(:func:`blinded_payloads`).

The recipient ties a path to one of its invoices with ``path_id`` =
HMAC(node secret, payment hash) (:func:`path_id_for`): no storage, and no one
else can make a path that the recipient would accept for that hash.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lnpmsg.payments.onion.blinding import BlindedPath, BlindingError, create_blinded_path, decrypt_recipient_data, padded_encrypted_data
from lnpmsg.payments.onion.payloads import HopPayload
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.wire.primitives import ShortChannelId
from lnpmsg.wire.tlv import TlvStream

__all__ = [
    "BlindedHopData",
    "BlindedPayInfo",
    "PaymentConstraints",
    "PathHop",
    "PayInfoRounding",
    "PaymentRelay",
    "aggregate_payinfo",
    "blinded_payloads",
    "create_payment_path",
    "extend_route",
    "forward_amount",
    "forward_expiry",
    "onion_hop_keys",
    "path_id_for",
    "read_blinded_hop",
]

_MILLION = 1_000_000
_PATH_ID_KEY = b"lnpmsg blinded payment path_id"


@dataclass(frozen=True, slots=True)
class PaymentRelay:
    """``payment_relay``: what a blinded hop charges and the CLTV room it takes (set by the recipient)."""

    cltv_expiry_delta: int
    fee_proportional_millionths: int
    fee_base_msat: int


@dataclass(frozen=True, slots=True)
class PaymentConstraints:
    """``payment_constraints``: the latest expiry and the smallest amount the path may be used with."""

    max_cltv_expiry: int
    htlc_minimum_msat: int


@dataclass(frozen=True, slots=True)
class BlindedHopData:
    """A blinded hop's ``encrypted_data_tlv``, parsed, and the path key for the next node."""

    short_channel_id: int | None
    next_node_id: bytes | None
    relay: PaymentRelay | None
    constraints: PaymentConstraints | None
    path_id: bytes | None
    next_path_key: bytes

    def check_constraints(self, amount_msat: int, cltv_expiry: int) -> str | None:
        """Why an HTLC of ``amount_msat`` expiring at ``cltv_expiry`` may not use this hop (None: it may)."""
        c = self.constraints
        if c is None:
            return None
        if cltv_expiry > c.max_cltv_expiry:
            return f"expiry {cltv_expiry} is beyond the path's max_cltv_expiry {c.max_cltv_expiry}"
        if amount_msat < c.htlc_minimum_msat:
            return f"{amount_msat} msat is below the path's htlc_minimum_msat {c.htlc_minimum_msat}"
        return None


def read_blinded_hop(node_key: bytes, path_key: bytes, encrypted_recipient_data: bytes) -> BlindedHopData:
    """Decrypt and check this node's ``encrypted_recipient_data`` (BOLT 4's reader rules that the data
    alone decides). :class:`BlindingError` when it does not decrypt, has an unknown even record, names
    both a channel and a node, or allows a feature (we know none that a blinded payment may use, and
    BOLT 4 refuses an unknown bit, odd or even)."""
    recipient = decrypt_recipient_data(node_key, path_key, encrypted_recipient_data)
    data = recipient.data
    features = data.get("allowed_features") or b""
    if any(features):
        raise BlindingError("allowed_features names a feature this node does not know")
    scid, node = data.get("short_channel_id"), data.get("next_node_id")
    if scid is not None and node is not None:
        raise BlindingError("encrypted_data_tlv has both short_channel_id and next_node_id")
    relay = data.get("payment_relay")
    constraints = data.get("payment_constraints")
    return BlindedHopData(
        short_channel_id=scid.to_int() if scid is not None else None,
        next_node_id=node,
        relay=PaymentRelay(relay.cltv_expiry_delta, relay.fee_proportional_millionths, relay.fee_base_msat) if relay is not None else None,
        constraints=PaymentConstraints(constraints.max_cltv_expiry, constraints.htlc_minimum_msat) if constraints is not None else None,
        path_id=data.get("path_id"),
        next_path_key=recipient.next_path_key,
    )


def forward_amount(amount_msat: int, relay: PaymentRelay) -> int:
    """What a blinded hop forwards of an incoming ``amount_msat`` (BOLT 4, rounded up: the hop never
    keeps more than its fee); may come out at or below zero for an HTLC smaller than the base fee."""
    prop = relay.fee_proportional_millionths
    return ((amount_msat - relay.fee_base_msat) * _MILLION + _MILLION + prop - 1) // (_MILLION + prop)


def forward_expiry(cltv_expiry: int, relay: PaymentRelay) -> int:
    """The forwarded HTLC's expiry: the incoming one minus ``cltv_expiry_delta``."""
    return cltv_expiry - relay.cltv_expiry_delta


@dataclass(frozen=True, slots=True)
class BlindedPayInfo:
    """What a payer adds for the whole blinded path (BOLT 12's ``blinded_payinfo``, BOLT 4's totals)."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int = 0

    def fee(self, amount_msat: int) -> int:
        """The fee for delivering ``amount_msat`` through the path (the proportional part rounded up,
        so the hops' rounding never leaves the recipient short)."""
        return self.fee_base_msat + -(-amount_msat * self.fee_proportional_millionths // _MILLION)

    def to_dict(self) -> dict[str, int]:
        return {"fee_base_msat": self.fee_base_msat, "fee_proportional_millionths": self.fee_proportional_millionths,
                "cltv_expiry_delta": self.cltv_expiry_delta, "htlc_minimum_msat": self.htlc_minimum_msat}  # fmt: skip


def aggregate_payinfo(relays: Sequence[PaymentRelay], min_final_cltv: int, htlc_minimum_msat: int = 0) -> BlindedPayInfo:
    """The path's totals from its relaying hops (introduction node first), as BOLT 4 computes them:
    each hop's fee applies to what the hops after it charge, so the sums are folded from the last."""
    base = prop = 0
    for relay in reversed(relays):
        p = relay.fee_proportional_millionths
        base = (relay.fee_base_msat * _MILLION + base * (_MILLION + p) + _MILLION - 1) // _MILLION
        prop = ((prop + p) * _MILLION + prop * p + _MILLION - 1) // _MILLION
    delta = sum(r.cltv_expiry_delta for r in relays) + min_final_cltv
    return BlindedPayInfo(base, prop, delta, htlc_minimum_msat)


@dataclass(frozen=True, slots=True)
class PayInfoRounding:
    """The steps the payinfo of a path we make is rounded up to (each a multiple of its step; 0: not
    rounded), so a payer does not read the exact policy of the peer introducing it, nor our final
    delta, from it: many policies show as one. The hops keep their own ``payment_relay``: a payer
    paying the rounded figures gives the path more than it needs (the fees and blocks over go on to
    us), and the path's expiry limits are raised by the blocks added, so what the payer adds fits."""

    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 100
    cltv_expiry_delta: int = 24

    def apply(self, info: BlindedPayInfo) -> BlindedPayInfo:
        """``info`` with its fees and CLTV delta rounded up (its ``htlc_minimum_msat`` kept: the hops'
        constraint)."""
        return BlindedPayInfo(_round_up(info.fee_base_msat, self.fee_base_msat),
                              _round_up(info.fee_proportional_millionths, self.fee_proportional_millionths),
                              _round_up(info.cltv_expiry_delta, self.cltv_expiry_delta), info.htlc_minimum_msat)  # fmt: skip


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step if step > 0 else value


def path_id_for(node_secret: bytes, payment_hash: bytes) -> bytes:
    """The ``path_id`` of our blinded paths for ``payment_hash``: a MAC only we can make, so a path
    someone else built to us (to probe who we are) or one for another invoice is refused."""
    key = hmac.digest(node_secret, _PATH_ID_KEY, "sha256")
    return hmac.digest(key, payment_hash, "sha256")


@dataclass(frozen=True, slots=True)
class PathHop:
    """A relaying hop of a path we create: the node, the channel it forwards over to the next hop, its relay terms."""

    node_id: bytes
    short_channel_id: int
    relay: PaymentRelay
    htlc_minimum_msat: int = 0


def create_payment_path(session_key: bytes, hops: Sequence[PathHop], our_node_id: bytes, path_id: bytes, max_cltv_expiry: int,
                        min_final_cltv: int, htlc_minimum_msat: int = 0, dummy_hops: int = 0,
                        rounding: PayInfoRounding | None = None) -> tuple[BlindedPath, BlindedPayInfo]:  # fmt: skip
    """A blinded path through ``hops`` (the introduction node first; none: we are it) to us, usable
    until our own HTLC would expire after ``max_cltv_expiry`` (each hop's limit adds the deltas after
    it, BOLT 4), and what a payer adds for it. ``dummy_hops`` more hops of ours end it (BOLT 4's dummy
    hops: each names us as the next node, relays for nothing, and is peeled by us on receipt), so the
    payer cannot tell where in the path we are. Every hop's data is padded to one length. With
    ``rounding`` the payinfo is rounded up (:class:`PayInfoRounding`), and every expiry limit raised by
    the blocks that adds."""
    minimum = max([htlc_minimum_msat, *(h.htlc_minimum_msat for h in hops)])
    payinfo = aggregate_payinfo([h.relay for h in hops], min_final_cltv, minimum)
    if rounding is not None:
        rounded = rounding.apply(payinfo)
        # (a payer adds the rounded delta: the blocks over reach us, so each hop's limit allows them)
        max_cltv_expiry += rounded.cltv_expiry_delta - payinfo.cltv_expiry_delta
        payinfo = rounded
    streams = []
    limit = max_cltv_expiry
    limits = []
    for hop in reversed(hops):
        limit += hop.relay.cltv_expiry_delta
        limits.append(limit)
    limits.reverse()
    for hop, hop_limit in zip(hops, limits, strict=True):
        r = hop.relay
        streams.append(TlvStream({
            "short_channel_id": ShortChannelId.from_int(hop.short_channel_id),
            # (a record's value may be given as a dict of its fields)
            "payment_relay": {"cltv_expiry_delta": r.cltv_expiry_delta, "fee_proportional_millionths": r.fee_proportional_millionths,
                              "fee_base_msat": r.fee_base_msat},
            "payment_constraints": {"max_cltv_expiry": hop_limit, "htlc_minimum_msat": minimum},
        }))  # fmt: skip
    for _ in range(dummy_hops):
        streams.append(TlvStream({
            "next_node_id": our_node_id,
            "payment_relay": {"cltv_expiry_delta": 0, "fee_proportional_millionths": 0, "fee_base_msat": 0},
            "payment_constraints": {"max_cltv_expiry": max_cltv_expiry, "htlc_minimum_msat": minimum},
        }))  # fmt: skip
    streams.append(TlvStream({
        "path_id": path_id,
        "payment_constraints": {"max_cltv_expiry": max_cltv_expiry, "htlc_minimum_msat": minimum},
    }))  # fmt: skip
    nodes = [*(h.node_id for h in hops), *[our_node_id] * (dummy_hops + 1)]
    path = create_blinded_path(session_key, nodes, padded_encrypted_data(streams))
    return path, payinfo


def blinded_payloads(path: BlindedPath, amount_msat: int, final_cltv: int, total_msat: int) -> list[bytes]:
    """The onion payloads of the blinded part of a route (one per hop of ``path``): each hop its
    ``encrypted_recipient_data``, the introduction node also ``current_path_key``, and only the final
    one ``amt_to_forward``, ``outgoing_cltv_value`` and ``total_amount_msat`` (BOLT 4's writer rules:
    the hops before take their amounts and expiries from their own data)."""
    out = []
    last = len(path.hops) - 1
    for i, hop in enumerate(path.hops):
        payload = HopPayload(
            encrypted_recipient_data=hop.encrypted_recipient_data,
            current_path_key=path.first_path_key if i == 0 else None,
            amt_to_forward=amount_msat if i == last else None,
            outgoing_cltv_value=final_cltv if i == last else None,
            total_amount_msat=total_msat if i == last else None,
        )
        out.append(payload.encode())
    return out


def onion_hop_keys(path: BlindedPath) -> list[bytes]:
    """The keys a payer encrypts the blinded part of its onion to: the introduction node's own id (the
    path key reaches it in ``current_path_key``), then the blinded ids of the hops after it."""
    return [path.first_node_id, *(h.blinded_node_id for h in path.hops[1:])]


def extend_route(to_introduction: Route, path: BlindedPath, amount_msat: int, height: int) -> Route:
    """A route to the introduction node (its final amount: ``amount_msat`` plus the path's fee, its
    final expiry the path's CLTV delta above ``height``) continued through ``path``: the introduction
    node's hop now delivers ``amount_msat`` at ``height`` (BOLT 4: the final payload's
    ``outgoing_cltv_value`` is the current height), and each later blinded hop is a stand-in
    (short channel id 0, its blinded id) so the route names every onion layer, for failures and
    ``listpayments``."""
    *head, intro = to_introduction.hops
    hops = [*head, replace(intro, amt_to_forward=amount_msat, outgoing_cltv_value=height)]
    hops += [RouteHop(0, 0, h.blinded_node_id, amount_msat, height, amount_msat, height) for h in path.hops[1:]]
    return Route(tuple(hops), blinded=path)
