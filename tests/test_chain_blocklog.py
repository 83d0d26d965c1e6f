"""The embedded chain's block log on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`).

A block the disk cannot take is refused whole, with the chain's error, and
leaves the log as it was: a record the disk took only part of is cut back
off, and nothing of it stays buffered to land after the next block (which
the log, reopened, would then hold at a place its index never knew).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lnpmsg.bitcoin.block import BlockHeader
from lnpmsg.chain.blocklog import BlockLog
from lnpmsg.chain.errors import ChainError
from lnpmsg.testing.disk import DiskFiller, small_disk


def block(n: int, size: int) -> tuple[bytes, bytes]:
    """A record as the log sees one: an 80-byte header (its hash names it), then ``size`` bytes."""
    header = bytes([n]) * 80
    return BlockHeader.parse(header).hash, header + os.urandom(size)


# 5,000 bytes: more than the free end of the log's last page, less than the file's buffer
@pytest.mark.parametrize("size", [5_000, 20_000])
def test_a_block_the_disk_cannot_take_leaves_the_log_as_it_was(tmp_path: Path, size: int) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        path = disk / "blocks.log"
        log = BlockLog(path)
        first, first_raw = block(1, 100)
        log.append(first, first_raw)
        log.sync()
        filler = DiskFiller(disk)
        filler.fill()
        stored = path.read_bytes()
        refused, refused_raw = block(2, size)
        with pytest.raises(ChainError, match="No space left on device") as failed:
            log.append(refused, refused_raw)
        assert failed.value.code == "io"
        assert path.read_bytes() == stored and refused not in log
        filler.free()
        after, after_raw = block(3, 100)
        log.append(after, after_raw)
        log.sync()
        log.close()
        again = BlockLog(path)
        try:
            assert again.order == [first, after] and again.read(after) == after_raw
        finally:
            again.close()
