"""A channel monitor's files: ``<key>.mon``, its updates (the first frame holds the start height, u32,
each later frame one encoded update; append-only, fsynced, a torn tail dropped), and ``<key>.seen``,
how far it read or its final status (JSON, replaced atomically). See :mod:`.onchain`."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from lnpmsg.io.atomic_file import append_whole, naming, write_atomic

from .monitor import MonitorUpdate, decode_update, encode_update
from .records import frame, parse_frames

__all__ = ["MonitorLog", "MonitorProgress"]

_START = struct.Struct(">I")


class MonitorLog:
    """One channel's monitor updates on disk (append-only, fsynced, torn tail dropped).

    An ``OSError`` (a full disk) names the log's file and leaves the log as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes() if path.exists() else b""
        frames, good = parse_frames(data)
        if good < len(data):
            with naming(path), path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        self.start_height: int | None = None
        self.updates: list[MonitorUpdate] = []
        if frames:
            self.start_height = _START.unpack(frames[0][1])[0]
            self.updates = [decode_update(payload) for _, payload in frames[1:]]
        self._seq = len(frames)

    def begin(self, start_height: int) -> None:
        """Write the start height (the log's first frame)."""
        assert self._seq == 0
        self._write([_START.pack(start_height)])
        self.start_height = start_height

    def append(self, updates: list[MonitorUpdate]) -> None:
        """Append ``updates`` and fsync."""
        self._write([encode_update(u) for u in updates])
        self.updates.extend(updates)

    def _write(self, payloads: list[bytes]) -> None:
        """Append and fsync, whole or not at all (an ``OSError`` leaves the log as it was)."""
        data = b"".join(frame(self._seq + i, payload) for i, payload in enumerate(payloads))
        with naming(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                append_whole(fd, data)
            finally:
                os.close(fd)
        self._seq += len(payloads)


class MonitorProgress:
    """``<key>.seen``: how far a monitor read with its funding unspent, or its final status once
    irrevocable (a damaged file counts as absent: the replay starts at the log's start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoint: int | None = None
        self.final: dict[str, Any] | None = None
        try:
            data = json.loads(path.read_bytes())
            self.checkpoint = int(data["checkpoint"]) if "checkpoint" in data else None
            self.final = dict(data["final"]) if "final" in data else None
        except (OSError, ValueError, TypeError, KeyError):
            pass

    def save(self, **record: Any) -> None:
        """Replace the record (``checkpoint=H`` or ``final=STATUS``) atomically and durably."""
        write_atomic(self.path, json.dumps(record).encode())
        self.checkpoint, self.final = record.get("checkpoint"), record.get("final")
