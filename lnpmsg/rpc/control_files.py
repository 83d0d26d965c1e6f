"""The files a node keeps in its data dir for the programs that drive it.

- ``control.lock``: held by the node from before its apps start until it
  has stopped serving (:func:`take_lock`); clients ask whether it is held
  (:func:`lock_held`) to tell a running or starting node from none.
- ``control.json`` (0600): where the control and event sockets are
  (:func:`write_info`, replaced atomically, so a reader never sees half).

The server (:mod:`lnpmsg.rpc.control`) and the client
(:mod:`lnpmsg.rpc.control_client`) share these rules here.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from lnpmsg.rpc.control_proto import CONTROL_LOCK_FILE

__all__ = ["LockHeld", "lock_held", "make_data_dir", "take_lock", "unlink_quietly", "write_info"]

log = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another node holds the data dir's control lock."""


def make_data_dir(data_dir: Path) -> None:
    """Create the data dir (mode 0700) if missing. Raises ``OSError``."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def take_lock(data_dir: Path) -> int:
    """Take the data dir's control lock; its file descriptor (closing it releases the lock).

    Raises ``LockHeld`` if another node holds it, ``OSError`` if the file cannot be used.
    """
    fd = os.open(data_dir / CONTROL_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LockHeld(f"a node is already running with data dir {data_dir}") from None
        raise
    return fd


def lock_held(data_dir: Path) -> bool:
    """Does a node hold the data dir's control lock?"""
    try:
        fd = os.open(data_dir / CONTROL_LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def write_info(path: Path, info: dict[str, Any]) -> None:
    """Write ``control.json`` (0600) in one step: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def unlink_quietly(path: Path) -> None:
    """Remove a file the node made, if it is there (a failure is only logged)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
