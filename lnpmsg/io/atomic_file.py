"""Writing a file whole or not at all: a temporary file beside it, then a rename; an append, or none of it.

A reader sees the old file or the new one, never half of one. Every store
that keeps a file it replaces (the wallet's state, a channel's snapshot,
the chain's marker and mempool, a monitor's progress, the control files)
writes it with :func:`write_atomic`; a secret that must never be replaced
(:mod:`lnpmsg.io.secret_file`) is written the same way and then linked
instead (:func:`write_temp`). The append logs (a channel's records, its
monitor's updates, the chain's mempool and block log) add their frames with
:func:`append_whole`, which cuts a failed append back off.

A write the disk cuts short (a full disk) leaves the old file as it was and
no temporary file (a half one would only take more of the space that is
missing), and an append log as long as it was. The error is the system's
``OSError`` (``errno.ENOSPC`` for a full disk), so a caller maps it to its
own store's error (:func:`lnpmsg.node.full_disk.cannot`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["append_whole", "fsync_dir", "naming", "temp_path", "write_atomic", "write_temp"]


def temp_path(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path``'s next version (``<name>.tmp`` beside it).

    One name per file: a temp file a crash left behind is replaced by the
    next write, not kept beside a new one. Its writers take turns (each
    store's files have one owner).
    """
    return path.with_name(path.name + ".tmp")


def write_temp(tmp: Path, data: bytes, *, mode: int = 0o666, durable: bool) -> None:
    """Create ``tmp`` afresh (permissions ``mode`` less the umask) holding all of ``data``.

    ``durable``: fsynced before this returns. A file of that name left by a
    crash is removed first (so ``mode`` holds: an old file would keep its
    own). On an ``OSError`` (a write the disk cuts short, a failed fsync)
    ``tmp`` is removed and the error raised.
    """
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old file or the new one, never half.

    The data goes to :func:`temp_path` (permissions ``mode`` less the umask;
    0o600 for a file only its owner may read), which is then renamed over
    ``path``. ``durable``: the data and the rename survive a power loss too
    (the temp file is fsynced before the rename, the directory after it);
    without it a crash of the machine may leave the old file.

    Raises ``OSError`` as the system says it (``errno.ENOSPC`` on a full
    disk), naming ``path`` (its ``filename``; a failed write alone names no
    file); then ``path`` is as it was and the temp file is gone.
    """
    tmp = temp_path(path)
    try:
        write_temp(tmp, data, mode=mode, durable=durable)
        try:
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        exc.filename, exc.filename2 = str(path), None  # the file the caller writes, not the temp file (gone)
        raise


def append_whole(fd: int, data: bytes, *, durable: bool = True) -> None:
    """Append ``data`` to the file open at ``fd`` (opened with ``O_APPEND``), all or nothing.

    An append log's reader drops a torn last frame, but only a LAST one: a
    write cut short by a full disk and then followed by a successful append
    would put good frames after the torn one, and the reader would drop
    them too. So when any part of the write (or its fsync) fails, the file
    is cut back to its length before the call, and the error is raised.
    """
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)  # frees space: it works on a full disk too
        except OSError:
            pass  # the reader's torn-tail cut is left to do it
        raise


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An ``OSError`` raised in the block that names no file (a write's, an fsync's) names ``path``,
    so that the error a store reports says which file (:func:`lnpmsg.node.full_disk.cannot`)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file, a link) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` at ``fd``'s position: a short write goes on with the rest, whose write then
    fails as the disk says (``ENOSPC`` when full)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # no room and no error: say what the disk would
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
