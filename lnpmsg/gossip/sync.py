"""Gossip queries (sans-IO): syncing from a peer, and answering a peer's queries.

Syncing from one peer (:class:`PeerSync`), as BOLT 7 lays it out:

1. ``query_channel_range`` over every block (with ``query_option``
   timestamps when the peer offers ``gossip_queries_ex``);
2. the ``reply_channel_range`` messages are checked (same chain, first one
   covering our first block, in order) and collected until the last: the
   one reaching the end of the range with ``sync_complete`` set;
3. what we lack (unknown channels; known ones with newer updates) is asked
   for with ``query_short_channel_ids``, :data:`MAX_QUERY_IDS` at a time,
   each answered by gossip and a ``reply_short_channel_ids_end`` before the
   next goes out (BOLT 7: one query at a time).

A reply to a query we did not send is a protocol fault: it gets a warning.
A peer that stops answering for :data:`REPLY_TIMEOUT` seconds fails the sync.

Answering (:func:`channel_range_ids`, :func:`build_range_replies`,
:func:`plan_scid_reply`) is bounded by what we hold, never by what the
query asks: a query for 10^9 blocks costs what our channels cost, and the
replies are split to fit a message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import (
    QUERY_FLAG_ANNOUNCEMENT,
    QUERY_FLAG_NODE_1,
    QUERY_FLAG_NODE_2,
    QUERY_FLAG_UPDATE_1,
    QUERY_FLAG_UPDATE_2,
    QUERY_OPTION_CHECKSUMS,
    QUERY_OPTION_TIMESTAMPS,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
    channel_update_checksums,
    channel_update_timestamps,
)
from lnpmsg.wire import MAX_MESSAGE_SIZE, Message, ShortChannelId

__all__ = [
    "MAX_OFFERED_IDS",
    "MAX_QUERY_IDS",
    "MAX_U32",
    "REPLY_TIMEOUT",
    "PeerSync",
    "SyncState",
    "SyncStep",
    "build_range_replies",
    "channel_range_ids",
    "max_ids_per_reply",
    "plan_scid_reply",
]

MAX_U32 = 0xFFFFFFFF
#: ids per query_short_channel_ids we send. With one flag byte each this is
#: ~36 KB, well inside a message; the answer (announcements, updates,
#: nodes: ~1 KB an id) stays a few MB.
MAX_QUERY_IDS = 4000
#: a peer offering more channel ids than this in one range is refused (the
#: whole network has ~50-80k; this bounds what a lying peer makes us hold)
MAX_OFFERED_IDS = 2_000_000
#: seconds a peer may take between two replies before the sync fails
REPLY_TIMEOUT = 120.0
_ALL_FLAGS = QUERY_FLAG_ANNOUNCEMENT | QUERY_FLAG_UPDATE_1 | QUERY_FLAG_UPDATE_2 | QUERY_FLAG_NODE_1 | QUERY_FLAG_NODE_2
#: share of the progress figure given to the channel range phase
_RANGE_SHARE = 5.0


class SyncState(enum.Enum):
    IDLE = "idle"
    RANGE = "range"  # waiting for reply_channel_range
    IDS = "ids"  # waiting for reply_short_channel_ids_end
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SyncStep:
    """What to do after an input: messages to send, a warning for the peer, whether the sync ended."""

    send: tuple[Message, ...] = ()
    warning: str | None = None
    finished: bool = False


class PeerSync:
    """Our initial sync with one peer (sans-IO; times in seconds, any monotonic origin).

    ``extended``: the peer offers ``gossip_queries_ex`` (we ask for
    timestamps and send query flags).
    """

    def __init__(
        self,
        chain_hash: bytes,
        *,
        extended: bool,
        first_blocknum: int = 0,
        number_of_blocks: int = MAX_U32,
        reply_timeout: float = REPLY_TIMEOUT,
        max_query_ids: int = MAX_QUERY_IDS,
    ) -> None:
        self.chain_hash = chain_hash
        self.extended = extended
        self.state = SyncState.IDLE
        self.reason = ""
        self.reply_timeout = reply_timeout
        self.max_query_ids = max_query_ids
        self._query = QueryChannelRange(
            chain_hash=chain_hash,
            first_blocknum=first_blocknum,
            number_of_blocks=number_of_blocks,
            tlvs=QueryChannelRange.tlv_stream(query_option=QUERY_OPTION_TIMESTAMPS) if extended else QueryChannelRange.tlv_stream(),
        )
        self._range_end = min(first_blocknum + number_of_blocks, MAX_U32)
        self._last_first: int | None = None
        self._offered: list[tuple[int, int, int]] = []
        self._wanted: list[tuple[int, int]] = []
        self._next = 0
        self._in_flight = 0
        self._deadline: float | None = None
        #: channel ids the peer offered, and how many of the wanted ones were answered
        self.offered = 0
        self.wanted = 0
        self.answered = 0
        #: replies to our queries that said the peer lacks full information
        self.partial_replies = 0

    # ------------------------------------------------------------ driving

    def start(self, now: float) -> SyncStep:
        """Begin: the query_channel_range to send."""
        if self.state is not SyncState.IDLE:
            return SyncStep()
        self.state = SyncState.RANGE
        self._deadline = now + self.reply_timeout
        return SyncStep((self._query,))

    @property
    def active(self) -> bool:
        return self.state in (SyncState.RANGE, SyncState.IDS)

    def get_timer(self) -> float | None:
        return self._deadline if self.active else None

    def handle_timer(self, now: float) -> SyncStep:
        if self.active and self._deadline is not None and now >= self._deadline:
            return self._fail(f"peer sent no reply within {self.reply_timeout:g} s")
        return SyncStep()

    def _fail(self, reason: str, warning: str | None = None) -> SyncStep:
        self.state = SyncState.FAILED
        self.reason = reason
        self._deadline = None
        self._release()
        return SyncStep(warning=warning, finished=True)

    def _release(self) -> None:
        """An ended sync keeps its counters only: the app keeps every peer's for progress reports,
        and a first sync's wanted ids are the whole network's channels."""
        self._offered = []
        self._wanted = []

    def on_reply_channel_range(self, reply: ReplyChannelRange, graph: Graph, now: float) -> SyncStep:
        """A reply_channel_range arrived; checks it, and at the last one plans the id queries."""
        if self.state is not SyncState.RANGE:
            return SyncStep(warning="reply_channel_range without a query_channel_range in progress")
        if reply.chain_hash != self.chain_hash:
            return self._fail("reply_channel_range for another chain", "reply_channel_range chain_hash differs from our query")
        query = self._query
        reply_end = reply.first_blocknum + reply.number_of_blocks
        if self._last_first is None:
            if reply.first_blocknum > query.first_blocknum or reply_end <= query.first_blocknum:
                return self._fail("first reply_channel_range does not cover our first block", "reply_channel_range does not cover the query's first block")
        elif reply.first_blocknum < self._last_first:
            return self._fail("reply_channel_range went backwards", "reply_channel_range first_blocknum went backwards")
        self._last_first = reply.first_blocknum
        ids = reply.short_channel_ids
        timestamps = reply.timestamps
        if timestamps is not None and len(timestamps) != len(ids):
            timestamps = None  # malformed extension: use the ids alone
        if len(self._offered) + len(ids) > MAX_OFFERED_IDS:
            return self._fail("peer offered too many channel ids", f"more than {MAX_OFFERED_IDS} channel ids offered")
        if timestamps is None:
            self._offered.extend((s.to_int(), 0, 0) for s in ids)
        else:
            self._offered.extend((s.to_int(), t[0], t[1]) for s, t in zip(ids, timestamps, strict=True))
        self._deadline = now + self.reply_timeout
        if reply_end < self._range_end or not reply.sync_complete:
            # Not the last: a reply may reach the end and still have a next one
            # (a block split over two replies); the last says ``sync_complete``.
            return SyncStep()
        # The last reply: ask for what we lack.
        self.offered = len(self._offered)
        if not self.extended:
            # Without timestamps we cannot tell newer updates: ask only for unknown channels.
            self._wanted = [(scid, _ALL_FLAGS) for scid, _, _ in self._offered if not graph.has_channel(scid)]
            self._wanted.sort()
        else:
            self._wanted = graph.wanted(self._offered)
        self._offered = []
        self.wanted = len(self._wanted)
        self.state = SyncState.IDS
        return self._next_query(now)

    def _next_query(self, now: float) -> SyncStep:
        if self._next >= len(self._wanted):
            self.state = SyncState.DONE
            self._deadline = None
            self._release()
            return SyncStep(finished=True)
        chunk = self._wanted[self._next : self._next + self.max_query_ids]
        self._next += len(chunk)
        self._in_flight = len(chunk)
        self._deadline = now + self.reply_timeout
        ids = tuple(ShortChannelId.from_int(scid) for scid, _ in chunk)
        if self.extended:
            tlvs = QueryShortChannelIds.tlv_stream(query_flags=[flags for _, flags in chunk])
        else:
            tlvs = QueryShortChannelIds.tlv_stream()
        return SyncStep((QueryShortChannelIds(chain_hash=self.chain_hash, short_channel_ids=ids, tlvs=tlvs),))

    def on_reply_end(self, reply: ReplyShortChannelIdsEnd, now: float) -> SyncStep:
        """A reply_short_channel_ids_end arrived: the next query, or the end."""
        if self.state is not SyncState.IDS or not self._in_flight:
            return SyncStep(warning="reply_short_channel_ids_end without a query_short_channel_ids in progress")
        if reply.chain_hash != self.chain_hash:
            return self._fail("reply_short_channel_ids_end for another chain", "reply_short_channel_ids_end chain_hash differs from our query")
        if not reply.full_information:
            self.partial_replies += 1
        self.answered += self._in_flight
        self._in_flight = 0
        return self._next_query(now)

    # ------------------------------------------------------------ reporting

    @property
    def percent(self) -> float:
        """0-100: the range phase counts for the first 5%, the id queries for the rest."""
        if self.state is SyncState.DONE:
            return 100.0
        if self.state in (SyncState.IDLE, SyncState.RANGE) or not self.wanted:
            return 0.0
        return _RANGE_SHARE + (100.0 - _RANGE_SHARE) * self.answered / self.wanted

    def progress(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "state": self.state.value,
            "percent": round(self.percent, 1),
            "channels_offered": self.offered,
            "channels_wanted": self.wanted,
            "channels_answered": self.answered,
            "reason": self.reason,
        }


# ---------------------------------------------------------------- answering


def max_ids_per_reply(query_option: int) -> int:
    """How many ids fit one reply_channel_range with the extensions ``query_option`` asks for."""
    # type, chain_hash, first_blocknum, number_of_blocks, sync_complete, len, encoding byte
    fixed = 2 + 32 + 4 + 4 + 1 + 2 + 1
    per_id = 8
    if query_option & QUERY_OPTION_TIMESTAMPS:
        fixed += 1 + 3 + 1  # TLV type, length (3-byte BigSize), encoding byte
        per_id += 8
    if query_option & QUERY_OPTION_CHECKSUMS:
        fixed += 1 + 3
        per_id += 8
    return (MAX_MESSAGE_SIZE - fixed) // per_id


def channel_range_ids(query: QueryChannelRange, graph: Graph) -> list[int]:
    """The channel ids a query_channel_range covers (of our chain; bounded by what we hold)."""
    if query.chain_hash != graph.chain_hash:
        return []
    end = min(query.first_blocknum + query.number_of_blocks, MAX_U32)
    return graph.channels_in_blocks(query.first_blocknum, end)


def build_range_replies(
    query: QueryChannelRange,
    ids: Sequence[int],
    graph: Graph,
    checksums: Mapping[int, tuple[int, int]] | None = None,
    *,
    max_ids: int | None = None,
) -> list[ReplyChannelRange]:
    """The reply_channel_range messages answering ``query`` with ``ids`` (from :func:`channel_range_ids`).

    Replies cover consecutive block ranges from the query's first block to
    its end (clamped to 2**32 - 1), a block's ids never split unless one
    block alone overflows a reply. Timestamps (and checksums, when given)
    are added when the query asks for them.
    """
    option = query.query_option
    want_ts = bool(option & QUERY_OPTION_TIMESTAMPS)
    want_cs = bool(option & QUERY_OPTION_CHECKSUMS) and checksums is not None
    limit = max_ids or max_ids_per_reply((QUERY_OPTION_TIMESTAMPS if want_ts else 0) | (QUERY_OPTION_CHECKSUMS if want_cs else 0))
    first = query.first_blocknum
    end = max(min(first + query.number_of_blocks, MAX_U32), min(first + 1, MAX_U32))
    # Cut the ids into chunks, preferably at block boundaries.
    chunks: list[list[int]] = []
    current: list[int] = []
    i = 0
    n = len(ids)
    while i < n:
        block = ids[i] >> 40
        j = i
        while j < n and ids[j] >> 40 == block:
            j += 1
        block_ids = list(ids[i:j])
        if current and len(current) + len(block_ids) > limit:
            chunks.append(current)
            current = []
        while len(block_ids) > limit:  # one block alone overflows: split it
            chunks.append(block_ids[:limit])
            block_ids = block_ids[limit:]
        current.extend(block_ids)
        i = j
    if current or not chunks:
        chunks.append(current)
    replies = []
    channels = graph.channels
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        start = first if k == 0 else chunk[0] >> 40
        if last:
            stop = end
        elif chunks[k + 1][0] >> 40 == chunk[-1] >> 40:
            stop = (chunk[-1] >> 40) + 1  # a block split over two replies: both cover it
        else:
            stop = chunks[k + 1][0] >> 40
        tlv: dict[str, Any] = {}
        if want_ts:
            tlv["timestamps"] = [channel_update_timestamps(*(channels[s].update_ts if s in channels else (0, 0))) for s in chunk]
        if want_cs and checksums is not None:
            tlv["checksums"] = [channel_update_checksums(*checksums.get(s, (0, 0))) for s in chunk]
        replies.append(
            ReplyChannelRange(
                chain_hash=query.chain_hash,
                first_blocknum=start,
                number_of_blocks=max(stop - start, 0),
                sync_complete=1 if last else 0,
                short_channel_ids=tuple(ShortChannelId.from_int(s) for s in chunk),
                tlvs=ReplyChannelRange.tlv_stream(tlv),
            )
        )
    return replies


def plan_scid_reply(query: QueryShortChannelIds, graph: Graph) -> tuple[list[tuple[int, int]], str | None]:
    """What a query_short_channel_ids asks of us: ``(scid, flags)`` for the channels we know, and a
    warning when the query is malformed (flags not one per id). Unknown ids are skipped.
    """
    if query.chain_hash != graph.chain_hash:
        return [], None
    ids = query.short_channel_ids
    flags = query.query_flags
    if flags is not None and len(flags) != len(ids):
        return [], f"query_short_channel_ids has {len(flags)} query flags for {len(ids)} ids"
    out = []
    channels = graph.channels
    for i, sid in enumerate(ids):
        scid = sid.to_int()
        if scid in channels:
            f = _ALL_FLAGS if flags is None else flags[i] & _ALL_FLAGS
            if f:
                out.append((scid, f))
    return out, None
