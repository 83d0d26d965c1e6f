"""One payment's state (:class:`lnpmsg.payments.sender.Payment`, sans-IO): stopping it sends no new
part, waits for those in flight, and then fails with the reason (or completes if one of them paid)."""

from __future__ import annotations

import os

import coincurve

from lnpmsg.payments.graph import RoutingGraph
from lnpmsg.payments.pathfind import find_route
from lnpmsg.payments.route import Route
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import OutgoingResult, Payment

S, A, T = (coincurve.PrivateKey().public_key.format() for _ in range(3))
HEIGHT, NOW = 800, 1_000_000.0


def _payment() -> Payment:
    g = RoutingGraph()
    for scid, (x, y) in enumerate(((S, A), (A, T)), start=1):
        n1, n2 = sorted((x, y))
        g.add_channel(scid, n1, n2, 1_000_000)
        for d in (0, 1):
            g.update(scid, d, fee_base_msat=1000, fee_proportional_millionths=0, cltv_expiry_delta=40, htlc_minimum_msat=1,
                     htlc_maximum_msat=10**10)  # fmt: skip

    def routes(amount: int, excluded: frozenset[int]) -> list[Route]:
        return [find_route(g, S, T, amount, current_height=HEIGHT, now=NOW)]

    return Payment(os.urandom(32), os.urandom(32), 50_000, routes, MissionControl())


def test_a_stopped_payment_waits_for_its_parts_then_fails_with_the_reason() -> None:
    payment = _payment()
    (part,) = payment.next_parts()
    payment.stop("no result in 40 s")
    assert payment.next_parts() == [] and not payment.done  # the part in flight is waited for
    payment.on_result(part, OutgoingResult(local_error="the peer went away"), NOW)
    assert payment.next_parts() == [] and payment.done and payment.preimage is None
    assert payment.final_error is not None and "no result in 40 s" in str(payment.final_error)
    assert payment.final_error.details["error"] == "Timeout" and payment.final_error.details["attempts"]


def test_a_part_that_pays_after_the_stop_completes_the_payment() -> None:
    payment = _payment()
    (part,) = payment.next_parts()
    payment.stop("no result in 40 s")
    payment.on_result(part, OutgoingResult(preimage=b"\x01" * 32), NOW)
    assert payment.next_parts() == [] and payment.done and payment.preimage == b"\x01" * 32 and payment.final_error is None
