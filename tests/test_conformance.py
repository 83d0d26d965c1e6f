"""The transport conformance suite (lnpmsg.testing.conformance) over every medium, through real Nodes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio

from lnpmsg.testing.conformance import CHECKS, Medium, TcpMedium, UdpMedium, ZmqMedium

MEDIA = ["tcp", "udp", "zmq+tcp", "zmq+ipc"]


@pytest.fixture(params=MEDIA)
def medium(request: pytest.FixtureRequest) -> Iterator[Medium]:
    if request.param == "tcp":
        yield TcpMedium()
    elif request.param == "udp":
        yield UdpMedium()
    elif request.param == "zmq+tcp":
        yield ZmqMedium("tcp")
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
