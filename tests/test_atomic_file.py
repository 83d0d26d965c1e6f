"""The one writer of files replaced whole and of appends (:mod:`lnpmsg.io.atomic_file`), and the
secret files built on it.

The full disk is real: a small tmpfs (:mod:`lnpmsg.testing.disk`), where the
kernel writes what fits of a write and then fails it, so a failure comes
half-way through the data. An append that fails is cut back off, so what
a later append adds is never dropped by a reader that cuts a torn tail.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from lnpmsg.channels.records import frame, parse_frames
from lnpmsg.io.atomic_file import append_whole, temp_path, write_atomic, write_temp
from lnpmsg.io.secret_file import create_secret_file
from lnpmsg.node.full_disk import cannot
from lnpmsg.testing.disk import DiskFiller, small_disk


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("durable", [True, False])
def test_a_file_is_replaced_whole_with_the_mode_asked(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old", durable=durable)
    write_atomic(path, b"new", durable=durable)
    assert path.read_bytes() == b"new" and not leftovers(tmp_path)
    assert mode_of(path) == 0o666 & ~_umask()
    secret = tmp_path / "control.json"
    write_atomic(secret, b"{}", durable=durable, mode=0o600)
    assert mode_of(secret) == 0o600


def test_a_temp_file_a_crash_left_is_replaced_and_does_not_lend_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    stale = temp_path(path)
    stale.write_bytes(b"half of an older write")
    stale.chmod(0o644)
    write_atomic(path, b"{}", mode=0o600)
    assert path.read_bytes() == b"{}" and mode_of(path) == 0o600 and not stale.exists()


def test_a_write_that_fails_half_way_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        path = disk / "state.json"
        write_atomic(path, b"old")
        filler = DiskFiller(disk)
        filler.fill()
        filler.give_back(8192)  # room for part of the new file: the kernel writes that much, then fails
        free = os.statvfs(disk).f_bfree
        with pytest.raises(OSError) as failed:
            write_atomic(path, os.urandom(64 * 1024))
        assert failed.value.errno == errno.ENOSPC
        assert failed.value.filename == str(path)  # the file written, not the temp file (a write alone names none)
        assert path.read_bytes() == b"old" and not leftovers(disk)
        assert os.statvfs(disk).f_bfree == free  # what the temp file took is given back
        # the callers' error mapping sees a full disk
        assert "No space left on device" in cannot("write", path, failed.value)
        filler.free()
        write_atomic(path, b"new")
        assert path.read_bytes() == b"new" and not leftovers(disk)


def test_a_rename_that_fails_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.mkdir()
    (path / "inside").write_bytes(b"old")  # a directory with entries: no file can be renamed over it
    with pytest.raises(OSError) as failed:
        write_atomic(path, b"new")
    assert failed.value.filename == str(path)
    assert (path / "inside").read_bytes() == b"old" and not leftovers(tmp_path)


def test_write_temp_removes_what_it_wrote_when_the_disk_is_full(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        filler = DiskFiller(disk)
        filler.fill()
        with pytest.raises(OSError) as failed:
            write_temp(disk / "x.tmp", os.urandom(20000), durable=True)
        assert failed.value.errno == errno.ENOSPC and not leftovers(disk)


def test_a_secret_file_is_linked_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    create_secret_file(path, b"first")
    assert path.read_bytes() == b"first" and mode_of(path) == 0o600
    with pytest.raises(FileExistsError):
        create_secret_file(path, b"second")
    assert path.read_bytes() == b"first" and not leftovers(tmp_path)


def test_a_secret_file_the_disk_cannot_hold_is_not_made_at_all(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        filler = DiskFiller(disk)
        filler.fill()
        filler.give_back(8192)
        with pytest.raises(OSError) as failed:
            create_secret_file(disk / "seed", os.urandom(64 * 1024))
        assert failed.value.errno == errno.ENOSPC
        assert not (disk / "seed").exists() and not leftovers(disk)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
