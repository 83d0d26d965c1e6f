"""Creating a file that holds a secret (a key, a seed): readable by its owner only, whole or not at all.

A secret is made once and never replaced: a second process that made its
own meanwhile keeps the first one's, and a write the disk cuts short (a
full disk) leaves no file behind, never an empty or half secret that the
next start would take for a damaged one.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["create_secret_file"]


def create_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``.

    The data goes to a temporary file beside it, is fsynced, and is then
    linked to its name, so the file appears whole or not at all (the
    directory is fsynced after). Raises ``FileExistsError`` when ``path``
    already exists (it is left as it is), ``OSError`` when a write fails
    (nothing is left behind).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, data) != len(data):  # the disk took only part of it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # unlike a rename, never replaces a secret another process made
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
