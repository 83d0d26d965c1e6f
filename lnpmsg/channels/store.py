"""The channel store: one append-only log per channel, plus a snapshot (the file I/O shell).

Layout under the store's directory, per channel key (a name the node gives,
stable for the channel's life)::

    <key>.log    frames of records (length, seq, CRC-32, payload: see records.frame)
    <key>.snap   the latest snapshot, as one frame (seq = the records it covers)

Appends are written whole or not at all (``append_whole``: a write cut
short by a full disk is cut back off the file, and the error raised); a
batch holding a ``durable`` record is fsynced before :meth:`ChannelLog.append`
returns, so the caller sends its messages only after that (the rule "no
message commits to a state that is not on disk"). On open, a torn tail (a frame cut short or failing its CRC:
a crash mid-write) is cut off. A snapshot is written to a temporary file,
fsynced and renamed over the old one (with the directory fsynced); then the
log is emptied. Records whose seq the snapshot already covers (a crash
between the two steps) are skipped on load. Blocking calls: run them in a
worker thread from async code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from lnpmsg.io.atomic_file import append_whole, write_atomic
from lnpmsg.node.full_disk import cannot

from .codec import CodecError
from .errors import ChannelStoreError
from .inputs import Record
from .params import ChannelSecrets
from .records import encode_snapshot, frame, parse_frames, restore

__all__ = ["ChannelLog", "ChannelStore"]

_KEY_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


class ChannelLog:
    """One channel's log and snapshot."""

    def __init__(self, directory: Path, key: str) -> None:
        if not key or not set(key) <= _KEY_CHARS or len(key) > 128:
            raise ValueError(f"channel key {key!r}: use 1-128 letters, digits, '-' or '_'")
        self.log_path = directory / f"{key}.log"
        self.snap_path = directory / f"{key}.snap"
        self.dropped_bytes = 0
        self._snapshot, self._records = self._read()
        # Unbuffered: a failed append must leave nothing behind in a buffer that a later
        # flush (or the close) would still write after the records that follow.
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _read(self) -> tuple[tuple[int, bytes] | None, list[tuple[int, bytes]]]:
        snapshot = None
        if self.snap_path.exists():
            frames, _ = parse_frames(self.snap_path.read_bytes())
            if len(frames) != 1:
                raise CodecError(f"{self.snap_path}: the snapshot is damaged")
            snapshot = frames[0]
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        frames, good = parse_frames(data)
        if good < len(data):
            # A torn tail: cut it off so that the next append starts on a frame boundary.
            self.dropped_bytes = len(data) - good
            with self.log_path.open("r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        covered = snapshot[0] if snapshot is not None else 0
        return snapshot, [(seq, payload) for seq, payload in frames if seq >= covered]

    def records(self) -> list[bytes]:
        """The records after the snapshot, in order."""
        return [payload for _, payload in self._records]

    @property
    def snapshot(self) -> bytes | None:
        """The snapshot's bytes, or None."""
        return self._snapshot[1] if self._snapshot is not None else None

    def restore(self, secrets: ChannelSecrets) -> Any:
        """The channel core as stored: the snapshot, then every record after it."""
        return restore(secrets, self.records(), self.snapshot)

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` (one write); fsync when one of them is ``durable``.

        On an ``OSError`` (a full disk) nothing of them is in the log, on disk or here.
        """
        if not records:
            return
        append_whole(self._fd, b"".join(frame(r.seq, r.data) for r in records), durable=any(r.durable for r in records))
        self._records.extend((r.seq, r.data) for r in records)

    def write_snapshot(self, core: Any) -> None:
        """Replace the snapshot with ``core``'s state and empty the log (bounds replay).

        On an ``OSError`` the old snapshot and the log are as they were (the log
        is emptied only once the new snapshot is on disk).
        """
        snapshot = encode_snapshot(core)
        write_atomic(self.snap_path, frame(core.records_emitted, snapshot))  # (via <key>.snap.tmp)
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._snapshot = (core.records_emitted, snapshot)
        self._records = []

    def close(self) -> None:
        """Close the log file."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChannelStore:
    """The directory of every channel's log."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full disk has no room for the directory
            raise ChannelStoreError(cannot("create the channel store", self.directory, exc)) from exc

    def keys(self) -> list[str]:
        """The stored channels' keys."""
        names = {p.stem for p in self.directory.glob("*.log")} | {p.stem for p in self.directory.glob("*.snap")}
        return sorted(names)

    def open(self, key: str) -> ChannelLog:
        """The log of channel ``key`` (created empty if new)."""
        return ChannelLog(self.directory, key)
