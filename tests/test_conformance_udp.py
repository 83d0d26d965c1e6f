"""UDP beyond the common suite, through real Nodes: datagram loss and reordering,
a peer whose address changes, and hostile datagrams next to an established peer."""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
import trio

from lnpmsg.node.events import PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.conformance import (
    MESSAGE_TYPE,
    Traffic,
    recording,
    running,
    wait_until,
)
from lnpmsg.testing.lossy_udp import LossyUdpRelay
from lnpmsg.transports.address import parse_listen_address
from lnpmsg.transports.udp import (
    HANDSHAKE_TIMEOUT,
    MAX_PENDING_HANDSHAKES,
    MAX_PENDING_PER_SOURCE,
    UdpListener,
    UdpTransport,
)
from lnpmsg.transports.udp_quic import LnpQuicConnection, client_configuration

#: a hang guard for each test, not a speed requirement
DEADLINE = 60


def udp_node(*, listen: bool = True, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Node:
    config = NodeConfig(listen=["udp://127.0.0.1:0"] if listen else [])
    return Node(NodeKey.generate(), config, transports={"udp": UdpTransport(handshake_timeout=handshake_timeout)})


def listener_of(node: Node) -> UdpListener:
    (listener,) = node.listeners
    assert isinstance(listener, UdpListener)
    return listener


def target_of(node: Node) -> str:
    return parse_listen_address(node.listen_addresses[0]).target


@pytest.mark.parametrize(
    ("loss", "count"),
    [
        # Measured through two nodes on this 2-core machine: about 18 MB/s at
        # 5 % loss and 4 MB/s at 20 % (QUIC's congestion control backs off on
        # every loss), against about 90 MB/s without loss. So fewer messages
        # than the common suite's 10,000, still of every size up to 65,535
        # bytes and both ways at once: about 2 s per case.
        (0.05, 400),
        (0.20, 150),
    ],
)
async def test_lossy_reordering_path_delivers_everything_in_order(loss: float, count: int) -> None:
    a, b = udp_node(), udp_node(listen=False)
    to_a, to_b = Traffic(seed=31), Traffic(seed=32)
    a.add_handler(MESSAGE_TYPE, to_a.handler)
    b.add_handler(MESSAGE_TYPE, to_b.handler)
    with trio.fail_after(DEADLINE):
        async with (
            running(a, b) as nursery,
            LossyUdpRelay(target_of(a), loss=loss, reorder=loss, seed=5) as relay,
        ):
            outbound = await b.connect(f"udp://{a.node_id.hex()}@{relay.address}")
            await wait_until(lambda: b.node_id in a.peers, "the listener to accept the dialer")
            inbound = a.peers[b.node_id]
            nursery.start_soon(to_a.send, outbound, 1, count)
            nursery.start_soon(to_b.send, inbound, 2, count)
            await to_a.wait_for({1: count})
            await to_b.wait_for({2: count})
            assert await outbound.ping() >= 0 and await inbound.ping() >= 0
            assert relay.stats["dropped"] > 0 and relay.stats["delayed"] > 0
            assert a.peers[b.node_id] is inbound and b.peers[a.node_id] is outbound


async def test_peer_whose_address_changes_keeps_its_session() -> None:
    count = 600
    a, b = udp_node(), udp_node(listen=False)
    traffic = Traffic(seed=33)
    a.add_handler(MESSAGE_TYPE, traffic.handler)
    with trio.fail_after(DEADLINE):
        async with (
            running(a, b) as nursery,
            LossyUdpRelay(target_of(a), loss=0.02, reorder=0.02, seed=6) as relay,
            recording(a) as events,
        ):
            outbound = await b.connect(f"udp://{a.node_id.hex()}@{relay.address}")
            await wait_until(lambda: b.node_id in a.peers, "the listener to accept the dialer")
            inbound = a.peers[b.node_id]
            old_port = relay.source_port
            assert inbound.address == f"127.0.0.1:{old_port}"
            nursery.start_soon(traffic.send, outbound, 0, count)
            await traffic.wait_for({0: count // 2})
            new_port = await relay.change_source_port()  # a NAT rebinding, mid-transfer
            await traffic.wait_for({0: count})
            assert await inbound.ping() >= 0
            # The same session throughout, now talking to the new port.
            assert a.peers[b.node_id] is inbound and inbound.is_ready
            assert inbound.address == f"127.0.0.1:{new_port}" != f"127.0.0.1:{old_port}"
            assert listener_of(a).stats["accepted"] == 1
            assert not [e for e in events if isinstance(e, PeerDisconnected)]


def fake_short_header(rng: random.Random, cid: bytes, size: int) -> bytes:
    """A 1-RTT packet for ``cid``: right shape, payload that cannot decrypt."""
    return bytes([0x40 | rng.randrange(0, 4)]) + cid + rng.randbytes(size - 1 - len(cid))


def fake_initial(rng: random.Random) -> bytes:
    """A long-header Initial of QUIC version 1, padded to 1200 bytes, that cannot decrypt."""
    dcid = rng.randbytes(8)
    scid = rng.randbytes(8)
    head = bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\x00" + b"\x44\x9a"
    return head + rng.randbytes(1200 - len(head))


def real_initials(count: int, target: tuple[str, int]) -> Iterator[bytes]:
    """The first datagram of ``count`` genuine QUIC clients that never go on."""
    for _ in range(count):
        core = LnpQuicConnection(configuration=client_configuration(idle_timeout=5.0))
        core.connect(target, now=0.0)
        (datagram, _addr), *_ = core.datagrams_to_send(now=0.0)
        yield datagram


class Attacker:
    """A plain UDP socket aimed at a listener, counting what it sent by kind."""

    def __init__(self, victim: tuple[str, int]) -> None:
        self.victim = victim
        self.sent: Counter[str] = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    async def send(self, datagram: bytes, kind: str) -> None:
        while True:
            try:
                self.sock.sendto(datagram, self.victim)
                break
            except BlockingIOError:
                await trio.sleep(0.001)
        self.sent[kind] += 1
        await trio.lowlevel.checkpoint()


async def test_hostile_datagrams_are_dropped_and_counted_and_peers_carry_on() -> None:
    # A short QUIC handshake timeout, so the flood of half-open handshakes drains within the test; but
    # longer than the flood takes to send on a loaded machine: a pending handshake timing out during it
    # would free its slot for one more of the flood, and the counts below would be off by that many.
    a = udp_node(handshake_timeout=4.0)
    b = udp_node(listen=False)
    to_a, to_b = Traffic(seed=34), Traffic(seed=35)
    a.add_handler(MESSAGE_TYPE, to_a.handler)
    b.add_handler(MESSAGE_TYPE, to_b.handler)
    rng = random.Random(36)
    count = 300
    with trio.fail_after(DEADLINE):
        async with running(a, b) as nursery, recording(a) as events:
            outbound = await b.connect(a.addresses[0])
            await wait_until(lambda: b.node_id in a.peers, "the listener to accept the dialer")
            inbound = a.peers[b.node_id]
            listener = listener_of(a)
            host, port = target_of(a).rsplit(":", 1)
            live_cids = list(listener._endpoint._routes)  # the established peer's connection ids
            before = Counter(listener.stats)
            nursery.start_soon(to_a.send, outbound, 1, count)
            nursery.start_soon(to_b.send, inbound, 2, count)
            attacker = Attacker((host, int(port)))
            with attacker.sock:
                for _ in range(100):
                    # not QUIC at all, from one byte to the largest UDP payload
                    await attacker.send(b"\xff" + rng.randbytes(rng.choice([0, 3, 40, 1499, 65506])), "garbage")
                    await attacker.send(fake_initial(rng), "fake_initial")
                    await attacker.send(fake_short_header(rng, rng.randbytes(8), rng.randint(30, 1400)), "unroutable")
                    # from an unknown address, naming the established peer's connection id
                    await attacker.send(fake_short_header(rng, rng.choice(live_cids), rng.randint(30, 1400)), "spoofed")
                # a handshake flood: genuine Initials, far more than may handshake at once
                for datagram in real_initials(3 * MAX_PENDING_HANDSHAKES, attacker.victim):
                    await attacker.send(datagram, "initial")
                await to_a.wait_for({1: count})
                await to_b.wait_for({2: count})
            sent = attacker.sent
            grew = Counter(listener.stats)
            grew.subtract(before)
            # Each kind was counted under its reason (a few datagrams may be lost on a busy loopback).
            assert grew["garbage"] >= sent["garbage"] + sent["fake_initial"] - 5
            assert grew["unroutable"] >= sent["unroutable"] - 5
            # one source: at most MAX_PENDING_PER_SOURCE of its Initials start handshakes
            assert grew["refused"] + grew["retry"] >= sent["initial"] - MAX_PENDING_PER_SOURCE - 5
            # Spoofed packets reached the peer's QUIC core, which cannot decrypt them: nothing changed.
            assert a.peers[b.node_id] is inbound and inbound.is_ready and outbound.is_ready
            assert await outbound.ping() >= 0 and await inbound.ping() >= 0
            # The flood's half-open handshakes time out, and an honest newcomer is served.
            await wait_until(lambda: listener.connection_count == 1, "the flood's handshakes to time out")
            assert MAX_PENDING_PER_SOURCE - 3 <= listener.stats["handshake_timeouts"] - before["handshake_timeouts"] <= MAX_PENDING_PER_SOURCE
            c = udp_node(listen=False)
            await nursery.start(c.run)
            assert (await c.connect(a.addresses[0])).is_ready
            c.stop()
            assert not [e for e in events if isinstance(e, PeerDisconnected) and e.node_id == b.node_id]
