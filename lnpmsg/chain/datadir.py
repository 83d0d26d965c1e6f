"""The embedded chain's data dir: marker, exclusive lock, the mempool file.

Every failure is a ``ChainError`` whose ``code`` says what to do about it:
``missing`` (nothing there and not asked to create), ``corrupt`` (not ours,
or damaged), ``locked`` (another process has it open).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.io.atomic_file import append_whole, fsync_dir, write_atomic

__all__ = ["DirLock", "MempoolFile", "prepare_datadir"]

logger = logging.getLogger(__name__)

MARKER_FILE = "lnpmsg-chain.json"
LOCK_FILE = "lnpmsg-chain.lock"
FORMAT_VERSION = 1
_MEMPOOL_MAGIC = b"LNPMSG-MEMPOOL01"
#: a mempool record longer than this is damage, not a transaction (a block's size)
MAX_TX_RECORD = 4_000_000


class DirLock:
    """An exclusive ``flock`` on the data dir's lock file, holding the owner's pid.

    ``flock`` locks belong to an open file, so a second opener in the same
    process is refused too, and the lock dies with the process.
    """

    def __init__(self, datadir: Path) -> None:
        path = datadir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ChainError(
                f"chain data dir {datadir} is in use by another process (pid {holder})",
                code="locked",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def prepare_datadir(d: Path, create: bool, required: tuple[str, ...]) -> None:
    """Check that ``d`` is an lnpmsg regtest chain dir (or make one, if ``create``
    and it is absent or empty). Call with the dir's lock held; ``required``:
    names of which at least one must exist in a dir that has the marker."""
    marker = d / MARKER_FILE
    if marker.exists():
        try:
            meta = json.loads(marker.read_text())
            ok = (
                meta.get("format") == FORMAT_VERSION
                and meta.get("network") == "regtest"
            )
        except (ValueError, AttributeError, OSError):
            ok = False
        if not ok:
            raise ChainError(
                f"{marker} is unreadable or of another format", code="corrupt"
            )
        if not any((d / name).exists() for name in required):
            raise ChainError(
                f"chain data dir {d} lost both its block log and kernel state",
                code="corrupt",
            )
        return
    others = sorted(p.name for p in d.iterdir() if p.name != LOCK_FILE)
    if others:
        raise ChainError(
            f"{d} is not an lnpmsg chain data dir (no {MARKER_FILE}; holds {others[:5]})",
            code="corrupt",
        )
    if not create:
        raise ChainError(f"chain data dir {d} is empty", code="missing")
    write_atomic(
        marker, json.dumps({"format": FORMAT_VERSION, "network": "regtest"}).encode()
    )


class MempoolFile:
    """Transactions waiting for a block, kept across restarts and crashes.

    ``record`` adds one record per broadcast and fsyncs it; ``save``
    replaces the file after blocks change the mempool (temp file, fsync,
    rename, fsync of the dir). A transaction the chain accepted is on disk
    before the broadcast returns. Format: MAGIC (length:u32le tx)*.

    A disk that refuses a write (full) fails neither call: the mempool in
    memory is the truth and the file its copy for a restart (Bitcoin Core
    writes its mempool.dat only at shutdown, and logs a failure to). A
    failed append is cut back off the file (:func:`append_whole`), so no
    later record ever follows a torn one; the error is logged once, and the
    next change writes the whole file again (``behind``) once it fits. A
    crash meanwhile loses those transactions from the mempool only: the
    wallets and channel monitors that sent them broadcast them again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: a write failed: the file lacks changes of the mempool (the next one rewrites it whole)
        self.behind = False

    def load(self) -> list[Tx]:
        """The stored transactions; a record torn by a crash at the end is dropped.

        A file that is not a mempool file or is damaged inside raises
        ``ChainError`` (``corrupt``); :meth:`load_or_set_aside` is what a
        chain opening calls.
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if not data.startswith(_MEMPOOL_MAGIC):
            raise ChainError(f"{self.path} is not an lnpmsg mempool file (bad magic)", code="corrupt")
        txs = []
        pos = len(_MEMPOOL_MAGIC)
        while pos + 4 <= len(data):
            (length,) = struct.unpack_from("<I", data, pos)
            if pos + 4 + length > len(data):
                if length > MAX_TX_RECORD:
                    raise ChainError(f"{self.path} is damaged at offset {pos} (record length {length})", code="corrupt")
                break
            try:
                txs.append(Tx.parse(data[pos + 4 : pos + 4 + length]))
            except BitcoinError as exc:
                raise ChainError(f"{self.path} is damaged at offset {pos}: {exc}", code="corrupt") from exc
            pos += 4 + length
        return txs

    def load_or_set_aside(self) -> tuple[list[Tx], Path | None]:
        """The stored transactions; a damaged file is renamed to
        ``mempool.dat.corrupt-N`` (kept for inspection) and the mempool starts
        empty. Returns the transactions and where a damaged file went."""
        try:
            return self.load(), None
        except ChainError:
            n = 1
            while (aside := self.path.with_name(f"{self.path.name}.corrupt-{n}")).exists():
                n += 1
            os.replace(self.path, aside)
            fsync_dir(self.path.parent)
            return [], aside

    def record(self, tx: Tx, waiting: Callable[[], list[Tx]]) -> None:
        """Add ``tx`` (just accepted); ``waiting``: the whole mempool, written instead while the file is behind."""
        if self.behind or not self.path.exists():
            self.save(waiting())
            return
        try:
            self.append(tx)
        except OSError as exc:
            self._failed(exc)

    def save(self, txs: list[Tx]) -> None:
        """Replace the file with ``txs`` (the mempool after a change)."""
        try:
            self.rewrite(txs)
        except OSError as exc:
            self._failed(exc)
            return
        if self.behind:
            self.behind = False
            logger.info("%s is written again (%d transactions)", self.path, len(txs))

    def _failed(self, exc: OSError) -> None:
        if not self.behind:
            logger.error(
                "cannot write %s (%s): the mempool goes on in memory and the file is written whole at its next "
                "change once it fits; a crash meanwhile forgets the transactions since (their senders broadcast them again)",
                self.path,
                exc.strerror or exc,
            )
        self.behind = True

    def append(self, tx: Tx) -> None:
        """Append one record, fsynced, all or nothing (raises ``OSError``, the file as it was)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            append_whole(fd, struct.pack("<I", len(tx.raw)) + tx.raw)
        finally:
            os.close(fd)

    def rewrite(self, txs: list[Tx]) -> None:
        """Replace the file with ``txs`` in one step (raises ``OSError``, the file as it was)."""
        data = _MEMPOOL_MAGIC + b"".join(struct.pack("<I", len(tx.raw)) + tx.raw for tx in txs)
        write_atomic(self.path, data)
