"""End to end in the session's private Tor network (real tor, 127.0.0.1 only):
an onion service in front of a trio echo listener, dialed by name through
another Tor's SOCKS port, a restart that keeps the address, and a dial to
an onion that does not exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lnpmsg.testing.tornet import PrivateTorNetwork
from lnpmsg.transports.base import Connection
from lnpmsg.transports.tor.address import OnionAddress
from lnpmsg.transports.tor.control import AttachedTor, BootstrapStatus, LaunchedTor
from lnpmsg.transports.tor.errors import ClearnetRefused, SocksError
from lnpmsg.transports.tor.onion import OnionService
from lnpmsg.transports.tor.transport import TorTransport

#: generous bounds for a loaded 2-core machine; the network needs far less
BOOTSTRAP_TIMEOUT = 60.0
PUBLISH_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0
PEER_ID = "03" + "cd" * 32


async def echo(conn: Connection) -> None:
    while data := await conn.receive_some():
        await conn.send_frames([data])


async def exchange(conn: Connection, payload: bytes) -> bytes:
    """Send ``payload`` (as several frames) and read back as many bytes."""
    frames = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.send_frames, frames)
        while len(got) < len(payload):
            data = await conn.receive_some()
            assert data, "connection closed early"
            got += data
    return bytes(got)


def launched(
    network: PrivateTorNetwork,
    directory: Path,
    progress: list[BootstrapStatus] | None = None,
) -> LaunchedTor:
    return LaunchedTor(
        directory,
        extra_torrc=network.client_torrc_lines(),
        bootstrap_timeout=BOOTSTRAP_TIMEOUT,
        on_progress=None if progress is None else progress.append,
    )


def test_private_network_is_up(private_tor_network: PrivateTorNetwork) -> None:
    net = private_tor_network
    consensus = net.consensus()
    assert set(consensus) == {node.fingerprint for node in net.nodes}
    for node in net.nodes:
        assert {"Running", "Valid", "Guard"} <= consensus[node.fingerprint]
        assert node.process is not None and node.process.poll() is None
    assert "HSDir" in consensus[net.authority.fingerprint]
    assert not any("Exit" in flags for flags in consensus.values())
    lines = net.client_torrc_lines()
    assert "TestingTorNetwork 1" in lines
    assert any(
        line.startswith("DirAuthority auth0 ")
        and line.endswith(net.authority.fingerprint)
        for line in lines
    )
    assert net.startup_seconds is not None


async def test_onion_echo_and_restart(
    private_tor_network: PrivateTorNetwork, tmp_path: Path
) -> None:
    net = private_tor_network
    key_file = tmp_path / "host" / "onion.key"
    progress: list[BootstrapStatus] = []
    async with trio.open_nursery() as nursery:
        listener = await TorTransport(("127.0.0.1", 9)).listen("127.0.0.1:0")
        nursery.start_soon(listener.serve, echo)

        async with launched(net, tmp_path / "client") as client_tor:
            # The dialing side attaches to its Tor by cookie, as a node would to a system Tor.
            assert isinstance(client_tor, LaunchedTor)
            host, port = client_tor.control_address
            async with AttachedTor(
                host, port, cookie_path=client_tor.cookie_path
            ) as attached:
                dialer = attached.transport(connect_timeout=CONNECT_TIMEOUT)

                async with launched(net, tmp_path / "host", progress) as host_tor:
                    assert progress[-1].done and [
                        p.progress for p in progress
                    ] == sorted(p.progress for p in progress)
                    service = OnionService(
                        host_tor.controller,
                        key_file,
                        listener.port,
                        publish_timeout=PUBLISH_TIMEOUT,
                    )
                    address = await service.start()
                    conn = await dialer.dial(f"{PEER_ID}@{service.target}")
                    assert conn.remote_address == f"{address.hostname}:9735"
                    assert (
                        await exchange(conn, b"hello over onion") == b"hello over onion"
                    )
                    payload = os.urandom(100_000)
                    assert await exchange(conn, payload) == payload
                    await conn.aclose()
                    await service.aclose()

                # Restart the hosting Tor from its directory: same key file, same address.
                async with launched(net, tmp_path / "host") as host_tor:
                    again = OnionService(
                        host_tor.controller,
                        key_file,
                        listener.port,
                        publish_timeout=PUBLISH_TIMEOUT,
                    )
                    async with again:
                        assert again.address == address
                        conn = await dialer.dial(again.target)
                        assert (
                            await exchange(conn, b"same address after restart")
                            == b"same address after restart"
                        )
                        await conn.aclose()

                with pytest.raises(ClearnetRefused):
                    await dialer.dial("127.0.0.1:9735")
        await listener.aclose()
        nursery.cancel_scope.cancel()


async def test_dial_to_missing_onion_fails_clearly(
    private_tor_network: PrivateTorNetwork, tmp_path: Path
) -> None:
    key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    missing = OnionAddress(key)
    async with launched(private_tor_network, tmp_path) as tor:
        transport = tor.transport(connect_timeout=CONNECT_TIMEOUT)
        with pytest.raises(
            SocksError, match=f"^onion service not reachable: {missing.hostname}:9735: "
        ) as info:
            await transport.dial(f"{missing.hostname}:9735")
    # Tor answers (descriptor not found) well before the timeout would.
    assert info.value.code == 0xF0
