"""A route: the channels a payment takes, with each hop's amount and CLTV (sans-IO).

Amounts and CLTVs are set backwards from the payee, as forwarding nodes
check them: the HTLC into a forwarding node carries what it forwards plus
its fee (BOLT 7: ``fee_base_msat + amount * fee_proportional_millionths /
1e6`` on the amount it forwards) and expires ``cltv_expiry_delta`` blocks
after the HTLC it sends on. The sender charges itself nothing.

Each :class:`RouteHop` holds what the onion builder needs for that hop's
payload: ``amt_to_forward`` and ``outgoing_cltv_value`` (for the payee: the
amount and expiry it receives), with ``short_channel_id`` of the channel
*into* the hop (the payload of the hop before names it as the next channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lnpmsg.payments.graph import DirectedChannel

if TYPE_CHECKING:
    # annotations only: routes are planned on nodes that never build an onion (getroute, the gossip graph)
    from lnpmsg.payments.onion.blinding import BlindedPath

__all__ = ["NoRouteError", "Route", "RouteHop", "build_route"]


class NoRouteError(Exception):
    """No route satisfies the request; the message says which limit stopped it."""


@dataclass(frozen=True, slots=True)
class RouteHop:
    """The channel into ``node_id`` and the HTLC over it, plus ``node_id``'s onion payload values."""

    short_channel_id: int
    #: the channel direction used (0: from node_id_1), what failures are learned about
    direction: int
    node_id: bytes
    #: the HTLC over this channel: amount and absolute expiry (block height)
    amount_msat: int
    cltv_expiry: int
    #: ``node_id``'s payload: what it sends on (for the payee: what it receives)
    amt_to_forward: int
    outgoing_cltv_value: int

    @property
    def fee_msat(self) -> int:
        """What ``node_id`` keeps for forwarding (0 for the payee)."""
        return self.amount_msat - self.amt_to_forward

    @property
    def key(self) -> tuple[int, int]:
        return self.short_channel_id, self.direction


@dataclass(frozen=True, slots=True)
class Route:
    """A path from us to the payee; ``hops[-1]`` is the payee."""

    hops: tuple[RouteHop, ...]
    #: the blinded path the route ends in (its hops the route's last ones), None for a plain route
    blinded: BlindedPath | None = None

    @property
    def amount_msat(self) -> int:
        """What we send (the payee's amount plus every fee)."""
        return self.hops[0].amount_msat

    @property
    def final_amount_msat(self) -> int:
        return self.hops[-1].amt_to_forward

    @property
    def fee_msat(self) -> int:
        return self.amount_msat - self.final_amount_msat

    @property
    def cltv_expiry(self) -> int:
        """The first HTLC's expiry: how long our funds may be locked."""
        return self.hops[0].cltv_expiry

    @property
    def payee(self) -> bytes:
        return self.hops[-1].node_id

    @property
    def short_channel_ids(self) -> list[int]:
        return [h.short_channel_id for h in self.hops]

    @classmethod
    def from_dict(cls, hops: list[dict[str, object]]) -> Route:
        """The route :meth:`to_dict` printed (a stored part's, read back after a restart)."""
        out = []
        for h in hops:
            block, tx, output = (int(x) for x in str(h["short_channel_id"]).split("x"))
            out.append(RouteHop((block << 40) | (tx << 16) | output, int(h["direction"]), bytes.fromhex(str(h["node_id"])),  # type: ignore[call-overload]
                                int(h["amount_msat"]), int(h["cltv_expiry"]), int(h["amt_to_forward"]), int(h["outgoing_cltv_value"])))  # type: ignore[call-overload]  # fmt: skip
        return cls(tuple(out))

    def to_dict(self) -> list[dict[str, object]]:
        """JSON-ready hops (what ``pay`` and ``listpayments`` print)."""
        return [
            {
                "short_channel_id": f"{h.short_channel_id >> 40}x{(h.short_channel_id >> 16) & 0xFFFFFF}x{h.short_channel_id & 0xFFFF}",
                "direction": h.direction,
                "node_id": h.node_id.hex(),
                "amount_msat": h.amount_msat,
                "cltv_expiry": h.cltv_expiry,
                "amt_to_forward": h.amt_to_forward,
                "outgoing_cltv_value": h.outgoing_cltv_value,
            }
            for h in self.hops
        ]


def build_route(channels: Sequence[DirectedChannel], amount_msat: int, current_height: int, final_cltv_delta: int) -> Route:
    """Amounts and expiries over ``channels`` (ours first, the payee's last) to deliver ``amount_msat``.

    Checks each channel's HTLC minimum and maximum (NoRouteError if one is
    broken); fees and deltas come from each channel's forwarding node, and
    the first channel (ours) adds neither.
    """
    if not channels:
        raise NoRouteError("a route needs at least one channel")
    for a, b in zip(channels, channels[1:], strict=False):
        if a.target != b.source:
            raise NoRouteError(f"channels do not connect: {a!r} then {b!r}")
    hops: list[RouteHop] = []
    forward, outgoing = amount_msat, current_height + final_cltv_delta
    amount, expiry = forward, outgoing
    for i in range(len(channels) - 1, -1, -1):
        edge = channels[i]
        if not edge.htlc_minimum_msat <= amount <= edge.htlc_maximum_msat:
            raise NoRouteError(
                f"channel {edge.short_channel_id} takes HTLCs of {edge.htlc_minimum_msat}..{edge.htlc_maximum_msat} msat, not {amount}"
            )
        hops.append(RouteHop(edge.short_channel_id, edge.direction, edge.target, amount, expiry, forward, outgoing))
        # what the channel's source (the hop before) receives and sends on
        forward, outgoing = amount, expiry
        if i:
            amount, expiry = amount + edge.fee(amount), expiry + edge.cltv_expiry_delta
    hops.reverse()
    return Route(tuple(hops))
