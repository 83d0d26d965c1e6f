"""The routing graph kept current from accepted gossip (sans-IO).

The gossip :class:`~lnpmsg.gossip.graph.Graph` decides what is valid and keeps
no fee policies; pathfinding needs them. :class:`RoutingFeed` holds a
:class:`~lnpmsg.payments.graph.RoutingGraph` and applies every accepted
channel_announcement and channel_update to it as the gossip app decides
them, and every channel removal (closed, pruned). At start it is filled
from the gossip store. The gossip app exposes it as
``GossipApp.routing_graph``: payments read it between awaits (it only
changes on the event loop, never in a thread).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lnpmsg.gossip.graph import ChannelRemoved, Decision, Outcome
from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate
from lnpmsg.payments.graph import NO_HTLC_MAXIMUM, RoutingGraph

__all__ = ["RoutingFeed"]

#: channels read from the store per page at start
_LOAD_PAGE = 5000


class RoutingFeed:
    """A :class:`RoutingGraph` fed from gossip decisions (see the module docs)."""

    def __init__(self, graph: RoutingGraph | None = None) -> None:
        self.graph = graph if graph is not None else RoutingGraph()

    def load(self, store: Any) -> int:
        """Add what a :class:`~lnpmsg.gossip.store.GossipStore` holds; returns the channel count."""
        after: int | None = None
        while True:
            page = store.list_channels(after=after, limit=_LOAD_PAGE)
            if not page:
                return len(self.graph)
            for channel in page:
                scid = _scid(channel["short_channel_id"])
                n1, n2 = bytes.fromhex(channel["node_id_1"]), bytes.fromhex(channel["node_id_2"])
                self.graph.add_channel(scid, n1, n2, channel["capacity_sat"])
                for direction, policy in enumerate(channel["policies"]):
                    if policy is not None:
                        self.graph.update(
                            scid,
                            direction,
                            fee_base_msat=policy["fee_base_msat"],
                            fee_proportional_millionths=policy["fee_proportional_millionths"],
                            cltv_expiry_delta=policy["cltv_expiry_delta"],
                            htlc_minimum_msat=policy["htlc_minimum_msat"],
                            htlc_maximum_msat=policy["htlc_maximum_msat"] if policy["message_flags"] & 1 else NO_HTLC_MAXIMUM,
                            disabled=not policy["active"],
                        )
                after = scid

    def apply(self, decisions: Iterable[Decision]) -> None:
        """Apply the accepted decisions, in order (others are skipped)."""
        graph = self.graph
        accepted = Outcome.ACCEPTED
        for decision in decisions:
            if decision.outcome is not accepted:
                continue
            message = decision.message
            kind = type(message)
            if kind is ChannelUpdate:
                graph.apply_update(message)  # type: ignore[arg-type]
            elif kind is ChannelAnnouncement:
                graph.add_channel(
                    message.short_channel_id.to_int(),  # type: ignore[attr-defined]
                    message.node_id_1,  # type: ignore[attr-defined]
                    message.node_id_2,  # type: ignore[attr-defined]
                    decision.capacity_sat,
                )

    def remove(self, removals: Iterable[ChannelRemoved]) -> None:
        for change in removals:
            self.graph.remove_channel(change.short_channel_id)


def _scid(text: str) -> int:
    block, tx, out = (int(part) for part in text.split("x"))
    return (block << 40) | (tx << 16) | out
