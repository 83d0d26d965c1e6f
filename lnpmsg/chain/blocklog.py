"""An append-only log of every block the kernel accepted, lnpmsg's own copy.

The kernel writes its state only when it is closed cleanly; this log is
written (and fsynced) as each block is accepted, so that after a crash the
chain is rebuilt by replaying it. It also serves blocks by hash without a
kernel round trip.

File format (``blocks.log``)::

    file   = MAGIC record*
    record = length:u32le crc32:u32le block[length]

A record cut short at the end of the file is a write the process did not
finish: it is dropped (the block is not lost: the kernel never flushed it
either, or the replay from the kernel's disk restores it). Anything else that
does not parse, a wrong checksum or wrong magic, is corruption: ``ChainError``.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from lnpmsg.bitcoin.block import HEADER_BYTES, BlockHeader
from lnpmsg.bitcoin.encoding import MAX_BLOCK_BYTES
from lnpmsg.chain.errors import ChainError
from lnpmsg.io.atomic_file import append_whole

__all__ = ["BLOCK_LOG_MAGIC", "BlockLog"]

BLOCK_LOG_MAGIC = b"LNPMSG-BLOCKLOG1"
_RECORD_HEADER = struct.Struct("<II")
#: what to do about a damaged log: the kernel's files hold the blocks of its last clean close
_DAMAGED_LOG_ADVICE = (
    "Move it aside and start again: the log is rebuilt from the kernel's block files "
    "(blocks mined after the kernel's last clean close are lost)"
)


class BlockLog:
    """Blocks by hash, in the order they were accepted (parents first)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: dict[bytes, tuple[int, int, int]] = {}
        self.order: list[bytes] = []
        if not path.exists():
            with open(path, "wb") as f:
                f.write(BLOCK_LOG_MAGIC)
                f.flush()
                os.fsync(f.fileno())
        self._file = open(path, "r+b")  # noqa: SIM115 (open for the log's lifetime)
        try:
            self._load()
        except BaseException:
            self._file.close()
            raise

    def _load(self) -> None:
        f = self._file
        magic = f.read(len(BLOCK_LOG_MAGIC))
        if magic != BLOCK_LOG_MAGIC:
            raise ChainError(
                f"{self.path} is not an lnpmsg block log (bad magic). {_DAMAGED_LOG_ADVICE}", code="corrupt"
            )
        pos = len(BLOCK_LOG_MAGIC)
        size = os.fstat(f.fileno()).st_size
        while pos < size:
            head = f.read(_RECORD_HEADER.size)
            if len(head) < _RECORD_HEADER.size:
                break
            length, crc = _RECORD_HEADER.unpack(head)
            if not HEADER_BYTES < length <= MAX_BLOCK_BYTES:
                raise ChainError(
                    f"{self.path}: bad record length at offset {pos}. {_DAMAGED_LOG_ADVICE}", code="corrupt"
                )
            body = f.read(length)
            if len(body) < length:
                break
            if zlib.crc32(body) != crc:
                raise ChainError(
                    f"{self.path}: checksum mismatch at offset {pos}. {_DAMAGED_LOG_ADVICE}", code="corrupt"
                )
            block_hash = BlockHeader.parse(body[:HEADER_BYTES]).hash
            self._offsets[block_hash] = (pos + _RECORD_HEADER.size, length, crc)
            self.order.append(block_hash)
            pos += _RECORD_HEADER.size + length
        if pos < size:
            # a torn final write: cut it off so the next append starts clean
            f.truncate(pos)
        f.seek(pos)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._offsets

    def __len__(self) -> int:
        return len(self.order)

    def append(self, block_hash: bytes, raw: bytes) -> None:
        """Add a block (idempotent); ``sync`` makes it durable."""
        if block_hash in self._offsets:
            return
        pos = self._file.seek(0, os.SEEK_END)
        crc = zlib.crc32(raw)
        try:
            # Past the file's buffer: a record the disk took only part of is cut back off, and
            # no unwritten rest stays buffered to land later, after the records that follow.
            append_whole(self._file.fileno(), _RECORD_HEADER.pack(len(raw), crc) + raw, durable=False)
        except OSError as exc:
            raise ChainError(f"cannot write {self.path}: {exc}", code="io") from exc
        self._offsets[block_hash] = (pos + _RECORD_HEADER.size, len(raw), crc)
        self.order.append(block_hash)

    def sync(self) -> None:
        """Make every appended block durable (one fsync per chain operation, not per block)."""
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise ChainError(f"cannot write {self.path}: {exc}", code="io") from exc

    def read(self, block_hash: bytes) -> bytes:
        """A block by hash; its checksum is checked on every read (damage
        after the log was opened is a ``corrupt`` ChainError, not bad data)."""
        try:
            offset, length, crc = self._offsets[block_hash]
        except KeyError:
            raise ChainError(
                f"unknown block {block_hash[::-1].hex()}", code="not-found"
            ) from None
        raw = os.pread(self._file.fileno(), length, offset)
        if len(raw) != length or zlib.crc32(raw) != crc:
            raise ChainError(
                f"{self.path}: block {block_hash[::-1].hex()} at offset {offset - _RECORD_HEADER.size} "
                "is damaged (checksum mismatch)",
                code="corrupt",
            )
        return raw

    def close(self) -> None:
        self._file.close()
