"""ZeroMQ beyond the common suite, through real Nodes: forged routing ids,
oversized and flooding peers and ZMTP garbage next to an established peer."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio
import trio.testing
import zmq

from lnpmsg.node.events import PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.noise import ACT_TWO_SIZE, InitiatorHandshake, TransportCipher
from lnpmsg.testing.conformance import (
    MESSAGE_TYPE,
    Traffic,
    recording,
    running,
    wait_until,
)
from lnpmsg.transports.address import parse_listen_address
from lnpmsg.transports.zmq import (
    INITIAL_CREDIT,
    MAX_FRAME_SIZE,
    ZmqConnection,
    ZmqListener,
    ZmqSettings,
    ZmqTransport,
)
from lnpmsg.wire import Init, Message

#: a hang guard for each test, not a speed requirement
DEADLINE = 60
#: the node's handshake timeout here: silent attackers are let go quickly
HANDSHAKE_TIMEOUT = 1.0
#: a custom message whose handler never returns: the node stops reading that peer
STOP_READING = MESSAGE_TYPE + 2


@pytest.fixture(params=["tcp", "ipc"])
def listen(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "tcp":
        yield "zmq+tcp://127.0.0.1:0"
        return
    directory = tempfile.mkdtemp(prefix="lnpzc-", dir="/tmp")  # ipc paths must stay short
    yield f"zmq+ipc://{directory}/node.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def zmq_node(listen: list[str], **config: float) -> Node:
    return Node(NodeKey.generate(), NodeConfig(listen=listen, **config), transports={"zmq": ZmqTransport()})  # type: ignore[arg-type]


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, routing_id: bytes | None = None) -> zmq.Socket[bytes]:
    """A plain pyzmq DEALER that follows no convention unless the test makes it."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(endpoint)
    return sock


async def handshake_by_hand(sock: zmq.Socket[bytes], key: NodeKey, node_id: bytes) -> TransportCipher:
    """BOLT-8 as initiator over a plain DEALER, one act per message, then our init."""
    hs = InitiatorHandshake(key.secret, node_id)
    sock.send(hs.act_one())
    while True:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            await trio.sleep(0.005)
            continue
        if len(parts) == 1 and len(parts[0]) == ACT_TWO_SIZE:
            break  # control messages (credit, keepalive) are skipped
    sock.send(hs.receive_act_two(parts[0]))
    cipher = TransportCipher(hs.keys)
    sock.send(cipher.encryptor.encrypt(Init().encode()))
    return cipher


async def test_hostile_peers_are_dropped_and_counted_and_peers_carry_on(
    listen: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    a = zmq_node([listen], handshake_timeout=HANDSHAKE_TIMEOUT)
    b = zmq_node([])
    to_a, to_b = Traffic(seed=41), Traffic(seed=42)
    a.add_handler(MESSAGE_TYPE, to_a.handler)
    b.add_handler(MESSAGE_TYPE, to_b.handler)
    stuck = trio.Event()

    async def stop_reading(peer: Peer, message: Message) -> None:
        await stuck.wait()  # the node stops reading from whoever sends this

    a.add_handler(STOP_READING, stop_reading)
    rng = random.Random(43)
    count = 300
    with trio.fail_after(DEADLINE):
        async with running(a, b) as nursery, recording(a) as events:
            outbound = await b.connect(a.addresses[0])
            await wait_until(lambda: b.node_id in a.peers, "the listener to accept the dialer")
            inbound = a.peers[b.node_id]
            (listener,) = a.listeners
            assert isinstance(listener, ZmqListener) and isinstance(inbound.conn, ZmqConnection)
            victim_id = inbound.conn.routing_id
            assert victim_id is not None
            endpoint = parse_listen_address(a.listen_addresses[0]).target
            nursery.start_soon(to_a.send, outbound, 1, count)
            nursery.start_soon(to_b.send, inbound, 2, count)
            attackers = []
            # 1. another dealer claiming the established peer's routing id: libzmq
            #    ignores the duplicate, so its frames never reach that session
            attackers.append(twin := dealer(ctx, endpoint, victim_id))
            for _ in range(20):
                twin.send(rng.randbytes(rng.randint(18, 2000)))
            # 2. peer-chosen routing ids are refused
            for index in range(5):
                attackers.append(chosen := dealer(ctx, endpoint, b"evil-%d" % index))
                chosen.send(rng.randbytes(50))
            # 3. one frame over the BOLT-8 maximum
            attackers.append(big := dealer(ctx, endpoint))
            big.send(rng.randbytes(MAX_FRAME_SIZE + 1))
            # 4. a message shape outside the convention
            attackers.append(odd := dealer(ctx, endpoint))
            odd.send_multipart([b"two", b"parts"])
            # 5. an authenticated peer that makes the node stop reading, then
            #    sends far past its credit without waiting for more
            attackers.append(flooder := dealer(ctx, endpoint))
            flooder_key = NodeKey.generate()
            cipher = await handshake_by_hand(flooder, flooder_key, a.node_id)
            await wait_until(lambda: flooder_key.node_id in a.peers, "the flooder to become a peer")
            flooder.send(cipher.encryptor.encrypt(STOP_READING.to_bytes(2, "big")))
            for frame in cipher.encryptor.encrypt_many([bytes(200)] * (2 * INITIAL_CREDIT)):
                flooder.send(frame)
            stats = listener.stats
            await wait_until(lambda: stats["refused_routing_id"] == 5, "the chosen ids to be refused")
            await wait_until(lambda: stats["oversize"] == 1, "the oversized frame to be dropped")
            await wait_until(lambda: stats["protocol"] == 1, "the convention breaker to be dropped")
            await wait_until(lambda: stats["flood"] == 1, "the flooding peer to be dropped")
            # The sessions that did start never got through the BOLT-8 handshake.
            await wait_until(lambda: a.stats["handshake_failed"] >= 2, "the node to count the failed handshakes")
            if endpoint.startswith("tcp://"):
                # 6. not ZeroMQ at all: garbage at the ZMTP handshake
                host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
                async with await trio.open_tcp_stream(host, int(port)) as raw:
                    await raw.send_all(rng.randbytes(600))
                await wait_until(lambda: stats["handshake_failed"] >= 1, "the ZMTP handshake failure")
            await to_a.wait_for({1: count})
            await to_b.wait_for({2: count})
            stuck.set()
            await wait_until(lambda: flooder_key.node_id not in a.peers, "the node to drop the flooder")
            for sock in attackers:
                sock.close()
            # The established peer never noticed.
            assert a.peers[b.node_id] is inbound and inbound.is_ready and outbound.is_ready
            assert await outbound.ping() >= 0 and await inbound.ping() >= 0
            assert not [e for e in events if isinstance(e, PeerDisconnected) and e.node_id == b.node_id]
            assert list(a.peers) == [b.node_id]


async def test_dialer_close_returns_when_the_listener_vanishes_before_acknowledging(listen: str) -> None:
    # A close acknowledgement that can never come must not be waited for: with
    # an hour-long close timeout, aclose returns as soon as the link is gone.
    transport = ZmqTransport(settings=ZmqSettings(close_timeout=3600.0))
    listener = await transport.listen(parse_listen_address(listen).target)
    with trio.fail_after(DEADLINE):
        conn = await transport.dial(listener.local_address)  # the listener never serves: no acknowledgement
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.aclose)
            await trio.testing.wait_all_tasks_blocked()  # the close is under way, waiting for its acknowledgement
            await listener.aclose()
    assert conn.ended is not None
