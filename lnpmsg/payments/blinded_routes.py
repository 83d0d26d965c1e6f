"""Routes into any of several blinded paths, one part or many (sans-IO).

A BOLT 12 invoice gives a payer several blinded paths to its issuer, each
with its ``blinded_payinfo``. To pathfinding each path is one more channel:
from its introduction node to a stand-in payee (:data:`BLINDED_PAYEE`), with
the path's aggregate fees and CLTV delta as its policy and its
``htlc_maximum_msat`` as its limit (the way mature routers see a blinded
tail). One search then weighs the route to each introduction node with what
its path adds, and :func:`~lnpmsg.payments.pathfind.find_routes` splits a
payment over several paths as over several channels. The stand-in channel is
then cut off and the route continued through the path's hops
(:func:`~lnpmsg.payments.blinded.extend_route`).

Each path is known to pathfinding by a stand-in short channel id
(:func:`path_scid`), so a payment that meets a refusal inside a path
(``invalid_onion_blinding``) excludes it as it excludes a channel of ours,
and sends the part again over another path (a part of several only at its
second failure: :class:`~lnpmsg.payments.sender.Payment`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from lnpmsg.payments.blinded import BlindedPayInfo
from lnpmsg.payments.graph import NO_HTLC_MAXIMUM, ChannelGraphView, DirectedChannel, OverlayGraph
from lnpmsg.payments.onion.blinding import BlindedPath
from lnpmsg.payments.pathfind import find_route, find_routes
from lnpmsg.payments.route import NoRouteError, Route, RouteHop
from lnpmsg.payments.scorer import MissionControl

__all__ = ["BLINDED_PAYEE", "PathOffer", "blinded_paths_finder", "path_scid"]

#: where every blinded path ends for pathfinding: no node (not a point on the curve)
BLINDED_PAYEE = bytes(33)
#: the block of every stand-in short channel id: no chain gets there (16.7 million blocks)
_STAND_IN_BLOCK = 0xFFFFFF

#: a blinded path and what paying through it adds (its ``blinded_payinfo``), and its ``htlc_maximum_msat``
PathOffer = tuple[BlindedPath, BlindedPayInfo, int]


def path_scid(path: BlindedPath) -> int:
    """The stand-in short channel id of ``path`` for pathfinding and exclusion: a block no chain has and
    40 bits of the path's hash, the same for the same path in every search."""
    digest = int.from_bytes(hashlib.sha256(path.encode()).digest()[:5], "big")
    return (_STAND_IN_BLOCK << 40) | digest


def _edge(path: BlindedPath, payinfo: BlindedPayInfo, htlc_maximum_msat: int) -> DirectedChannel:
    # (a channel's proportional fee rounds down, a path's up: one more msat of base covers the difference)
    return DirectedChannel(path_scid(path), path.first_node_id, BLINDED_PAYEE,
                           fee_base_msat=payinfo.fee_base_msat + (1 if payinfo.fee_proportional_millionths else 0),
                           fee_proportional_millionths=payinfo.fee_proportional_millionths,
                           cltv_expiry_delta=payinfo.cltv_expiry_delta, htlc_minimum_msat=payinfo.htlc_minimum_msat,
                           htlc_maximum_msat=htlc_maximum_msat or NO_HTLC_MAXIMUM)  # fmt: skip


def _through(route: Route, paths: dict[int, BlindedPath]) -> Route:
    """``route`` (ending with a stand-in channel) continued through the blinded path it stands for: its
    introduction node's hop already delivers the amount at the height (the stand-in payee's final delta is
    0), and each later blinded hop is a stand-in of its own (short channel id 0, its blinded id)."""
    *head, into_payee = route.hops
    path = paths[into_payee.short_channel_id]
    amount, height = into_payee.amt_to_forward, into_payee.outgoing_cltv_value
    hops = [*head, *(RouteHop(0, 0, h.blinded_node_id, amount, height, amount, height) for h in path.hops[1:])]
    return Route(tuple(hops), blinded=path)


def blinded_paths_finder(view: Callable[[frozenset[int]], ChannelGraphView], source: bytes, offers: Sequence[PathOffer], *,
                         height: int, now: Callable[[], float], scorer: MissionControl, mpp: bool,
                         max_fee_msat: int | None = None) -> Callable[[int, frozenset[int]], list[Route]]:  # fmt: skip
    """A payment's route finder (``find(amount_msat, excluded)``) into the blinded paths ``offers``:
    ``view(excluded)`` is the graph with our channels (those in ``excluded`` unusable); a path whose
    :func:`path_scid` is in ``excluded`` is not used. One route carries the amount if one can (its
    whole fee within ``max_fee_msat``); else, with ``mpp``, it is split over several routes and paths
    (the fees of the parts found at once within ``max_fee_msat``)."""
    usable = [(p, i, m) for p, i, m in offers if p.first_node_id != source]  # (a payer cannot introduce a path it pays)
    paths = {path_scid(p): p for p, _, _ in usable}

    def find(amount_msat: int, excluded: frozenset[int]) -> list[Route]:
        edges = [_edge(p, i, m) for p, i, m in usable if path_scid(p) not in excluded]
        if not edges:
            raise NoRouteError("no blinded path of the invoice is left to pay into (each refused the payment, or we introduce it)")
        graph = OverlayGraph(view(excluded), edges)
        options = dict(current_height=height, now=now(), scorer=scorer, final_cltv_delta=0)
        try:
            routes = [find_route(graph, source, BLINDED_PAYEE, amount_msat, max_fee_msat=max_fee_msat, **options)]  # type: ignore[arg-type]
        except NoRouteError:
            if not mpp:
                raise
            routes = find_routes(graph, source, BLINDED_PAYEE, amount_msat, **options)  # type: ignore[arg-type]
            fee = sum(r.fee_msat for r in routes)
            if max_fee_msat is not None and fee > max_fee_msat:
                raise NoRouteError(f"the parts that carry {amount_msat} msat charge {fee} msat, over max_fee_msat {max_fee_msat}") from None
        return [_through(r, paths) for r in routes]

    return find
