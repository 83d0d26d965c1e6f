"""The channel store: one append-only log per channel, plus a snapshot (the file I/O shell).

Layout under the store's directory, per channel key (a name the node gives,
stable for the channel's life)::

    <key>.log    frames of records (length, seq, CRC-32, payload: see records.frame)
    <key>.snap   the latest snapshot, as one frame (seq = the records it covers)

Appends are written in one ``write``; a batch holding a ``durable`` record
is fsynced before :meth:`ChannelLog.append` returns, so the caller sends its
messages only after that (the rule "no message commits to a state that is
not on disk"). On open, a torn tail (a frame cut short or failing its CRC:
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

from lnpmsg.chain.datadir import write_atomic

from .codec import CodecError
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
        self._file = self.log_path.open("ab")

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
        """Append ``records`` (one write); fsync when one of them is ``durable``."""
        if not records:
            return
        self._file.write(b"".join(frame(r.seq, r.data) for r in records))
        self._file.flush()
        if any(r.durable for r in records):
            os.fsync(self._file.fileno())
        self._records.extend((r.seq, r.data) for r in records)

    def write_snapshot(self, core: Any) -> None:
        """Replace the snapshot with ``core``'s state and empty the log (bounds replay)."""
        snapshot = encode_snapshot(core)
        write_atomic(self.snap_path, frame(core.records_emitted, snapshot))  # (via <key>.snap.tmp)
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._snapshot = (core.records_emitted, snapshot)
        self._records = []

    def close(self) -> None:
        """Close the log file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChannelStore:
    """The directory of every channel's log."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def keys(self) -> list[str]:
        """The stored channels' keys."""
        names = {p.stem for p in self.directory.glob("*.log")} | {p.stem for p in self.directory.glob("*.snap")}
        return sorted(names)

    def open(self, key: str) -> ChannelLog:
        """The log of channel ``key`` (created empty if new)."""
        return ChannelLog(self.directory, key)
