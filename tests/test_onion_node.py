"""Onion-only nodes end to end in the session's private Tor network (real tor, 127.0.0.1 only).

Each node launches its own tor and publishes its own onion service; peers
dial each other by ``NODEID@<56 chars>.onion:9735``. One node also runs as a
real ``lnpmsg node --onion-only`` process, so that its sockets can be read
from the operating system (``/proc``), its Tor killed under it, and the
process restarted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import lnpmsg.node.dialing as dialing_module
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.tor_app import NodeTor, TorSettings
from lnpmsg.rpc.control_client import ControlCallError, ControlClient
from lnpmsg.testing.tornet import PrivateTorNetwork
from lnpmsg.transports.tor.address import OnionAddress, parse_onion_address
from lnpmsg.transports.tor.control import LaunchedTor
from lnpmsg.transports.tor.errors import ClearnetRefused, SocksError, TorControlError
from lnpmsg.transports.tor.process import pick_free_ports
from lnpmsg.wire import UnknownMessage

CUSTOM = 32771
MESSAGES = 1000
#: generous limits for a loaded 2-core machine; the private network needs far less
TOR_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 90.0


def tor_settings(network: PrivateTorNetwork, directory: Path) -> TorSettings:
    return TorSettings(
        directory,
        extra_torrc=tuple(network.client_torrc_lines()),
        bootstrap_timeout=TOR_TIMEOUT,
        publish_timeout=TOR_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
    )


def onion_node(network: PrivateTorNetwork, directory: Path, **config: Any) -> tuple[Node, NodeTor]:
    # pings every few seconds, so a connection that Tor dropped silently is noticed soon
    config.setdefault("ping_interval", 5.0)
    config.setdefault("pong_timeout", 10.0)
    node = Node(NodeKey.generate(), NodeConfig(onion_only=True, **config))
    return node, node.mount(NodeTor(tor_settings(network, directory)))


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        try:
            for node in nodes:
                await nursery.start(node.run)
            yield nursery
        finally:
            for node in nodes:
                node.stop()


async def new_peer(node: Node, node_id: bytes, old: Peer | None = None, timeout: float = RECOVERY_TIMEOUT) -> Peer:
    """Wait until ``node`` has a ready peer ``node_id`` other than ``old``."""
    with trio.fail_after(timeout):
        while True:
            peer = node.peers.get(node_id)
            if peer is not None and peer is not old and peer.is_ready:
                return peer
            await trio.sleep(0.1)


def collect(node: Node) -> tuple[list[bytes], trio.Event]:
    payloads: list[bytes] = []
    done = trio.Event()

    def on_custom(peer: Peer, message: UnknownMessage) -> None:
        payloads.append(message.payload)
        if len(payloads) == MESSAGES:
            done.set()

    node.add_handler(CUSTOM, on_custom)
    return payloads, done


def missing_onion() -> OnionAddress:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return OnionAddress(key)


# -- the OS's view of a process's sockets -------------------------------------

_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _decode_endpoint(text: str, family: int) -> tuple[str, int]:
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    # /proc prints each 32-bit word of the address in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(port, 16)


def process_sockets(pid: int) -> tuple[list[tuple[tuple[str, int], tuple[str, int], str]], int]:
    """The TCP sockets ``pid`` holds (local, remote, state), and how many UDP sockets it holds.

    Read from /proc: the process's open descriptors name socket inodes, and
    the kernel's TCP/UDP tables (of the process's network namespace) say
    where each inode is bound and connected.
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[len("socket:[") : -1]))
    tcp = []
    udp = 0
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6), ("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        with open(f"/proc/{pid}/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if int(fields[9]) not in inodes:
                    continue
                if table.startswith("udp"):
                    udp += 1
                    continue
                local = _decode_endpoint(fields[1], family)
                remote = _decode_endpoint(fields[2], family)
                tcp.append((local, remote, _TCP_STATES.get(fields[3], fields[3])))
    return tcp, udp


def assert_only_loopback(pid: int, service_port: int) -> None:
    sockets, udp = process_sockets(pid)
    assert udp == 0, "an onion-only node holds no UDP socket (no QUIC, no DNS)"
    listening = [local for local, _, state in sockets if state == "LISTEN"]
    # the listener behind the onion service is there, and on loopback only
    assert listening == [("127.0.0.1", service_port)], sockets
    connected = [s for s in sockets if s[2] != "LISTEN"]
    assert connected, "the node talks to its Tor (control and SOCKS connections)"
    for local, remote, _ in sockets:
        assert local[0] == "127.0.0.1", sockets
        if remote != ("0.0.0.0", 0):
            assert remote[0] == "127.0.0.1", sockets


# -- a real `lnpmsg node` process ---------------------------------------------


def lnpmsg_node(data_dir: Path, network: PrivateTorNetwork, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "lnpmsg.cli", "node", "--data-dir", str(data_dir), "--onion-only", "--json"]
    args += ["--tor-timeout", str(TOR_TIMEOUT), "--log-level", "debug"]
    for line in network.client_torrc_lines():
        args += ["--tor-option", line]
    return [*args, *extra]


async def start_process(data_dir: Path, network: PrivateTorNetwork, *extra: str) -> tuple[trio.Process, dict[str, Any]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = await trio.to_thread.run_sync(open, data_dir / "node.log", "ab")
    with log_file:
        process = await trio.lowlevel.open_process(
            lnpmsg_node(data_dir, network, *extra), stdout=subprocess.PIPE, stderr=log_file
        )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(TOR_TIMEOUT * 2):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                process.kill()
                await process.wait()
                raise AssertionError(f"lnpmsg node exited before starting:\n{(data_dir / 'node.log').read_text()[-3000:]}")
            line += chunk
    return process, json.loads(line)


async def stop_process(process: trio.Process) -> int:
    process.send_signal(signal.SIGINT)
    with trio.fail_after(20):
        return await process.wait()


async def wait_recovered(client: ControlClient, recoveries: int) -> dict[str, Any]:
    with trio.fail_after(RECOVERY_TIMEOUT):
        while True:
            status = await client.call("tor.status")
            if status["recoveries"] >= recoveries and status["state"] == "ready":
                return dict(status)
            await trio.sleep(0.2)


# -- tests ---------------------------------------------------------------------


async def test_two_onion_only_nodes_talk_and_survive_a_tor_crash(
    private_tor_network: PrivateTorNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialing_module, "RECONNECT_MAX_DELAY", 2.0)
    net = private_tor_network
    b, b_tor = onion_node(net, tmp_path / "b", onion_to_onion=True)
    b_payloads, b_done = collect(b)
    async with running(b):
        # The only address B has, reports and announces: its onion.
        assert b_tor.onion is not None
        onion = f"{b_tor.onion.hostname}:9735"
        assert b.listen_addresses == [onion]
        assert b.addresses == [f"{b.node_id.hex()}@{onion}"]
        assert parse_onion_address(b_tor.onion.hostname) == b_tor.onion
        assert stat.S_IMODE((tmp_path / "b" / "onion_key").stat().st_mode) == 0o600
        assert set(b.transports) == {"tor"}

        a, a_tor = onion_node(net, tmp_path / "a", connect=[b.addresses[0]])
        a_payloads, a_done = collect(a)
        async with running(a):
            peer = await new_peer(a, b.node_id, timeout=CONNECT_TIMEOUT * 2)
            back = await new_peer(b, a.node_id)
            assert peer.transport_kind == "tor" and peer.outbound
            assert peer.address == onion
            assert back.transport_kind == "tor" and not back.outbound
            # init went both ways; neither side told the other an address it saw
            for p in (peer, back):
                init = p.session.remote_init
                assert init is not None and init.remote_addr is None
                assert init.networks == (b._chain_hash,)
            assert await peer.ping() > 0
            assert await back.ping() > 0

            for i in range(MESSAGES):
                await peer.send(CUSTOM.to_bytes(2, "big") + b"a->b %d" % i)
                await back.send(CUSTOM.to_bytes(2, "big") + b"b->a %d" % i)
            with trio.fail_after(CONNECT_TIMEOUT):
                await a_done.wait()
                await b_done.wait()
            assert b_payloads == [b"a->b %d" % i for i in range(MESSAGES)]
            assert a_payloads == [b"b->a %d" % i for i in range(MESSAGES)]

            # B dials onions only: a clearnet target never reaches a socket
            # (a node B is not connected to: a connected one is returned as it is).
            stranger = NodeKey.generate().node_id.hex()
            with pytest.raises(ConnectError, match="not an onion address") as refused:
                await b.connect(f"{stranger}@127.0.0.1:9735")
            assert isinstance(refused.value.__cause__, ClearnetRefused)
            # A (clearnet allowed, through Tor) still cannot dial around Tor.
            with pytest.raises(ConnectError, match="cannot be carried by Tor"):
                await a.connect(f"udp://{b.node_id.hex()}@127.0.0.1:9735")
            # An onion nobody publishes: Tor says so, well within the timeout.
            ghost = missing_onion()
            with pytest.raises(ConnectError, match=f"onion service not reachable: {ghost.hostname}:9735") as unreachable:
                await a.connect(f"{NodeKey.generate().node_id.hex()}@{ghost.hostname}:9735")
            assert isinstance(unreachable.value.__cause__, SocksError)

            # Kill B's tor: B notices, launches a new one, republishes the same
            # onion from its key file; A reconnects to it by itself.
            assert isinstance(b_tor.handle, object) and b_tor.handle is not None
            pid = b_tor.handle.pid  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
            with trio.fail_after(RECOVERY_TIMEOUT):
                while b_tor.recoveries < 1 or b_tor.tor_state != "ready":
                    await trio.sleep(0.1)
            assert b_tor.handle.pid != pid  # type: ignore[attr-defined]
            assert b.listen_addresses == [onion]
            again = await new_peer(a, b.node_id, old=peer)
            assert again.address == onion
            assert await again.ping() > 0
        # A stopped: its tor is gone with it
        assert a_tor.handle is None and a_tor.tor_state == "stopped"
    assert b.listen_addresses == [] and b_tor.tor_state == "stopped"


async def test_onion_only_process_keeps_to_loopback_restarts_and_recovers(
    private_tor_network: PrivateTorNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialing_module, "RECONNECT_MAX_DELAY", 2.0)
    net = private_tor_network
    b_dir = tmp_path / "b"
    process, info = await start_process(b_dir, net, "--onion-to-onion")
    try:
        b_address = info["onion"]
        b_id = bytes.fromhex(info["node_id"])
        onion = b_address.split("@", 1)[1]
        assert info["listen"] == [onion] and info["addresses"] == [b_address]
        assert onion.endswith(".onion:9735")
        assert stat.S_IMODE((b_dir / "onion_key").stat().st_mode) == 0o600

        a, _ = onion_node(net, tmp_path / "a", connect=[b_address])
        a_payloads, _ = collect(a)
        async with running(a):
            peer = await new_peer(a, b_id, timeout=CONNECT_TIMEOUT * 2)
            assert await peer.ping() > 0
            async with ControlClient.open(b_dir) as client:
                getinfo = await client.call("getinfo")
                assert getinfo["listen"] == [onion] and getinfo["addresses"] == [b_address]
                status = await client.call("tor.status")
                assert status["onion"] == b_address and status["mode"] == "launched" and status["onion_only"]
                assert not status["clearnet_via_tor"]

                # B -> A over the control API, through both Tors
                payload = b"over tor".hex()
                await client.call("sendcustommsg", {"node_id": a.node_id.hex(), "type": CUSTOM, "payload": payload})
                with trio.fail_after(CONNECT_TIMEOUT):
                    while not a_payloads:
                        await trio.sleep(0.05)
                assert a_payloads == [b"over tor"]
                assert (await client.call("ping", {"node_id": a.node_id.hex()}))["rtt_ms"] > 0

                # The OS's word: every TCP socket of the node process is on 127.0.0.1.
                assert_only_loopback(process.pid, status["service_port"])

                with pytest.raises(ControlCallError, match="not an onion address.*onion-to-onion"):
                    await client.call("connect", {"address": f"{NodeKey.generate().node_id.hex()}@93.184.216.34:9735"})

                # Tor killed under the running node: it comes back with the same onion.
                os.kill(status["pid"], signal.SIGKILL)
                recovered = await wait_recovered(client, 1)
                assert recovered["onion"] == b_address and recovered["pid"] != status["pid"]
                assert recovered["service_port"] == status["service_port"]
                peer = await new_peer(a, b_id, old=peer)
                assert await peer.ping() > 0
                assert_only_loopback(process.pid, status["service_port"])
            log_text = (b_dir / "node.log").read_text()
            assert f"Tor lost: tor (pid {status['pid']}) exited with code -9" in log_text

            # Restart the process: the same onion address, and A reconnects.
            assert await stop_process(process) == 0
            process, info = await start_process(b_dir, net, "--onion-to-onion")
            assert info["onion"] == b_address and info["listen"] == [onion]
            peer = await new_peer(a, b_id, old=peer)
            assert await peer.ping() > 0
        assert await stop_process(process) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_attached_mixed_mode_node_reattaches_and_removes_its_service(
    private_tor_network: PrivateTorNetwork, tmp_path: Path
) -> None:
    net = private_tor_network
    control_port, socks_port = pick_free_ports(2)

    def system_tor() -> LaunchedTor:
        # a Tor someone else runs, always on the same ports, as a system Tor would be
        return LaunchedTor(
            tmp_path / "system",
            extra_torrc=net.client_torrc_lines(),
            control_port=control_port,
            socks_port=socks_port,
            bootstrap_timeout=TOR_TIMEOUT,
        )

    system = system_tor()
    await system.start()
    try:
        settings = TorSettings(
            tmp_path / "node",
            control=("127.0.0.1", control_port),
            cookie_path=system.cookie_path,
            bootstrap_timeout=TOR_TIMEOUT,
            publish_timeout=TOR_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT,
        )
        # mixed mode: a clearnet listener and the onion service side by side
        node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
        node_tor = node.mount(NodeTor(settings))
        # a second node dials through the same Tor's SOCKS port (no Tor of its own)
        dialer = Node(NodeKey.generate(), NodeConfig(onion_only=True, tor_socks=("127.0.0.1", socks_port)))
        plain = Node(NodeKey.generate(), NodeConfig())
        async with running(node, dialer, plain):
            assert node_tor.onion is not None
            service_id = node_tor.onion.service_id
            onion = f"{node.node_id.hex()}@{service_id}.onion:9735"
            (clearnet,) = set(node.addresses) - {onion}
            assert len(node.addresses) == 2 and clearnet.startswith(f"{node.node_id.hex()}@127.0.0.1:")
            assert {"tcp", "tor"} <= set(node.transports)
            assert (await plain.connect(clearnet)).transport_kind == "tcp"
            assert (await system.controller.get_info(f"hs/service/desc/id/{service_id}")).startswith("hs-descriptor 3")
            assert (await dialer.connect(onion)).transport_kind == "tor"
            assert (await new_peer(node, dialer.node_id)).transport_kind == "tor"
            assert (await new_peer(node, plain.node_id)).transport_kind == "tcp"

            # The system Tor dies and comes back: the node re-attaches and republishes.
            assert system.pid is not None
            os.kill(system.pid, signal.SIGKILL)
            await system.wait_exited()
            await system.aclose()
            with trio.fail_after(RECOVERY_TIMEOUT):
                while node_tor.tor_state != "recovering":
                    await trio.sleep(0.05)
            system = system_tor()
            await system.start()
            with trio.fail_after(RECOVERY_TIMEOUT):
                while node_tor.recoveries < 1 or node_tor.tor_state != "ready":
                    await trio.sleep(0.1)
            assert node_tor.onion.service_id == service_id
            assert (await system.controller.get_info(f"hs/service/desc/id/{service_id}")).startswith("hs-descriptor 3")
            peer = await dialer.connect(onion)
            assert await peer.ping() > 0
            assert sorted(node.addresses) == sorted([clearnet, onion])
        # The node stopped: its onion service is gone from the Tor, which runs on.
        with pytest.raises(TorControlError):
            await system.controller.get_info(f"hs/service/desc/id/{service_id}")
        assert system.returncode is None
    finally:
        await system.aclose()
