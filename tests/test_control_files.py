"""The data dir's control lock: a node takes it once, clients test it
without taking it, so a client looking never stops a node from starting."""

from __future__ import annotations

import os

import pytest

from lnpmsg.rpc import control_files
from lnpmsg.rpc.control_files import LockHeld, lock_held, take_lock


@pytest.fixture(params=["ofd", "flock"])
def lock_kind(request, monkeypatch):
    """Both ways of locking: open-file-description locks, and flock where the system has none."""
    if request.param == "flock":
        monkeypatch.setattr(control_files, "_OFD", False)
    else:
        assert control_files._OFD  # Linux has them: the tests run there
    return request.param


def test_the_lock_is_held_once_and_seen_by_clients(tmp_path, lock_kind):
    assert not lock_held(tmp_path)  # no lock file yet
    fd = take_lock(tmp_path)
    try:
        assert lock_held(tmp_path) and lock_held(tmp_path)  # looking twice changes nothing
        with pytest.raises(LockHeld, match="already running"):
            take_lock(tmp_path)  # a second node, even in this process
        assert lock_held(tmp_path)  # the failed attempt did not release it
    finally:
        os.close(fd)
    assert not lock_held(tmp_path)
    os.close(take_lock(tmp_path))  # free again


def test_a_node_starting_while_a_client_looks_takes_the_lock(tmp_path, monkeypatch):
    """The node takes its lock at the worst moment: while a client's look at
    the lock file is under way (its file still open). A look that took a
    lock of its own (as a shared flock did) made that node fail to start
    with "a node is already running"."""
    os.close(take_lock(tmp_path))  # the lock file exists, nobody holds it
    real_close = os.close
    taken: list[int] = []

    def node_starts_then_close(fd: int) -> None:
        if not taken:
            taken.append(-1)
            taken[0] = take_lock(tmp_path)
        real_close(fd)

    with monkeypatch.context() as patch:
        patch.setattr(control_files.os, "close", node_starts_then_close)
        assert not lock_held(tmp_path)  # nobody held it when the client looked
    try:
        assert taken[0] >= 0 and lock_held(tmp_path)
    finally:
        real_close(taken[0])
