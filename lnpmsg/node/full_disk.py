"""A data dir on a full disk: telling a full disk from other failures, and saying so.

Every store a node keeps (the node key, the wallet's seed and state, the
channel logs, the payments and gossip databases, the embedded chain's files,
the control files) may find no room when the node starts. A store that
cannot open or write then refuses the start with one error that names the
file, the cause (``No space left on device``) and the cure (free some
space), and changes nothing it held: the node starts whole once there is
room, or not at all, as lnd and Core Lightning do.

SQLite in WAL mode needs room even to open a database (its ``-shm`` and
``-wal`` files), and on a full disk it often says only ``disk I/O error``:
the free space of the disk tells a full disk from a failing one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stores that use it import sqlite3; importers of the rest need not
    import sqlite3

__all__ = ["LOW_SPACE_BYTES", "cannot", "free_bytes", "full_disk_cure", "is_full_disk", "sqlite_transaction"]

#: free bytes below which a store's I/O error is put down to a full disk (SQLite says only
#: "disk I/O error" when it cannot grow its shared-memory file)
LOW_SPACE_BYTES = 1 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_IO_ERRORS = ("SQLITE_IOERR", "SQLITE_CANTOPEN")


def _disk_of(path: str | os.PathLike[str]) -> os.statvfs_result | None:
    """The figures of the disk holding ``path`` (or its nearest existing parent); None if unknown."""
    candidate = Path(path)
    for where in (candidate, *candidate.parents):
        try:
            return os.statvfs(where)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent); None if unknown."""
    disk = _disk_of(path)
    return disk.f_bavail * disk.f_frsize if disk is not None else None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``raise ... from``), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__
    return seen


def is_full_disk(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """Did ``exc`` (or its cause) come from a full disk under ``path``?

    ``ENOSPC`` (and a full quota) and SQLite's ``SQLITE_FULL`` say so; an
    SQLite I/O error says so when the disk has less than
    :data:`LOW_SPACE_BYTES` free.
    """
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return True
        name = getattr(cause, "sqlite_errorname", None)
        if name == "SQLITE_FULL":
            return True
        if isinstance(name, str) and name.startswith(_SQLITE_IO_ERRORS):
            free = free_bytes(path)
            if free is not None and free < LOW_SPACE_BYTES:
                return True
    return False


def full_disk_cure(path: str | os.PathLike[str]) -> str:
    """``No space left on device (the disk holding it has N bytes free): free some space on that disk``
    (or ``... (the disk holding it has no inode left for another file or directory) ...``: bytes
    free, but no room for one more file)."""
    disk = _disk_of(path)
    if disk is None:
        room = ""
    elif disk.f_files and not disk.f_favail:  # (a disk that counts no inodes has no such limit)
        room = " (the disk holding it has no inode left for another file or directory)"
    else:
        room = f" (the disk holding it has {disk.f_bavail * disk.f_frsize} bytes free)"
    return f"No space left on device{room}: free some space on that disk"


def cannot(what: str, path: str | os.PathLike[str], exc: BaseException) -> str:
    """``cannot WHAT PATH: CAUSE``; for a full disk the cause is :func:`full_disk_cure`'s text
    (with SQLite's own words after it: it may say only ``disk I/O error``)."""
    if is_full_disk(exc, path):
        said = f" (SQLite said: {exc})" if getattr(exc, "sqlite_errorname", None) else ""
        return f"cannot {what} {path}: {full_disk_cure(path)}{said}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot {what} {path}: {reason}"


@contextmanager
def sqlite_transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """``begin`` ... COMMIT around the block; on any exception a ROLLBACK, unless SQLite rolled
    the transaction back itself (it does on some errors, a full disk: SQLITE_FULL, a COMMIT that
    failed there too), when a ROLLBACK would fail and hide the real error."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
