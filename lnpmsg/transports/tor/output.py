"""A launched tor's output: read from a pipe, kept in memory, copied to its log file.

Tor's log file (``tor.log``) lies on the node's disk, beside Tor's data
directory. When that disk is full, Tor's own word on why it stopped
(``Error writing to "…/state": No space left on device``) is exactly what
cannot be written there. So tor writes to a pipe, and a thread of ours
(:class:`TorOutput`) drains it: each line goes to the log file while the
disk takes it, the last lines are kept in memory for error messages, and a
line saying a write failed for lack of space is noted (:attr:`TorOutput.disk_full`)
and handed to a callback. The pipe is always drained, so tor never blocks
on its own logging, whatever the disk does.
"""

from __future__ import annotations

import collections
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["KEPT_LINES", "TorOutput", "disk_full_path"]

#: tor's last lines kept in memory (a few hundred bytes each: a bounded few tens of KiB)
KEPT_LINES = 200

#: what tor (through strerror) says when a write or a new file or directory finds no room
_NO_ROOM = ("No space left on device", "Disk quota exceeded")
#: the path in tor's warnings: quoted (``Error writing to "/x/state": …``) or bare
#: (``Error creating directory /x/keys: …``, ``Writing /x/control-port failed: …``)
_PATH = re.compile(r'"(/[^"]+)"|(/[^\s":]+)')


def disk_full_path(line: str) -> str | None:
    """The file or directory a tor log line says it could not write for lack of room, or ``None``."""
    if not any(words in line for words in _NO_ROOM):
        return None
    match = _PATH.search(line)
    return None if match is None else match.group(1) or match.group(2)


class TorOutput:
    """Drains a tor process's stdout (a pipe) in a thread; see the module docstring.

    Call :meth:`open` to get the pipe's write end (for the process's
    stdout), then :meth:`started` once the process runs (it closes our copy
    of the write end, so the thread sees end-of-file when tor exits).
    ``on_disk_full(path, line)`` is called from the reader thread for every
    line telling of a write that found no room.
    """

    def __init__(self, log_path: Path, on_disk_full: Callable[[str, str], None] | None = None) -> None:
        self.log_path = log_path
        self._on_disk_full = on_disk_full
        self._lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self._lock = threading.Lock()
        self._write_end: int | None = None
        self._thread: threading.Thread | None = None
        #: the first path tor said it could not write for lack of room (``None``: none yet): the cause
        self.disk_full: str | None = None
        #: why the log file could not be opened or written, if it could not (tor's lines are still kept)
        self.log_error: OSError | None = None

    def open(self) -> int:
        """Open the pipe and the log file (an earlier one must have been moved away); the write end."""
        read_end, write_end = os.pipe()
        try:
            log_fd: int | None = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # no room for the file itself: tor's lines stay in memory
            self.log_error = exc
            log_fd = None
        self._write_end = write_end
        self._thread = threading.Thread(target=self._drain, args=(read_end, log_fd), name=f"tor output {self.log_path}", daemon=True)
        self._thread.start()
        return write_end

    def started(self) -> None:
        """The process holds the write end now (or never will): close ours."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None

    def join(self, timeout: float | None = None) -> None:
        """Wait until every line tor wrote before exiting was read (blocking: call in a thread)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def tail(self, lines: int, *, warnings: bool = False) -> str:
        """Tor's last ``lines`` lines (from memory: there even when the log file could not take them);
        ``warnings``: its last warnings and errors only (tor's reasons, without the notices around them)."""
        with self._lock:
            kept = [line for line in self._lines if not warnings or "[warn]" in line or "[err]" in line][-lines:]
        if kept:
            return "\n".join(kept)
        return "(tor wrote nothing)" if self.log_error is None else f"(tor wrote nothing; its log: {self.log_error.strerror})"

    def _drain(self, read_end: int, log_fd: int | None) -> None:
        partial = b""
        try:
            while chunk := os.read(read_end, 65536):
                if log_fd is not None:
                    self._copy(log_fd, chunk)
                *whole, partial = (partial + chunk).split(b"\n")
                for raw in whole:
                    self._line(raw.decode("utf-8", "replace"))
            if partial:
                self._line(partial.decode("utf-8", "replace"))
        finally:
            os.close(read_end)
            if log_fd is not None:
                os.close(log_fd)

    def _copy(self, log_fd: int, chunk: bytes) -> None:
        try:
            os.write(log_fd, chunk)
        except OSError as exc:  # a full disk: the lines are kept in memory, later ones tried again
            self.log_error = exc

    def _line(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
        path = disk_full_path(line)
        if path is not None:
            if self.disk_full is None:
                self.disk_full = path
            if self._on_disk_full is not None:
                self._on_disk_full(path, line)
