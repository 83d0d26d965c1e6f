"""Creating a file that holds a secret (a key, a seed): readable by its owner only, whole or not at all.

A secret is made once and never replaced: a second process that made its
own meanwhile keeps the first one's, and a write the disk cuts short (a
full disk) leaves no file behind, never an empty or half secret that the
next start would take for a damaged one.
"""

from __future__ import annotations

import os
from pathlib import Path

from lnpmsg.io.atomic_file import fsync_dir, write_temp

__all__ = ["create_secret_file"]


def create_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``.

    The data goes to a temporary file beside it, is fsynced, and is then
    linked to its name, so the file appears whole or not at all (the
    directory is fsynced after). Raises ``FileExistsError`` when ``path``
    already exists (it is left as it is), ``OSError`` when a write fails
    (nothing is left behind).
    """
    # A temp file of this process's own: another one making the same secret writes its own.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_temp(tmp, data, mode=0o600, durable=True)
    try:
        os.link(tmp, path)  # unlike a rename, never replaces a secret another process made
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
