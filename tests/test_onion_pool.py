"""The test kit's onion pool: what it does when tor is not there yet.

The pool itself runs with real tor in tests/test_conformance_tor.py; here
the SOCKS port refuses, which is what a probe sees before tor is up.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import trio
import trio.testing

from lnpmsg.testing.media import HSDIR_STUCK_AFTER, OnionPool
from lnpmsg.transports.tor.process import pick_free_ports
from lnpmsg.transports.tcp import TcpTransport


async def test_a_probe_cut_short_frees_its_port_for_the_next_start(tmp_path: Path) -> None:
    """A start that times out is followed by another on the same ports: the probe's listener must be closed."""
    socks_port, port = pick_free_ports(2)  # nothing listens on socks_port: every dial fails
    pool = OnionPool([], tmp_path)
    pool.socks_port = socks_port
    pool.onions[port] = "a" * 56 + ".onion"
    gc.disable()  # the listener must be closed by the probe, not by the garbage collector
    try:
        with trio.move_on_after(1.0) as scope:
            await pool._probe(port)
        assert scope.cancelled_caught
        listener = await TcpTransport().listen(f"127.0.0.1:{port}")
        await listener.aclose()
    finally:
        gc.enable()


BOOTSTRAPPED = b"Dec 06 02:40:12.000 [notice] Bootstrapped 100% (done): Done\n"
NO_HSDIR = (
    b"Dec 06 02:40:12.000 [notice] Closed 1 streams for service [scrubbed].onion for reason resolve failed."
    b" Fetch status: No more HSDir available to query.\n"
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps only once nothing ran for 10 ms (the log is read in a thread)."""
    return trio.testing.MockClock(autojump_threshold=0.01)


async def _log_lines(path: Path, line: bytes, count: int) -> None:
    for _ in range(count):
        with open(path, "ab") as f:
            f.write(line)
        await trio.sleep(1.0)


async def test_a_start_stuck_without_an_hsdir_is_given_up_early(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    """Tor bootstrapped but finding no HSDir to ask, again and again: the pool starts tor again
    after HSDIR_STUCK_AFTER seconds, not after its whole start_timeout."""
    pool = OnionPool([], tmp_path)
    pool.log_path.write_bytes(b"an earlier start's log\n" + NO_HSDIR)
    offset = pool.log_path.stat().st_size
    with open(pool.log_path, "ab") as f:
        f.write(NO_HSDIR + BOOTSTRAPPED)
    began = trio.current_time()
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="no HSDir")):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_log_lines, pool.log_path, NO_HSDIR, 1000)
            await pool._watch_log(offset)
    assert HSDIR_STUCK_AFTER <= trio.current_time() - began <= HSDIR_STUCK_AFTER + 5


async def test_no_hsdir_for_a_moment_after_bootstrap_is_waited_out(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    """A good start logs 'No more HSDir' for a few seconds (until tor has the HSDir's descriptor): not stuck."""
    pool = OnionPool([], tmp_path)
    pool.log_path.write_bytes(BOOTSTRAPPED)
    with trio.move_on_after(3 * HSDIR_STUCK_AFTER) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_log_lines, pool.log_path, NO_HSDIR, 3)
            await pool._watch_log(0)
    assert scope.cancelled_caught
