"""From a decoded invoice to routes: the payer's checks, then pathfinding (sans-IO).

BOLT 11 asks the payer not to pay an expired invoice, to use at least the
invoice's ``min_final_cltv_expiry_delta``, to use the route hints when the
payee is not reachable otherwise, and to split a payment only when the
invoice offers ``basic_mpp``; BOLT 4 lets the payee accept up to twice the
invoice's amount. :func:`plan_payment` applies all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lnpmsg.payments.bolt11 import Invoice
from lnpmsg.payments.graph import ChannelGraphView, DirectedChannel, OverlayGraph, hint_channels
from lnpmsg.payments.pathfind import DEFAULT_MAX_PARTS, find_route, find_routes
from lnpmsg.payments.route import NoRouteError, Route
from lnpmsg.payments.scorer import MissionControl

__all__ = ["PaymentPlan", "PaymentPlanError", "plan_payment"]


class PaymentPlanError(ValueError):
    """The invoice cannot be paid as asked (expired, no amount, another network...); ``code`` names why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PaymentPlan:
    """What to send: the payee's amount, and one route per part (their payee amounts add up to it)."""

    invoice: Invoice
    amount_msat: int
    routes: tuple[Route, ...]

    @property
    def fee_msat(self) -> int:
        return sum(r.fee_msat for r in self.routes)

    @property
    def sent_msat(self) -> int:
        return sum(r.amount_msat for r in self.routes)

    @property
    def multi_part(self) -> bool:
        return len(self.routes) > 1


def plan_payment(
    invoice: Invoice,
    *,
    graph: ChannelGraphView,
    our_node_id: bytes,
    now: float,
    current_height: int,
    amount_msat: int | None = None,
    network: str | None = None,
    scorer: MissionControl | None = None,
    local_channels: Iterable[DirectedChannel] = (),
    max_fee_msat: int | None = None,
    max_parts: int = DEFAULT_MAX_PARTS,
    inflight: Mapping[tuple[int, int], int] | None = None,
) -> PaymentPlan:
    """Check ``invoice`` for paying now and find its routes (``NoRouteError`` when there are none).

    ``amount_msat`` is required when the invoice names no amount, and may
    exceed the invoice's (up to twice it). ``network`` (e.g. ``"regtest"``)
    refuses invoices for another chain. ``local_channels`` are our channels
    with what each can send now (:func:`~lnpmsg.payments.graph.local_channel`).
    """
    if invoice.payee is None:
        raise PaymentPlanError("the invoice has no payee (it was never signed)", "unsigned")
    if network is not None and invoice.network != network:
        raise PaymentPlanError(f"the invoice is for {invoice.network}, this node runs on {network}", "wrong_network")
    if invoice.is_expired(now):
        raise PaymentPlanError(f"the invoice expired at {invoice.expires_at} (unix time)", "expired")
    if invoice.payee == our_node_id:
        raise PaymentPlanError("the invoice is our own", "self_payment")
    if amount_msat is None:
        if invoice.amount_msat is None:
            raise PaymentPlanError("the invoice names no amount: give one", "amount_required")
        amount_msat = invoice.amount_msat
    elif invoice.amount_msat is not None and not invoice.amount_msat <= amount_msat <= 2 * invoice.amount_msat:
        raise PaymentPlanError(
            f"amount {amount_msat} msat is not between the invoice's {invoice.amount_msat} and twice that", "bad_amount"
        )
    if amount_msat <= 0:
        raise PaymentPlanError("the amount must be positive", "bad_amount")
    extra = list(local_channels)
    for route in invoice.route_hints:
        extra.extend(hint_channels(route, invoice.payee))
    view = OverlayGraph(graph, extra) if extra else graph
    scorer = scorer if scorer is not None else MissionControl()
    options = dict(current_height=current_height, now=now, scorer=scorer, final_cltv_delta=invoice.min_final_cltv, inflight=inflight)
    if invoice.features.supports("basic_mpp"):
        routes = find_routes(view, our_node_id, invoice.payee, amount_msat, max_parts=max_parts, **options)  # type: ignore[arg-type]
    else:
        routes = [find_route(view, our_node_id, invoice.payee, amount_msat, max_fee_msat=max_fee_msat, **options)]  # type: ignore[arg-type]
    plan = PaymentPlan(invoice, amount_msat, tuple(routes))
    if max_fee_msat is not None and plan.fee_msat > max_fee_msat:
        raise NoRouteError(f"the cheapest routes found cost {plan.fee_msat} msat in fees, more than the {max_fee_msat} msat allowed")
    return plan
