"""Follow a chain block by block and report what happens to watched outputs
(sans-IO).

Blocks go in (``connect``, ``disconnect``), events come out. The follower
remembers the last ``max_reorg_depth`` blocks and the events each produced,
so that a reorg can take exactly those events back (``ReorgedOut``). Any
source of blocks can drive it: ``lnpmsg.chain.source.catch_up`` does, for the
embedded chain and for bitcoind alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import (
    BlockConnected,
    BlockDisconnected,
    BlockRef,
    ChainEvent,
    OutputConfirmed,
    OutputSpent,
    ReorgedOut,
)

__all__ = ["DEFAULT_MAX_REORG_DEPTH", "ChainFollower"]

#: reorgs deeper than this are not followed (a day of blocks; Core's own
#: wallet and Lightning nodes make the same bet)
DEFAULT_MAX_REORG_DEPTH = 144


@dataclass(slots=True)
class _Record:
    ref: BlockRef
    events: list[OutputConfirmed | OutputSpent] = field(default_factory=list)


class ChainFollower:
    """The blocks seen so far and the outputs watched."""

    def __init__(
        self,
        tip: BlockRef | None = None,
        max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH,
    ) -> None:
        self._records: deque[_Record] = deque(maxlen=max_reorg_depth + 1)
        # set once old records fell out of the window: below it, reorgs cannot be followed
        self._forgot = False
        if tip is not None:
            self._records.append(_Record(tip))
        self._outpoints: set[OutPoint] = set()
        self._pending_txids: dict[bytes, set[int]] = {}
        self._scripts: set[bytes] = set()

    @property
    def tip(self) -> BlockRef | None:
        """The last block connected (None before the first)."""
        return self._records[-1].ref if self._records else None

    @property
    def oldest(self) -> BlockRef | None:
        """The deepest block still remembered (a reorg below it cannot be followed)."""
        return self._records[0].ref if self._records else None

    def hash_at(self, height: int) -> bytes | None:
        """Hash of the remembered block at ``height``, if it is within the window."""
        if not self._records:
            return None
        first = self._records[0].ref.height
        index = height - first
        if 0 <= index < len(self._records):
            return self._records[index].ref.block_hash
        return None

    # -- watches -------------------------------------------------------------

    def watch_outpoint(self, outpoint: OutPoint) -> None:
        """Report when ``outpoint`` confirms and when it is spent."""
        self._outpoints.add(outpoint)
        self._pending_txids.setdefault(outpoint.txid, set()).add(outpoint.vout)

    def watch_script(self, script_pubkey: bytes) -> None:
        """Report every output paying ``script_pubkey`` and, later, its spend."""
        self._scripts.add(bytes(script_pubkey))

    def unwatch_outpoint(self, outpoint: OutPoint) -> None:
        self._outpoints.discard(outpoint)
        vouts = self._pending_txids.get(outpoint.txid)
        if vouts is not None:
            vouts.discard(outpoint.vout)
            if not vouts:
                del self._pending_txids[outpoint.txid]

    def unwatch_script(self, script_pubkey: bytes) -> None:
        self._scripts.discard(bytes(script_pubkey))

    def is_watched(self, outpoint: OutPoint) -> bool:
        return outpoint in self._outpoints

    # -- blocks --------------------------------------------------------------

    def connect(self, height: int, block: Block) -> list[ChainEvent]:
        """The next block of the chain. Returns the events it causes."""
        tip = self.tip
        if tip is not None and (
            height != tip.height + 1 or block.header.prev_hash != tip.block_hash
        ):
            raise ChainError(
                f"follower: block at height {height} does not extend the tip {tip.height}",
                code="follow",
            )
        record = _Record(BlockRef(height, block.hash))
        if len(self._records) == self._records.maxlen:
            self._forgot = True
        record.events = self._scan(
            height, block, self._outpoints, self._scripts, self._pending_txids
        )
        self._records.append(record)
        events: list[ChainEvent] = list(record.events)
        events.append(BlockConnected(height, block.hash, block.header.time))
        return events

    def disconnect(self) -> list[ChainEvent]:
        """Take the tip block back (reorg). Returns ``ReorgedOut`` events, then ``BlockDisconnected``."""
        if len(self._records) <= 1:
            raise ChainError(
                "follower: reorg deeper than the remembered blocks",
                code="reorg-too-deep",
            )
        return self._undo(self._records.pop())

    def rebase(self, base: BlockRef | None) -> list[ChainEvent]:
        """Step below the first block this follower started from (a reorg of it).

        Only possible while nothing was forgotten: the follower has every
        block it ever reported. ``base`` is the new starting point (the
        parent, or None for "before genesis").
        """
        if len(self._records) != 1 or self._forgot:
            raise ChainError(
                "follower: reorg deeper than the remembered blocks",
                code="reorg-too-deep",
            )
        events = self._undo(self._records.pop())
        if base is not None:
            self._records.append(_Record(base))
        return events

    def _undo(self, record: _Record) -> list[ChainEvent]:
        events: list[ChainEvent] = [ReorgedOut(e) for e in reversed(record.events)]
        for event in record.events:
            if isinstance(event, OutputConfirmed) and event.outpoint in self._outpoints:
                # the output is unconfirmed again: watch for its creation once more
                self._pending_txids.setdefault(event.outpoint.txid, set()).add(
                    event.outpoint.vout
                )
        events.append(BlockDisconnected(record.ref.height, record.ref.block_hash))
        return events

    def rescan(
        self,
        height: int,
        block: Block,
        outpoints: Iterable[OutPoint] = (),
        scripts: Iterable[bytes] = (),
    ) -> list[ChainEvent]:
        """Scan an already connected block for watches added since (a rescan).

        Only the given watches are considered; the events join that block's
        record if it is still remembered, so a reorg takes them back too.
        """
        outs = set(outpoints)
        pending: dict[bytes, set[int]] = {}
        for op in outs:
            pending.setdefault(op.txid, set()).add(op.vout)
        found = self._scan(height, block, outs, set(scripts), pending)
        # an output rescanned as confirmed is no longer waited for
        for event in found:
            if isinstance(event, OutputConfirmed):
                vouts = self._pending_txids.get(event.outpoint.txid)
                if vouts is not None:
                    vouts.discard(event.outpoint.vout)
                    if not vouts:
                        del self._pending_txids[event.outpoint.txid]
        if self.hash_at(height) == block.hash:
            self._records[height - self._records[0].ref.height].events.extend(found)
        return list(found)

    def _scan(
        self,
        height: int,
        block: Block,
        outpoints: set[OutPoint],
        scripts: set[bytes],
        pending: dict[bytes, set[int]],
    ) -> list[OutputConfirmed | OutputSpent]:
        events: list[OutputConfirmed | OutputSpent] = []
        block_hash = block.hash
        for tx in block.txs:
            if outpoints and not tx.is_coinbase:
                for i, txin in enumerate(tx.inputs):
                    if txin.prevout in outpoints:
                        events.append(
                            OutputSpent(txin.prevout, tx, i, height, block_hash)
                        )
            vouts = pending.pop(tx.txid, None) if pending else None
            for vout, out in enumerate(tx.outputs):
                by_script = bool(scripts) and out.script_pubkey in scripts
                if by_script or (vouts is not None and vout in vouts):
                    outpoint = OutPoint(tx.txid, vout)
                    events.append(
                        OutputConfirmed(outpoint, out, tx, height, block_hash)
                    )
                    if by_script:
                        # follow it to its spend; the set is shared with the caller's watches
                        self._outpoints.add(outpoint)
                        outpoints.add(outpoint)
        return events
