"""The gossip app's peers: their state, the node's peer hooks, the initial
sync by queries with up to ``sync_peers`` of them at a time, until
``full_syncs`` are done if set, and from then on a re-sync with one peer
every ``resync_interval`` (:mod:`~lnpmsg.gossip.resync`), or when asked
(:meth:`GossipPeers.resync_now`) (the trio shell of
:class:`~lnpmsg.gossip.sync.PeerSync`, its progress in the logs and
:meth:`GossipPeers.progress`), direct sends and rate-limited warnings.

A part of :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.gossip.events import GossipSyncEvent
from lnpmsg.gossip.messages import GossipTimestampFilter, ReplyChannelRange, ReplyShortChannelIdsEnd
from lnpmsg.gossip.resync import ResyncSchedule
from lnpmsg.gossip.sync import MAX_U32, PeerSync, SyncState, SyncStep
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.wire import ZERO_CHANNEL_ID, Features, Message, WarningMessage
from lnpmsg.wire.features import INITIAL_ROUTING_SYNC

if TYPE_CHECKING:
    from lnpmsg.gossip.app import GossipAppCounters, GossipConfig
    from lnpmsg.gossip.graph import Graph
    from lnpmsg.node.node import Node

__all__ = ["MAX_GONE_SYNCS", "MAX_WARNINGS_PER_MINUTE", "GossipPeers", "PeerState"]

log = logging.getLogger("lnpmsg.gossip")

#: most warnings sent to one peer per minute (a bad peer cannot make us spam)
MAX_WARNINGS_PER_MINUTE = 10
#: most syncs of peers that have left kept for progress reports (the last ones to leave;
#: the syncs of the peers connected are all kept)
MAX_GONE_SYNCS = 64


@dataclass(eq=False, slots=True)
class PeerState:
    """What the gossip app keeps of one ready peer.

    A node may hold thousands of idle peers: no instance dict, and the relay
    queue and the warnings' times are made on first use (an idle peer has neither).
    """

    peer: Peer
    queries: bool
    extended: bool
    sync: PeerSync | None = None
    #: the peer's gossip_timestamp_filter (None: relay nothing to it)
    their_filter: GossipTimestampFilter | None = None
    #: gossip to relay to it, by what it is (None: nothing queued since the last flush)
    queue: OrderedDict[tuple[Any, ...], bytes] | None = None
    invalid: int = 0
    #: when the warnings of the last minute were sent (None: none yet)
    warnings: list[float] | None = None
    backfill: trio.CancelScope | None = None
    synced: bool = False
    #: a query of the peer is being answered
    answering: bool = False

    @property
    def node_id(self) -> bytes:
        return self.peer.node_id


class GossipPeers:
    """The peers and our sync with them, of the :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it)."""

    config: GossipConfig
    clock: Callable[[], float]
    chain_hash: bytes
    graph: Graph
    counters: GossipAppCounters
    node: Node
    _peers: dict[bytes, PeerState]
    _syncs: dict[bytes, PeerSync]
    _gone_syncs: OrderedDict[bytes, None]
    _done_dropped: bool
    _full_syncs: int
    _full_synced: set[bytes]
    #: the peers whose sync runs (at most ``sync_peers``): the timers are theirs alone
    _syncing: dict[bytes, PeerState]
    #: the peers offering gossip queries we have not synced with yet, in arrival order
    #: (finding the next one looks at these, not at every peer)
    _unsynced: dict[bytes, PeerState]
    #: when the next re-sync is due and with whom (once ``full_syncs`` stopped the first syncs)
    _resync: ResyncSchedule
    _nursery: trio.Nursery | None
    _backfill: Callable[[PeerState, GossipTimestampFilter], Awaitable[None]]

    # ------------------------------------------------------------ peers

    async def peer_ready(self, peer: Peer) -> None:
        """The node's hook: a peer is ready (before any of its gossip reaches us)."""
        self._peer_ready(peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """The node's hook: a peer left; its sync and backfill end."""
        state = self._peers.get(peer.node_id)
        if state is not None and state.peer is peer:
            self._peer_gone(peer.node_id)

    def _peer_ready(self, peer: Peer) -> None:
        old = self._peers.get(peer.node_id)
        if old is not None:
            if old.peer is peer:
                return
            self._end(old, "peer reconnected")
        features = peer.session.remote_features or Features()
        state = PeerState(peer, features.supports("gossip_queries"), features.supports("gossip_queries_ex"))
        self._peers[peer.node_id] = state
        self._gone_syncs.pop(peer.node_id, None)  # back: its last sync is a connected peer's again
        if state.queries:
            first = max(0, int(self.clock()) - self.config.live_backlog)
            self._send_soon(peer, GossipTimestampFilter(chain_hash=self.chain_hash, first_timestamp=first, timestamp_range=MAX_U32 - first))
            if not self._fully_synced():
                self._unsynced[peer.node_id] = state
                self._maybe_start_sync()
        else:
            # BOLT 7: a peer not offering gossip_queries is not worth gossip from.
            self._send_soon(peer, GossipTimestampFilter(chain_hash=self.chain_hash, first_timestamp=MAX_U32, timestamp_range=0))
            if features.has(INITIAL_ROUTING_SYNC) and self.config.answer_queries and self._nursery is not None:
                # It asks for a full dump (initial_routing_sync, from before gossip queries):
                # everything we hold, then the live gossip, as if it had sent a filter for all time.
                everything = GossipTimestampFilter(chain_hash=self.chain_hash, first_timestamp=0, timestamp_range=MAX_U32)
                state.their_filter = everything
                log.info("gossip: %s asked for a full dump (initial_routing_sync): sending what we hold", peer.node_id.hex())
                self._nursery.start_soon(self._backfill, state, everything)

    def _state(self, peer: Peer) -> PeerState | None:
        """The peer's state (the peer_ready hook made it before any of its messages came)."""
        state = self._peers.get(peer.node_id)
        return state if state is not None and state.peer is peer else None

    def _peer_gone(self, node_id: bytes) -> None:
        state = self._peers.pop(node_id, None)
        if state is None:
            return
        self._end(state, "peer disconnected")
        self._unsynced.pop(node_id, None)
        if node_id in self._syncs:
            self._keep_gone_sync(node_id)
        self._maybe_start_sync()

    def _keep_gone_sync(self, node_id: bytes) -> None:
        """The peer left: its (ended) sync stays for progress reports among the last
        ``MAX_GONE_SYNCS`` peers to leave; the one that left first beyond those goes."""
        gone = self._gone_syncs
        gone[node_id] = None
        gone.move_to_end(node_id)
        while len(gone) > MAX_GONE_SYNCS:
            oldest, _ = gone.popitem(last=False)
            sync = self._syncs.pop(oldest)
            if sync.state is SyncState.DONE:
                self._done_dropped = True

    def _end(self, state: PeerState, reason: str) -> None:
        """A peer's connection ended (left, or replaced by a new one): its backfill and sync stop."""
        if state.backfill is not None:
            state.backfill.cancel()
        if self._syncing.get(state.node_id) is state:
            del self._syncing[state.node_id]
            self._resync.ended(state.node_id)
        if state.sync is not None and state.sync.active:
            state.sync.state = SyncState.FAILED
            state.sync.reason = reason

    def _maybe_start_sync(self) -> None:
        unsynced = self._unsynced
        full = self.config.full_syncs
        while len(self._syncing) < self.config.sync_peers and unsynced:
            if full and self._full_syncs + len(self._syncing) >= full:
                break  # the syncs under way may be enough: the next waits for one to fail
            node_id = next(iter(unsynced))
            state = unsynced.pop(node_id)
            if not state.peer.is_ready:
                continue  # closing: its peer_gone follows
            log.info("gossip sync with %s: asking for its channels", node_id.hex())
            self._start_sync(state, trio.current_time())

    def _start_sync(self, state: PeerState, now: float) -> None:
        """A range sync with the peer starts (its first, or a re-sync): a new record for it."""
        node_id = state.node_id
        state.sync = PeerSync(
            self.chain_hash,
            extended=state.extended,
            reply_timeout=self.config.reply_timeout,
            max_query_ids=self.config.max_query_ids,
        )
        self._syncs[node_id] = state.sync
        self._syncing[node_id] = state
        self._resync.synced_with(node_id, now)
        self._apply_step(state, state.sync.start(now))

    def _maybe_resync(self, now: float) -> None:
        """A re-sync is due: start it with one peer offering gossip queries, if there is room
        among the ``sync_peers`` syncs (else the next tick tries again)."""
        if len(self._syncing) >= self.config.sync_peers:
            return
        candidates = {
            node_id: state
            for node_id, state in self._peers.items()
            if state.queries and node_id not in self._syncing and state.peer.is_ready
        }
        node_id = self._resync.choose(candidates)
        if node_id is None:
            self._resync.postpone(now)
            log.info("gossip re-sync: no peer offering gossip queries; the next try in %g s", self._resync.interval)
            return
        self._resync.start(node_id, now)
        log.info("gossip re-sync with %s (every %g s): asking for its channels", node_id.hex(), self._resync.interval)
        self._start_sync(candidates[node_id], now)

    def resync_now(self, node_id: bytes | None = None) -> dict[str, Any]:
        """Start a re-sync now (``gossip.resync``) with ``node_id``, or with the peer the
        timer would choose (None); the periodic re-syncs' timer is left alone (see
        :mod:`~lnpmsg.gossip.resync`).

        Returns ``peer`` (hex), ``chosen`` (``given`` or ``schedule``) and ``next_in``
        (seconds until the next periodic re-sync; None: none is due). Raises
        :class:`~lnpmsg.gossip.errors.ResyncRefused` (not connected, no gossip_queries,
        a sync with it running, another re-sync running, ``sync_peers`` syncs running,
        no peer to sync with).
        """
        now = trio.current_time()
        peers = {peer_id: state.queries for peer_id, state in self._peers.items() if state.peer.is_ready}
        chosen = self._resync.choose_asked(node_id, peers, self._syncing, self.config.sync_peers)
        # Waiting for its first sync: this is it (the queue must not start a second one).
        self._unsynced.pop(chosen, None)
        self._resync.start(chosen, now, asked=True)
        log.info("gossip re-sync with %s (asked for): asking for its channels", chosen.hex())
        self._start_sync(self._peers[chosen], now)
        resync = self._resync.progress(now, periodic=self._periodic_resyncs())
        return {"peer": chosen.hex(), "chosen": "schedule" if node_id is None else "given", "next_in": resync["next_in"]}

    def _periodic_resyncs(self) -> bool:
        """The app re-syncs every ``resync_interval`` once ``full_syncs`` are done (both set)."""
        return bool(self.config.full_syncs) and self._resync.enabled

    def _send_soon(self, peer: Peer, message: Message | bytes) -> None:
        """Queue a direct message (a reply, a query): now if there is room, else as soon as there is."""
        try:
            peer.send_nowait(message)
        except PeerQueueFull:
            if self._nursery is not None:
                self._nursery.start_soon(self._send_later, peer, message)
        except PeerClosedError:
            pass

    @staticmethod
    async def _send_later(peer: Peer, message: Message | bytes) -> None:
        try:
            await peer.send(message)
        except PeerClosedError:
            pass

    def _warn(self, state: PeerState, text: str, *, always: bool = False) -> None:
        """Send the peer a ``warning`` (at most ``MAX_WARNINGS_PER_MINUTE``, unless ``always``:
        the one before a close)."""
        now = trio.current_time()
        warnings = state.warnings = [t for t in state.warnings or () if now - t < 60.0]
        if len(warnings) >= MAX_WARNINGS_PER_MINUTE and not always:
            return
        warnings.append(now)
        self.counters.warnings_sent += 1
        log.info("warning to %s: %s", state.node_id.hex(), text)
        try:
            state.peer.send_nowait(WarningMessage(channel_id=ZERO_CHANNEL_ID, data=text.encode()))
        except (PeerQueueFull, PeerClosedError):
            pass

    # ------------------------------------------------------------ our sync

    def _handle_control(self, node_id: bytes, message: Message) -> None:
        state = self._peers.get(node_id)
        if state is None:
            return
        now = trio.current_time()
        sync = state.sync
        if type(message) is ReplyChannelRange:
            if sync is None:
                self._warn(state, "reply_channel_range without a query_channel_range")
                return
            self._apply_step(state, sync.on_reply_channel_range(message, self.graph, now))  # type: ignore[arg-type]
        elif type(message) is ReplyShortChannelIdsEnd:
            if sync is None:
                self._warn(state, "reply_short_channel_ids_end without a query_short_channel_ids")
                return
            self._apply_step(state, sync.on_reply_end(message, now))  # type: ignore[arg-type]

    def _apply_step(self, state: PeerState, step: SyncStep) -> None:
        if step.warning is not None:
            self._warn(state, step.warning)
        for message in step.send:
            self._send_soon(state.peer, message)
        sync = state.sync
        if sync is None:
            return
        if step.send or step.finished:
            self._report(state)
        if step.finished:
            resync = self._resync.running == state.node_id
            if self._syncing.get(state.node_id) is state:
                del self._syncing[state.node_id]
                self._resync.ended(state.node_id)
            state.synced = sync.state is SyncState.DONE
            if sync.state is SyncState.DONE:
                log.info(
                    "gossip %s with %s done: %d channels offered, %d asked for (graph: %d channels)",
                    "re-sync" if resync else "sync",
                    state.node_id.hex(),
                    sync.offered,
                    sync.wanted,
                    len(self.graph),
                )
                # A peer that offered no channel (a new node) does not count as a full sync,
                # nor does a peer's second (it knows what it knew).
                if sync.offered and not self._fully_synced() and state.node_id not in self._full_synced:
                    self._full_synced.add(state.node_id)
                    self._full_syncs += 1
                    if self._fully_synced():
                        self._enough_syncs()
            else:
                log.warning("gossip %s with %s failed: %s", "re-sync" if resync else "sync", state.node_id.hex(), sync.reason)
            self._maybe_start_sync()

    def _enough_syncs(self) -> None:
        """The ``full_syncs`` are done: the peers waiting and those to come send only their
        new gossip; the re-syncs begin."""
        self._full_synced.clear()
        resync = self._resync
        log.info(
            "gossip: synced with %d peers offering channels; %d more waiting and the peers to come send only new gossip; %s",
            self._full_syncs,
            len(self._unsynced),
            f"a re-sync with one of them every {resync.interval:g} s" if resync.enabled else "no re-sync (interval 0)",
        )
        self._unsynced.clear()
        resync.arm(trio.current_time())

    def _fully_synced(self) -> bool:
        """Enough syncs are done (``full_syncs``): later peers are not synced with."""
        return 0 < self.config.full_syncs <= self._full_syncs

    def _report(self, state: PeerState) -> None:
        sync = state.sync
        assert sync is not None
        if sync.state is SyncState.IDS or sync.state is SyncState.DONE:
            log.info("gossip sync with %s: %.0f%% (%d/%d channels)", state.node_id.hex(), sync.percent, sync.answered, sync.wanted)
        if self.node.events.has_subscribers:
            self.node.events.publish(
                GossipSyncEvent(state.node_id.hex(), sync.state.value, round(sync.percent, 1), sync.wanted, sync.answered)
            )

    async def _timer_loop(self) -> None:
        while True:
            await trio.sleep(min(1.0, self.config.reply_timeout / 4))
            now = trio.current_time()
            for state in list(self._syncing.values()):  # the syncs under way, not every peer
                if state.sync is not None:
                    deadline = state.sync.get_timer()
                    if deadline is not None and now >= deadline:
                        self._apply_step(state, state.sync.handle_timer(now))
            if self._resync.due(now):
                self._maybe_resync(now)

    def progress(self) -> dict[str, Any]:
        """The initial sync: overall percent and per peer (JSON-able): the peers connected
        and the last ``MAX_GONE_SYNCS`` that left; ``resync``: the re-syncs once ``full_syncs``
        are done and those asked for (see :meth:`ResyncSchedule.progress`), None while there
        are no periodic re-syncs and none was asked for.

        A re-sync under way shows among the peers; it leaves a node that has synced
        ``synced`` (one asked for before any sync was done is the node's sync, as any other)."""
        syncs = {node_id.hex(): sync.progress() for node_id, sync in self._syncs.items()}
        periodic = self._periodic_resyncs()
        done = self._done_dropped or self._full_syncs > 0 or any(p["state"] == "done" for p in syncs.values())
        running = self._resync.running.hex() if self._resync.running is not None and done else None
        active = [p["percent"] for peer, p in syncs.items() if p["state"] in ("range", "ids") and peer != running]
        if active:
            percent = min(active)
        else:
            percent = 100.0 if done else 0.0
        return {
            "syncing": bool(active),
            "synced": done and not active,
            "percent": percent,
            "peers": syncs,
            "channels": len(self.graph),
            "resync": self._resync.progress(trio.current_time(), periodic=periodic) if periodic or self._resync.manual else None,
        }
