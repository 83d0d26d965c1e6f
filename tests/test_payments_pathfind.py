"""Pathfinding: exact routes on hand-made graphs, random graphs against brute force,
policies and limits, route hints and our own channels, learning from failures, MPP splits."""

from __future__ import annotations

import dataclasses
import random

import pytest

from lnpmsg.payments.bolt11 import RouteHintHop
from lnpmsg.payments.graph import DirectedChannel, OverlayGraph, RoutingGraph, hint_channels, local_channel
from lnpmsg.payments.pathfind import find_path, find_route, find_routes
from lnpmsg.payments.route import NoRouteError, build_route
from lnpmsg.payments.onion.failures import (
    FeeInsufficient,
    IncorrectCltvExpiry,
    IncorrectOrUnknownPaymentDetails,
    InvalidOnionHmac,
    PermanentChannelFailure,
    TemporaryChannelFailure,
    TemporaryNodeFailure,
)
from lnpmsg.payments.scorer import FailureKind, MissionControl, ScoringParams

HEIGHT = 800_000
NOW = 1_700_000_000.0


def node(i: int) -> bytes:
    return b"\x02" + bytes([i]) * 32


S, A, B, C, T = (node(i) for i in range(1, 6))


def channel(graph: RoutingGraph, scid: int, x: bytes, y: bytes, *, capacity_sat=None, both=True, **policy) -> None:
    """A channel x <-> y, the x -> y direction with ``policy`` (and y -> x too when ``both``)."""
    n1, n2 = sorted((x, y))
    graph.add_channel(scid, n1, n2, capacity_sat)
    defaults = dict(fee_base_msat=0, fee_proportional_millionths=0, cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**12)
    defaults.update(policy)
    directions = [0, 1] if both else [0 if x == n1 else 1]
    for d in directions:
        graph.update(scid, d, **defaults)


def fees_only() -> MissionControl:
    return MissionControl(ScoringParams.fees_only())


def test_cheapest_route_and_its_exact_amounts():
    g = RoutingGraph()
    channel(g, 1, S, A)
    channel(g, 2, A, T, fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=40)
    channel(g, 3, S, B)
    channel(g, 4, B, T, fee_base_msat=500, fee_proportional_millionths=1000, cltv_expiry_delta=144)
    route = find_route(g, S, T, 1_000_000, current_height=HEIGHT, now=NOW, scorer=fees_only())
    assert route.short_channel_ids == [1, 2]
    first, last = route.hops
    assert (first.node_id, first.amount_msat, first.cltv_expiry) == (A, 1_001_100, HEIGHT + 18 + 40)
    assert (first.amt_to_forward, first.outgoing_cltv_value, first.fee_msat) == (1_000_000, HEIGHT + 18, 1100)
    assert (last.node_id, last.amount_msat, last.cltv_expiry) == (T, 1_000_000, HEIGHT + 18)
    assert (last.amt_to_forward, last.outgoing_cltv_value, last.fee_msat) == (1_000_000, HEIGHT + 18, 0)
    assert route.fee_msat == 1100 and route.amount_msat == 1_001_100
    # for a tiny amount the lower base fee wins
    small = find_route(g, S, T, 100, current_height=HEIGHT, now=NOW, scorer=fees_only())
    assert small.short_channel_ids == [3, 4] and small.fee_msat == 500
    assert small.cltv_expiry == HEIGHT + 18 + 144


def test_fees_accumulate_backwards_over_three_hops():
    g = RoutingGraph()
    channel(g, 1, S, A)
    channel(g, 2, A, B, fee_base_msat=1000, fee_proportional_millionths=2000, cltv_expiry_delta=10)
    channel(g, 3, B, T, fee_base_msat=7, fee_proportional_millionths=500_000, cltv_expiry_delta=20)
    route = find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, final_cltv_delta=9)
    fee_b = 7 + 10_000 // 2  # B forwards 10_000 to T
    fee_a = 1000 + (10_000 + fee_b) * 2000 // 1_000_000
    assert [h.amount_msat for h in route.hops] == [10_000 + fee_b + fee_a, 10_000 + fee_b, 10_000]
    assert [h.cltv_expiry for h in route.hops] == [HEIGHT + 39, HEIGHT + 29, HEIGHT + 9]
    assert [h.fee_msat for h in route.hops] == [fee_a, fee_b, 0]


def test_policies_disabled_and_htlc_limits():
    g = RoutingGraph()
    channel(g, 1, S, A)
    channel(g, 2, A, T, fee_base_msat=1)
    channel(g, 3, S, B)
    channel(g, 4, B, T, fee_base_msat=50)
    n1 = min(A, T)
    g.update(2, 0 if A == n1 else 1, fee_base_msat=1, fee_proportional_millionths=0, cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**12, disabled=True)
    assert find_route(g, S, T, 5000, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [3, 4]
    g.update(2, 0 if A == n1 else 1, fee_base_msat=1, fee_proportional_millionths=0, cltv_expiry_delta=40, htlc_minimum_msat=1000, htlc_maximum_msat=4000)
    assert find_route(g, S, T, 5000, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [3, 4]  # above maximum
    assert find_route(g, S, T, 999, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [3, 4]  # below minimum
    assert find_route(g, S, T, 3000, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [1, 2]
    # a channel announced but never updated is not used
    g.add_channel(9, *sorted((S, T)))
    assert find_route(g, S, T, 3000, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [1, 2]


def test_apply_update_reads_channel_update_fields():
    class Update:  # the fields of a BOLT-7 channel_update, as the gossip layer decodes them
        short_channel_id = 1
        channel_flags = 0
        message_flags = 1
        cltv_expiry_delta = 34
        htlc_minimum_msat = 5
        fee_base_msat = 11
        fee_proportional_millionths = 22
        htlc_maximum_msat = 123_456

    g = RoutingGraph()
    g.add_channel(1, A, B, 1000)
    assert g.apply_update(Update())
    edge = g.channel(1, 0)
    assert (edge.source, edge.target, edge.fee_base_msat, edge.fee_proportional_millionths) == (A, B, 11, 22)
    assert (edge.cltv_expiry_delta, edge.htlc_minimum_msat, edge.htlc_maximum_msat, edge.disabled) == (34, 5, 123_456, False)
    assert g.channel(1, 1).disabled  # the other direction has had no update
    g.remove_channel(1)
    assert len(g) == 0 and g.incoming(B) == ()


def test_cltv_and_hop_limits():
    g = RoutingGraph()
    chain = [S] + [node(10 + i) for i in range(24)]
    for i, (x, y) in enumerate(zip(chain, chain[1:], strict=False)):
        channel(g, 100 + i, x, y, cltv_expiry_delta=10)
    far = chain[-1]
    with pytest.raises(NoRouteError, match="20 hops"):
        find_route(g, S, far, 1000, current_height=HEIGHT, now=NOW)
    route = find_route(g, S, far, 1000, current_height=HEIGHT, now=NOW, max_hops=24)
    assert len(route.hops) == 24
    assert route.cltv_expiry == HEIGHT + 18 + 23 * 10
    with pytest.raises(NoRouteError):
        find_route(g, S, far, 1000, current_height=HEIGHT, now=NOW, max_hops=24, max_total_cltv_delta=18 + 23 * 10 - 1)


def test_route_hints_reach_a_private_payee():
    g = RoutingGraph()
    channel(g, 1, S, A)
    channel(g, 2, A, B, fee_base_msat=10)
    payee = node(99)
    with pytest.raises(NoRouteError):
        find_route(g, S, payee, 50_000, current_height=HEIGHT, now=NOW)
    hint = (RouteHintHop(B, 77, 1000, 100, 30),)
    view = OverlayGraph(g, hint_channels(hint, payee))
    route = find_route(view, S, payee, 50_000, current_height=HEIGHT, now=NOW, final_cltv_delta=10)
    assert route.short_channel_ids == [1, 2, 77]
    assert [h.node_id for h in route.hops] == [A, B, payee]
    assert route.hops[1].fee_msat == 1000 + 50_000 * 100 // 1_000_000
    assert route.hops[1].cltv_expiry == HEIGHT + 10 + 30


def test_our_own_channels_use_what_we_can_send():
    g = RoutingGraph()
    channel(g, 1, S, A, capacity_sat=1_000_000)
    channel(g, 2, A, T)
    channel(g, 3, S, B, capacity_sat=1_000_000)
    channel(g, 4, B, T, fee_base_msat=100)
    view = OverlayGraph(g, [local_channel(1, S, A, 20_000), local_channel(3, S, B, 5_000_000)])
    assert find_route(view, S, T, 10_000, current_height=HEIGHT, now=NOW).short_channel_ids == [1, 2]
    # more than channel 1's balance: the dearer path through B
    assert find_route(view, S, T, 30_000, current_height=HEIGHT, now=NOW).short_channel_ids == [3, 4]


def test_success_probability_prefers_the_larger_channel():
    g = RoutingGraph()
    channel(g, 1, S, A, capacity_sat=1_000)
    channel(g, 2, A, T, capacity_sat=1_000)
    channel(g, 3, S, B, capacity_sat=1_000_000)
    channel(g, 4, B, T, capacity_sat=1_000_000, fee_base_msat=1)
    mc = MissionControl()
    assert find_route(g, S, T, 600_000, current_height=HEIGHT, now=NOW, scorer=mc).short_channel_ids == [3, 4]
    assert find_route(g, S, T, 600_000, current_height=HEIGHT, now=NOW, scorer=fees_only()).short_channel_ids == [1, 2]
    assert mc.probability(g.channel(2, 0), 600_000, NOW) == pytest.approx(0.4, abs=1e-3)


# ------------------------------------------------------------ random graphs against brute force


def _random_graph(rng: random.Random, n: int, m: int) -> tuple[RoutingGraph, list[DirectedChannel]]:
    g = RoutingGraph()
    nodes = [node(i) for i in range(1, n + 1)]
    for scid in range(1, m + 1):
        x, y = rng.sample(nodes, 2)
        n1, n2 = sorted((x, y))
        g.add_channel(scid, n1, n2)
        for d in (0, 1):
            if rng.random() < 0.85:
                g.update(
                    scid,
                    d,
                    fee_base_msat=rng.choice([0, 1, 10, 1000, 5000]),
                    fee_proportional_millionths=rng.choice([0, 1, 100, 5000, 100_000]),
                    cltv_expiry_delta=rng.randrange(6, 150),
                    htlc_minimum_msat=0,
                    htlc_maximum_msat=rng.choice([10**6, 10**7, 10**12]),
                    disabled=rng.random() < 0.1,
                )
    edges = [e for scid in range(1, m + 1) for d in (0, 1) if not (e := g.channel(scid, d)).disabled]
    return g, edges


def _brute_force_fee(edges: list[DirectedChannel], source: bytes, target: bytes, amount: int) -> int | None:
    best = None

    def walk(at: bytes, path: list[DirectedChannel], seen: set[bytes]) -> None:
        nonlocal best
        if at == target:
            try:
                fee = build_route(path, amount, HEIGHT, 18).fee_msat
            except NoRouteError:
                return
            best = fee if best is None else min(best, fee)
            return
        for e in edges:
            if e.source == at and e.target not in seen:
                walk(e.target, [*path, e], seen | {e.target})

    walk(source, [], {source})
    return best


@pytest.mark.parametrize("seed", range(40))
def test_random_graph_matches_brute_force(seed):
    rng = random.Random(seed)
    g, edges = _random_graph(rng, rng.randrange(4, 8), rng.randrange(5, 14))
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    for _ in range(5):
        if len(nodes) < 2:
            break
        source, target = rng.sample(nodes, 2)
        amount = rng.choice([1, 1000, 500_000, 5_000_000])
        want = _brute_force_fee(edges, source, target, amount)
        try:
            route = find_route(g, source, target, amount, current_height=HEIGHT, now=NOW, scorer=fees_only(), max_total_cltv_delta=10**6)
        except NoRouteError:
            assert want is None
            continue
        assert route.fee_msat == want
        assert route.hops[-1].node_id == target and route.final_amount_msat == amount


# ------------------------------------------------------------ learning from failures


def _three_paths() -> RoutingGraph:
    g = RoutingGraph()
    for i, (mid, fee) in enumerate(((A, 10), (B, 20), (C, 30))):
        channel(g, 10 + i, S, mid, capacity_sat=1_000_000)
        channel(g, 20 + i, mid, T, capacity_sat=1_000_000, fee_base_msat=fee)
    return g


def test_liquidity_failure_moves_the_next_attempt_and_decays():
    g, mc = _three_paths(), MissionControl()
    route = find_route(g, S, T, 400_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert route.short_channel_ids == [10, 20]
    assert mc.report_failure(route, 0, TemporaryChannelFailure.TYPE, NOW) is FailureKind.LIQUIDITY
    failed = g.channel(20, route.hops[1].direction)
    assert mc.probability(failed, 400_000_000, NOW) == 0.0
    assert mc.probability(g.channel(10, route.hops[0].direction), 400_000_000, NOW) == 1.0  # it forwarded
    retry = find_route(g, S, T, 400_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert retry.short_channel_ids == [11, 21]
    # a smaller amount may still go that way; and the lesson fades with time
    assert find_route(g, S, T, 1_000_000, current_height=HEIGHT, now=NOW, scorer=mc).short_channel_ids == [10, 20]
    later = NOW + 20 * mc.params.liquidity_half_life
    assert find_route(g, S, T, 400_000_000, current_height=HEIGHT, now=later, scorer=mc).short_channel_ids == [10, 20]


def test_retries_produce_different_routes_until_none_is_left():
    g, mc = _three_paths(), MissionControl()
    seen = []
    with pytest.raises(NoRouteError):
        for _ in range(4):
            route = find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
            seen.append(tuple(route.short_channel_ids))
            assert mc.report_failure(route, 0, PermanentChannelFailure.TYPE, NOW) is FailureKind.CHANNEL
    assert seen == [(10, 20), (11, 21), (12, 22)]
    # bans end
    after = NOW + mc.params.channel_ban_seconds + 1
    assert find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=after, scorer=mc).short_channel_ids == [10, 20]
    mc.forget_expired(after)
    assert not mc._banned_channels


def test_node_and_policy_failures_and_payee_refusals():
    g, mc = _three_paths(), MissionControl()
    route = find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert mc.report_failure(route, 0, TemporaryNodeFailure.TYPE, NOW) is FailureKind.NODE  # from A
    assert find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW, scorer=mc).short_channel_ids == [11, 21]
    route = find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert mc.report_failure(route, 0, FeeInsufficient.TYPE, NOW) is FailureKind.POLICY
    assert find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW, scorer=mc).short_channel_ids == [12, 22]
    assert find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW + 61, scorer=mc).short_channel_ids == [11, 21]
    # the payee refused: the route worked, nothing is banned
    route = find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW + 61, scorer=mc)
    assert mc.report_failure(route, 1, IncorrectOrUnknownPaymentDetails.TYPE, NOW + 61) is FailureKind.DESTINATION
    assert find_route(g, S, T, 5_000_000, current_height=HEIGHT, now=NOW + 61, scorer=mc).short_channel_ids == [11, 21]


def test_a_policy_ban_ends_when_the_graph_learns_the_stricter_policy():
    """BOLT 4: a channel that refused our CLTV delta or fee is restored as its new channel_update arrives."""
    g, mc = RoutingGraph(), MissionControl()
    channel(g, 1, S, A)
    channel(g, 2, A, T, cltv_expiry_delta=40, fee_base_msat=1000)
    route = find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert mc.report_failure(route, 0, IncorrectCltvExpiry.TYPE, NOW) is FailureKind.POLICY
    with pytest.raises(NoRouteError):  # the graph still says 40: banned
        find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    channel(g, 2, A, T, cltv_expiry_delta=30, fee_base_msat=1000)  # an update asking less: still banned
    with pytest.raises(NoRouteError):
        find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    channel(g, 2, A, T, cltv_expiry_delta=144, fee_base_msat=1000)  # the delta A asks now
    again = find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert again.hops[0].cltv_expiry - again.hops[0].outgoing_cltv_value == 144
    # a fee refusal likewise: restored by a higher fee, not by the same one
    assert mc.report_failure(again, 0, FeeInsufficient.TYPE, NOW) is FailureKind.POLICY
    assert mc.banned(g.channel(2, 0 if A < T else 1), NOW)  # type: ignore[arg-type]
    channel(g, 2, A, T, cltv_expiry_delta=144, fee_base_msat=2000)
    assert find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc).hops[0].amount_msat == 12_000
    # a permanent channel failure is not lifted by an update
    route = find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    mc.report_failure(route, 0, PermanentChannelFailure.TYPE, NOW)
    channel(g, 2, A, T, cltv_expiry_delta=200, fee_base_msat=5000)
    with pytest.raises(NoRouteError):
        find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)


def test_bad_onion_blames_the_node_after_the_one_reporting_it():
    g, mc = RoutingGraph(), MissionControl()
    channel(g, 1, S, A)
    channel(g, 2, A, B)
    channel(g, 3, B, T)
    channel(g, 4, S, C)
    channel(g, 5, C, T, fee_base_msat=5000)
    route = find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc)
    assert route.short_channel_ids == [1, 2, 3]
    # A reports that B could not read its onion (update_fail_malformed_htlc, turned into a failure by A)
    assert mc.report_failure(route, 0, InvalidOnionHmac.TYPE, NOW) is FailureKind.NODE
    assert mc.banned(g.channel(3, 0 if B < T else 1), NOW)
    assert not mc.banned(g.channel(2, 0 if A < B else 1), NOW)
    assert find_route(g, S, T, 10_000, current_height=HEIGHT, now=NOW, scorer=mc).short_channel_ids == [4, 5]


def test_a_success_spends_the_liquidity_it_used():
    """What a payment moved is on the far side now: the channel is no surer to carry the same again
    (it had at least that much, and has that much less), and cannot carry more than what is left."""
    g, mc = _three_paths(), MissionControl()
    route = find_route(g, S, T, 300_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    edge = g.channel(20, route.hops[1].direction)
    assert edge is not None
    before = mc.probability(edge, 300_000_000, NOW)
    mc.report_success(route, NOW, capacities={hop.key: 1_000_000_000 for hop in route.hops})
    assert mc.liquidity_bounds(edge, NOW) == (0.0, 1_000_000_000 - route.hops[1].amount_msat)
    assert mc.probability(edge, 300_000_000, NOW) < before
    assert mc.probability(edge, 800_000_000, NOW) == 0.0
    # a channel that failed downstream still forwarded: it had at least that much, and keeps it
    failed = find_route(g, S, T, 100_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    mc.report_failure(failed, 1, IncorrectOrUnknownPaymentDetails.TYPE, NOW)
    first = g.channel(failed.hops[0].short_channel_id, failed.hops[0].direction)
    assert first is not None and mc.probability(first, failed.hops[0].amount_msat, NOW) == 1.0


# ------------------------------------------------------------ multi-part


def _diamond(capacity_sat: int) -> RoutingGraph:
    g = RoutingGraph()
    channel(g, 1, S, A, capacity_sat=capacity_sat)
    channel(g, 2, A, T, capacity_sat=capacity_sat, fee_base_msat=1)
    channel(g, 3, S, B, capacity_sat=capacity_sat)
    channel(g, 4, B, T, capacity_sat=capacity_sat, fee_base_msat=2)
    return g


def test_mpp_splits_when_no_single_path_carries_the_amount():
    g = _diamond(60_000)
    with pytest.raises(NoRouteError):
        find_route(g, S, T, 100_000_000, current_height=HEIGHT, now=NOW)
    parts = find_routes(g, S, T, 100_000_000, current_height=HEIGHT, now=NOW)
    assert sum(r.final_amount_msat for r in parts) == 100_000_000
    assert {tuple(r.short_channel_ids) for r in parts} == {(1, 2), (3, 4)}
    for r in parts:
        assert r.amount_msat <= 60_000_000
    # one path suffices: one part
    assert len(find_routes(g, S, T, 1_000_000, current_height=HEIGHT, now=NOW)) == 1
    with pytest.raises(NoRouteError, match="of 200000000 msat"):
        find_routes(g, S, T, 200_000_000, current_height=HEIGHT, now=NOW)


def test_mpp_parts_respect_in_flight_and_the_part_limit():
    g = _diamond(60_000)
    with pytest.raises(NoRouteError, match="parts"):
        find_routes(g, S, T, 100_000_000, current_height=HEIGHT, now=NOW, max_parts=1)
    # 50,000 sat already in flight over A: the rest must go through B
    inflight = {e.key: 50_000_000 for e in g.incoming(A) if e.source == S} | {e.key: 50_000_000 for e in g.incoming(T) if e.source == A}
    parts = find_routes(g, S, T, 40_000_000, current_height=HEIGHT, now=NOW, inflight=inflight)
    assert [r.short_channel_ids for r in parts] == [[3, 4]]


def test_find_path_refuses_nonsense():
    g = _diamond(1000)
    with pytest.raises(NoRouteError):
        find_path(g, S, S, 1000, scorer=MissionControl(), now=NOW)
    with pytest.raises(NoRouteError):
        find_path(g, S, T, 0, scorer=MissionControl(), now=NOW)
    with pytest.raises(NoRouteError, match="connect"):
        build_route([g.channel(1, 0), g.channel(4, 0)], 1000, HEIGHT, 18)


def _check_route(route, graph_edges: dict, amount: int, max_cltv: int) -> None:
    """Every hop obeys its channel's policy, fees and deltas chain up, the limits hold."""
    assert route.final_amount_msat == amount
    for k, hop in enumerate(route.hops):
        edge = graph_edges[hop.key]
        assert not edge.disabled and hop.node_id == edge.target
        assert edge.htlc_minimum_msat <= hop.amount_msat <= edge.htlc_maximum_msat
        if k + 1 < len(route.hops):
            nxt = graph_edges[route.hops[k + 1].key]
            assert nxt.source == hop.node_id
            assert hop.amt_to_forward == route.hops[k + 1].amount_msat
            assert hop.fee_msat == nxt.fee(hop.amt_to_forward)
            assert hop.cltv_expiry - hop.outgoing_cltv_value == nxt.cltv_expiry_delta
    assert route.cltv_expiry - HEIGHT <= max_cltv
    assert len(route.hops) <= 20


def _route_random_graph(seed: int) -> int:
    """Route random pairs on a random graph, checking every route and part; how many payments were split."""
    rng = random.Random(1000 + seed)
    g, edges = _random_graph(rng, 12, 30)
    by_key = {e.key: e for e in edges}
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    mc = MissionControl()
    multi = 0
    for _ in range(6):
        source, target = rng.sample(nodes, 2)
        amount = rng.choice([1000, 300_000, 2_000_000, 8_000_000])
        try:
            parts = find_routes(g, source, target, amount, current_height=HEIGHT, now=NOW, scorer=mc, max_total_cltv_delta=600)
        except NoRouteError:
            continue
        assert sum(r.final_amount_msat for r in parts) == amount
        booked: dict = {}
        for r in parts:
            _check_route(r, by_key, r.final_amount_msat, 600)
            for hop in r.hops:
                booked[hop.key] = booked.get(hop.key, 0) + hop.amount_msat
        for key, total in booked.items():  # parts never book more than a channel holds
            cap = by_key[key].effective_capacity_msat
            assert cap is None or total <= cap
        multi += len(parts) > 1
    return multi


def test_random_graph_routes_and_parts_obey_every_policy():
    split = sum(_route_random_graph(seed) for seed in range(15))
    assert split > 0  # some payments had to be split, and those parts were checked too


def test_mission_control_memory_is_bounded(monkeypatch):
    import lnpmsg.payments.scorer as scorer

    monkeypatch.setattr(scorer, "MAX_REMEMBERED", 50)
    mc = MissionControl()
    g = _three_paths()
    route = find_route(g, S, T, 1_000_000, current_height=HEIGHT, now=NOW, scorer=mc)
    for i in range(200):
        fake = dataclasses.replace(route, hops=tuple(dataclasses.replace(h, short_channel_id=2 * i + k) for k, h in enumerate(route.hops)))
        mc.report_failure(fake, 0, PermanentChannelFailure.TYPE, NOW + i)
        mc.report_success(fake, NOW + i)
    assert len(mc._bounds) <= 51 and len(mc._banned_channels) <= 51
    assert (2 * 199, route.hops[0].direction) in mc._bounds  # the newest are kept
    assert (2 * 199 + 1, route.hops[1].direction) in mc._banned_channels
