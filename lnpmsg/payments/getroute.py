"""``getroute``: the route a payment would take, without paying (a mixin of :class:`~lnpmsg.payments.app.PaymentsApp`).

Core Lightning's ``getroute``, lnd's ``queryroutes``: ``payments.getroute NODE_ID AMOUNT_MSAT``
asks the same route finder a single-part payment asks (:meth:`~lnpmsg.payments.paying.Paying._route_finder`:
our channels with what each can send now, the routing graph, the scorer's view of past failures,
``max_fee_msat`` as keysend's), to a payee that wants ``final_cltv`` blocks for its HTLC (default
:data:`~lnpmsg.payments.views.DEFAULT_MIN_FINAL_CLTV`, what lnpmsg invoices ask; give an
invoice's ``min_final_cltv_expiry_delta`` to see its route). A ``pay`` or ``keysend`` of that
amount made right then takes this route first (a multi-part ``pay`` asks for the whole amount
first, too, and splits only when no one route carries it). Nothing is sent nor stored.

``route_hints`` (``lnpmsg getroute --routehint``, lnd's ``queryroutes --route_hints``) reaches a payee
behind private channels without its invoice: hints as an invoice's ``r`` field carries them, given by
hand (:mod:`~lnpmsg.payments.hint_params`), used as ``pay`` uses an invoice's (a hinted channel the graph
knows keeps its signed policy). The result then says how many were given (``route_hints``).

``payments.getroute bolt11=INVOICE`` (``lnpmsg getroute --invoice``) routes as ``pay`` would
route that invoice: its payee, its amount (or ``amount_msat`` for one without, as ``pay``), its final
expiry delta, its features (parts when it offers ``basic_mpp`` and no one route carries it) and its
route hints, so a destination behind private channels is reached as ``pay`` reaches it; the invoice
is checked as ``pay`` checks it (expired, another network, our own). The result then also has
``routes`` (every part; ``route`` is the first), ``destination``, ``payment_hash`` and
``route_hints`` (how many the invoice has). No fee limit nor ``final_cltv`` with an invoice: ``pay`` takes none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dataclasses import replace

from lnpmsg.payments.bolt11 import Invoice
from lnpmsg.payments.hint_params import route_hints_param
from lnpmsg.payments.keysend import check_count, payee_of, payment_target
from lnpmsg.payments.route import NoRouteError, Route
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV, name_own_channels, own_channel_names
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.payments.app import PaymentsApp

__all__ = ["RouteQueries"]


class RouteQueries:
    """``getroute`` (see the module docs); mixed into the payments app."""

    async def getroute(self: PaymentsApp, node_id: str | None = None, amount_msat: int | None = None, max_fee_msat: int | None = None,
                       final_cltv: int = DEFAULT_MIN_FINAL_CLTV, bolt11: str | None = None,
                       route_hints: list[list[dict[str, Any]]] | None = None) -> dict[str, Any]:  # fmt: skip
        """The route a payment of AMOUNT_MSAT to NODE_ID would take now, without paying: hops (node_id,
        short_channel_id, amount_msat, cltv_expiry, delay), fee_msat; ``max_fee_msat`` bounds the fees;
        ``route_hints`` (lists of hops, as decodepay shows an invoice's) lead to a payee behind private channels.
        With ``bolt11`` instead of NODE_ID: the route(s) ``pay`` would take for that invoice (its hints too)."""
        if bolt11 is not None:
            if route_hints is not None:
                raise ParamsError("with bolt11, the invoice's own route hints are used: give no route_hints")
            return await self._invoice_route(bolt11, amount_msat, node_id, max_fee_msat, final_cltv)
        if node_id is None:
            raise ParamsError("getroute needs node_id and amount_msat, or bolt11 (an invoice)")
        payee = payee_of(self, node_id, amount_msat, max_fee_msat, "a route")
        assert amount_msat is not None
        check_count(final_cltv, "final_cltv", positive=True)
        hints = () if route_hints is None else route_hints_param(route_hints, payee)
        height = await self._height()
        target = replace(payment_target(self, payee, bytes(32), amount_msat, final_cltv, "getroute"), route_hints=hints)
        (route,) = self._routes(target, height, amount_msat, max_fee_msat)
        result = _result([route], height, own_channel_names(self.htlcs.channels()))
        if hints:
            result["route_hints"] = len(hints)
        return result

    async def _invoice_route(self: PaymentsApp, bolt11: str, amount_msat: int | None, node_id: str | None, max_fee_msat: int | None,
                             final_cltv: int) -> dict[str, Any]:  # fmt: skip
        """``getroute`` of an invoice: as ``pay`` routes it (see the module docs)."""
        if node_id is not None or max_fee_msat is not None or final_cltv != DEFAULT_MIN_FINAL_CLTV:
            raise ParamsError("with bolt11, the invoice names the payee and its final expiry, and pay takes no fee limit: "
                              "give no node_id, max_fee_msat nor final_cltv")  # fmt: skip
        if amount_msat is not None:
            check_count(amount_msat, "amount_msat", positive=True)
        invoice, total = self._payable(bolt11, amount_msat)
        height = await self._height()
        result = _result(self._routes(invoice, height, total, None), height, own_channel_names(self.htlcs.channels()))
        result.setdefault("routes", [result["route"]])
        result.update(destination=invoice.payee.hex(), payment_hash=invoice.payment_hash.hex(), route_hints=len(invoice.route_hints))
        return result

    def _routes(self: PaymentsApp, target: Invoice, height: int, amount_msat: int, max_fee_msat: int | None) -> list[Route]:
        """What the route finder of a payment to ``target`` gives first for ``amount_msat`` (NoRoute: an error that says so)."""
        try:
            return self._route_finder(target, height, max_fee_msat)(amount_msat, frozenset())
        except NoRouteError as exc:
            payee = target.payee.hex() if target.payee is not None else "?"
            raise ChainAppError(f"no route to {payee} for {amount_msat} msat: {exc}",
                                {"error": "NoRoute", "node_id": payee, "amount_msat": amount_msat})  # fmt: skip


def _result(routes: list[Route], height: int, names: Mapping[str, str]) -> dict[str, Any]:
    """getroute's answer: the first route's hops as ``route`` (each with ``delay``: blocks from now until its
    HTLC expires, Core Lightning's field) and, for several parts, every part in ``routes``; totals over the parts.
    Our channel is named as ``pay`` names it (``names``: :func:`~.views.own_channel_names`)."""
    parts = []
    for route in routes:
        (hops,) = name_own_channels([route.to_dict()], names) or [[]]
        for hop, h in zip(hops, route.hops, strict=True):
            hop["delay"] = h.cltv_expiry - height
        parts.append(hops)
    result: dict[str, Any] = {"route": parts[0], "amount_msat": sum(r.amount_msat for r in routes), "fee_msat": sum(r.fee_msat for r in routes),
                              "cltv_expiry": max(r.cltv_expiry for r in routes), "height": height}  # fmt: skip
    if len(parts) > 1:
        result["routes"] = parts
    return result
