"""What the gossip app sends peers: answers to their queries (from the store,
bounded, one query at a time per peer), the stored gossip their
``gossip_timestamp_filter`` asks for (backfill, at the peer's pace), and
relay: a per-peer gossip queue below the peer's own outbox, flushed every
``flush_interval`` (BOLT 7's staggered broadcast), never back to the peer
it came from.

A part of :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.gossip.decision import Decision
from lnpmsg.gossip.messages import (
    QUERY_OPTION_CHECKSUMS,
    ChannelAnnouncement,
    ChannelUpdate,
    GossipTimestampFilter,
    NodeAnnouncement,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyShortChannelIdsEnd,
)
from lnpmsg.gossip.sync import build_range_replies, channel_range_ids, plan_scid_reply
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.wire import Message

if TYPE_CHECKING:
    from lnpmsg.gossip.app import GossipAppCounters, GossipConfig
    from lnpmsg.gossip.graph import Graph
    from lnpmsg.gossip.peers import PeerState
    from lnpmsg.gossip.store import AsyncGossipStore, GossipStore

__all__ = ["MAX_HELD_ANNOUNCEMENTS", "GossipServing"]

#: channel_announcements kept until their first channel_update (BOLT 7 relays them together)
MAX_HELD_ANNOUNCEMENTS = 20_000
#: messages answering one timestamp filter read from the store at a time
_BACKFILL_PAGE = 500


class GossipServing:
    """Answers, backfill and relay of the :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it)."""

    config: GossipConfig
    chain_hash: bytes
    graph: Graph
    store: GossipStore
    astore: AsyncGossipStore
    counters: GossipAppCounters
    _peers: dict[bytes, PeerState]
    _held: OrderedDict[int, Decision]
    _nursery: trio.Nursery | None
    _state: Callable[[Peer], PeerState | None]
    _warn: Callable[..., None]
    _stored: Callable[[], Awaitable[None]]

    # ------------------------------------------------------------ answering

    async def _on_query_channel_range(self, peer: Peer, query: Message) -> None:
        self._start_answer(peer, query, self._answer_channel_range)

    async def _on_query_short_channel_ids(self, peer: Peer, query: Message) -> None:
        self._start_answer(peer, query, self._answer_short_channel_ids)

    def _start_answer(self, peer: Peer, query: Message, answer: Callable[[PeerState, Any], Awaitable[None]]) -> None:
        """Answer a query in its own task: a large answer waits for the peer to read it, and
        that must not stop our reading from the same peer (two nodes answering each other's
        big queries would otherwise each wait for the other to read: a deadlock).
        One query at a time per peer, as BOLT 7 asks of the sender."""
        state = self._state(peer)
        if not self.config.answer_queries or state is None or self._nursery is None:
            return
        if state.answering:
            self._warn(state, f"{type(query).__name__} before our answer to the previous query ended: ignored")
            return
        state.answering = True

        async def run() -> None:
            try:
                await answer(state, query)
            finally:
                state.answering = False

        self._nursery.start_soon(run)

    async def _answer_channel_range(self, state: PeerState, query: QueryChannelRange) -> None:
        ids = channel_range_ids(query, self.graph)
        checksums = None
        if query.query_option & QUERY_OPTION_CHECKSUMS and ids:
            checksums = await self.astore.run(self.store.update_checksums, ids)
        replies = build_range_replies(query, ids, self.graph, checksums)
        self.counters.queries_answered += 1
        for reply in replies:
            await _send(state.peer, reply)
        self.counters.replies_sent += len(replies)

    async def _answer_short_channel_ids(self, state: PeerState, query: QueryShortChannelIds) -> None:
        wanted, warning = plan_scid_reply(query, self.graph)
        if warning is not None:
            self._warn(state, warning)
        messages = await self.astore.query_reply(wanted) if wanted else []
        self.counters.queries_answered += 1
        for raw in messages:
            await _send(state.peer, raw)
        full = 1 if query.chain_hash == self.chain_hash and warning is None else 0
        await _send(state.peer, ReplyShortChannelIdsEnd(chain_hash=query.chain_hash, full_information=full))
        self.counters.replies_sent += len(messages) + 1

    async def _on_timestamp_filter(self, peer: Peer, message: Message) -> None:
        assert isinstance(message, GossipTimestampFilter)
        state = self._state(peer)
        if state is None or message.chain_hash != self.chain_hash:
            return
        state.their_filter = message
        if state.backfill is not None:
            state.backfill.cancel()
        state.queue = None
        if self.config.answer_queries and message.timestamp_range and self._nursery is not None:
            self._nursery.start_soon(self._backfill, state, message)

    async def _backfill(self, state: PeerState, flt: GossipTimestampFilter) -> None:
        """Send the stored gossip a timestamp filter asks for, page by page, at the peer's pace."""
        end = min(flt.first_timestamp + flt.timestamp_range, 1 << 62)
        with trio.CancelScope() as scope:
            state.backfill = scope
            # Gossip decided before the filter came was not relayed to this peer (no filter yet)
            # and may still wait for the writer: read the store once it holds all of it, or
            # e.g. the channel_update a restarted peer's channel sends on reconnection is lost.
            await self._stored()
            cursor: tuple[str, Any] | None = None
            while True:
                page, cursor = await self.astore.run(self.store.time_range_page, flt.first_timestamp, end, cursor, _BACKFILL_PAGE)
                for raw in page:
                    await _send(state.peer, raw)
                if cursor is None or not state.peer.is_ready:
                    break
        if state.backfill is scope:
            state.backfill = None

    # ------------------------------------------------------------ relay

    def _relay(self, decision: Decision) -> None:
        msg = decision.message
        if type(msg) is ChannelAnnouncement:
            # BOLT 7: an announcement goes out with its first update, timestamped by it.
            scid = msg.short_channel_id.to_int()
            self._held[scid] = decision
            if len(self._held) > MAX_HELD_ANNOUNCEMENTS:
                self._held.popitem(last=False)
            return
        if type(msg) is ChannelUpdate:
            scid = msg.short_channel_id.to_int()
            held = self._held.pop(scid, None)
            items: list[tuple[tuple[Any, ...], bytes, bytes | None]] = []
            if held is not None:
                items.append((("c", scid), held.raw, held.source))
            items.append((("u", scid, msg.channel_flags & 1), decision.raw, decision.source))
            timestamp = msg.timestamp
        else:
            assert type(msg) is NodeAnnouncement
            items = [(("n", msg.node_id), decision.raw, decision.source)]
            timestamp = msg.timestamp
        limit = self.config.max_gossip_queue
        for state in self._peers.values():
            flt = state.their_filter
            if flt is None or not flt.matches(timestamp):
                continue
            for key, raw, source in items:
                if source == state.node_id:
                    continue  # never echo gossip to the peer it came from
                queue = state.queue
                if queue is None:
                    queue = state.queue = OrderedDict()
                elif key not in queue and len(queue) >= limit:
                    self.counters.relay_dropped += 1
                    continue
                queue[key] = raw

    async def _flush_loop(self) -> None:
        while True:
            await trio.sleep(self.config.flush_interval)
            self.flush_relay()

    def flush_relay(self) -> None:
        """Move queued gossip into the peers' outboxes, as far as each has room below the high-water mark."""
        high = self.config.gossip_high_water
        for state in list(self._peers.values()):
            peer = state.peer
            queue = state.queue
            if queue is None:
                continue
            while queue and peer.is_ready and peer.queued_bytes < high:
                _, raw = queue.popitem(last=False)
                try:
                    peer.send_nowait(raw)
                    self.counters.relayed += 1
                except PeerQueueFull:
                    self.counters.relay_dropped += 1
                    break
                except PeerClosedError:
                    break
            if not queue:
                state.queue = None  # an emptied OrderedDict keeps its table: let it go


async def _send(peer: Peer, message: Message | bytes) -> None:
    try:
        await peer.send(message)
    except PeerClosedError:
        pass

