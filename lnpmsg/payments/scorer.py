"""Mission control: what payment attempts taught us, as success probabilities and penalties (sans-IO).

The model is the one LDK's probabilistic scorer and lnd's estimators share
in spirit: a channel direction's liquidity is unknown but uniform between
a lower and an upper bound, at first ``0`` and its capacity, so an HTLC of
``a`` msat succeeds with probability ``(hi - a + 1) / (hi - lo + 1)``.
Attempts move the bounds:

- the channels before the failing one forwarded their HTLCs: each has at
  least that much (``lo`` rises); a success moves its amount to the far side
  of every channel (both bounds drop by it: what was paid is spent);
- a channel that failed for liquidity (``temporary_channel_failure``) has
  less than that HTLC (``hi`` drops below it);
- a channel that failed for good (permanent failures, disabled) or whose
  policy changed is banned for a while (a policy ban ends early once the
  graph holds a newer policy asking more than the refused HTLC gave: BOLT 4's
  "restore the channels as new channel_updates arrive"); a node that failed
  (NODE flag) is banned as a whole.

Learned bounds decay toward the a-priori ones with a half life, and bans
end, so nothing learned is permanent. Time is passed in (``now``, seconds).

A route's cost adds, per channel, ``-log10(p)`` times a penalty (so the
penalties along a path add up as its success probability multiplies), a
per-hop base penalty (shorter routes win ties) and a CLTV risk penalty
(funds locked longer), to the fees.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lnpmsg.payments.graph import NO_HTLC_MAXIMUM, DirectedChannel
from lnpmsg.payments.onion.failures import BADONION, NODE, PERM, ChannelDisabled, TemporaryChannelFailure
from lnpmsg.payments.route import Route

__all__ = ["FailureKind", "MissionControl", "ScoringParams", "classify_failure"]

TEMPORARY_CHANNEL_FAILURE = TemporaryChannelFailure.TYPE
CHANNEL_DISABLED = ChannelDisabled.TYPE
#: channel directions with learned bounds, and bans, kept at most (the oldest go first):
#: a payer learns about the channels it tries, but a long-running node must stay bounded
MAX_REMEMBERED = 100_000


class FailureKind(enum.Enum):
    #: the channel lacked liquidity for the HTLC: lower its upper bound
    LIQUIDITY = "liquidity"
    #: the channel will not forward (permanent failure, unknown peer, disabled): ban it
    CHANNEL = "channel"
    #: the channel's policy changed (fee, CLTV, minimum): ban it briefly, its update applies after
    POLICY = "policy"
    #: the node failed as a whole: ban the node
    NODE = "node"
    #: the payee refused (unknown hash, wrong amount, MPP timeout): routing worked
    DESTINATION = "destination"


def classify_failure(code: int, *, from_payee: bool) -> FailureKind:
    """What a BOLT-4 failure code means for routing."""
    if from_payee:
        return FailureKind.DESTINATION
    if code & NODE or code & BADONION:
        return FailureKind.NODE
    if code == TEMPORARY_CHANNEL_FAILURE:
        return FailureKind.LIQUIDITY
    if code & PERM or code == CHANNEL_DISABLED:
        return FailureKind.CHANNEL
    return FailureKind.POLICY


@dataclass(frozen=True, slots=True)
class ScoringParams:
    """Penalties in msat (so they add to fees) and how long lessons last (seconds)."""

    #: per hop, plus a share of the amount: prefer short routes
    base_penalty_msat: int = 500
    base_penalty_ppm: int = 8
    #: times -log10(success probability), plus per-amount (ppm) times the same
    liquidity_penalty_msat: int = 30_000
    liquidity_penalty_ppm: int = 200
    #: funds locked per block of CLTV delta, in ppm of the amount
    cltv_risk_ppm_per_block: float = 0.5
    #: channel directions below this success probability are not used
    min_probability: float = 0.01
    #: the assumed size of a channel nothing tells us about (route hints): 1 BTC
    unknown_capacity_msat: int = 100_000_000_000
    #: learned bounds move half-way back to the a-priori ones in this time
    liquidity_half_life: float = 6 * 3600.0
    channel_ban_seconds: float = 24 * 3600.0
    policy_ban_seconds: float = 60.0
    node_ban_seconds: float = 3600.0

    @classmethod
    def fees_only(cls) -> ScoringParams:
        """No penalties at all: the cheapest route by fees (capacity still excludes channels)."""
        return cls(0, 0, 0, 0, 0.0, 0.0)


class MissionControl:
    """Learned liquidity bounds and bans, and the per-channel penalty pathfinding adds."""

    def __init__(self, params: ScoringParams | None = None) -> None:
        self.params = params if params is not None else ScoringParams()
        #: (scid, direction) -> [lower bound, upper bound, when learned] (msat, msat, seconds)
        self._bounds: dict[tuple[int, int], list[float]] = {}
        self._banned_channels: dict[tuple[int, int], float] = {}
        #: channels banned for their policy: (fee paid, CLTV delta given, amount forwarded) when they refused
        self._refused_policy: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._banned_nodes: dict[bytes, float] = {}

    # ---- reading
    def banned(self, edge: DirectedChannel, now: float) -> bool:
        until = self._banned_channels.get(edge.key)
        if until is not None and now < until:
            refused = self._refused_policy.get(edge.key)
            # BOLT 4: a channel that refused our fee or CLTV delta is restored once a newer channel_update
            # says it asks more than we gave
            return refused is None or not (edge.fee(refused[2]) > refused[0] or edge.cltv_expiry_delta > refused[1])
        until = self._banned_nodes.get(edge.source)
        return until is not None and now < until and not edge.local

    def liquidity_bounds(self, edge: DirectedChannel, now: float) -> tuple[float, float]:
        """(lower, upper) bounds of what the direction can carry now, learning decayed."""
        if edge.local:
            cap = edge.capacity_msat or 0
            return float(cap), float(cap)
        cap = edge.effective_capacity_msat
        capacity = float(self.params.unknown_capacity_msat if cap is None else cap)
        learned = self._bounds.get(edge.key)
        if learned is None:
            return 0.0, capacity
        lo, hi, at = learned
        factor = 0.5 ** (max(0.0, now - at) / self.params.liquidity_half_life)
        lo *= factor
        hi = capacity - (capacity - min(hi, capacity)) * factor
        return lo, hi

    def probability(self, edge: DirectedChannel, amount_msat: int, now: float, inflight_msat: int = 0) -> float:
        """The chance the direction forwards ``amount_msat`` more than ``inflight_msat`` already sent over it."""
        lo, hi = self.liquidity_bounds(edge, now)
        a = amount_msat + inflight_msat
        if a <= lo:
            return 1.0
        if a > hi:
            return 0.0
        return (hi - a + 1) / (hi - lo + 1)

    def penalty(self, edge: DirectedChannel, amount_msat: int, now: float, inflight_msat: int = 0) -> float | None:
        """The msat-equivalent cost of using the direction for ``amount_msat`` (None: do not use it)."""
        return self.penalty_function(now, {edge.key: inflight_msat} if inflight_msat else None)(edge, amount_msat)

    def penalty_function(
        self, now: float, inflight: Mapping[tuple[int, int], int] | None = None
    ) -> Callable[[DirectedChannel, int], float | None]:
        """:meth:`penalty` at ``now`` with ``inflight`` booked, as one function of (channel, amount).

        Pathfinding calls it for every channel it looks at, so everything
        fixed for the search is bound once here and the common case (nothing
        learned about the channel) is computed inline.
        """
        params = self.params
        bounds = self._bounds
        check_bans = bool(self._banned_channels or self._banned_nodes)
        banned = self.banned
        probability = self.probability
        in_flight = inflight.get if inflight else None
        unknown_capacity = params.unknown_capacity_msat
        min_probability = max(params.min_probability, 1e-12)
        base, base_ppm, risk_ppm = params.base_penalty_msat, params.base_penalty_ppm, params.cltv_risk_ppm_per_block
        liquidity, liquidity_ppm = params.liquidity_penalty_msat, params.liquidity_penalty_ppm
        log10 = math.log10

        def penalty(edge: DirectedChannel, amount_msat: int) -> float | None:
            if check_bans and banned(edge, now):
                return None
            used = in_flight(edge.key, 0) if in_flight else 0
            if edge.local or (bounds and edge.key in bounds):
                p = probability(edge, amount_msat, now, used)
            else:
                a = amount_msat + used
                cap = edge.capacity_msat
                if cap is None:
                    cap = unknown_capacity if edge.htlc_maximum_msat == NO_HTLC_MAXIMUM else edge.htlc_maximum_msat
                p = (cap - a + 1) / (cap + 1) if a <= cap else 0.0
            if p < min_probability:
                return None
            cost = base + amount_msat * (base_ppm + edge.cltv_expiry_delta * risk_ppm) / 1e6
            if p < 1.0:
                cost -= log10(p) * (liquidity + amount_msat * liquidity_ppm / 1e6)
            return cost

        return penalty

    def max_sendable(
        self,
        edge: DirectedChannel,
        now: float,
        inflight: Mapping[tuple[int, int], int] | None = None,
        *,
        min_probability: float = 0.0,
    ) -> int:
        """The most the direction could still carry with at least ``min_probability`` of success
        (beyond what is in flight), capped by its HTLC maximum."""
        lo, hi = self.liquidity_bounds(edge, now)
        most = max(lo, hi + 1 - min_probability * (hi - lo + 1))
        used = inflight.get(edge.key, 0) if inflight else 0
        return max(0, min(int(most) - used, edge.htlc_maximum_msat))

    # ---- learning
    def _learn(self, key: tuple[int, int], now: float, *, lo: float | None = None, hi: float | None = None, capacity: float) -> None:
        current = self._bounds.get(key)
        if current is None:
            cur_lo, cur_hi = 0.0, capacity
        else:
            factor = 0.5 ** (max(0.0, now - current[2]) / self.params.liquidity_half_life)
            cur_lo = current[0] * factor
            cur_hi = capacity - (capacity - min(current[1], capacity)) * factor
        if lo is not None:
            cur_lo = max(cur_lo, lo)
            cur_hi = max(cur_hi, cur_lo)
        if hi is not None:
            cur_hi = min(cur_hi, hi)
            cur_lo = min(cur_lo, cur_hi)
        self._bounds[key] = [cur_lo, cur_hi, now]
        if len(self._bounds) > MAX_REMEMBERED:
            self._shrink(self._bounds, lambda v: v[2])

    @staticmethod
    def _shrink(table: dict, age: Callable[[Any], float]) -> None:
        """Drop the oldest tenth of a table that outgrew :data:`MAX_REMEMBERED`."""
        for key in sorted(table, key=lambda k: age(table[k]))[: len(table) // 10]:
            del table[key]

    def _capacity(self, edge_capacity: int | None) -> float:
        return float(self.params.unknown_capacity_msat if edge_capacity is None else edge_capacity)

    def report_success(self, route: Route, now: float, capacities: Mapping[tuple[int, int], int | None] | None = None) -> None:
        """Every channel of ``route`` carried its HTLC, and the HTLC's amount now sits on the far side:
        each channel had at least that much and has that much less now (both bounds drop by it)."""
        self._forwarded(route, len(route.hops), now, capacities)
        for hop in route.hops:
            lo, hi, at = self._bounds[hop.key]
            self._bounds[hop.key] = [max(0.0, lo - hop.amount_msat), max(0.0, hi - hop.amount_msat), at]

    def _forwarded(self, route: Route, count: int, now: float, capacities: Mapping[tuple[int, int], int | None] | None) -> None:
        for hop in route.hops[:count]:
            cap = self._capacity((capacities or {}).get(hop.key))
            self._learn(hop.key, now, lo=hop.amount_msat, capacity=cap)

    def report_failure(
        self,
        route: Route,
        erring_index: int,
        code: int,
        now: float,
        capacities: Mapping[tuple[int, int], int | None] | None = None,
    ) -> FailureKind:
        """A failure with BOLT-4 ``code`` from ``route.hops[erring_index]``'s node (attributed by the onion).

        The channels up to that node forwarded the HTLC; a channel failure
        concerns the channel *out of* the erring node (``hops[erring_index + 1]``).
        ``capacities`` gives channel sizes by (scid, direction) when known
        (else the a-priori assumption applies). Returns what was concluded.
        """
        if not 0 <= erring_index < len(route.hops):
            raise ValueError(f"erring_index {erring_index} is not a hop of a {len(route.hops)}-hop route")
        kind = classify_failure(code, from_payee=erring_index == len(route.hops) - 1)
        if kind is FailureKind.DESTINATION:
            self._forwarded(route, len(route.hops), now, capacities)
            return kind
        self._forwarded(route, erring_index + 1, now, capacities)
        node = route.hops[erring_index].node_id
        if code & BADONION and erring_index + 1 < len(route.hops):
            # the erring node relays that the *next* node could not read its onion
            node = route.hops[erring_index + 1].node_id
        if kind is FailureKind.NODE:
            self._banned_nodes[node] = now + self.params.node_ban_seconds
            if len(self._banned_nodes) > MAX_REMEMBERED:
                self._shrink(self._banned_nodes, float)
            return kind
        failed = route.hops[erring_index + 1]
        if kind is FailureKind.LIQUIDITY:
            cap = self._capacity((capacities or {}).get(failed.key))
            self._learn(failed.key, now, hi=failed.amount_msat - 1, capacity=cap)
        else:
            ban = self.params.channel_ban_seconds if kind is FailureKind.CHANNEL else self.params.policy_ban_seconds
            self._banned_channels[failed.key] = now + ban
            if kind is FailureKind.POLICY:
                hop = route.hops[erring_index]
                self._refused_policy[failed.key] = (hop.amount_msat - hop.amt_to_forward, hop.cltv_expiry - hop.outgoing_cltv_value,
                                                    hop.amt_to_forward)  # fmt: skip
            else:
                self._refused_policy.pop(failed.key, None)
            if len(self._banned_channels) > MAX_REMEMBERED:
                self._shrink(self._banned_channels, float)
                for key in [k for k in self._refused_policy if k not in self._banned_channels]:
                    del self._refused_policy[key]
        return kind

    def forget_expired(self, now: float) -> None:
        """Drop bans that ended and bounds that decayed away (call now and then to bound memory)."""
        for bans in (self._banned_channels, self._banned_nodes):
            for key in [k for k, until in bans.items() if until <= now]:
                del bans[key]
        for key in [k for k in self._refused_policy if k not in self._banned_channels]:
            del self._refused_policy[key]
        horizon = 16 * self.params.liquidity_half_life
        for key in [k for k, v in self._bounds.items() if now - v[2] > horizon]:
            del self._bounds[key]
