"""The test kit's onion pool: what it does when tor is not there yet.

The pool itself runs with real tor in tests/test_conformance_tor.py; here
the SOCKS port refuses, which is what a probe sees before tor is up.
"""

from __future__ import annotations

import gc
from pathlib import Path

import trio

from lnpmsg.testing.media import OnionPool
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
