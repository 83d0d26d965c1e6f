"""``getroute``: the route a payment would take, without paying (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

Core Lightning's ``getroute``, lnd's ``queryroutes``: ``payments.getroute NODE_ID AMOUNT_MSAT``
asks the same route finder a single-part payment asks (:meth:`~lnpmsg.payments.paying.Paying._route_finder`:
our channels with what each can send now, the routing graph, the scorer's view of past failures,
``max_fee_msat`` as keysend's), to a payee that wants ``final_cltv`` blocks for its HTLC (default
:data:`~lnpmsg.payments.views.DEFAULT_MIN_FINAL_CLTV`, what lnpmsg invoices ask; give an
invoice's ``min_final_cltv_expiry_delta`` to see its route). A ``pay`` or ``keysend`` of that
amount made right then takes this route first (a multi-part ``pay`` asks for the whole amount
first, too, and splits only when no one route carries it). Nothing is sent nor stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lnpmsg.payments.keysend import check_count, payee_of, payment_target
from lnpmsg.payments.route import NoRouteError
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["RouteQueries"]

class RouteQueries:
    """``getroute`` (see the module docs); mixed into the payments app."""

    async def getroute(self: PaymentsApp, node_id: str, amount_msat: int, max_fee_msat: int | None = None,
                       final_cltv: int = DEFAULT_MIN_FINAL_CLTV) -> dict[str, Any]:  # fmt: skip
        """The route a payment of AMOUNT_MSAT to NODE_ID would take now, without paying: hops (node_id,
        short_channel_id, amount_msat, cltv_expiry, delay), fee_msat; ``max_fee_msat`` bounds the fees."""
        payee = payee_of(self, node_id, amount_msat, max_fee_msat, "a route")
        check_count(final_cltv, "final_cltv", positive=True)
        height = await self._height()
        target = payment_target(self, payee, bytes(32), amount_msat, final_cltv, "getroute")
        try:
            (route,) = self._route_finder(target, height, max_fee_msat)(amount_msat, frozenset())
        except NoRouteError as exc:
            raise ChainAppError(f"no route to {node_id} for {amount_msat} msat: {exc}",
                                {"error": "NoRoute", "node_id": payee.hex(), "amount_msat": amount_msat})  # fmt: skip
        hops = route.to_dict()
        for hop, h in zip(hops, route.hops, strict=True):
            hop["delay"] = h.cltv_expiry - height  # Core Lightning's field: blocks from now until the HTLC expires
        return {"route": hops, "amount_msat": route.amount_msat, "fee_msat": route.fee_msat, "cltv_expiry": route.cltv_expiry,
                "height": height}  # fmt: skip
