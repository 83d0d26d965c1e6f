"""A real full disk for tests: a small tmpfs mounted on a directory, filled on cue.

A store that meets ``ENOSPC`` must lose nothing and send nothing it did not
write. Faking the error in Python would miss what the kernel really does
when space runs out in the middle of a write (it writes what fits, then
fails), so the tests mount a small tmpfs and fill it with a file: the
store's next write fails as it would on a full disk. Mounting needs root
(CI runs as root) or a user namespace; :func:`small_disk` says so when it
cannot.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DiskFiller", "page_room", "small_disk"]


@contextmanager
def small_disk(path: Path, size_kib: int = 4096, inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of ``size_kib`` KiB on ``path`` (created) for the block; unmounted after.

    ``inodes``: at most that many files and directories, its root included. A
    directory takes no data page on tmpfs, so a disk whose pages are all taken
    still makes one; a disk out of inodes refuses it with ``ENOSPC``, as a
    full disk does where a directory takes a block.
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k,mode=0700" + (f",nr_inodes={inodes}" if inodes is not None else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"mounting a {size_kib} KiB tmpfs on {path} failed ({done.stderr.strip()}): "
            "the full-disk tests need root (as CI runs them) to make a real full disk"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def page_room(path: Path) -> int:
    """Bytes an append to ``path`` still writes once its disk is full: the free end of its last block.

    tmpfs gives a file whole pages, so on a full disk an append that fits in
    what is left of the file's last page lands, and only one that needs a new
    page fails (after writing what fits). A test that needs a record refused
    first makes this smaller than the record.
    """
    return -path.stat().st_size % os.statvfs(path).f_bsize


class DiskFiller:
    """Takes every free byte (or inode) of the file system holding ``directory``, and gives it back."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"
        self._inodes: list[Path] = []

    def fill(self) -> int:
        """Write until the disk is full; returns the bytes taken."""
        taken = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (65536, 4096, 1):
                while True:
                    try:
                        taken += os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return taken

    def give_back(self, size: int) -> None:
        """Free ``size`` bytes of what :meth:`fill` took (whole pages on tmpfs)."""
        if size:
            os.truncate(self.path, max(0, self.path.stat().st_size - size))

    def fill_inodes(self) -> int:
        """Make empty files (``filler-N``) until the disk can hold no more; returns how many."""
        while True:
            path = self.path.with_name(f"{self.path.name}-{len(self._inodes)}")
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return len(self._inodes)
            self._inodes.append(path)

    def free(self) -> None:
        """Give the space (and the inodes) back."""
        self.path.unlink(missing_ok=True)
        for path in self._inodes:
            path.unlink(missing_ok=True)
        self._inodes.clear()
