"""plan_payment: an invoice (signed, encoded, decoded) to routes, with the payer's checks."""

from __future__ import annotations

import dataclasses

import coincurve
import pytest

from lnpmsg.payments import bolt11
from lnpmsg.payments.bolt11 import Invoice, RouteHintHop
from lnpmsg.payments.graph import RoutingGraph, local_channel
from lnpmsg.payments.plan import PaymentPlanError, plan_payment
from lnpmsg.payments.route import NoRouteError
from lnpmsg.wire.features import Features

PAYEE_SECRET = b"\x42" * 32
PAYEE = coincurve.PrivateKey(PAYEE_SECRET).public_key.format()
NOW = 1_700_000_000
HEIGHT = 1000


def node(i: int) -> bytes:
    return b"\x03" + bytes([i]) * 32


S, A, B = node(1), node(2), node(3)


def channel(g: RoutingGraph, scid: int, x: bytes, y: bytes, capacity_sat: int | None = None, fee: int = 0) -> None:
    g.add_channel(scid, *sorted((x, y)), capacity_sat)
    for d in (0, 1):
        g.update(scid, d, fee_base_msat=fee, fee_proportional_millionths=0, cltv_expiry_delta=40, htlc_minimum_msat=1, htlc_maximum_msat=10**12)


def invoice(**kw) -> Invoice:
    base = dict(currency="bcrt", timestamp=NOW - 10, payment_hash=b"\x01" * 32, payment_secret=b"\x02" * 32, description="test", amount_msat=50_000_000)
    base.update(kw)
    # through the text form, as a payer gets it
    return bolt11.decode(bolt11.encode(bolt11.sign(Invoice(**base), PAYEE_SECRET)))


def test_private_payee_through_the_route_hint():
    g = RoutingGraph()
    channel(g, 1, S, A, fee=0)
    inv = invoice(route_hints=((RouteHintHop(A, 99, 1000, 10, 144),),), min_final_cltv_expiry_delta=40)
    plan = plan_payment(inv, graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, network="regtest")
    (route,) = plan.routes
    assert [h.node_id for h in route.hops] == [A, PAYEE]
    assert route.short_channel_ids == [1, 99]
    assert route.final_amount_msat == 50_000_000 and plan.fee_msat == 1000 + 500
    assert route.hops[-1].cltv_expiry == HEIGHT + 40 and route.hops[0].cltv_expiry == HEIGHT + 40 + 144
    assert not plan.multi_part and plan.sent_msat == 50_001_500


def test_payer_checks():
    g = RoutingGraph()
    channel(g, 1, S, PAYEE)
    cases = [
        (invoice(expiry=5), {}, "expired"),
        (invoice(amount_msat=None), {}, "amount_required"),
        (invoice(), {"amount_msat": 100_000_001}, "bad_amount"),
        (invoice(), {"network": "mainnet"}, "wrong_network"),
    ]
    for inv, extra, code in cases:
        with pytest.raises(PaymentPlanError) as info:
            plan_payment(inv, graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, **extra)
        assert info.value.code == code
    with pytest.raises(PaymentPlanError) as info:
        plan_payment(invoice(), graph=g, our_node_id=PAYEE, now=NOW, current_height=HEIGHT)
    assert info.value.code == "self_payment"
    plan = plan_payment(invoice(amount_msat=None), graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, amount_msat=7000)
    assert plan.amount_msat == 7000 and plan.routes[0].short_channel_ids == [1]


def test_multi_part_only_when_the_invoice_offers_basic_mpp():
    g = RoutingGraph()
    for scid, mid in ((1, A), (3, B)):
        channel(g, scid, S, mid, capacity_sat=60_000)
        channel(g, scid + 1, mid, PAYEE, capacity_sat=60_000, fee=1)
    inv = invoice(amount_msat=100_000_000)
    with pytest.raises(NoRouteError):
        plan_payment(inv, graph=g, our_node_id=S, now=NOW, current_height=HEIGHT)
    mpp = invoice(amount_msat=100_000_000, features=Features.from_bits([8, 14, 17]))
    plan = plan_payment(mpp, graph=g, our_node_id=S, now=NOW, current_height=HEIGHT)
    assert plan.multi_part and sum(r.final_amount_msat for r in plan.routes) == 100_000_000
    with pytest.raises(NoRouteError, match="fees"):
        plan_payment(mpp, graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, max_fee_msat=1)


def test_local_channel_balance_decides():
    g = RoutingGraph()
    channel(g, 1, S, PAYEE, capacity_sat=1_000_000)
    channel(g, 2, S, A, capacity_sat=1_000_000)
    channel(g, 3, A, PAYEE, capacity_sat=1_000_000, fee=5)
    ours = [local_channel(1, S, PAYEE, 10_000_000), local_channel(2, S, A, 900_000_000)]
    plan = plan_payment(invoice(), graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, local_channels=ours)
    assert plan.routes[0].short_channel_ids == [2, 3]
    small = plan_payment(invoice(amount_msat=1_000_000), graph=g, our_node_id=S, now=NOW, current_height=HEIGHT, local_channels=ours)
    assert small.routes[0].short_channel_ids == [1]
    assert dataclasses.asdict(small.routes[0].hops[0])["amt_to_forward"] == 1_000_000
