"""Blocks made and taken by the embedded regtest chain, a mixin of
:class:`~lnpmsg.chain.regtest.RegtestChain`: ``mine`` (on the tip with the
mempool's transactions, or a fork on an earlier block),
``submit_transactions_in_block`` (the proof: exactly these transactions in one
block, the kernel's verdict), ``submit_block`` (a block built elsewhere), and
the index and mempool walked to the kernel's active chain after each block.
The blocks themselves are built by :mod:`lnpmsg.chain.mining`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.encoding import MAX_BLOCK_WEIGHT
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.address import script_for_destination
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.faucet import FAUCET_SCRIPT
from lnpmsg.chain.kernel import KernelResult
from lnpmsg.chain.mining import build_block
from lnpmsg.chain.template import ancestry, claimable_fees, next_block_time
from lnpmsg.chain.tx import SerializedTx, as_tx, malformed

if TYPE_CHECKING:
    from lnpmsg.chain.regtest import RegtestChain

__all__ = ["BlockMaking", "BlockResult"]

#: room left in each block for the coinbase
_COINBASE_RESERVED_WEIGHT = 4_000


@dataclass(frozen=True, slots=True)
class BlockResult:
    """The kernel's verdict on one block.

    ``accepted``: valid and now the tip. Otherwise ``reason`` is the kernel's
    reject reason (``bad-txns-inputs-missingorspent, ...``) and ``code`` its
    first word; the tip did not move. ``stored`` is set for a valid block on
    a side branch with less work.
    """

    block_hash: bytes
    accepted: bool
    height: int | None
    reason: str | None = None
    code: str | None = None
    stored: bool = False

    def check(self) -> BlockResult:
        """Return self if accepted; else raise ``ChainError`` with the kernel's reason."""
        if not self.accepted:
            raise ChainError(
                f"block rejected by the kernel: {self.reason}", code=self.code
            )
        return self


class BlockMaking:
    """Mining and block submission for :class:`~lnpmsg.chain.regtest.RegtestChain` (see the module docs)."""

    def mine(
        self: RegtestChain,
        n: int = 1,
        to_script: bytes | str | None = None,
        *,
        parent: bytes | None = None,
    ) -> list[bytes]:
        """Mine ``n`` blocks paying ``to_script`` (an address or scriptPubKey;
        default: the faucet); returns their hashes.

        On the tip, blocks take the mempool's transactions. With ``parent``,
        empty blocks are mined on that earlier block instead: a fork, which
        the kernel makes the active chain once it has more work (a reorg).
        """
        if not isinstance(n, int) or not 0 <= n <= 100_000:
            raise ChainError(
                "mine between 0 and 100000 blocks at a time", code="invalid"
            )
        script = (
            FAUCET_SCRIPT
            if to_script is None
            else script_for_destination(to_script, self.network)
        )
        hashes: list[bytes] = []
        with self._lock:
            _, log = self._parts()
            before = self.index.tip_hash
            try:
                prev = parent
                for _ in range(n):
                    if prev is None or prev == self.index.tip_hash:
                        entries = self.mempool.select(
                            MAX_BLOCK_WEIGHT - _COINBASE_RESERVED_WEIGHT
                        )
                        txs = [e.tx for e in entries]
                        block = self._build(
                            self.index.tip_hash,
                            script,
                            txs,
                            sum(e.fee_sat for e in entries),
                        )
                    else:
                        block = self._build(prev, script, [], 0)
                    result = self._submit(block)
                    if not (result.accepted or result.stored):
                        evicted = self._evict_after_reject(block, result)
                        raise ChainError(
                            f"the kernel rejected a mined block: {result.reason}; "
                            f"{evicted} mempool transaction(s) evicted",
                            code=result.code,
                        )
                    hashes.append(block.hash)
                    prev = block.hash
            finally:
                log.sync()
                self._notify(before)
        return hashes

    def _evict_after_reject(self: RegtestChain, block: Block, result: BlockResult) -> int:
        evicted = self.mempool.evict_for_rejected_block(block, result.reason or "", self.index)
        self._save_mempool()
        return evicted

    def submit_transactions_in_block(
        self: RegtestChain,
        txs: Sequence[bytes | Tx | SerializedTx],
        to_script: bytes | str | None = None,
    ) -> BlockResult:
        """Mine one block on the tip holding exactly ``txs`` (in this order, no
        mempool check, nothing else from the mempool) and report the kernel's verdict.

        This is the proof on the real consensus engine: ``accepted`` means
        Bitcoin Core's validation connected the block; otherwise ``reason``
        is the kernel's reject reason and the tip did not move.
        """
        parsed = [as_tx(tx) for tx in txs]
        script = (
            FAUCET_SCRIPT
            if to_script is None
            else script_for_destination(to_script, self.network)
        )
        with self._lock:
            _, log = self._parts()
            before = self.index.tip_hash
            try:
                block = self._build(before, script, parsed, claimable_fees(self.index, parsed))
                return self._submit(block)
            finally:
                log.sync()
                self._notify(before)

    def submit_block(self: RegtestChain, raw: bytes) -> BlockResult:
        """Hand a block built elsewhere to the kernel. Malformed bytes raise ``ChainError``."""
        with malformed("block"):
            block = Block.parse(raw)
        with self._lock:
            _, log = self._parts()
            if self._invalidated is not None and block.hash in self._invalidated:
                return BlockResult(block.hash, False, None, "duplicate-invalid: taken out with invalidateblock", "duplicate-invalid")
            before = self.index.tip_hash
            try:
                return self._submit(block, raw)
            finally:
                log.sync()
                self._notify(before)

    def _build(self: RegtestChain, prev: bytes, script: bytes, txs: Sequence[Tx], fees: int) -> Block:
        height, times = ancestry(self.index, prev, self._parsed)
        self._extra_nonce += 1
        block_time = next_block_time(times, self._clock())
        return build_block(prev, height + 1, block_time, script, txs, fees, self._extra_nonce)

    def _submit(self: RegtestChain, block: Block, raw: bytes | None = None) -> BlockResult:
        kernel, log = self._parts()
        block_hash = block.hash
        raw = block.serialize() if raw is None else raw
        result: KernelResult = kernel.process(raw, block_hash)
        if result.accepted or result.stored:
            log.append(block_hash, raw)
            self._cache[block_hash] = block
            self._sync_index()
            self._cache.clear()
            if self.index.tip_hash == block_hash:
                return BlockResult(block_hash, True, self.index.height)
            if kernel.in_active_chain(block_hash):
                return BlockResult(
                    block_hash, True, self.index.hashes.index(block_hash)
                )
            return BlockResult(block_hash, False, None, stored=True)
        return BlockResult(block_hash, False, None, result.reason, result.code)

    def _sync_index(self: RegtestChain) -> None:
        """Walk the index to the kernel's active chain (reorgs included); update the mempool."""
        kernel, _ = self._parts()
        index = self.index
        disconnected: list[Block] = []
        while index.height >= 0 and (
            index.height > kernel.height
            or kernel.hash_at(index.height) != index.tip_hash
        ):
            block = self._parsed(index.tip_hash)
            index.disconnect(block)
            disconnected.append(block)
        connected = 0
        for height in range(index.height + 1, kernel.height + 1):
            block_hash = kernel.hash_at(height)
            assert block_hash is not None
            index.connect(self._parsed(block_hash))
            connected += 1
        if disconnected or connected:
            returning = [
                tx
                for block in reversed(disconnected)
                for tx in block.txs
                if not tx.is_coinbase
            ]
            waiting = self.mempool_txids()
            self.mempool.revalidate(index, returning)
            if self.mempool_txids() != waiting:
                self._save_mempool()
