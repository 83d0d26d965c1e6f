"""Bring the embedded chain's two copies of its blocks into agreement when it
opens: the kernel's files (``blocks/``, ``chainstate/``: written only at a
clean close) and lnpmsg's own checksummed block log (``blocks.log``: fsynced
as each block is accepted).

- blocks the kernel flushed but the log missed (a crash between the two)
  are copied into the log;
- blocks the log holds but the kernel lost (any unclean exit) are replayed
  into the kernel, with progress logged for long replays;
- then every block of the active chain and its undo data are read back from
  the kernel's files and compared with the log, so damage there is a clear
  error at start (naming ``--reindex``), not a failure in a later reorg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.chain.blocklog import BlockLog
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.kernel import KernelChain

__all__ = ["BLOCK_LOG_FILE", "PROGRESS_EVERY", "check_kernel_files", "reconcile"]

log = logging.getLogger(__name__)

BLOCK_LOG_FILE = "blocks.log"
#: blocks between two progress lines while the log is replayed
PROGRESS_EVERY = 1_000
_REINDEX_ADVICE = (
    f"{BLOCK_LOG_FILE} is intact: start with 'lnpmsg node --chain regtest --reindex' "
    "(RegtestChain(..., rebuild=True)) to rebuild the kernel's blocks and chainstate from it"
)


def reconcile(kernel: KernelChain, block_log: BlockLog, datadir: Path, replayable: Iterable[bytes] | None = None) -> None:
    """Make the kernel and the block log hold the same blocks; raises ``ChainError`` (``corrupt``).

    ``replayable``: the log's blocks to replay, parents first (default: all of
    them; ``invalidateblock`` leaves some out).
    """
    for height in range(kernel.height + 1):
        block_hash = kernel.hash_at(height)
        if block_hash is not None and block_hash not in block_log:
            try:
                raw = kernel.read_block(height)
            except RuntimeError as exc:
                raise _damaged(datadir, str(exc)) from exc
            block_log.append(block_hash, raw)
    missing = [h for h in (block_log.order if replayable is None else replayable) if not kernel._known(h)]
    if len(missing) >= PROGRESS_EVERY:
        log.info("replaying %d block(s) from %s into the kernel", len(missing), BLOCK_LOG_FILE)
    for done, block_hash in enumerate(missing, 1):
        if done % PROGRESS_EVERY == 0:
            log.info("replayed %d of %d block(s)", done, len(missing))
        result = kernel.process(block_log.read(block_hash), block_hash)
        if not (result.accepted or result.stored):
            raise ChainError(
                f"{BLOCK_LOG_FILE} holds block {hash_to_hex(block_hash)} that the kernel rejects on "
                f"replay: {result.reason}",
                code="corrupt",
            )
    block_log.sync()
    check_kernel_files(kernel, block_log, datadir)


def check_kernel_files(kernel: KernelChain, block_log: BlockLog, datadir: Path) -> None:
    """Read every active block and its undo data back from the kernel's files
    and compare with the log (about 0.15 ms a block)."""
    for height in range(kernel.height + 1):
        block_hash = kernel.hash_at(height)
        assert block_hash is not None
        problem = kernel.check_stored(height, block_log.read(block_hash))
        if problem is not None:
            raise _damaged(datadir, problem)


def _damaged(datadir: Path, problem: str) -> ChainError:
    return ChainError(
        f"the kernel's block files in {datadir / 'blocks'} are damaged ({problem}). {_REINDEX_ADVICE}",
        code="corrupt",
    )
