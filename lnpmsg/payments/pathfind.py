"""Pathfinding: the cheapest route by fees, risk and success probability, and multi-part splits (sans-IO).

:func:`find_route` runs Dijkstra *backwards* from the payee, as Lightning
routers do: the amount a node must receive depends on everything after it,
so walking from the payee gives every channel its exact amount (the
payee's amount plus the fees downstream) when it is looked at. A channel
direction is used only if it is enabled, not banned by mission control,
its HTLC limits admit the amount, the CLTV total stays within
``max_total_cltv_delta`` and the route within ``max_hops``; its cost is
the forwarding node's fee plus :meth:`MissionControl.penalty`.

With penalties the label of a node depends on the amount reaching it, so,
as in every Lightning router, the search is a heuristic; with fees alone
(:meth:`ScoringParams.fees_only`) it finds the cheapest route exactly, HTLC
minimums and the hop and CLTV limits aside (the tests check it against
brute force on random graphs).

:func:`find_routes` splits a payment when no single route carries it: it
halves the part until a route exists, grows it while every channel of that
path keeps an even chance (:data:`GROW_MIN_PROBABILITY`), books it as in flight (so the next parts see less liquidity there, which
steers them to other paths), and goes on until the whole amount is placed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping

from lnpmsg.payments.graph import ChannelGraphView, DirectedChannel
from lnpmsg.payments.route import NoRouteError, Route, build_route
from lnpmsg.payments.scorer import MissionControl

__all__ = [
    "DEFAULT_MAX_HOPS",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_TOTAL_CLTV_DELTA",
    "find_path",
    "find_route",
    "find_routes",
]

#: BOLT 4: an onion holds 1300 bytes of payloads, about 20 hops of the smallest
DEFAULT_MAX_HOPS = 20
#: the most blocks our funds may be locked in one payment (two weeks, lnd's default)
DEFAULT_MAX_TOTAL_CLTV_DELTA = 2016
#: the most parts one payment is split into
DEFAULT_MAX_PARTS = 16
#: parts are never made smaller than this (a part has fixed costs: fees' base, an HTLC slot)
DEFAULT_MIN_PART_MSAT = 10_000
#: a part found for a smaller amount grows only while each channel's success chance stays this high
GROW_MIN_PROBABILITY = 0.5


def find_path(
    graph: ChannelGraphView,
    source: bytes,
    target: bytes,
    amount_msat: int,
    *,
    scorer: MissionControl,
    now: float,
    final_cltv_delta: int = 18,
    max_total_cltv_delta: int = DEFAULT_MAX_TOTAL_CLTV_DELTA,
    max_hops: int = DEFAULT_MAX_HOPS,
    max_fee_msat: int | None = None,
    inflight: Mapping[tuple[int, int], int] | None = None,
) -> list[DirectedChannel]:
    """The cheapest channel path from ``source`` to ``target`` for ``amount_msat`` (NoRouteError if none)."""
    if source == target:
        raise NoRouteError("source and target are the same node")
    if amount_msat <= 0:
        raise NoRouteError("the amount must be positive")
    fee_limit = amount_msat + (max_fee_msat if max_fee_msat is not None else 1 << 64)
    penalty = scorer.penalty_function(now, inflight)
    inf = float("inf")
    heappush, heappop = heapq.heappush, heapq.heappop
    # per node: cost to the target, amount it must receive, CLTV delta it needs, hops, its channel on
    cost: dict[bytes, float] = {target: 0.0}
    amount: dict[bytes, int] = {target: amount_msat}
    cltv: dict[bytes, int] = {target: final_cltv_delta}
    hops: dict[bytes, int] = {target: 0}
    next_channel: dict[bytes, DirectedChannel] = {}
    settled: set[bytes] = set()
    counter = itertools.count()
    heap: list[tuple[float, int, bytes]] = [(0.0, 0, target)]
    found = False
    while heap:
        c, _, v = heappop(heap)
        if v in settled:
            continue
        settled.add(v)
        if v == source:
            found = True
            break
        h = hops[v] + 1
        if h > max_hops:
            continue
        a, d = amount[v], cltv[v]
        for edge in graph.incoming(v):
            u = edge.source
            if edge.disabled or u in settled or a < edge.htlc_minimum_msat or a > edge.htlc_maximum_msat:
                continue
            if u == source:
                # our own channel: no fee, no delta of ours
                base_cost, new_amount, new_cltv = c, a, d
            else:
                if edge.local:
                    continue  # someone else's end of our channel: not a forwarding hop
                fee = edge.fee_base_msat + a * edge.fee_proportional_millionths // 1_000_000
                new_amount, new_cltv = a + fee, d + edge.cltv_expiry_delta
                if new_cltv > max_total_cltv_delta or new_amount > fee_limit:
                    continue
                base_cost = c + fee
            best = cost.get(u, inf)
            if base_cost >= best:
                continue  # penalties are never negative: this cannot win, skip scoring it
            extra = penalty(edge, a)
            if extra is None:
                continue
            new_cost = base_cost + extra
            if new_cost < best:
                cost[u], amount[u], cltv[u], hops[u], next_channel[u] = new_cost, new_amount, new_cltv, h, edge
                heappush(heap, (new_cost, next(counter), u))
    if not found:
        raise NoRouteError(
            f"no route of {amount_msat} msat to {target.hex()} within {max_hops} hops and {max_total_cltv_delta} blocks"
            " (no path, or every path lacks liquidity, is disabled, banned or too expensive)"
        )
    path = []
    node = source
    while node != target:
        edge = next_channel[node]
        path.append(edge)
        node = edge.target
    return path


def find_route(
    graph: ChannelGraphView,
    source: bytes,
    target: bytes,
    amount_msat: int,
    *,
    current_height: int,
    now: float,
    scorer: MissionControl | None = None,
    final_cltv_delta: int = 18,
    max_total_cltv_delta: int = DEFAULT_MAX_TOTAL_CLTV_DELTA,
    max_hops: int = DEFAULT_MAX_HOPS,
    max_fee_msat: int | None = None,
    inflight: Mapping[tuple[int, int], int] | None = None,
) -> Route:
    """The best route delivering ``amount_msat`` to ``target``, amounts and expiries set (see :mod:`.route`)."""
    path = find_path(
        graph,
        source,
        target,
        amount_msat,
        scorer=scorer if scorer is not None else MissionControl(),
        now=now,
        final_cltv_delta=final_cltv_delta,
        max_total_cltv_delta=max_total_cltv_delta,
        max_hops=max_hops,
        max_fee_msat=max_fee_msat,
        inflight=inflight,
    )
    return build_route(path, amount_msat, current_height, final_cltv_delta)


def _most_deliverable(path: list[DirectedChannel], limits: list[int], at_most: int) -> int:
    """The largest payee amount <= ``at_most`` whose HTLC on each channel stays within ``limits``."""

    def fits(final: int) -> bool:
        amount = final
        for i in range(len(path) - 1, -1, -1):
            if amount > limits[i] or amount < path[i].htlc_minimum_msat:
                return False
            if i:
                amount += path[i].fee(amount)
        return True

    lo, hi = 0, at_most
    while lo < hi:  # amounts grow with the payee's amount, so the fitting ones form a prefix
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def find_routes(
    graph: ChannelGraphView,
    source: bytes,
    target: bytes,
    amount_msat: int,
    *,
    current_height: int,
    now: float,
    scorer: MissionControl | None = None,
    final_cltv_delta: int = 18,
    max_total_cltv_delta: int = DEFAULT_MAX_TOTAL_CLTV_DELTA,
    max_hops: int = DEFAULT_MAX_HOPS,
    max_parts: int = DEFAULT_MAX_PARTS,
    min_part_msat: int = DEFAULT_MIN_PART_MSAT,
    inflight: Mapping[tuple[int, int], int] | None = None,
) -> list[Route]:
    """Routes whose payee amounts add up to ``amount_msat``: one if a single route carries it, else parts.

    ``inflight`` is what earlier attempts of this payment still hold per
    channel direction; the result is booked on a copy of it. Send several
    parts only when the invoice offers ``basic_mpp``.
    """
    scorer = scorer if scorer is not None else MissionControl()
    booked: dict[tuple[int, int], int] = dict(inflight or {})
    options = dict(
        scorer=scorer,
        now=now,
        final_cltv_delta=final_cltv_delta,
        max_total_cltv_delta=max_total_cltv_delta,
        max_hops=max_hops,
        inflight=booked,
    )
    routes: list[Route] = []
    remaining = amount_msat
    while remaining > 0:
        if len(routes) == max_parts:
            raise NoRouteError(f"placed {amount_msat - remaining} of {amount_msat} msat in {max_parts} parts, the most allowed")
        part = remaining
        while True:
            try:
                path = find_path(graph, source, target, part, **options)  # type: ignore[arg-type]
                break
            except NoRouteError:
                smallest = min(min_part_msat, remaining)
                if part <= smallest:
                    raise NoRouteError(
                        f"found routes for {amount_msat - remaining} of {amount_msat} msat; nothing carries the remaining"
                        f" {remaining} msat, even in parts of {smallest} msat"
                    ) from None
                part = max(smallest, part // 2)
        if part < remaining:
            # grow the part while every channel keeps an even chance (LDK likewise
            # caps a path's share of a channel, so one part does not drain it)
            limits = [scorer.max_sendable(edge, now, booked, min_probability=GROW_MIN_PROBABILITY) for edge in path]
            part = max(part, _most_deliverable(path, limits, remaining))
        route = build_route(path, part, current_height, final_cltv_delta)
        for hop in route.hops:
            booked[hop.key] = booked.get(hop.key, 0) + hop.amount_msat
        routes.append(route)
        remaining -= part
    return routes
