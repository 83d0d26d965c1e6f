"""The append logs on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`): a write that
fails leaves the file as it was, so what a later write adds is never dropped by a reader that
cuts a torn tail. (Files replaced whole: tests/test_atomic_file.py.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lnpmsg.chain.datadir import append_whole
from lnpmsg.channels.records import frame, parse_frames
from lnpmsg.testing.disk import DiskFiller, small_disk


def test_an_append_that_does_not_fit_leaves_the_file_whole_and_the_next_one_lands(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        log = disk / "a.log"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            append_whole(fd, frame(0, b"first"))
            filler = DiskFiller(disk)
            filler.fill()
            size = log.stat().st_size
            big = frame(1, os.urandom(8000))  # more than the free end of the file's last page: part of it fits
            with pytest.raises(OSError) as failed:
                append_whole(fd, big)
            assert failed.value.errno == errno.ENOSPC
            assert log.stat().st_size == size  # the part that fitted was cut back off
            filler.free()
            append_whole(fd, frame(1, b"second"))
        finally:
            os.close(fd)
        frames, good = parse_frames(log.read_bytes())
        assert frames == [(0, b"first"), (1, b"second")] and good == log.stat().st_size

