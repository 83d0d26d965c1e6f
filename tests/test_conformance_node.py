"""One node, every transport: default transports, several listeners of different
kinds at once, canonical addresses that round-trip, and `lnpmsg node` printing
addresses that other nodes dial as they are."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.testing.conformance import MESSAGE_TYPE, Traffic, running, wait_until
from lnpmsg.transports.address import (
    PeerAddress,
    format_peer_address,
    parse_listen_address,
    parse_peer_address,
)
from lnpmsg.transports.registry import DEFAULT_KINDS, default_transports
from lnpmsg.transports.tcp import TcpTransport
from lnpmsg.transports.tor import TorError, TorTransport
from lnpmsg.transports.udp import UdpTransport
from lnpmsg.transports.zmq import ZmqTransport

NODE = "03" + "5a" * 32


@pytest.fixture
def short_dir() -> Iterator[str]:
    # ipc socket paths are limited to about 100 bytes: not under pytest's tmp_path
    directory = tempfile.mkdtemp(prefix="lnpnode-", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_default_transports_are_tcp_udp_zmq_and_tor_only_when_configured() -> None:
    transports = default_transports()
    assert set(transports) == set(DEFAULT_KINDS) == {"tcp", "udp", "zmq"}
    assert isinstance(transports["tcp"], TcpTransport)
    assert isinstance(transports["udp"], UdpTransport)
    assert isinstance(transports["zmq"], ZmqTransport)
    node = Node(NodeKey.generate())
    assert set(node.transports) == {"tcp", "udp", "zmq"}
    with_tor = Node(NodeKey.generate(), NodeConfig(tor_socks=("127.0.0.1", 9050)))
    assert set(with_tor.transports) == {"tcp", "udp", "zmq", "tor"}
    tor = with_tor.transports["tor"]
    assert isinstance(tor, TorTransport) and tor.socks_address == ("127.0.0.1", 9050)
    assert not tor.allow_clearnet
    with pytest.raises(TorError, match="loopback"):
        default_transports(tor_socks=("192.0.2.1", 9050))
    # a node given its own transports uses exactly those
    assert set(Node(NodeKey.generate(), transports={"tcp": TcpTransport()}).transports) == {"tcp"}


@pytest.mark.parametrize(
    ("listen", "kind", "target"),
    [
        ("127.0.0.1:9735", "tcp", "127.0.0.1:9735"),
        ("[::1]:9735", "tcp", "[::1]:9735"),
        ("udp://127.0.0.1:9735", "udp", "127.0.0.1:9735"),
        ("lnpu://127.0.0.1:9735", "udp", "127.0.0.1:9735"),
        ("zmq+tcp://127.0.0.1:9736", "zmq", "tcp://127.0.0.1:9736"),
        ("lnpz://127.0.0.1:9736", "zmq", "tcp://127.0.0.1:9736"),
        ("zmq+ipc:///run/lnp.sock", "zmq", "ipc:///run/lnp.sock"),
        ("tor://127.0.0.1:9735", "tor", "127.0.0.1:9735"),
    ],
)
def test_listen_addresses_round_trip_for_every_kind(listen: str, kind: str, target: str) -> None:
    address = parse_listen_address(listen)
    assert (address.kind, address.target, address.node_id) == (kind, target, None)
    assert parse_listen_address(format_peer_address(address)) == address
    # The same listener with a node id is a peer address, and round-trips too.
    node_id = bytes.fromhex(NODE)
    full = PeerAddress(kind, target, node_id)
    assert parse_peer_address(format_peer_address(full)) == full


@given(
    kind=st.sampled_from(["zmq+tcp", "zmq+ipc", "udp", "tcp"]),
    host=st.sampled_from(["127.0.0.1", "[::1]", "example.com", "10.1.2.3"]),
    path=st.from_regex(r"(/[a-zA-Z0-9._-]{1,12}){1,4}", fullmatch=True),
    port=st.integers(0, 65535),
    with_id=st.booleans(),
)
def test_round_trip_with_and_without_node_id(kind: str, host: str, path: str, port: int, with_id: bool) -> None:
    node_id = bytes.fromhex(NODE) if with_id else None
    if kind == "zmq+ipc":
        address = PeerAddress("zmq", f"ipc://{path}", node_id)
    elif kind == "zmq+tcp":
        address = PeerAddress("zmq", f"tcp://{host}:{port}", node_id)
    else:
        address = PeerAddress(kind, f"{host}:{port}", node_id)
    text = format_peer_address(address)
    parse = parse_peer_address if with_id else parse_listen_address
    assert parse(text) == address
    assert format_peer_address(parse(text)) == text


async def test_one_node_listens_on_every_kind_at_once_and_serves_each(short_dir: str) -> None:
    hub = Node(
        NodeKey.generate(),
        NodeConfig(listen=["127.0.0.1:0", "udp://127.0.0.1:0", "zmq+tcp://127.0.0.1:0", f"zmq+ipc://{short_dir}/hub.sock"]),
    )
    clients = [Node(NodeKey.generate()) for _ in range(4)]
    to_hub, to_clients = Traffic(seed=21), Traffic(seed=22)
    hub.add_handler(MESSAGE_TYPE, to_hub.handler)
    for client in clients:
        client.add_handler(MESSAGE_TYPE, to_clients.handler)
    async with running(hub, *clients) as nursery:
        kinds = [parse_listen_address(a).kind for a in hub.listen_addresses]
        assert kinds == ["tcp", "udp", "zmq", "zmq"]
        assert hub.listen_addresses[0].startswith("127.0.0.1:")
        assert hub.listen_addresses[1].startswith("udp://127.0.0.1:")
        assert hub.listen_addresses[2].startswith("zmq+tcp://127.0.0.1:")
        assert hub.listen_addresses[3] == f"zmq+ipc://{short_dir}/hub.sock"
        for address in hub.addresses:
            parsed = parse_peer_address(address)
            assert parsed.node_id == hub.node_id and format_peer_address(parsed) == address
        # Each client reaches the hub over another kind; the hub's apps see the same API for all.
        peers = []
        for index, (client, address) in enumerate(zip(clients, hub.addresses, strict=True)):
            peer = await client.connect(address)
            peers.append(peer)
            nursery.start_soon(to_hub.send, peer, index, 100)
        assert [p.transport_kind for p in peers] == ["tcp", "udp", "zmq", "zmq"]
        await wait_until(lambda: len(hub.peers) == 4, "the hub to accept every client")
        assert sorted(hub.peers[c.node_id].transport_kind for c in clients) == ["tcp", "udp", "zmq", "zmq"]
        for index, client in enumerate(clients):
            nursery.start_soon(to_clients.send, hub.peers[client.node_id], 10 + index, 100)
        await to_hub.wait_for({i: 100 for i in range(4)})
        await to_clients.wait_for({10 + i: 100 for i in range(4)})
        for index, client in enumerate(clients):
            assert to_hub.senders[index] == client.node_id
            assert to_clients.senders[10 + index] == hub.node_id


async def test_every_alias_of_an_address_reaches_the_same_node() -> None:
    hub = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0", "udp://127.0.0.1:0", "zmq+tcp://127.0.0.1:0"]))
    client = Node(NodeKey.generate())
    async with running(hub, client):
        tcp, udp, zmq = (parse_listen_address(a).target for a in hub.listen_addresses)
        node = hub.node_id.hex()
        zmq_host_port = zmq.removeprefix("tcp://")
        forms = [
            (f"{node}@{tcp}", "tcp"),
            (f"tcp://{node}@{tcp}", "tcp"),
            (f"lnp://{node}@{tcp}", "tcp"),
            (f"bolt://{node}@{tcp}", "tcp"),
            (f"udp://{node}@{udp}", "udp"),
            (f"lnpu://{node}@{udp}", "udp"),
            (f"zmq+tcp://{node}@{zmq_host_port}", "zmq"),
            (f"lnpz://{node}@{zmq_host_port}", "zmq"),
        ]
        for text, kind in forms:
            peer = await client.connect(text)
            assert peer.transport_kind == kind, text
            assert await peer.ping() >= 0
            await client.disconnect(hub.node_id)
            await wait_until(lambda: client.node_id not in hub.peers, "the hub to drop the client")


async def test_a_kind_without_a_transport_fails_clearly() -> None:
    node = Node(NodeKey.generate(), transports={"tcp": TcpTransport()})
    async with running(node):
        with pytest.raises(ConnectError, match="no udp transport is enabled"):
            await node.connect(f"udp://{NODE}@127.0.0.1:9")
        with pytest.raises(ConnectError, match="no tor transport is enabled"):
            await node.connect(f"{NODE}@{'a' * 56}.onion:9735")


async def test_cli_prints_canonical_addresses_that_other_nodes_dial_as_they_are(short_dir: str) -> None:
    listen = ["127.0.0.1:0", "udp://127.0.0.1:0", "zmq+tcp://127.0.0.1:0", f"zmq+ipc://{short_dir}/cli.sock"]
    args = [sys.executable, "-m", "lnpmsg.cli", "node", "--data-dir", f"{short_dir}/data", "--no-control", "--json"]
    for address in listen:
        args += ["--listen", address]
    process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the node exited before printing its addresses"
                line += chunk
        info = json.loads(line)
        node_id = info["node_id"]
        assert [parse_listen_address(a).kind for a in info["listen"]] == ["tcp", "udp", "zmq", "zmq"]
        assert info["addresses"][0].startswith(f"{node_id}@127.0.0.1:")
        assert info["addresses"][1].startswith(f"udp://{node_id}@127.0.0.1:")
        assert info["addresses"][2].startswith(f"zmq+tcp://{node_id}@127.0.0.1:")
        assert info["addresses"][3] == f"zmq+ipc://{node_id}@{short_dir}/cli.sock"
        client = Node(NodeKey.generate())
        async with running(client):
            for address, kind in zip(info["addresses"], ["tcp", "udp", "zmq", "zmq"], strict=True):
                peer = await client.connect(address)
                assert peer.transport_kind == kind and peer.node_id.hex() == node_id
                assert await peer.ping() >= 0
                await client.disconnect(peer.node_id)
    finally:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
    assert process.returncode == 0
