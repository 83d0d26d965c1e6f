"""The chain interface the node uses (trio), and what every source shares.

A ``ChainSource`` answers a handful of questions (tip, block hash at a
height, a block, an unspent output, a fee estimate), accepts broadcasts, and
wakes its callers when the tip changes. Everything else — following the
chain across reorgs, watching outpoints and scripts — is built here once,
on top of those methods, for every source:

- ``catch_up(source, follower)`` walks a ``ChainFollower`` to the source's
  tip: back to the fork point if the source reorged, then forward.
- ``source.subscribe()`` gives a ``Subscription``: a bounded stream of
  ``ChainEvent`` (blocks and watch events) for one consumer, driven by its
  own task, so a slow consumer slows only itself (back-pressure; nothing is
  dropped).

Fee rates are **satoshis per 1000 weight units (sat/kw)**, the unit of BOLT
2/3 ``feerate_per_kw``: 1 sat/vB = 250 sat/kw. ``FEERATE_FLOOR_PER_KW``
(253) is the smallest rate a node relays (1 sat/vB, rounded up so that the
rounding of vsize never takes a transaction below it).

Block and transaction hashes are 32 bytes in internal order (see
``lnpmsg.bitcoin.hashes``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef, ChainEvent, TxOutInfo
from lnpmsg.chain.follow import DEFAULT_MAX_REORG_DEPTH, ChainFollower
from lnpmsg.chain.tx import malformed

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "FEERATE_FLOOR_PER_KW",
    "ChainSource",
    "Subscription",
    "catch_up",
    "feerate_per_kw_from_btc_per_kvb",
    "feerate_per_kw_from_sat_per_vbyte",
]

#: 1 sat/vB is 250 sat/kw; 253 makes sure a rounded-down fee still meets 1 sat/vB
FEERATE_FLOOR_PER_KW = 253
#: events a subscriber may have unread before the source waits for it
DEFAULT_SUBSCRIPTION_BUFFER = 256
#: blocks fetched per catch-up step before the consumer gets a chance to run
_CATCH_UP_BATCH = 64


def feerate_per_kw_from_sat_per_vbyte(sat_per_vbyte: float) -> int:
    """sat/vB to sat/kw (1 vB = 4 weight units), at least the floor."""
    return max(FEERATE_FLOOR_PER_KW, math.ceil(sat_per_vbyte * 250))


def feerate_per_kw_from_btc_per_kvb(btc_per_kvb: float) -> int:
    """Bitcoin Core's BTC/kvB (``estimatesmartfee``) to sat/kw: 1 kvB = 4 kw."""
    return max(FEERATE_FLOOR_PER_KW, math.ceil(btc_per_kvb * 100_000_000 / 4))


class ChainSource(abc.ABC):
    """A view of one Bitcoin chain (regtest, testnet, mainnet), async (trio).

    Every method raises only ``ChainError`` (with a reason) on failure.
    """

    #: the bech32 human-readable part of the chain's addresses ("bcrt", "tb", "bc")
    network: str = "bcrt"

    @abc.abstractmethod
    async def tip(self) -> BlockRef:
        """The active chain's tip."""

    @abc.abstractmethod
    async def block_hash(self, height: int) -> bytes | None:
        """Hash of the active chain's block at ``height``; None above the tip."""

    @abc.abstractmethod
    async def block(self, block_hash: bytes) -> bytes:
        """The serialized block with this hash (``ChainError`` if unknown)."""

    async def block_at(self, height: int) -> bytes:
        """The serialized block of the active chain at ``height``."""
        block_hash = await self.block_hash(height)
        if block_hash is None:
            raise ChainError(f"no block at height {height}", code="not-found")
        return await self.block(block_hash)

    @abc.abstractmethod
    async def get_txout(self, outpoint: OutPoint) -> TxOutInfo | None:
        """The output if it is confirmed and unspent, else None (as ``gettxout``)."""

    async def find_transaction(self, txid: bytes) -> bytes | None:
        """The serialized transaction ``txid`` if the source sees it (waiting in its mempool or in a
        block), else None; a source that cannot look transactions up answers None (the default)."""
        return None

    @abc.abstractmethod
    async def broadcast(self, raw_tx: bytes) -> bytes:
        """Submit a transaction; returns its txid.

        Raises ``ChainError`` whose ``reason`` says why it was rejected.
        Broadcasting a transaction that is already known (waiting or
        confirmed) succeeds: rebroadcasting is how a node makes sure.
        """

    @abc.abstractmethod
    async def estimate_feerate(self, target_blocks: int = 6) -> int:
        """A fee rate in sat/kw to confirm within ``target_blocks``."""

    @abc.abstractmethod
    async def wait_for_new_tip(self, known: bytes | None) -> BlockRef:
        """Return as soon as the tip's hash is not ``known``."""

    async def aclose(self) -> None:
        """Release what the source holds (default: nothing)."""

    @asynccontextmanager
    async def subscribe(
        self,
        start_height: int | None = None,
        max_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH,
    ) -> AsyncIterator[Subscription]:
        """A stream of chain events for one consumer.

        ``start_height``: the first block reported (default: the block after
        the current tip). Watches added through the subscription apply from
        the next block; pass ``since_height`` to also rescan earlier blocks.
        """
        sub = Subscription(self, max_buffer, max_reorg_depth)
        async with trio.open_nursery() as nursery:
            await sub._start(start_height)
            nursery.start_soon(sub._run)
            try:
                yield sub
            finally:
                nursery.cancel_scope.cancel()
                await sub._send.aclose()


async def catch_up(
    source: ChainSource, follower: ChainFollower, max_blocks: int | None = None
) -> list[ChainEvent]:
    """Move ``follower`` to ``source``'s active chain; return the events.

    Disconnects down to the fork point if the source reorged, then connects
    up to the tip (at most ``max_blocks`` of them; call again for the rest).
    A follower without a tip starts at genesis.
    """
    events: list[ChainEvent] = []
    tip = await source.tip()
    # find the fork point: the highest remembered block the source still has
    while (mine := follower.tip) is not None:
        if (
            mine.height <= tip.height
            and await source.block_hash(mine.height) == mine.block_hash
        ):
            break
        if follower.oldest == mine:
            # the block the follower started from left the chain: start from its parent
            parent = await source.block_hash(mine.height - 1) if mine.height else None
            if mine.height and parent is None:
                raise ChainError(
                    f"the source's chain ends below height {mine.height - 1}, where this "
                    "follower started",
                    code="reorg-too-deep",
                )
            base = BlockRef(mine.height - 1, parent) if parent is not None else None
            events += follower.rebase(base)
            continue
        events += follower.disconnect()
    next_height = 0 if follower.tip is None else follower.tip.height + 1
    last = (
        tip.height
        if max_blocks is None
        else min(tip.height, next_height + max_blocks - 1)
    )
    for height in range(next_height, last + 1):
        block_hash = await source.block_hash(height)
        if block_hash is None:
            break  # the source's tip moved back while we walked: the next call reorgs
        raw = await source.block(block_hash)
        with malformed(f"block at height {height}"):
            block = Block.parse(raw)
        current = follower.tip
        if current is not None and block.header.prev_hash != current.block_hash:
            break  # reorged under us; the next call finds the new fork point
        events += follower.connect(height, block)
    return events


class Subscription:
    """Chain events for one consumer: ``async for event in sub``.

    Watches: ``await sub.watch_outpoint(op)`` / ``await sub.watch_script(spk)``.
    """

    def __init__(
        self, source: ChainSource, max_buffer: int, max_reorg_depth: int
    ) -> None:
        self._source = source
        self._max_reorg_depth = max_reorg_depth
        self._send, self._receive = trio.open_memory_channel[ChainEvent](max_buffer)
        self._follower: ChainFollower | None = None
        self._started_from: BlockRef | None = None
        self._rescans: list[tuple[int, set[OutPoint], set[bytes]]] = []
        self._wakeup = trio.Event()
        self._lock = trio.Lock()

    async def _start(self, start_height: int | None) -> None:
        tip = await self._source.tip()
        if start_height is None or start_height > tip.height:
            base: BlockRef | None = tip
        elif start_height <= 0:
            base = None
        else:
            prev = await self._source.block_hash(start_height - 1)
            assert prev is not None
            base = BlockRef(start_height - 1, prev)
        self._started_from = base
        self._follower = ChainFollower(base, self._max_reorg_depth)

    @property
    def tip(self) -> BlockRef | None:
        """The last block this subscription has read from the source (or started from): its
        events up to there may still wait in its buffer, unread by the consumer."""
        return None if self._follower is None else self._follower.tip

    @property
    def start(self) -> BlockRef | None:
        """The block this subscription started from: its first event is about the next one
        (None: it starts at genesis)."""
        return self._started_from

    async def watch_outpoint(
        self, outpoint: OutPoint, since_height: int | None = None
    ) -> None:
        """Report ``outpoint`` confirming and being spent (from ``since_height`` if given)."""
        async with self._lock:
            assert self._follower is not None
            self._follower.watch_outpoint(outpoint)
            self._queue_rescan(since_height, {outpoint}, set())

    async def watch_script(
        self, script_pubkey: bytes, since_height: int | None = None
    ) -> None:
        """Report outputs paying ``script_pubkey`` and their spends (from ``since_height`` if given)."""
        async with self._lock:
            assert self._follower is not None
            self._follower.watch_script(script_pubkey)
            self._queue_rescan(since_height, set(), {bytes(script_pubkey)})

    def _queue_rescan(
        self, since: int | None, outs: set[OutPoint], scripts: set[bytes]
    ) -> None:
        tip = self._follower.tip if self._follower else None
        if since is not None and tip is not None and since <= tip.height:
            self._rescans.append((since, outs, scripts))
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._follower is not None
        while True:
            async with self._lock:
                rescans, self._rescans = self._rescans, []
                events: list[ChainEvent] = []
                for since, outs, scripts in rescans:
                    events += await self._rescan(since, outs, scripts)
                events += await catch_up(self._source, self._follower, _CATCH_UP_BATCH)
            for event in events:
                await self._send.send(event)
            if events or self._rescans:
                continue
            known = self._follower.tip.block_hash if self._follower.tip else None
            self._wakeup = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_tip_changes, known, nursery.cancel_scope)
                nursery.start_soon(
                    self._until_watch_added, self._wakeup, nursery.cancel_scope
                )

    async def _until_tip_changes(
        self, known: bytes | None, scope: trio.CancelScope
    ) -> None:
        await self._source.wait_for_new_tip(known)
        scope.cancel()

    @staticmethod
    async def _until_watch_added(event: trio.Event, scope: trio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async def _rescan(
        self, since: int, outs: set[OutPoint], scripts: set[bytes]
    ) -> list[ChainEvent]:
        assert self._follower is not None and self._follower.tip is not None
        events: list[ChainEvent] = []
        for height in range(max(since, 0), self._follower.tip.height + 1):
            block_hash = await self._source.block_hash(height)
            if block_hash is None:
                break
            raw = await self._source.block(block_hash)
            with malformed(f"block at height {height}"):
                block = Block.parse(raw)
            events += self._follower.rescan(height, block, outs, scripts)
        return events

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChainEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> ChainEvent:
        """The next event (waits for one)."""
        return await self._receive.receive()
