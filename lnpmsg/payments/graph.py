"""The channel graph as pathfinding sees it (sans-IO).

Pathfinding walks *backwards* from the payee, so a view answers one
question: which channel directions lead into a node (:class:`ChannelGraphView`).
Each is a :class:`DirectedChannel`: the forwarding node's policy for that
direction (fees, CLTV delta, HTLC limits, disabled) and what is known of the
channel's size.

- :class:`RoutingGraph` holds the public graph. It is fed what the gossip
  layer accepted (``add_channel`` per channel_announcement with its funding
  amount, ``apply_update`` per channel_update, ``remove_channel`` on close
  or prune); it reads messages by their field names and imports nothing of
  the gossip package, which runs I/O.
- :class:`OverlayGraph` adds edges for one payment on top of any view: our
  own channels (with the balance we can send: :func:`local_channel`) and the
  invoice's route hints (:func:`hint_channels`), without copying the graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # annotations only: the gossip app keeps this graph on nodes that never read an invoice
    from lnpmsg.payments.bolt11 import RouteHintHop

__all__ = [
    "NO_HTLC_MAXIMUM",
    "ChannelGraphView",
    "DirectedChannel",
    "OverlayGraph",
    "RoutingGraph",
    "hint_channels",
    "local_channel",
]

#: what a direction without a channel_update advertises as its HTLC maximum: none
NO_HTLC_MAXIMUM = (1 << 64) - 1


class DirectedChannel:
    """One direction of a channel, ``source`` -> ``target``, with ``source``'s forwarding policy.

    ``capacity_msat`` None means unknown (a route hint, a channel announced
    without its funding amount and without an HTLC maximum); ``local`` marks
    our own channel, whose ``capacity_msat`` is then what we can send now.
    """

    __slots__ = (
        "capacity_msat",
        "cltv_expiry_delta",
        "direction",
        "disabled",
        "fee_base_msat",
        "fee_proportional_millionths",
        "htlc_maximum_msat",
        "htlc_minimum_msat",
        "key",
        "local",
        "short_channel_id",
        "source",
        "target",
    )

    def __init__(
        self,
        short_channel_id: int,
        source: bytes,
        target: bytes,
        *,
        direction: int = 0,
        fee_base_msat: int = 0,
        fee_proportional_millionths: int = 0,
        cltv_expiry_delta: int = 0,
        htlc_minimum_msat: int = 0,
        htlc_maximum_msat: int = NO_HTLC_MAXIMUM,
        capacity_msat: int | None = None,
        disabled: bool = False,
        local: bool = False,
    ) -> None:
        self.short_channel_id = short_channel_id
        self.source = source
        self.target = target
        self.direction = direction
        self.fee_base_msat = fee_base_msat
        self.fee_proportional_millionths = fee_proportional_millionths
        self.cltv_expiry_delta = cltv_expiry_delta
        self.htlc_minimum_msat = htlc_minimum_msat
        self.htlc_maximum_msat = htlc_maximum_msat
        self.capacity_msat = capacity_msat
        self.disabled = disabled
        self.local = local
        #: what failures and liquidity are learned about: (short_channel_id, direction)
        self.key = (short_channel_id, direction)

    def fee(self, amount_msat: int) -> int:
        """BOLT 7: what ``source`` charges to forward ``amount_msat`` over this channel."""
        return self.fee_base_msat + amount_msat * self.fee_proportional_millionths // 1_000_000

    @property
    def effective_capacity_msat(self) -> int | None:
        """The funding amount if known, else the advertised HTLC maximum, else None."""
        if self.capacity_msat is not None:
            return self.capacity_msat
        return None if self.htlc_maximum_msat == NO_HTLC_MAXIMUM else self.htlc_maximum_msat

    def __repr__(self) -> str:
        return (
            f"DirectedChannel({self.short_channel_id}/{self.direction} {self.source.hex()[:8]}->{self.target.hex()[:8]}"
            f" fee={self.fee_base_msat}+{self.fee_proportional_millionths}ppm cltv={self.cltv_expiry_delta}"
            f"{' disabled' if self.disabled else ''})"
        )


class ChannelGraphView(Protocol):
    """What pathfinding reads: the channel directions into a node."""

    def incoming(self, node_id: bytes) -> Sequence[DirectedChannel]: ...


class _ChannelUpdateLike(Protocol):
    short_channel_id: object
    channel_flags: int
    message_flags: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int


def _scid_int(value: object) -> int:
    return value if isinstance(value, int) else value.to_int()  # type: ignore[attr-defined]


class RoutingGraph:
    """The public channel graph with policies, kept current from accepted gossip."""

    def __init__(self) -> None:
        self._incoming: dict[bytes, list[DirectedChannel]] = {}
        #: per channel: its two directions (node_id_1 -> node_id_2, then back)
        self._channels: dict[int, tuple[DirectedChannel, DirectedChannel]] = {}

    def __len__(self) -> int:
        return len(self._channels)

    @property
    def node_count(self) -> int:
        return len(self._incoming)

    def incoming(self, node_id: bytes) -> Sequence[DirectedChannel]:
        return self._incoming.get(node_id, ())

    def channel(self, short_channel_id: int, direction: int) -> DirectedChannel | None:
        pair = self._channels.get(short_channel_id)
        return None if pair is None else pair[direction]

    def add_channel(self, short_channel_id: int, node_id_1: bytes, node_id_2: bytes, capacity_sat: int | None = None) -> None:
        """A channel_announcement was accepted. Both directions stay disabled until their first update."""
        if short_channel_id in self._channels:
            return
        capacity = None if capacity_sat is None else capacity_sat * 1000
        pair = (
            DirectedChannel(short_channel_id, node_id_1, node_id_2, direction=0, capacity_msat=capacity, disabled=True),
            DirectedChannel(short_channel_id, node_id_2, node_id_1, direction=1, capacity_msat=capacity, disabled=True),
        )
        self._channels[short_channel_id] = pair
        self._incoming.setdefault(node_id_2, []).append(pair[0])
        self._incoming.setdefault(node_id_1, []).append(pair[1])

    def update(
        self,
        short_channel_id: int,
        direction: int,
        *,
        fee_base_msat: int,
        fee_proportional_millionths: int,
        cltv_expiry_delta: int,
        htlc_minimum_msat: int,
        htlc_maximum_msat: int,
        disabled: bool = False,
    ) -> bool:
        """Set one direction's policy (False: unknown channel)."""
        edge = self.channel(short_channel_id, direction)
        if edge is None:
            return False
        edge.fee_base_msat = fee_base_msat
        edge.fee_proportional_millionths = fee_proportional_millionths
        edge.cltv_expiry_delta = cltv_expiry_delta
        edge.htlc_minimum_msat = htlc_minimum_msat
        edge.htlc_maximum_msat = htlc_maximum_msat
        edge.disabled = disabled
        return True

    def apply_update(self, update: _ChannelUpdateLike) -> bool:
        """Apply an accepted channel_update (read by its BOLT-7 field names); False: unknown channel.

        The fields are set here rather than through :meth:`update`: this runs once per
        accepted update on the gossip ingest path."""
        pair = self._channels.get(_scid_int(update.short_channel_id))
        if pair is None:
            return False
        flags = update.channel_flags
        edge = pair[flags & 1]
        edge.fee_base_msat = update.fee_base_msat
        edge.fee_proportional_millionths = update.fee_proportional_millionths
        edge.cltv_expiry_delta = update.cltv_expiry_delta
        edge.htlc_minimum_msat = update.htlc_minimum_msat
        edge.htlc_maximum_msat = update.htlc_maximum_msat if update.message_flags & 1 else NO_HTLC_MAXIMUM
        edge.disabled = bool(flags & 2)
        return True

    def remove_channel(self, short_channel_id: int) -> None:
        pair = self._channels.pop(short_channel_id, None)
        if pair is None:
            return
        for edge in pair:
            edges = self._incoming[edge.target]
            edges.remove(edge)
            if not edges:
                del self._incoming[edge.target]


class OverlayGraph:
    """A view plus extra channel directions (our channels, route hints), for one payment.

    An extra direction with the same (short_channel_id, direction) as one in
    the base view replaces it: what we know of our own channel beats gossip.
    """

    def __init__(self, base: ChannelGraphView, extra: Iterable[DirectedChannel]) -> None:
        self.base = base
        self._extra: dict[bytes, list[DirectedChannel]] = {}
        self._replaced: set[tuple[int, int]] = set()
        for edge in extra:
            self._extra.setdefault(edge.target, []).append(edge)
            self._replaced.add(edge.key)

    def incoming(self, node_id: bytes) -> Sequence[DirectedChannel]:
        extra = self._extra.get(node_id)
        base = self.base.incoming(node_id)
        if extra is None:
            return base
        return [e for e in base if e.key not in self._replaced] + extra


def local_channel(short_channel_id: int, our_node_id: bytes, peer_node_id: bytes, spendable_msat: int, *, htlc_minimum_msat: int = 0) -> DirectedChannel:
    """Our own channel to a peer: no fee, no CLTV delta, at most ``spendable_msat`` now.

    The direction follows BOLT 7 (0 when our node id sorts first), so it
    replaces the gossip graph's copy of the same channel.
    """
    return DirectedChannel(
        short_channel_id,
        our_node_id,
        peer_node_id,
        direction=0 if our_node_id < peer_node_id else 1,
        htlc_minimum_msat=htlc_minimum_msat,
        htlc_maximum_msat=spendable_msat,
        capacity_msat=spendable_msat,
        local=True,
    )


def hint_channels(route: Sequence[RouteHintHop], payee: bytes) -> list[DirectedChannel]:
    """A BOLT-11 route hint as channel directions ending at ``payee``.

    Each hop is the channel from its ``node_id`` to the next hop's node (the
    last to the payee), with the fees and CLTV delta the hint gives; its
    size is unknown.
    """
    out = []
    for i, hop in enumerate(route):
        target = route[i + 1].node_id if i + 1 < len(route) else payee
        out.append(
            DirectedChannel(
                hop.short_channel_id,
                hop.node_id,
                target,
                direction=0 if hop.node_id < target else 1,
                fee_base_msat=hop.fee_base_msat,
                fee_proportional_millionths=hop.fee_proportional_millionths,
                cltv_expiry_delta=hop.cltv_expiry_delta,
            )
        )
    return out
