"""The files a node keeps in its data dir for the programs that drive it.

- ``control.lock``: held by the node from before its apps start until it
  has stopped serving (:func:`take_lock`); clients ask whether it is held
  (:func:`lock_held`) to tell a running or starting node from none. The
  lock is an open-file-description lock (Linux ``F_OFD_SETLK``): released
  when its file is closed, whichever process or thread did so, and clients
  *test* it (``F_OFD_GETLK``) without taking anything, so a client looking
  at the very moment a node starts can never make that node believe
  another one runs (as a shared ``flock`` held for the look did). Where
  the system has no such locks, ``flock`` serves, with that narrow race.
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
import struct
from pathlib import Path
from typing import Any

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.rpc.control_proto import CONTROL_LOCK_FILE

__all__ = ["LockHeld", "lock_held", "make_data_dir", "take_lock", "unlink_quietly", "write_info"]

log = logging.getLogger(__name__)

#: open-file-description locks (Linux 3.15+)
_OFD = hasattr(fcntl, "F_OFD_SETLK")
#: Linux's ``struct flock``: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding
_FLOCK = struct.Struct("hhqqi4x")
#: the whole file
_WHOLE_FILE = (os.SEEK_SET, 0, 0, 0)


class LockHeld(Exception):
    """Another node holds the data dir's control lock."""


def make_data_dir(data_dir: Path) -> None:
    """Create the data dir (mode 0700) if missing. Raises ``OSError``."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def take_lock(data_dir: Path) -> int:
    """Take the data dir's control lock; its file descriptor (closing it releases the lock).

    Raises ``LockHeld`` if another node holds it (in this process too),
    ``OSError`` if the file cannot be used.
    """
    fd = os.open(data_dir / CONTROL_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _OFD:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, *_WHOLE_FILE))
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise LockHeld(f"a node is already running with data dir {data_dir}") from None
        raise
    return fd


def lock_held(data_dir: Path) -> bool:
    """Does a node hold the data dir's control lock? (Tests it; takes nothing.)"""
    try:
        fd = os.open(data_dir / CONTROL_LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not _OFD:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_RDLCK, *_WHOLE_FILE))
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and not _OFD
    finally:
        os.close(fd)
    return bool(_FLOCK.unpack(found)[0] != fcntl.F_UNLCK)


def write_info(path: Path, info: dict[str, Any]) -> None:
    """Write ``control.json`` (0600) in one step: a temporary file, then a rename.

    Raises ``OSError`` (a full disk: the old file as it was, no temp file left).
    Not fsynced: the file lives only while the node runs (removed at its stop,
    and by the next node to take the lock), so after a power loss it would be
    stale anyway; a start need not wait for the disk.
    """
    write_atomic(path, json.dumps(info).encode(), durable=False, mode=0o600)


def unlink_quietly(path: Path) -> None:
    """Remove a file the node made, if it is there (a failure is only logged)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
