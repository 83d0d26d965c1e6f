"""The transport conformance suite over Tor, in the session's private Tor network.

Nodes listen on loopback ports behind onion services of one client Tor and
dial each other's ``NODEID@<onion>.onion:9735`` through its SOCKS port: the
same checks, through real Nodes, as every other transport
(tests/test_conformance.py). The bulk check moves the full 10,000 messages
each way and has its own, longer deadline; the other checks use smaller
counts (see :class:`~lnpmsg.testing.conformance.TorMedium`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio

from lnpmsg.testing.conformance import (
    BULK_MESSAGES,
    CHECKS,
    OnionPool,
    TorMedium,
    check_bulk_both_ways,
)
from lnpmsg.testing.connections import CONNECTION_CHECKS, medium_connection_pair
from lnpmsg.testing.tornet import PrivateTorNetwork

#: every check but the bulk one, which has its own test below
QUICK_CHECKS = [name for name, check in CHECKS.items() if check is not check_bulk_both_ways]


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


@pytest.mark.parametrize("check", QUICK_CHECKS)
async def test_conformance_over_tor(medium: TorMedium, check: str) -> None:
    with trio.fail_after(medium.deadline_for(check)):
        await CHECKS[check](medium)


async def test_bulk_both_ways_over_tor(medium: TorMedium) -> None:
    """10,000 messages of random sizes up to 65,535 bytes each way at once, as on every other medium."""
    assert medium.bulk_messages == BULK_MESSAGES
    with trio.fail_after(medium.deadline_for("bulk_both_ways")):
        await check_bulk_both_ways(medium)


@pytest.mark.parametrize("check", list(CONNECTION_CHECKS))
async def test_connection_conformance_over_tor(medium: TorMedium, check: str) -> None:
    """Below the node: one Tor connection (SOCKS5 to an onion service and back) keeps the Connection contract."""
    with trio.fail_after(medium.deadline):
        await CONNECTION_CHECKS[check](lambda: medium_connection_pair(medium))
