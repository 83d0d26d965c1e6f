"""Gossip as an app on a :class:`~lnpmsg.node.node.Node` (the trio shell).

The decisions are the sans-IO cores' (:class:`~lnpmsg.gossip.graph.Graph`,
:class:`~lnpmsg.gossip.sync.PeerSync`); this module moves messages between
them, the node's peers and the store:

- gossip from peers goes into one bounded inbox (a flooding peer waits:
  back-pressure on its own connection) and is handled in batches: cheap
  checks, then the batch's signature checks in worker threads (libsecp256k1
  releases the GIL, so both cores work while the event loop keeps reading),
  then the decisions in arrival order; accepted messages are written to the
  store by a writer task (one transaction a batch), published as events and
  queued for relay;
- with each peer offering ``gossip_queries``: a ``gossip_timestamp_filter``
  for live gossip and, for up to ``sync_peers`` peers at a time, the
  initial sync by queries (until ``full_syncs`` are done, if set; then a
  re-sync with one peer every ``resync_interval``); progress in the logs and
  :meth:`GossipApp.progress`;
- peers' queries are answered from the store, bounded and split to fit;
  their ``gossip_timestamp_filter`` sets what we relay to them (and sends
  what we hold in its range);
- relay: a per-peer gossip queue, separate from and below the peer's own
  outbox (gossip goes in only while the peer has less than
  ``gossip_high_water`` bytes queued, so channel messages and direct replies
  are never stuck behind it), flushed every ``flush_interval`` (BOLT 7's
  staggered broadcast, newer updates replacing queued older ones), never
  back to the peer it came from; a full queue drops gossip, never replies.

Each part is a mixin of :class:`GossipApp`, in its own module:
:mod:`~lnpmsg.gossip.peers` (the peers, our sync with them, warnings),
:mod:`~lnpmsg.gossip.ingest` (the inbox, batches, decisions, the store
writer), :mod:`~lnpmsg.gossip.serving` (answers, timestamp-filter backfill,
relay) and :mod:`~lnpmsg.gossip.lookups` (the control API and the read
methods); this module wires them together, prunes and imports.

Usage::

    store = GossipStore(data_dir / DB_FILE_NAME, CHAIN_HASHES[config.network])
    app = node.mount(GossipApp(store))  # before node.run(): peers must see gossip_queries
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)   # starts the app too

With a chain source, ``GossipApp(store, funding_check=chain_funding_check(source))``
(:mod:`lnpmsg.gossip.funding`) checks every announced funding output of
gossip from peers (an imported gossip_store is taken on its signatures).
``lnpmsg node`` mounts the app this way (:mod:`lnpmsg.gossip.commands`). With
a :class:`~lnpmsg.rpc.control.ControlServer` mounted too, the control API
has ``gossip.listchannels``, ``gossip.listnodes``, ``gossip.getnode``,
``gossip.getchannel``, ``gossip.stats``, ``gossip.progress`` and
``gossip.resync`` (a re-sync now), and the event socket the ``gossip.*`` topics.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from lnpmsg.app import App
from lnpmsg.gossip.cln_store import (
    TYPE_CHANNEL_AMOUNT,
    ImportResult,
    StoreRecord,
    import_gossip_store,
    load_gossip_store_file,
    read_gossip_store,
)
from lnpmsg.gossip.graph import STALE_AFTER, ChannelRemoved, Decision, Graph
from lnpmsg.gossip.ingest import MAX_WRITE, FundingCheck, FundingResult, GossipIngest
from lnpmsg.gossip.lookups import GossipLookups
from lnpmsg.gossip.messages import (
    GOSSIP_MESSAGES,
    ChannelAnnouncement,
    ChannelUpdate,
    GossipTimestampFilter,
    NodeAnnouncement,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lnpmsg.gossip.peers import GossipPeers, PeerState
from lnpmsg.gossip.pipeline import VerifyPool
from lnpmsg.gossip.resync import FULL_SYNCS, RESYNC_INTERVAL, ResyncSchedule
from lnpmsg.gossip.routing import RoutingFeed
from lnpmsg.gossip.serving import GossipServing
from lnpmsg.gossip.store import AsyncGossipStore, GossipStore
from lnpmsg.gossip.store_backlog import StoreBacklog
from lnpmsg.gossip.sync import REPLY_TIMEOUT, PeerSync
from lnpmsg.gossip.verify import SignatureVerifier
from lnpmsg.node.node import Node
from lnpmsg.payments.graph import RoutingGraph
from lnpmsg.wire import CHAIN_HASHES, Features

#: chain hash -> network name, to name the chain of foreign gossip
_NETWORK_OF: dict[bytes, str] = {}
for _network, _chain in CHAIN_HASHES.items():
    _NETWORK_OF.setdefault(_chain, _network)  # "bitcoin" before its alias "mainnet"

__all__ = ["FundingCheck", "FundingResult", "GossipApp", "GossipConfig"]

log = logging.getLogger("lnpmsg.gossip")

#: gossip_store records imported between checkpoints (each costs up to ~4
#: signature checks on the event loop: about 0.1 s of work a chunk)
IMPORT_CHUNK = 1000
#: seconds between progress lines of an import in the log
IMPORT_LOG_INTERVAL = 2.0


@dataclass
class GossipConfig:
    """Settings of the gossip app."""

    #: pass accepted gossip on to other peers (that sent a timestamp filter)
    relay: bool = True
    #: seconds between relay flushes (BOLT 7's staggered broadcast: 60)
    flush_interval: float = 60.0
    #: peers to run the initial query sync with at the same time
    sync_peers: int = 2
    #: once syncs are done with this many peers that offered channels, the peers that
    #: come later are not synced with: their timestamp filter brings their new gossip,
    #: and a re-sync every ``resync_interval`` what the first ones lacked (0: sync with
    #: every peer offering gossip queries)
    full_syncs: int = FULL_SYNCS
    #: once ``full_syncs`` are done, seconds between re-syncs with one peer (a range sync,
    #: as at first), so that what the first peers did not know comes in the end (0: never)
    resync_interval: float = RESYNC_INTERVAL
    #: the timestamp filter we send asks for gossip from this many seconds ago on
    live_backlog: int = 0
    #: seconds between prunes of stale channels (0: never)
    prune_interval: float = 3600.0
    stale_after: int = STALE_AFTER
    #: gossip messages handled per batch
    batch_size: int = 1024
    #: worker processes checking signatures, each with its own GIL (0: none, use
    #: ``verify_threads``); started when the first large batch comes
    verify_processes: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    #: a batch with fewer signature checks than this is checked on the event loop
    #: instead of in the worker processes
    verify_process_min: int = 64
    #: batches prepared and being checked while an earlier one is committed
    batches_in_flight: int = 3
    #: threads checking signatures when there are no worker processes (0: on the event loop)
    verify_threads: int = 2
    #: a batch with fewer signature checks than this is checked on the event loop
    verify_thread_min: int = 32
    #: gossip messages waiting to be handled before peers must wait
    inbox_size: int = 8192
    #: relay messages queued per peer (more are dropped)
    max_gossip_queue: int = 50_000
    #: gossip enters a peer's outbox only while it holds fewer bytes than this
    gossip_high_water: int = 256 * 1024
    #: rejected messages from one peer before it is disconnected
    max_invalid: int = 100
    #: seconds a peer may take between replies to our queries
    reply_timeout: float = REPLY_TIMEOUT
    #: ids per query_short_channel_ids we send
    max_query_ids: int = 4000
    #: answer peers' queries and timestamp filters
    answer_queries: bool = True
    #: offer gossip_queries (and _ex) in our init, so that peers sync from us
    offer_queries: bool = True
    #: seconds between tries of the writes a failing store (a full disk) refused
    store_retry_interval: float = 10.0
    #: accepted messages kept in memory for a failing store at most (see :mod:`~lnpmsg.gossip.store_backlog`)
    store_backlog: int = 50_000


@dataclass
class GossipAppCounters:
    """What the app received, relayed, answered and sent (``gossip.stats``)."""

    received: Counter[str] = field(default_factory=Counter)
    relayed: int = 0
    relay_dropped: int = 0
    warnings_sent: int = 0
    disconnected: int = 0
    queries_answered: int = 0
    replies_sent: int = 0
    batches: int = 0


_GOSSIP_TYPES = (ChannelAnnouncement, NodeAnnouncement, ChannelUpdate)


class GossipApp(GossipPeers, GossipIngest, GossipServing, GossipLookups, App):
    """BOLT-7 gossip on a node: verify, store, sync, answer, relay and publish.

    A protocol app: it owns the BOLT-7 message types, offers
    ``gossip_queries`` in ``init`` and learns of peers through the
    ``peer_ready``/``peer_gone`` hooks.

    ``store``: the :class:`GossipStore` (its content is loaded into the
    graph now). ``clock``: unix time, for gossip timestamps and pruning.
    ``funding_check``: a chain lookup for channel announcements; without
    one, channels are accepted on their four signatures alone.
    ``import_at_start``: Core Lightning gossip_store file(s) (the parts of
    one store, in order) to import while the app starts: the node listens
    once they are in the store (see :meth:`import_cln_store`).
    """

    def __init__(
        self,
        store: GossipStore,
        *,
        config: GossipConfig | None = None,
        clock: Callable[[], float] = time.time,
        funding_check: FundingCheck | None = None,
        import_at_start: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        config = config or GossipConfig()
        offered = Features.from_names(optional=["gossip_queries", "gossip_queries_ex"]) if config.offer_queries else Features()
        # Handlers never block on anything but the bounded inbox: no timeout guard per message.
        super().__init__("gossip", features=offered, protocol=True, handler_timeout=None)
        self.config = config
        self.import_at_start = tuple(import_at_start)
        self.clock = clock
        #: when the next prune of stale channels runs (our clock; None: no prune scheduled)
        self.next_prune: float | None = None
        self.funding_check = funding_check
        self.store = store
        self.astore = AsyncGossipStore(store)
        self.chain_hash = store.chain_hash
        self.verifier = SignatureVerifier()
        self.graph = Graph(self.chain_hash, verifier=self.verifier)
        self.verify_pool = (
            VerifyPool(config.verify_processes, self.verifier, min_checks=config.verify_process_min) if config.verify_processes > 0 else None
        )
        store.load_into(self.graph)
        #: the graph with policies for pathfinding, kept current from accepted gossip
        self.routing = RoutingFeed()
        self.routing.load(store)
        #: told of channel_updates from peers for channels the graph does not know (a private
        #: channel's peer sends its update directly, BOLT 7): ``(peer node id, update)``
        self.on_unknown_update: Callable[[bytes, ChannelUpdate], None] | None = None
        self.counters = GossipAppCounters()
        self._peers: dict[bytes, PeerState] = {}
        #: the syncs run, by peer, for progress reports: those of the peers connected and of
        #: the last ``MAX_GONE_SYNCS`` peers that left
        self._syncs: dict[bytes, PeerSync] = {}
        #: the peers gone whose sync is still in ``_syncs``, the first gone first
        self._gone_syncs: OrderedDict[bytes, None] = OrderedDict()
        #: a done sync's record was dropped (the node has synced, though no record says so)
        self._done_dropped = False
        #: syncs done with peers that offered channels (see ``GossipConfig.full_syncs``)
        self._full_syncs = 0
        #: the peers of those syncs, while they are not enough (a peer synced with again
        #: after a reconnection counts once)
        self._full_synced: set[bytes] = set()
        self._resync = ResyncSchedule(config.resync_interval)
        self._syncing: dict[bytes, PeerState] = {}
        self._unsynced: dict[bytes, PeerState] = {}
        self._held: OrderedDict[int, Decision] = OrderedDict()
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[Any, ...]](self.config.inbox_size)
        self._writes_send, self._writes = trio.open_memory_channel[tuple[Any, ...]](16)
        #: writes the store refused (a full disk), written again once it takes them
        self.store_backlog = StoreBacklog(config.store_backlog, MAX_WRITE)
        self._store_reminder_at = 0.0
        #: the control API's calls (``gossip.listchannels``, ...): see :meth:`control_api`
        self.control_methods.update(self.control_api())
        for cls in GOSSIP_MESSAGES:
            self.message(cls)
        for cls in _GOSSIP_TYPES:
            self.add_handler(cls, self._on_gossip, guard=False)
        self.add_handler(ReplyChannelRange, self._on_ordered, guard=False)
        self.add_handler(ReplyShortChannelIdsEnd, self._on_ordered, guard=False)
        self.add_handler(QueryChannelRange, self._on_query_channel_range, guard=False)
        self.add_handler(QueryShortChannelIds, self._on_query_short_channel_ids, guard=False)
        self.add_handler(GossipTimestampFilter, self._on_timestamp_filter, guard=False)

    # ------------------------------------------------------------ wiring

    def attach(self, node: Node) -> None:
        """Check the store's chain against the node's, then the contract's checks (``node.mount`` calls this)."""
        if CHAIN_HASHES.get(node.config.network) != self.chain_hash:
            raise ValueError(f"the gossip store is for chain {self.chain_hash.hex()}, the node runs on {node.config.network}")
        super().attach(node)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the app's tasks until cancelled (``node.run`` starts mounted apps); started
        once the ``import_at_start`` files are in the store."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._process_loop)
                nursery.start_soon(self._writer_loop)
                nursery.start_soon(self._flush_loop)
                nursery.start_soon(self._timer_loop)
                if self.config.prune_interval > 0:
                    nursery.start_soon(self._prune_loop)
                if self.import_at_start:
                    await self.import_cln_store(*self.import_at_start)
                task_status.started()
        finally:
            self._nursery = None
            if self.verify_pool is not None:
                await self.verify_pool.close()

    @property
    def routing_graph(self) -> RoutingGraph:
        """The public graph with every direction's policy, for pathfinding (kept current)."""
        return self.routing.graph

    # ------------------------------------------------------------ pruning

    async def _prune_loop(self) -> None:
        while True:
            self.next_prune = self.clock() + self.config.prune_interval
            await trio.sleep(self.config.prune_interval)
            await self.prune()

    async def prune(self) -> list[ChannelRemoved]:
        """Remove stale channels now (see :meth:`Graph.prune`)."""
        removed = self.graph.prune(self.clock(), self.config.stale_after)
        for change in removed:
            self._held.pop(change.short_channel_id, None)
        if removed:
            log.info("pruned %d stale channel(s)", len(removed))
            await self.apply_removals(removed)
        return removed

    # ------------------------------------------------------------ import

    async def import_cln_store(self, *paths: str | os.PathLike[str]) -> ImportResult:
        """Import Core Lightning gossip_store file(s) (parts appended in order; ``.xz`` read too).

        The records go through the graph (every check applies) in chunks of
        :data:`IMPORT_CHUNK`, so the node keeps serving during a long import;
        the percent done is logged at most every :data:`IMPORT_LOG_INTERVAL`
        seconds, and a summary at the end.
        """
        names = ", ".join(str(p) for p in paths)
        data = await trio.to_thread.run_sync(load_gossip_store_file, *paths)
        log.info("importing gossip_store %s (%d bytes)", names, len(data))
        started = last_log = time.monotonic()
        total = ImportResult()
        for records, done in _record_chunks(read_gossip_store(data), len(data)):
            result = import_gossip_store(records, self.graph, self.clock())
            _merge_import(total, result)
            self.routing.apply(result.accepted)
            self.routing.remove(result.removals)
            await self._writes_send.send(("write", result.accepted, result.removals))
            for decision in result.accepted:
                self._publish(decision)
            if time.monotonic() - last_log >= IMPORT_LOG_INTERVAL and done < len(data):
                last_log = time.monotonic()
                log.info("gossip import: %d%% (%d records)", 100 * done // max(1, len(data)), total.records)
            await trio.lowlevel.checkpoint()
        await self.drain()
        self._explain_import(total)
        log.info(
            "gossip import: 100%%: %d records, %d accepted, %d deleted skipped, %d channel(s) closed, %d malformed in %.1f s; the graph has %d channels",
            total.records,
            len(total.accepted),
            sum(total.deleted.values()),
            len(total.removals),
            len(total.malformed),
            time.monotonic() - started,
            len(self.graph),
        )
        return total

    def _explain_import(self, result: ImportResult) -> None:
        """Say at once what an import will lead to: gossip of another chain (ignored, and
        which network it was for) and stale channels (pruned soon, and when)."""
        other: Counter[str] = Counter()
        for decision in result.decisions:
            if decision.reason == "unknown chain":
                chain = getattr(decision.message, "chain_hash", b"")
                other[_NETWORK_OF.get(chain, chain.hex() if chain else "?")] += 1
        result.other_chains = other
        ours = _NETWORK_OF.get(self.chain_hash, self.chain_hash.hex())
        for network, count in other.most_common():
            hint = f": did you mean --network {network}?" if network in ("bitcoin", "testnet", "signet", "regtest") else ""
            log.warning("gossip store import: %d message(s) for chain %s ignored, this node runs on %s: unknown chain%s", count, network, ours, hint)
        now = self.clock()
        stale = len(self.graph.stale_channels(now, self.config.stale_after))
        result.stale_channels = stale
        if stale:
            days = self.config.stale_after / 86400
            if self.config.prune_interval > 0:
                at = self.next_prune if self.next_prune is not None else now + self.config.prune_interval
                when = f"at the next prune, in {max(0.0, at - now) / 60:.0f} min (every {self.config.prune_interval:g} s)"
            else:
                when = "never (pruning is off)"
            log.warning(
                "gossip store import: %d of %d channel(s) have had no update for %g days (stale): they will be pruned %s; "
                "import a fresher store, or set the prune horizon (--gossip-prune-after)",
                stale, len(self.graph), days, when,
            )


def _record_chunks(records: Iterable[StoreRecord], size: int) -> Iterator[tuple[list[StoreRecord], int]]:
    """The records in chunks of about :data:`IMPORT_CHUNK`, each with the bytes read so far.

    A chunk never ends between a channel_announcement and the
    ``channel_amount`` record after it (the import pairs them).
    """
    chunk: list[StoreRecord] = []
    for record in records:
        if len(chunk) >= IMPORT_CHUNK and record.type != TYPE_CHANNEL_AMOUNT:
            yield chunk, record.offset
            chunk = []
        chunk.append(record)
    yield chunk, size


def _merge_import(total: ImportResult, part: ImportResult) -> None:
    total.records += part.records
    total.live.update(part.live)
    total.deleted.update(part.deleted)
    total.outcomes.update(part.outcomes)
    total.decisions.extend(part.decisions)
    total.removals.extend(part.removals)
    total.malformed.extend(part.malformed)
