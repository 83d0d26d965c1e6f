"""The embedded regtest chain as a ``ChainSource`` (trio shell).

Every call into ``RegtestChain`` blocks (the kernel validates in the calling
thread), so each runs in a worker thread; the core's own lock keeps them in
order. Tip changes come back through a core listener that wakes the trio
side with ``TrioToken.run_sync_soon`` (safe from any thread).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef, TxOutInfo
from lnpmsg.chain.regtest import BlockResult, RegtestChain
from lnpmsg.chain.source import ChainSource
from lnpmsg.chain.tx import SerializedTx

__all__ = ["EmbeddedChainSource"]

T = TypeVar("T")


class EmbeddedChainSource(ChainSource):
    """``ChainSource`` over a ``RegtestChain``, plus its mining and faucet calls.

    Build it inside trio (``EmbeddedChainSource(core)`` or ``open(datadir)``);
    it does not own a core passed in, ``open`` does.
    """

    network = "bcrt"

    def __init__(self, core: RegtestChain) -> None:
        self.core = core
        self._token = trio.lowlevel.current_trio_token()
        self._tip_changed = trio.Event()
        self._owns_core = False
        core.add_listener(self._on_tip)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, datadir: str | os.PathLike[str], **kwargs: Any
    ) -> AsyncIterator[EmbeddedChainSource]:
        """Open (or create) the chain in ``datadir``; close it on exit."""
        core = await trio.to_thread.run_sync(lambda: RegtestChain(datadir, **kwargs))
        source = cls(core)
        source._owns_core = True
        try:
            yield source
        finally:
            with trio.CancelScope(shield=True):
                await source.aclose()

    def _on_tip(self, _tip: BlockRef) -> None:
        try:
            self._token.run_sync_soon(self._wake)
        except trio.RunFinishedError:
            pass  # the trio run that owned this source is over

    def _wake(self) -> None:
        self._tip_changed.set()
        self._tip_changed = trio.Event()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args)

    async def aclose(self) -> None:
        self.core.remove_listener(self._on_tip)
        if self._owns_core:
            await self._call(self.core.close)

    # -- ChainSource -----------------------------------------------------------

    async def tip(self) -> BlockRef:
        return await self._call(self.core.tip)

    async def block_hash(self, height: int) -> bytes | None:
        return await self._call(self.core.block_hash, height)

    async def block(self, block_hash: bytes) -> bytes:
        return await self._call(self.core.block, block_hash)

    async def get_txout(self, outpoint: OutPoint) -> TxOutInfo | None:
        return await self._call(self.core.get_txout, outpoint)

    async def find_transaction(self, txid: bytes) -> bytes | None:
        found = await self._call(self.core.find_transaction, txid)
        return found[0].raw if found is not None else None

    async def broadcast(self, raw_tx: bytes) -> bytes:
        return await self._call(self.core.broadcast, raw_tx)

    async def estimate_feerate(self, target_blocks: int = 6) -> int:
        if target_blocks < 1:
            raise ChainError("target_blocks must be at least 1", code="invalid")
        return self.core.estimate_feerate(target_blocks)

    async def wait_for_new_tip(self, known: bytes | None) -> BlockRef:
        while True:
            changed = self._tip_changed
            tip = await self.tip()
            if tip.block_hash != known:
                return tip
            await changed.wait()

    # -- regtest only ----------------------------------------------------------

    async def mine(
        self, n: int = 1, to_script: bytes | str | None = None
    ) -> list[bytes]:
        """Mine ``n`` blocks (see ``RegtestChain.mine``)."""
        return await self._call(self.core.mine, n, to_script)

    async def faucet(self, destination: str | bytes, amount_sat: int) -> OutPoint:
        """Pay from the faucet (see ``RegtestChain.faucet``); ``mine()`` confirms it."""
        return await self._call(self.core.faucet, destination, amount_sat)

    async def submit_transactions_in_block(
        self, txs: Sequence[bytes | Tx | SerializedTx]
    ) -> BlockResult:
        """Mine one block holding exactly ``txs``; the kernel's verdict (see ``RegtestChain``)."""
        return await self._call(self.core.submit_transactions_in_block, txs)

    async def submit_block(self, raw: bytes) -> BlockResult:
        return await self._call(self.core.submit_block, raw)
