"""The embedded regtest chain: lnpmsg mines its own blocks and Bitcoin Core's
consensus engine (libbitcoinkernel, through ``pbk``) validates every one.

``RegtestChain`` is the synchronous core (its calls block: the kernel does);
``lnpmsg.chain.embedded.EmbeddedChainSource`` is its trio shell.

A block is the proof: ``submit_transactions_in_block(txs)`` mines a block
holding exactly ``txs`` and reports whether the kernel connected it, or the
kernel's reject reason. A rejected block leaves the tip where it was.

Data dir layout::

    lnpmsg-chain.json   marker: format version and network
    lnpmsg-chain.lock   flock held while open (a second opener gets ChainError "locked")
    blocks.log          every accepted block, lnpmsg's own copy (see blocklog.py)
    mempool.dat         transactions waiting for a block
    blocks/, chainstate/  the kernel's state (written only on a clean close)

On open, blocks the kernel lost (an unclean exit) are replayed from
``blocks.log``; if the kernel's state does not open, the error says so and
``rebuild=True`` recreates it from the log.

Mining and block submission: ``lnpmsg.chain.regtest_blocks``. The faucet
(``lnpmsg.chain.faucet``) pays from coins at P2WSH(OP_TRUE).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.blocklog import BlockLog
from lnpmsg.chain.datadir import DirLock, MempoolFile, prepare_datadir
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef, TxOutInfo
from lnpmsg.chain.faucet import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT, faucet_pay
from lnpmsg.chain.invalidate import Invalidated
from lnpmsg.chain.kernel import KernelChain, kernel_verify_scripts
from lnpmsg.chain.mempool import Mempool
from lnpmsg.chain.recovery import BLOCK_LOG_FILE, reconcile
from lnpmsg.chain.regtest_blocks import BlockMaking, BlockResult
from lnpmsg.chain.source import FEERATE_FLOOR_PER_KW
from lnpmsg.chain.tx import SerializedTx, as_tx
from lnpmsg.chain.utxo import UtxoIndex
from lnpmsg.node.full_disk import cannot

__all__ = [
    "DEFAULT_FEERATE_PER_KW",
    "FAUCET_SCRIPT",
    "FAUCET_WITNESS_SCRIPT",
    "BlockResult",
    "RegtestChain",
]

logger = logging.getLogger(__name__)

MEMPOOL_FILE = "mempool.dat"
_KERNEL_DIRS = ("blocks", "chainstate")


#: what the embedded chain answers to fee estimates: regtest has no fee market
DEFAULT_FEERATE_PER_KW = FEERATE_FLOOR_PER_KW * 4


Listener = Callable[[BlockRef], None]


class RegtestChain(BlockMaking):
    """A regtest chain in ``datadir``, validated by the kernel. Thread-safe; calls block.

    ``clock`` gives UNIX seconds for block times (default: the system clock);
    a block's time is at least its median-time-past + 1, as consensus requires
    (so mining many thousands of blocks faster than real time walks block
    times ahead, towards the kernel's two-hour future limit).
    """

    network = "bcrt"

    def __init__(
        self,
        datadir: str | os.PathLike[str],
        *,
        create: bool = True,
        rebuild: bool = False,
        clock: Callable[[], float] | None = None,
        feerate_per_kw: int = DEFAULT_FEERATE_PER_KW,
    ) -> None:
        self.datadir = Path(datadir)
        self._clock = clock or time.time
        self.feerate_per_kw = feerate_per_kw
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._mempool_listeners: list[Callable[[], None]] = []
        self._extra_nonce = 0
        self._dir_lock: DirLock | None = None
        self._mempool_file = MempoolFile(self.datadir / MEMPOOL_FILE)
        self._log: BlockLog | None = None
        self._kernel: KernelChain | None = None
        self._cache: dict[bytes, Block] = {}
        # the faucet's change outputs (it spends only these and its coinbases)
        self._faucet_change: set[OutPoint] = set()
        self.index = UtxoIndex()
        self.mempool = Mempool(kernel_verify_scripts)
        self._invalidated: Invalidated | None = None
        try:
            self._open(create, rebuild)
        except OSError as exc:  # a full disk, a directory we may not write
            self.close()
            raise ChainError(cannot("use", exc.filename or self.datadir, exc), code="io") from exc
        except BaseException:
            self.close()
            raise

    # -- open / close ---------------------------------------------------------

    @classmethod
    @contextmanager
    def temporary(cls, **kwargs: object) -> Iterator[RegtestChain]:
        """A chain in a fresh temporary directory, removed afterwards (tests, proofs)."""
        with tempfile.TemporaryDirectory(prefix="lnpmsg-regtest-") as tmp:
            chain = cls(tmp, **kwargs)  # type: ignore[arg-type]
            try:
                yield chain
            finally:
                chain.close()

    def _open(self, create: bool, rebuild: bool) -> None:
        d = self.datadir
        if not d.exists():
            if not create:
                raise ChainError(f"chain data dir {d} does not exist", code="missing")
            d.mkdir(parents=True)
        if not d.is_dir():
            raise ChainError(f"chain data dir {d} is not a directory", code="corrupt")
        self._dir_lock = DirLock(d)
        prepare_datadir(d, create, (BLOCK_LOG_FILE, "blocks"))
        self._log = BlockLog(d / BLOCK_LOG_FILE)
        self._invalidated = Invalidated(d)
        if rebuild:
            logger.info("rebuilding the kernel's blocks and chainstate in %s from %s (%d blocks)", d, BLOCK_LOG_FILE, len(self._log))
            for name in _KERNEL_DIRS:
                shutil.rmtree(d / name, ignore_errors=True)
        try:
            self._kernel = KernelChain(d)
        except ChainError as exc:
            if exc.code != "corrupt":  # a full disk: nothing is damaged
                raise
            raise ChainError(
                f"{exc.reason}. The kernel state is damaged: start with 'lnpmsg node --chain regtest "
                f"--reindex' (RegtestChain(..., rebuild=True)) to rebuild it from {BLOCK_LOG_FILE}",
                code="corrupt",
            ) from exc
        # read before the index sync may rewrite it
        waiting, aside = self._mempool_file.load_or_set_aside()
        if aside is not None:
            logger.warning(
                "%s was damaged: moved it to %s and started with an empty mempool "
                "(wallets broadcast their own transactions again; the file can be deleted)",
                self._mempool_file.path,
                aside,
            )
        self._reconcile()
        for tx in waiting:
            try:
                self.mempool.accept(tx, self.index)
            except ChainError:
                pass  # confirmed or conflicted since: as Core does on load, skip it
        self._save_mempool()

    def _reconcile(self) -> None:
        """Make the kernel, the block log and the index agree (after any exit)."""
        assert self._kernel is not None and self._log is not None and self._invalidated is not None
        reconcile(self._kernel, self._log, self.datadir, self._invalidated.replayable(self._log))
        self._sync_index()

    def close(self) -> None:
        """Flush the kernel's state and release the data dir (idempotent)."""
        with self._lock:
            if self._kernel is not None:
                self._kernel.close()
                self._kernel = None
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._kernel is None

    def _parts(self) -> tuple[KernelChain, BlockLog]:
        if self._kernel is None or self._log is None:
            raise ChainError("the chain is closed", code="closed")
        return self._kernel, self._log

    # -- listeners ------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(tip)`` after every operation that moved the tip (from the calling thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_mempool_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every operation that may have changed the
        mempool (a broadcast, a block, a reorg), from the calling thread.

        Indexes of waiting transactions (the Electrum server's) re-read the
        mempool then instead of polling it.
        """
        self._mempool_listeners.append(listener)

    def remove_mempool_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._mempool_listeners:
            self._mempool_listeners.remove(listener)

    def _notify_mempool(self) -> None:
        for listener in list(self._mempool_listeners):
            listener()

    def _notify(self, before: bytes) -> None:
        tip = self.tip()
        if tip.block_hash != before:
            for listener in list(self._listeners):
                listener(tip)
        self._notify_mempool()

    # -- blocks: mine, submit_transactions_in_block, submit_block (BlockMaking, regtest_blocks.py)

    # -- queries --------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        """The chain's lock: hold it while several reads must see one state."""
        return self._lock

    def tip(self) -> BlockRef:
        with self._lock:
            self._parts()
            return BlockRef(self.index.height, self.index.tip_hash)

    @property
    def height(self) -> int:
        return self.tip().height

    def kernel_height(self) -> int:
        """The kernel's own view of the tip height (equal to ``height`` between calls)."""
        with self._lock:
            kernel, _ = self._parts()
            return kernel.height

    def block_hash(self, height: int) -> bytes | None:
        """The active chain's block hash at ``height`` (None above the tip)."""
        with self._lock:
            if 0 <= height <= self.index.height:
                return self.index.hashes[height]
            return None

    def block(self, block_hash: bytes) -> bytes:
        """A serialized block by hash (active chain or a side branch)."""
        with self._lock:
            _, log = self._parts()
            return log.read(block_hash)

    def get_txout(self, outpoint: OutPoint) -> TxOutInfo | None:
        """The output if confirmed and unspent on the active chain."""
        with self._lock:
            coin = self.index.coins.get(outpoint)
            if coin is None:
                return None
            return TxOutInfo(
                outpoint,
                coin.txout,
                self.index.height - coin.height + 1,
                coin.is_coinbase,
            )

    def find_transaction(self, txid: bytes) -> tuple[Tx, int | None] | None:
        """A transaction by txid: ``(tx, height)`` if confirmed, ``(tx, None)`` if waiting."""
        with self._lock:
            entry = self.mempool.get(txid)
            if entry is not None:
                return entry.tx, None
            location = self.index.txs.get(txid)
            if location is None:
                return None
            block = self._parsed(location.block_hash)
            return block.txs[location.index], location.height

    def mempool_txids(self) -> list[bytes]:
        with self._lock:
            return [e.tx.txid for e in self.mempool.entries()]

    def mempool_snapshot(self) -> tuple[BlockRef, list[tuple[Tx, int]]]:
        """The tip and the waiting transactions with their fees (parents
        first), taken together: the mempool as it stands on that tip."""
        with self._lock:
            self._parts()
            tip = BlockRef(self.index.height, self.index.tip_hash)
            return tip, [(e.tx, e.fee_sat) for e in self.mempool.entries()]

    def estimate_feerate(self, target_blocks: int = 6) -> int:
        """The configured fee rate (sat/kw): regtest has no fee market to estimate."""
        return self.feerate_per_kw

    # -- transactions ---------------------------------------------------------

    def broadcast(self, tx: bytes | Tx | SerializedTx) -> bytes:
        """Admit a transaction to the mempool after the pre-checks; returns its txid.

        Already waiting or confirmed: returns the txid. Otherwise a failed
        pre-check raises ``ChainError`` (see ``lnpmsg.chain.mempool``). A
        transaction spending what waiting ones spend replaces them under
        BIP 125's rules (``lnpmsg.chain.replacement``).
        """
        parsed = as_tx(tx)
        with self._lock:
            self._parts()
            if parsed.txid in self.index.txs:
                return parsed.txid
            if self.mempool.accept_replacing(parsed, self.index)[1]:
                self._save_mempool()  # a BIP 125 replacement: the file loses what it evicted
            else:
                self._journal_mempool(parsed)
            self._notify_mempool()
            return parsed.txid

    def invalidate_block(self, block_hash: bytes) -> None:
        """Take ``block_hash`` and its descendants out of the chain, as Core's
        ``invalidateblock``: the tip goes back to the block's parent (or the
        best other branch) and their transactions return to the mempool.

        The kernel has no such call: its state is rebuilt from the block log
        without those blocks, so this takes time that grows with the chain.
        The choice survives restarts (``lnpmsg.chain.invalidate``).
        """
        with self._lock:
            kernel, log = self._parts()
            if block_hash not in log:
                raise ChainError(f"unknown block {hash_to_hex(block_hash)}", code="not-found")
            if self.index.hashes and block_hash == self.index.hashes[0]:
                raise ChainError("the genesis block cannot be invalidated", code="invalid")
            assert self._invalidated is not None
            before = self.index.tip_hash
            self._invalidated.add(block_hash)
            self._kernel = None
            kernel.close()
            for name in _KERNEL_DIRS:
                shutil.rmtree(self.datadir / name, ignore_errors=True)
            self._kernel = KernelChain(self.datadir)
            try:
                self._reconcile()
            finally:
                self._notify(before)

    def _parsed(self, block_hash: bytes) -> Block:
        block = self._cache.get(block_hash)
        if block is None:
            _, log = self._parts()
            block = Block.parse(log.read(block_hash))
        return block

    # -- faucet ---------------------------------------------------------------

    def faucet(self, destination: str | bytes, amount_sat: int) -> OutPoint:
        """Pay ``amount_sat`` to an address or scriptPubKey from the faucet's
        coinbase coins, mining (to the faucet) first if it has too little.

        The payment waits in the mempool: ``mine()`` confirms it. Returns the
        outpoint paying ``destination``. A request the faucet cannot meet
        (a bad destination, more than it could raise) fails before anything
        is mined: see ``lnpmsg.chain.faucet``.
        """
        with self._lock:
            self._parts()
            return faucet_pay(self, destination, amount_sat)

    # -- mempool persistence --------------------------------------------------

    def _journal_mempool(self, tx: Tx) -> None:
        self._mempool_file.record(tx, self._waiting_txs)

    def _save_mempool(self) -> None:
        self._mempool_file.save(self._waiting_txs())

    def _waiting_txs(self) -> list[Tx]:
        return [e.tx for e in self.mempool.entries()]
