"""The failures peers gave for the HTLCs we offered, kept on disk until a payments layer has its own record (file shell).

A preimage a peer gives is kept by the channel monitor; a failure (the
``update_fail_htlc`` reason, or the ``update_fail_malformed_htlc`` code)
lives in the channel state only until the HTLC leaves both commitments.
Whoever offered the HTLC (a payment's part, a forward) must still read it
after that, also when it was not listening then, or the process died before
it wrote what the failure meant. So each failure is written here, with the
HTLC it fails, in the job that received it (after the channel's records,
before any message), and stays until the handler says it has its own record
(:meth:`FailureStore.remove`).

Layout: one file per failure, ``<channel key>-<htlc id>.fail`` in the
store's directory, written to a temporary file, fsynced and renamed (then
the directory fsynced): a crash leaves the whole file or none. Contents:
``LNF1``, CRC-32 of the rest, the ``update_add_htlc`` (length-prefixed), a
flag and the malformed code, then the failure onion. At most
:data:`MAX_KEPT` are kept (the oldest go first). Blocking calls: run them in
a worker thread from async code.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.node.full_disk import cannot
from lnpmsg.wire import WireError

from .errors import ChannelStoreError
from .messages import UpdateAddHtlc

__all__ = ["MAX_KEPT", "FailureStore", "OfferedFailure"]

log = logging.getLogger(__name__)

#: failures kept at most (beyond, the oldest go: one nobody claimed in that long is stale)
MAX_KEPT = 10_000
_MAGIC = b"LNF1"
_SUFFIX = ".fail"
_HEAD = struct.Struct(">4sI")
_BODY = struct.Struct(">H")
_CODE = struct.Struct(">?H")


@dataclass(frozen=True, slots=True)
class OfferedFailure:
    """A peer failed the HTLC ``add`` we offered on channel ``channel_key``: ``reason`` (a failure
    onion) or ``failure_code`` (the peer could not read the onion)."""

    channel_key: str
    add: UpdateAddHtlc
    reason: bytes | None
    failure_code: int | None

    @property
    def ref(self) -> tuple[str, int]:
        """(channel key, htlc id): the HTLC's name."""
        return self.channel_key, self.add.id


def encode(failure: OfferedFailure) -> bytes:
    """The file's bytes for ``failure``."""
    add = failure.add.encode()
    code = failure.failure_code
    body = _BODY.pack(len(add)) + add + _CODE.pack(code is not None, code or 0) + (failure.reason or b"")
    return _HEAD.pack(_MAGIC, zlib.crc32(body)) + body


def decode(channel_key: str, data: bytes) -> OfferedFailure:
    """A failure from its file's bytes (ValueError when they are not one)."""
    if len(data) < _HEAD.size + _BODY.size:
        raise ValueError("too short")
    magic, crc = _HEAD.unpack_from(data)
    body = data[_HEAD.size :]
    if magic != _MAGIC or zlib.crc32(body) != crc:
        raise ValueError("not a failure file, or damaged")
    (size,) = _BODY.unpack_from(body)
    start = _BODY.size + size
    try:
        add = UpdateAddHtlc.decode(body[_BODY.size : start])
    except WireError as exc:
        raise ValueError(f"its update_add_htlc: {exc}") from None
    has_code, code = _CODE.unpack_from(body, start)
    reason = body[start + _CODE.size :]
    return OfferedFailure(channel_key, add, None if has_code else reason, code if has_code else None)


class FailureStore:
    """The failures kept in ``directory`` (created if missing), loaded at open.

    :class:`~.errors.ChannelStoreError` naming the directory or file when it cannot be opened
    (a full disk); :meth:`add` raises the ``OSError`` (naming the file) for the channel
    manager to handle as any write of a job's."""

    def __init__(self, directory: str | Path, max_kept: int = MAX_KEPT) -> None:
        self.directory = Path(directory)
        self.max_kept = max_kept
        #: (channel key, htlc id) -> failure, oldest first
        self.kept: dict[tuple[str, int], OfferedFailure] = {}
        try:
            self._load()
        except OSError as exc:
            raise ChannelStoreError(cannot("open the failure store at", exc.filename or self.directory, exc)) from exc

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        files = []
        for path in self.directory.iterdir():
            if path.suffix == ".tmp":  # a write a crash cut short: its failure is still in the channel state
                path.unlink(missing_ok=True)
            elif path.suffix == _SUFFIX:
                files.append((path.stat().st_mtime_ns, path))
        for _, path in sorted(files):
            key, _, htlc_id = path.stem.rpartition("-")
            try:
                failure = decode(key, path.read_bytes())
            except (ValueError, struct.error) as exc:
                log.warning("channels: skipping %s: %s", path, exc)
                continue
            if str(failure.add.id) != htlc_id:
                log.warning("channels: skipping %s: it holds HTLC %d", path, failure.add.id)
                continue
            self.kept[failure.ref] = failure

    def _path(self, ref: tuple[str, int]) -> Path:
        return self.directory / f"{ref[0]}-{ref[1]}{_SUFFIX}"

    def add(self, failure: OfferedFailure) -> None:
        """Keep ``failure`` (durably, before this returns); the oldest goes beyond :attr:`max_kept`."""
        write_atomic(self._path(failure.ref), encode(failure))
        self.kept.pop(failure.ref, None)
        self.kept[failure.ref] = failure
        while len(self.kept) > self.max_kept:
            oldest = next(iter(self.kept))
            log.warning("channels: forgetting the failure of HTLC %s/%d: more than %d kept", oldest[0][:16], oldest[1], self.max_kept)
            self.remove(oldest)

    def remove(self, ref: tuple[str, int]) -> None:
        """Forget the failure of HTLC ``ref`` (not synced: one that comes back is reported again, harmlessly)."""
        if self.kept.pop(ref, None) is not None:
            self._path(ref).unlink(missing_ok=True)
