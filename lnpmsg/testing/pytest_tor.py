"""pytest plugin: one private Tor network for the whole test session.

Enable it in ``conftest.py``::

    pytest_plugins = ["lnpmsg.testing.pytest_tor"]

then ask for the fixture; the network starts the first time a test needs
it (about 7-13 s) and stops after the last test::

    async def test_onion(private_tor_network, tmp_path):
        async with LaunchedTor(tmp_path, extra_torrc=private_tor_network.client_torrc_lines()) as tor:
            ...

The terminal summary reports how long the network took to start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lnpmsg.testing.tornet import PrivateTorNetwork

__all__ = ["private_tor_network"]

_startup: list[str] = []


@pytest.fixture(scope="session")
def private_tor_network() -> Iterator[PrivateTorNetwork]:
    """A running :class:`PrivateTorNetwork` (1 authority + 3 relays on 127.0.0.1), shared by the session."""
    network = PrivateTorNetwork()
    network.start()
    _startup.append(
        f"private Tor network: consensus with {len(network.nodes)} relays "
        f"{network.startup_seconds:.1f} s after the tors started ({network.total_start_seconds:.1f} s with key generation)"
    )
    try:
        yield network
    finally:
        network.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _startup:
        terminalreporter.write_line(line)
