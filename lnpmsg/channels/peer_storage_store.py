"""Peer storage on disk, and the rules of when to write and when to forget (BOLT 1 "Peer storage").

:class:`BlobStore` keeps one blob per peer, one file per peer named by its node id
(``<directory>/<66 hex digits>``), each replaced atomically (owner-only): a 16-byte header
(``received``: unix time as a double, ``closed_at``: the height at which the last channel with the
peer was seen closed, 0 while one is open; 4 bytes reserved) then the blob. The peer storage app
keeps two: the blobs peers asked us to keep (``theirs``) and the last blob each peer returned to us
(``ours``). Its methods do blocking file I/O: call them from a worker thread.

The rules are pure functions of their inputs (no clock, no I/O):
:class:`WriteSchedule` (at most one write per peer per interval; the latest blob wins) and
:func:`retention` (a blob is kept :data:`RETENTION_BLOCKS` after the last channel closed).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from lnpmsg.io.atomic_file import write_atomic

__all__ = ["RETENTION_BLOCKS", "WRITE_INTERVAL", "BlobStore", "StoredBlob", "WriteSchedule", "retention"]

log = logging.getLogger(__name__)

#: BOLT 1: a blob is kept at least this many blocks after all channels with its peer closed
RETENTION_BLOCKS = 2016
#: BOLT 1 allows rate-limiting a peer to one update per minute: seconds between two writes of one peer's blob
WRITE_INTERVAL = 60.0
_HEADER = struct.Struct(">dI4x")
#: the largest file the store reads (header and the largest blob a u16 length allows)
_MAX_FILE = _HEADER.size + 65535


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """What the store knows of a peer's blob without its contents."""

    size: int
    received: float
    closed_at: int = 0


class BlobStore:
    """One blob per peer in ``directory`` (see the module docs)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> dict[bytes, StoredBlob]:
        """Every peer's blob's size and header; files that are not the store's are logged and left alone."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        found: dict[bytes, StoredBlob] = {}
        for path in self.directory.iterdir():
            peer = _peer_of(path.name)
            if peer is None:
                continue  # (a temporary file of a write cut short, or not ours)
            try:
                with path.open("rb") as f:
                    header = f.read(_HEADER.size)
                size = path.stat().st_size - _HEADER.size
                if len(header) < _HEADER.size or not 0 <= size <= 65535:
                    raise ValueError("too short or too long")
            except (OSError, ValueError) as exc:
                log.warning("peer storage: %s is unreadable (%s): ignored", path, exc)
                continue
            received, closed_at = _HEADER.unpack(header)
            found[peer] = StoredBlob(size, received, closed_at)
        return found

    def read(self, peer: bytes) -> bytes | None:
        """The peer's blob (None: none, or unreadable: logged)."""
        try:
            with (self.directory / peer.hex()).open("rb") as f:
                data = f.read(_MAX_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("peer storage: cannot read the blob of %s: %s", peer.hex(), exc)
            return None
        if not _HEADER.size <= len(data) <= _MAX_FILE:
            log.warning("peer storage: the file of %s is damaged: ignored", peer.hex())
            return None
        return data[_HEADER.size :]

    def write(self, peer: bytes, blob: bytes, received: float, closed_at: int = 0) -> None:
        """Replace the peer's blob (atomically, durably: written before it counts as stored)."""
        write_atomic(self.directory / peer.hex(), _HEADER.pack(received, closed_at) + blob, mode=0o600)

    def mark_closed(self, peer: bytes, closed_at: int) -> None:
        """Record the height at which the peer's last channel was seen closed (0: one is open again)."""
        blob = self.read(peer)
        if blob is not None:
            path = self.directory / peer.hex()
            received = _HEADER.unpack(path.read_bytes()[: _HEADER.size])[0]
            self.write(peer, blob, received, closed_at)

    def delete(self, peer: bytes) -> None:
        """Forget the peer's blob."""
        try:
            os.unlink(self.directory / peer.hex())
        except FileNotFoundError:
            pass


def _peer_of(name: str) -> bytes | None:
    if len(name) != 66 or name[:2] not in ("02", "03"):
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


class WriteSchedule:
    """At most one write per peer every ``interval`` seconds; a blob that comes sooner waits, and
    a later one replaces it (BOLT 1: "MAY delay storage to ratelimit peer to no more than one
    update per minute", "MUST replace the old blob with the latest received"). Pure: the caller
    passes the time and writes."""

    def __init__(self, interval: float = WRITE_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[bytes, float] = {}
        #: blobs received and not yet written (at most one per peer)
        self.pending: dict[bytes, bytes] = {}

    def offer(self, peer: bytes, blob: bytes, now: float) -> float | None:
        """A blob arrived: None when a write of it is already due later (it replaced the waiting one),
        else the seconds to wait before writing it (0: now)."""
        waiting = peer in self.pending
        self.pending[peer] = blob
        if waiting:
            return None
        last = self._last.get(peer)
        return 0.0 if last is None else max(0.0, last + self.interval - now)

    def take(self, peer: bytes, now: float) -> bytes | None:
        """The blob to write now (the latest received), marking the write; None when there is none."""
        blob = self.pending.pop(peer, None)
        if blob is not None:
            self._last[peer] = now
        return blob

    def forget(self, peer: bytes) -> None:
        """Drop what the schedule holds of a peer."""
        self.pending.pop(peer, None)
        self._last.pop(peer, None)


def retention(stored: dict[bytes, StoredBlob], with_channel: set[bytes], height: int,
              keep: int = RETENTION_BLOCKS) -> tuple[dict[bytes, int], list[bytes]]:  # fmt: skip
    """What changes at ``height``: the peers whose ``closed_at`` changes (to ``height`` when their
    last channel is gone, to 0 when one is open again), and the peers whose blob is deleted
    (``keep`` blocks after their last channel closed)."""
    marks: dict[bytes, int] = {}
    deletes: list[bytes] = []
    for peer, blob in stored.items():
        if peer in with_channel:
            if blob.closed_at:
                marks[peer] = 0
        elif not blob.closed_at:
            marks[peer] = height
        elif height >= blob.closed_at + keep:
            deletes.append(peer)
    return marks, deletes
