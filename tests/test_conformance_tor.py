"""The transport conformance suite over Tor, in the session's private Tor network.

Nodes listen on loopback ports behind onion services of one client Tor and
dial each other's ``NODEID@<onion>.onion:9735`` through its SOCKS port: the
same checks, through real Nodes, as every other transport
(tests/test_conformance.py); only the message counts are smaller (see
:class:`~lnpmsg.testing.conformance.TorMedium`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio

from lnpmsg.testing.conformance import CHECKS, OnionPool, TorMedium
from lnpmsg.testing.tornet import PrivateTorNetwork


@pytest.fixture(scope="module")
def onion_pool(private_tor_network: PrivateTorNetwork) -> Iterator[OnionPool]:
    directory = tempfile.mkdtemp(prefix="lnpconf-tor-", dir="/tmp")
    try:
        with OnionPool(private_tor_network.client_torrc_lines(), directory) as pool:
            yield pool
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def medium(onion_pool: OnionPool) -> TorMedium:
    return onion_pool.medium()


@pytest.mark.parametrize("check", list(CHECKS))
async def test_conformance_over_tor(medium: TorMedium, check: str) -> None:
    with trio.fail_after(medium.deadline):
        await CHECKS[check](medium)
