"""The network graph and every accept/ignore/reject decision of BOLT 7 (sans-IO).

:class:`Graph` holds what decisions need, in memory: each channel's node
ids and the timestamps of its latest updates, each node's latest
announcement timestamp and how many channels it has. The raw messages live
in the store (:mod:`lnpmsg.gossip.store`), which applies the
:class:`Decision` objects this class gives out.

A message is handled in two steps, so that the signature checks of many
messages can run together (in worker threads) between them:

1. :meth:`Graph.prepare` does every cheap check (chain, known channel or
   node, timestamps, duplicates) and either decides at once (a duplicate
   costs a dict lookup, never a signature check) or returns a
   :class:`Pending` with the signature checks to run;
2. :meth:`Graph.commit` takes the check results and decides, in order.

Messages prepared in one batch see each other: a channel_update can follow
its channel_announcement in the same batch; if that announcement's
signatures then fail, the update is ignored at commit ("unknown channel").
:meth:`Graph.process` does both steps for one message.

Rules (BOLT 7), with the policy chosen where BOLT 7 leaves a choice:

- a message for another chain is ignored;
- channel_announcement: all four signatures must hold (else rejected, with
  a warning to the peer); one for a known channel is ignored (the first
  valid one wins); unknown even feature bits are stored (the channel is
  marked not routable by readers, see :func:`routable`). There is no
  funding-output check here: the app runs one when it has a chain source,
  and without one channels are accepted on their signatures alone;
- node_announcement: only for a node with a known channel, newer than the
  last one; malformed known address descriptors are rejected with a
  warning; more than one DNS name: stored, not relayed;
- channel_update: only for a known channel, signed by ``node_id_1`` or
  ``node_id_2`` as ``channel_flags & 1`` says, newer than the last one of
  that direction (older or equal: ignored without a signature check);
  ``dont_forward`` updates are stored, never relayed;
- a timestamp more than :data:`MAX_FUTURE_SKEW` past ``now`` is rejected;
- relaying is rate limited per channel direction and per node
  (:data:`RELAY_BURST` per :data:`RELAY_WINDOW`): past that, a newer
  message is still stored, but not relayed;
- a channel whose oldest latest-update (or, for a direction never updated,
  the time we learned the channel) is older than :data:`STALE_AFTER` is
  stale and :meth:`Graph.prune` removes it, with nodes left with no channel.

The values given out are in :mod:`lnpmsg.gossip.decision`; what the graph
holds, its lookups, loading and pruning in :mod:`lnpmsg.gossip.graph_state`
(:class:`Graph` is a :class:`~lnpmsg.gossip.graph_state.GraphState`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lnpmsg.gossip.decision import KIND_NAMES, ChannelRemoved, Decision, Outcome, Pending, message_kind, routable
from lnpmsg.gossip.graph_state import STALE_AFTER, ChannelState, GraphState, NodeState
from lnpmsg.gossip.messages import (
    ChannelAnnouncement,
    ChannelUpdate,
    NodeAnnouncement,
    check_addresses,
)
from lnpmsg.gossip.verify import (
    SignatureVerifier,
    channel_announcement_checks,
    channel_update_checks,
    failure_reason,
    node_announcement_checks,
)
from lnpmsg.wire import Message

__all__ = [
    "BAD_MESSAGE_MEMORY",
    "MAX_FUTURE_SKEW",
    "RELAY_BURST",
    "RELAY_WINDOW",
    "STALE_AFTER",
    "ChannelRemoved",
    "ChannelState",
    "Decision",
    "Graph",
    "NodeState",
    "Outcome",
    "Pending",
    "message_kind",
    "routable",
]

#: A timestamp further than this past ``now`` (seconds) is rejected: clocks
#: drift by seconds, not days, and a far-future update would shadow every
#: genuine one until then. (BOLT 7: "unreasonably far in the future".)
MAX_FUTURE_SKEW = 24 * 3600
#: Messages whose signatures failed are remembered (by their bytes) so that
#: the same bad message again costs a lookup, not another signature check.
BAD_MESSAGE_MEMORY = 4096
#: Relay at most this many updates per channel direction (or announcements
#: per node) per window; more are stored but not relayed (spam control).
RELAY_BURST = 12
RELAY_WINDOW = 24 * 3600.0
#: channel ids seen in updates for channels we do not know, kept to ask for
UNKNOWN_CHANNEL_MEMORY = 10_000
#: the signer candidates of a channel_update decided before its channel is known
_NO_IDS = (b"", b"")
_ACCEPTED = Outcome.ACCEPTED
#: ``counters.by_kind`` keys of accepted messages, per class (built once, not per message)
_ACCEPTED_KEYS = {cls: (kind, _ACCEPTED.value) for cls, kind in KIND_NAMES.items()}
#: A :class:`Decision` is built from all of its fields in order, ``_new(Decision, (...))``:
#: ~3x faster than the named tuple's keyword constructor (one per message on the ingest path).
_new = tuple.__new__
if Decision._fields != ("outcome", "message", "raw", "reason", "warn", "close", "relay", "source", "capacity_sat", "first_seen"):
    raise ImportError("Decision's fields changed: update the positional builds in lnpmsg.gossip.graph")


@dataclass
class GraphCounters:
    """Decision counts: ``by_kind[("channel_update", "accepted")]``, ``reasons["channel_update: not newer"]``."""

    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    signature_checks: int = 0


class Graph(GraphState):
    """The gossip graph of one chain (sans-IO: ``now`` is passed in, in unix seconds)."""

    def __init__(
        self,
        chain_hash: bytes,
        *,
        verifier: SignatureVerifier | None = None,
        max_future_skew: int = MAX_FUTURE_SKEW,
    ) -> None:
        super().__init__()
        self.chain_hash = chain_hash
        self.verifier = verifier if verifier is not None else SignatureVerifier()
        self.max_future_skew = max_future_skew
        self.counters = GraphCounters()
        self._bad: OrderedDict[bytes, str] = OrderedDict()
        #: relay token buckets, ``key -> (tokens, at)``: a tuple of two floats per channel
        #: direction or node, which the garbage collector stops tracking (an object it would
        #: walk at every full collection, one per key)
        self._relay_buckets: dict[object, tuple[float, float]] = {}
        # What the current batch has prepared but not committed:
        self._pending_channels: dict[int, ChannelAnnouncement] = {}
        #: node id -> pending channel_announcements naming it (a plain dict: Counter's
        #: ``del`` is a Python method, one call per commit)
        self._pending_node_refs: dict[bytes, int] = {}
        self._pending_update_ts: dict[tuple[int, int], int] = {}
        self._pending_node_ts: dict[bytes, int] = {}

    # ------------------------------------------------------------ deciding

    def process(
        self,
        message: Message,
        raw: bytes | None = None,
        now: float = 0,
        *,
        source: bytes | None = None,
        capacity_sat: int | None = None,
        first_seen: int | None = None,
    ) -> Decision:
        """Decide on one message: prepare, check its signatures here, commit."""
        raw = raw if raw is not None else message.encode()
        step = self.prepare(message, raw, now, source=source, capacity_sat=capacity_sat, first_seen=first_seen)
        if isinstance(step, Decision):
            return step
        return self.commit(step, self.verifier.verify_many(step.checks), now)

    def process_many(self, items: Iterable[tuple[Message, bytes]], now: float, *, source: bytes | None = None) -> list[Decision]:
        """Decide on many messages in order, their signatures checked in one loop."""
        steps = [self.prepare(m, r, now, source=source) for m, r in items]
        checks = [c for s in steps if isinstance(s, Pending) for c in s.checks]
        results = iter(self.verifier.verify_many(checks))
        out = []
        for step in steps:
            if isinstance(step, Decision):
                out.append(step)
            else:
                out.append(self.commit(step, [next(results) for _ in step.checks], now))
        return out

    def prepare(
        self,
        message: Message,
        raw: bytes,
        now: float,
        *,
        source: bytes | None = None,
        capacity_sat: int | None = None,
        first_seen: int | None = None,
    ) -> Pending | Decision:
        """The cheap checks: a final :class:`Decision`, or a :class:`Pending` to check and commit."""
        kind = type(message)
        if kind is ChannelUpdate:
            return self._prepare_update(message, raw, now, source)  # type: ignore[arg-type]
        if kind is ChannelAnnouncement:
            return self._prepare_announcement(message, raw, now, source, capacity_sat, first_seen)  # type: ignore[arg-type]
        if kind is NodeAnnouncement:
            return self._prepare_node(message, raw, now, source)  # type: ignore[arg-type]
        raise TypeError(f"not a gossip message: {type(message).__name__}")

    def _decide(
        self, outcome: Outcome, message: Message, raw: bytes, reason: str, source: bytes | None, *, warn: bool = False, close: bool = False
    ) -> Decision:
        kind = KIND_NAMES[type(message)]
        self.counters.by_kind[(kind, outcome.value)] += 1
        self.counters.reasons[f"{kind}: {reason}"] += 1
        return _new(Decision, (outcome, message, raw, reason, warn, close, False, source, None, 0))  # type: ignore[type-var]

    def _known_bad(self, message: Message, raw: bytes, source: bytes | None) -> Decision:
        """The rejection of a message whose signatures failed before (callers check
        ``raw in self._bad`` first: a C-level lookup, so the common case makes no call)."""
        reason = self._bad[raw]
        self._bad.move_to_end(raw)
        return self._decide(Outcome.REJECTED, message, raw, f"{reason} (seen before)", source, close=type(message) is ChannelUpdate)

    def _gate_update(
        self, msg: ChannelUpdate, raw: bytes, now: float, source: bytes | None, pending: bool, scid: int
    ) -> tuple[Decision | None, tuple[bytes, bytes], bool]:
        """The cheap checks of a channel_update (``scid``: its packed short channel id), in
        BOLT 7's order: (a decision or None, the signer candidates, whether only pending
        messages make it "not newer")."""
        if msg.chain_hash != self.chain_hash:
            return self._decide(Outcome.IGNORED, msg, raw, "unknown chain", source), _NO_IDS, False
        direction = msg.channel_flags & 1
        channel = self.channels.get(scid)
        if channel is not None:
            ids = (channel.node_id_1, channel.node_id_2)
            latest = channel.update_ts[direction]
        else:
            announcement = self._pending_channels.get(scid) if pending else None
            if announcement is None:
                self._unknown_channels[scid] = None
                if len(self._unknown_channels) > UNKNOWN_CHANNEL_MEMORY:
                    self._unknown_channels.popitem(last=False)
                return self._decide(Outcome.IGNORED, msg, raw, "unknown channel", source), _NO_IDS, False
            ids = (announcement.node_id_1, announcement.node_id_2)
            latest = 0
        if msg.timestamp <= latest:
            return self._decide(Outcome.IGNORED, msg, raw, "not newer", source), ids, False
        if pending and msg.timestamp <= self._pending_update_ts.get((scid, direction), 0):
            return None, ids, True
        if msg.timestamp > now + self.max_future_skew:
            return self._decide(Outcome.REJECTED, msg, raw, "timestamp too far in the future", source), ids, False
        return (self._known_bad(msg, raw, source) if self._bad and raw in self._bad else None), ids, False

    def _prepare_update(self, msg: ChannelUpdate, raw: bytes, now: float, source: bytes | None) -> Pending | Decision:
        scid = msg.short_channel_id.to_int()
        decision, (node_id_1, node_id_2), shadow = self._gate_update(msg, raw, now, source, True, scid)
        if decision is not None:
            return decision
        relay = not msg.message_flags & 2
        if not shadow:
            self._pending_update_ts[(scid, msg.channel_flags & 1)] = msg.timestamp
        # (positional: a keyword call costs more, once per message)
        return Pending(msg, raw, channel_update_checks(msg, raw, node_id_1, node_id_2), source, None, 0, relay, shadow, scid)

    def _gate_announcement(
        self, msg: ChannelAnnouncement, raw: bytes, source: bytes | None, pending: bool, scid: int
    ) -> tuple[Decision | None, bool]:
        if msg.chain_hash != self.chain_hash:
            return self._decide(Outcome.IGNORED, msg, raw, "unknown chain", source), False
        if scid in self.channels:
            return self._decide(Outcome.IGNORED, msg, raw, "known channel", source), False
        if pending and scid in self._pending_channels:
            return None, True
        return (self._known_bad(msg, raw, source) if self._bad and raw in self._bad else None), False

    def _prepare_announcement(
        self, msg: ChannelAnnouncement, raw: bytes, now: float, source: bytes | None, capacity_sat: int | None, first_seen: int | None
    ) -> Pending | Decision:
        scid = msg.short_channel_id.to_int()
        decision, shadow = self._gate_announcement(msg, raw, source, True, scid)
        if decision is not None:
            return decision
        if not shadow:
            self._pending_channels[scid] = msg
            refs = self._pending_node_refs
            refs[msg.node_id_1] = refs.get(msg.node_id_1, 0) + 1
            refs[msg.node_id_2] = refs.get(msg.node_id_2, 0) + 1
        seen = int(now) if first_seen is None else first_seen
        return Pending(msg, raw, channel_announcement_checks(msg, raw), source, capacity_sat, seen, True, shadow, scid)

    def _gate_node(
        self, msg: NodeAnnouncement, raw: bytes, now: float, source: bytes | None, pending: bool, stateless: bool = True
    ) -> tuple[Decision | None, bool, bool]:
        """(a decision or None, whether only pending messages make it "not newer", relay);
        ``stateless=False`` skips the checks that depend on the message alone (passed before)."""
        node = self.nodes.get(msg.node_id)
        if (node is None or not node.channels) and not (pending and self._pending_node_refs.get(msg.node_id)):
            return self._decide(Outcome.IGNORED, msg, raw, "unknown node (no channel)", source), False, False
        if node is not None and msg.timestamp <= node.timestamp:
            return self._decide(Outcome.IGNORED, msg, raw, "not newer", source), False, False
        if pending and msg.timestamp <= self._pending_node_ts.get(msg.node_id, 0):
            return None, True, False
        if not stateless:
            return (self._known_bad(msg, raw, source) if self._bad and raw in self._bad else None), False, False
        if msg.timestamp > now + self.max_future_skew:
            return self._decide(Outcome.REJECTED, msg, raw, "timestamp too far in the future", source), False, False
        problem, dns_names = check_addresses(msg.addresses)
        if problem is not None:
            return self._decide(Outcome.REJECTED, msg, raw, f"malformed addresses: {problem}", source, warn=True), False, False
        relay = dns_names <= 1
        return (self._known_bad(msg, raw, source) if self._bad and raw in self._bad else None), False, relay

    def _prepare_node(self, msg: NodeAnnouncement, raw: bytes, now: float, source: bytes | None) -> Pending | Decision:
        decision, shadow, relay = self._gate_node(msg, raw, now, source, True)
        if decision is not None:
            return decision
        if not shadow:
            self._pending_node_ts[msg.node_id] = msg.timestamp
        return Pending(msg, raw, node_announcement_checks(msg, raw), source, None, 0, relay, shadow)

    def _recheck(self, pending: Pending, now: float) -> Decision | None:
        """At commit, the cheap checks again, against what is committed now (the messages
        before this one, decided): a message prepared while an earlier one was pending is
        decided as if it had come after that one's decision, signatures unused."""
        msg, raw, source = pending.message, pending.raw, pending.source
        kind = type(msg)
        if kind is ChannelUpdate:
            return self._gate_update(msg, raw, now, source, False, pending.scid)[0]  # type: ignore[arg-type]
        if kind is ChannelAnnouncement:
            return self._gate_announcement(msg, raw, source, False, pending.scid)[0]  # type: ignore[arg-type]
        # the address check (the costly one) ran at prepare unless this is a shadow
        decision, _, relay = self._gate_node(msg, raw, now, source, False, pending.shadow)  # type: ignore[arg-type]
        if decision is None and pending.shadow:
            pending.relay = relay
        return decision

    def commit(
        self,
        pending: Pending,
        results: Sequence[bool],
        now: float,
        *,
        funding_error: str | None = None,
        capacity_sat: int | None = None,
    ) -> Decision:
        """Decide on a prepared message given its signature checks' results (in order).

        For a channel_announcement, a funding check (when the app has a
        chain source) gives ``funding_error`` (the output is missing, spent
        or not the announced 2-of-2: ignored) or the ``capacity_sat``.
        """
        msg = pending.message
        kind = type(msg)
        if not pending.shadow:
            self._release(pending)
        early = self._recheck(pending, now)
        if early is not None:
            return early
        self.counters.signature_checks += len(results)
        if not all(results):
            reason = failure_reason(pending.checks, results) or "signature invalid"
            self._bad[pending.raw] = reason
            if len(self._bad) > BAD_MESSAGE_MEMORY:
                self._bad.popitem(last=False)
            # BOLT 7: a channel_update with a bad signature: warn and close the connection
            return self._decide(Outcome.REJECTED, msg, pending.raw, reason, pending.source, warn=True, close=kind is ChannelUpdate)
        if funding_error is not None:
            return self._decide(Outcome.IGNORED, msg, pending.raw, funding_error, pending.source)
        if capacity_sat is not None:
            pending.capacity_sat = capacity_sat
        if kind is ChannelUpdate:
            return self._commit_update(pending, msg, now)  # type: ignore[arg-type]
        if kind is ChannelAnnouncement:
            return self._commit_announcement(pending, msg)  # type: ignore[arg-type]
        return self._commit_node(pending, msg, now)  # type: ignore[arg-type]

    def _release(self, pending: Pending) -> None:
        """Forget the pending marks of a message being committed."""
        msg = pending.message
        if type(msg) is ChannelUpdate:
            key = (pending.scid, msg.channel_flags & 1)
            if self._pending_update_ts.get(key) == msg.timestamp:
                del self._pending_update_ts[key]
        elif type(msg) is ChannelAnnouncement:
            scid = pending.scid
            if self._pending_channels.get(scid) is msg:
                del self._pending_channels[scid]
                refs = self._pending_node_refs
                for node_id in (msg.node_id_1, msg.node_id_2):
                    left = refs[node_id] - 1
                    if left <= 0:
                        del refs[node_id]
                    else:
                        refs[node_id] = left
        elif type(msg) is NodeAnnouncement and self._pending_node_ts.get(msg.node_id) == msg.timestamp:
            del self._pending_node_ts[msg.node_id]

    def _accept(self, pending: Pending, relay: bool, *, capacity_sat: int | None = None, first_seen: int = 0) -> Decision:
        message = pending.message
        self.counters.by_kind[_ACCEPTED_KEYS[type(message)]] += 1
        return _new(Decision, (_ACCEPTED, message, pending.raw, "", False, False, relay, pending.source, capacity_sat, first_seen))  # type: ignore[type-var]

    # The three below run right after :meth:`_recheck` passed, with nothing changed since:
    # the channel (node) is known and the message newer, so they do not look again.

    def _commit_update(self, pending: Pending, msg: ChannelUpdate, now: float) -> Decision:
        scid = pending.scid
        direction = msg.channel_flags & 1
        self.channels[scid].update_ts[direction] = msg.timestamp
        relay = pending.relay and self._relay_allowed((scid, direction), now)
        return self._accept(pending, relay)

    def _commit_announcement(self, pending: Pending, msg: ChannelAnnouncement) -> Decision:
        self.load_channel(pending.scid, msg.node_id_1, msg.node_id_2, msg.features, pending.capacity_sat, pending.first_seen)
        return self._accept(pending, True, capacity_sat=pending.capacity_sat, first_seen=pending.first_seen)

    def _commit_node(self, pending: Pending, msg: NodeAnnouncement, now: float) -> Decision:
        self.nodes[msg.node_id].timestamp = msg.timestamp
        relay = pending.relay and self._relay_allowed(msg.node_id, now)
        return self._accept(pending, relay)

    def abandon(self, pending: Pending) -> None:
        """Drop a prepared message without deciding (e.g. its batch was cancelled)."""
        if not pending.shadow:
            self._release(pending)

    def _relay_allowed(self, key: object, now: float) -> bool:
        buckets = self._relay_buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) > 4 * (len(self.channels) + 1024):
                buckets.clear()
            buckets[key] = (RELAY_BURST - 1, now)
            return True
        tokens, at = bucket
        tokens = min(RELAY_BURST, tokens + (now - at) * RELAY_BURST / RELAY_WINDOW)
        if tokens < 1:
            buckets[key] = (tokens, now)
            return False
        buckets[key] = (tokens - 1, now)
        return True
