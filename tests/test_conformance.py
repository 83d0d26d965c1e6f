"""The transport conformance suites over every medium: through real Nodes
(lnpmsg.testing.conformance), and connection by connection below the node
(lnpmsg.testing.connections). Tor runs the same in tests/test_conformance_tor.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio

from lnpmsg.testing.conformance import CHECKS, Medium, MemoryMedium, TcpMedium, UdpMedium, ZmqMedium
from lnpmsg.testing.connections import CONNECTION_CHECKS, DEADLINE, medium_connection_pair

MEDIA = ["tcp", "udp", "zmq+tcp", "zmq+ipc", "mem"]


@pytest.fixture(params=MEDIA)
def medium(request: pytest.FixtureRequest) -> Iterator[Medium]:
    if request.param == "tcp":
        yield TcpMedium()
    elif request.param == "udp":
        yield UdpMedium()
    elif request.param == "zmq+tcp":
        yield ZmqMedium("tcp")
    elif request.param == "mem":
        yield MemoryMedium()
    else:
        # ipc socket paths must stay short: not under pytest's deep tmp_path
        directory = tempfile.mkdtemp(prefix="lnpconf-", dir="/tmp")
        try:
            yield ZmqMedium("ipc", directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("check", list(CHECKS))
async def test_conformance(medium: Medium, check: str) -> None:
    with trio.fail_after(medium.deadline_for(check)):
        await CHECKS[check](medium)


@pytest.mark.parametrize("check", list(CONNECTION_CHECKS))
async def test_connection_conformance(medium: Medium, check: str) -> None:
    with trio.fail_after(DEADLINE):
        await CONNECTION_CHECKS[check](lambda: medium_connection_pair(medium))
