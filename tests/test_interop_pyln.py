"""Interop with Core Lightning's pyln-proto: a real BOLT-8 + wire stack that
nobody here wrote, against our node over loopback TCP.

pyln-proto's API is blocking, so its side runs in threads (never on the trio
loop): one reader thread per connection that answers pings the way BOLT 1
asks and queues everything else, and senders in ``trio.to_thread``. Its
messages are built by hand or with its own codec (``pyln.proto.message``,
loaded from the spec's csv), and ours are read back with that codec.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import random
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from cryptography.exceptions import InvalidTag
from pyln.proto import wire
from pyln.proto.message import Message as PylnMessage
from pyln.proto.message import MessageNamespace
from wire_spec_vectors import PEER_WIRE_CSV

from lnpmsg.node.events import CustomMessageReceived, PeerConnected, PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.testing.pyln import WholeReads
from lnpmsg.wire import CHAIN_HASH_REGTEST, Features, Message, UnknownMessage

CUSTOM = 32769  # odd: a peer that does not know it ignores it
UNKNOWN_EVEN = 32770
BULK_MESSAGES = 2000  # 4,000 nonces per direction: four key rotations each way
MAX_MESSAGE = 65535  # BOLT 8's largest message (type included)
#: a whole test, interop and bulk traffic included, must finish within this
TEST_TIMEOUT = 25.0
#: a blocking pyln-proto socket call gives up after this (no thread outlives a test for long)
SOCKET_TIMEOUT = 20.0

PYLN_NAMESPACE = MessageNamespace(
    [
        line
        for line in PEER_WIRE_CSV.read_text().splitlines()
        if line.split(",")[1] in {"init", "init_tlvs", "error", "warning", "ping", "pong"}
    ]
)

#: what the pyln-proto side offers: two assumed features, one that depends on
#: one of them, and an unknown optional bit (it's OK to be odd)
PYLN_FEATURE_BITS = (9, 15, 17, 101)
#: what our node offers in its init
NODE_FEATURES = Features.from_names(optional=["var_onion_optin", "payment_secret"])


# ------------------------------------------------------------ pyln-proto side


def pyln_encode(text: str) -> bytes:
    """A message written by pyln-proto's codec from its text form."""
    out = io.BytesIO()
    PylnMessage.from_str(PYLN_NAMESPACE, text).write(out)
    return out.getvalue()


def pyln_decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """A message read by pyln-proto's codec: its name and fields."""
    message = PylnMessage.read(PYLN_NAMESPACE, io.BytesIO(data))
    assert message is not None, f"pyln-proto cannot read {data[:16].hex()}..."
    return message.messagetype.name, message.to_py()


def hand_built_init(feature_bits: tuple[int, ...], chains: list[bytes] | None) -> bytes:
    """An ``init`` put together byte by byte (type, empty globalfeatures, features, networks TLV)."""
    value = sum(1 << bit for bit in feature_bits)
    features = value.to_bytes((value.bit_length() + 7) // 8, "big")
    data = struct.pack(">HH", 16, 0) + struct.pack(">H", len(features)) + features
    if chains is not None:
        data += bytes([1, 32 * len(chains)]) + b"".join(chains)  # networks: type 1, one-byte length
    return data




class PylnPeer:
    """One pyln-proto connection, after its handshake, driven from threads."""

    def __init__(self, conn: wire.LightningConnection) -> None:
        sock: socket.socket = conn.connection
        sock.settimeout(SOCKET_TIMEOUT)
        self.sock = sock
        self.conn = conn
        conn.connection = WholeReads(sock)
        self.remote_node_id: bytes = conn.remote_pubkey.serializeCompressed()
        #: both directions' key-rotation chains start here; they move at each rotation
        self.handshake_chaining_key: bytes = conn.chaining_key
        #: messages read (pings excepted), then ``None`` once the stream ended
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.pings_answered = 0
        self.end_reason: str | None = None
        self._reader = threading.Thread(target=self._read_loop, name="pyln-reader", daemon=True)
        self._reader.start()

    @classmethod
    def dial(cls, key: wire.PrivateKey, node_id: bytes, address: str) -> PylnPeer:
        return cls(pyln_dial(key, node_id, address))

    def _read_loop(self) -> None:
        try:
            while True:
                data = self.conn.read_message()
                if data[:2] == b"\x00\x12":
                    name, ping = pyln_decode(data)
                    assert name == "ping"
                    self.pings_answered += 1
                    self.conn.send_message(pyln_encode(f"pong ignored={'00' * ping['num_pong_bytes']}"))
                    continue
                self.inbox.put(data)
        except (ValueError, OSError, InvalidTag) as exc:  # how pyln-proto reports a closed or broken stream
            self.end_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.inbox.put(None)

    def send(self, data: bytes) -> None:
        self.conn.send_message(data)

    def next_message(self) -> bytes | None:
        """The next message, or None once the stream has ended."""
        data = self.inbox.get(timeout=SOCKET_TIMEOUT)
        if data is None:
            self.inbox.put(None)  # stays ended for later calls
        return data

    async def asend(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self.send, data)

    async def receive(self) -> bytes | None:
        return await trio.to_thread.run_sync(self.next_message, abandon_on_cancel=True)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(SOCKET_TIMEOUT)
        self.sock.close()


def pyln_dial(key: wire.PrivateKey, node_id: bytes, address: str) -> wire.LightningConnection:
    """What ``wire.connect`` does (connect, then pyln's handshake), closing the socket when it fails."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT)
    try:
        conn = wire.LightningConnection(sock, wire.PublicKey(node_id), key, is_initiator=True)
        conn.shake()
    except BaseException:
        sock.close()
        raise
    return conn


def pyln_key(label: str) -> wire.PrivateKey:
    return wire.PrivateKey(hashlib.sha256(label.encode()).digest())


def pyln_node_id(key: wire.PrivateKey) -> bytes:
    return key.public_key().serializeCompressed()


# ------------------------------------------------------------------ our side


def bulk_messages(seed: int) -> Iterator[bytes]:
    """``BULK_MESSAGES`` custom messages of random sizes (type included), both extremes among them."""
    rng = random.Random(seed)
    sizes = [MAX_MESSAGE, 2] + [rng.randint(2, MAX_MESSAGE) for _ in range(BULK_MESSAGES - 2)]
    for size in sizes:
        yield CUSTOM.to_bytes(2, "big") + rng.randbytes(size - 2)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Collector:
    """Our node's handler for the custom type: keeps a digest of every payload, in order."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, bool, bytes]] = []
        self.want = 0
        self.enough = trio.Event()

    async def handler(self, peer: Peer, message: Message) -> None:
        assert isinstance(message, UnknownMessage)
        self.received.append((peer.node_id, message.type == CUSTOM, digest(message.payload)))
        if len(self.received) >= self.want:
            self.enough.set()

    async def wait_for(self, count: int) -> None:
        self.want = count
        if len(self.received) < count:
            self.enough = trio.Event()
            await self.enough.wait()


def make_node() -> tuple[Node, Collector]:
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="regtest", features=NODE_FEATURES))
    collector = Collector()
    node.add_handler(CUSTOM, collector.handler)
    return node, collector


async def next_event(subscription, kind, node_id: bytes):  # type: ignore[no-untyped-def]
    """The next event of that kind about that peer (others are skipped)."""
    async for event in subscription:
        if isinstance(event, kind) and event.node_id == node_id:
            return event
    raise AssertionError(f"event stream ended before a {kind.__name__}")


# ------------------------------------------------------------------ exchanges


async def check_our_init(pyln: PylnPeer) -> None:
    data = await pyln.receive()
    assert data is not None, pyln.end_reason
    name, fields = pyln_decode(data)
    assert name == "init"
    assert fields["globalfeatures"] == ""
    assert fields["features"] == NODE_FEATURES.to_bytes().hex()
    assert fields["tlvs"] == {"networks": {"chains": [CHAIN_HASH_REGTEST.hex()]}}


async def check_ping_pong(node: Node, pyln: PylnPeer, pyln_id: bytes, num_pong_bytes: int) -> Peer:
    """pyln pings us (and gets the bytes it asked for), then we ping pyln; returns our peer.

    Our pong also proves our node accepted pyln's init (a pong comes only after it).
    """
    await pyln.asend(pyln_encode(f"ping num_pong_bytes={num_pong_bytes} ignored={'ab' * 10}"))
    data = await pyln.receive()
    assert data is not None, pyln.end_reason
    name, fields = pyln_decode(data)
    assert name == "pong"
    assert bytes.fromhex(fields["ignored"]) == bytes(num_pong_bytes)
    peer = node.peers[pyln_id]
    answered = pyln.pings_answered
    assert await peer.ping(timeout=SOCKET_TIMEOUT) >= 0
    assert pyln.pings_answered == answered + 1
    return peer


async def check_custom_message(node: Node, collector: Collector, pyln: PylnPeer, pyln_id: bytes) -> None:
    """An odd custom message from pyln reaches our handler and the node's event stream."""
    payload = b"hello from pyln-proto"
    with node.events.subscribe() as events:
        start = len(collector.received)
        await pyln.asend(CUSTOM.to_bytes(2, "big") + payload)
        event = await next_event(events, CustomMessageReceived, pyln_id)
    assert event == CustomMessageReceived(pyln_id, CUSTOM, payload)
    await collector.wait_for(start + 1)
    assert collector.received[start:] == [(pyln_id, True, digest(payload))]


async def check_bulk_both_ways(peer: Peer, collector: Collector, pyln: PylnPeer, pyln_id: bytes) -> None:
    """2,000 random messages each way at the same time arrive intact and in order on both sides."""
    sent_by_pyln: list[bytes] = []
    sent_by_node: list[bytes] = []
    read_by_pyln: list[bytes] = []
    start = len(collector.received)

    def pyln_sender() -> None:  # pyln's sender thread
        for data in bulk_messages(seed=1):
            sent_by_pyln.append(digest(data[2:]))
            pyln.send(data)

    def pyln_reader() -> None:  # drains what pyln's reader thread read
        for _ in range(BULK_MESSAGES):
            data = pyln.next_message()
            assert data is not None, pyln.end_reason
            assert data[:2] == CUSTOM.to_bytes(2, "big")
            read_by_pyln.append(digest(data[2:]))

    async def node_sender() -> None:  # a trio task, not the handler
        for data in bulk_messages(seed=2):
            sent_by_node.append(digest(data[2:]))
            await peer.send(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, pyln_sender)
        nursery.start_soon(node_sender)
        nursery.start_soon(lambda: trio.to_thread.run_sync(pyln_reader, abandon_on_cancel=True))
        await collector.wait_for(start + BULK_MESSAGES)

    assert len(sent_by_pyln) == len(sent_by_node) == BULK_MESSAGES
    assert sent_by_pyln != sent_by_node
    assert read_by_pyln == sent_by_node
    assert collector.received[start:] == [(pyln_id, True, d) for d in sent_by_pyln]
    # pyln-proto rotated its keys both ways, and our stack followed each rotation.
    assert pyln.conn.sck != pyln.handshake_chaining_key and pyln.conn.rck != pyln.handshake_chaining_key
    assert peer.counters.messages_in >= BULK_MESSAGES and peer.counters.messages_out >= BULK_MESSAGES


# ---------------------------------------------------------------------- tests


async def test_pyln_dials_our_node() -> None:
    node, collector = make_node()
    key = pyln_key("pyln dials")
    pyln_id = pyln_node_id(key)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with node.events.subscribe() as events:
                pyln = await trio.to_thread.run_sync(PylnPeer.dial, key, node.node_id, node.listen_addresses[0])
                try:
                    assert pyln.remote_node_id == node.node_id
                    await pyln.asend(hand_built_init(PYLN_FEATURE_BITS, [CHAIN_HASH_REGTEST]))
                    await check_our_init(pyln)
                    connected = await next_event(events, PeerConnected, pyln_id)
                    assert connected.node_id == pyln_id and not connected.outbound and connected.transport == "tcp"
                    assert "basic_mpp (optional)" in connected.features
                    assert "bit 101 (unknown, optional)" in connected.features
                    peer = await check_ping_pong(node, pyln, pyln_id, num_pong_bytes=1000)
                    await check_custom_message(node, collector, pyln, pyln_id)
                    await check_bulk_both_ways(peer, collector, pyln, pyln_id)
                finally:
                    await trio.to_thread.run_sync(pyln.close)
                gone = await next_event(events, PeerDisconnected, pyln_id)
                assert "peer closed the connection" in gone.reason
            node.stop()


def accept_one(server: wire.LightningServerSocket) -> PylnPeer:
    """pyln's listener side: accept, handshake, send its init."""
    conn, _ = server.accept()
    pyln = PylnPeer(conn)
    pyln.send(hand_built_init(PYLN_FEATURE_BITS, [CHAIN_HASH_REGTEST]))
    return pyln


async def test_our_node_dials_pyln() -> None:
    node, collector = make_node()
    key = pyln_key("pyln listens")
    pyln_id = pyln_node_id(key)
    server = wire.LightningServerSocket(key)
    accepted: list[PylnPeer] = []

    async def accept() -> None:
        accepted.append(await trio.to_thread.run_sync(accept_one, server, abandon_on_cancel=True))

    try:
        server.settimeout(SOCKET_TIMEOUT)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                async with trio.open_nursery() as dialing:
                    dialing.start_soon(accept)
                    peer = await node.connect(f"{pyln_id.hex()}@127.0.0.1:{port}")
                (pyln,) = accepted
                try:
                    assert peer.outbound and peer.is_ready and peer.node_id == pyln_id
                    assert pyln.remote_node_id == node.node_id  # pyln learned our id from act three
                    assert peer.session.remote_features is not None
                    assert peer.session.remote_features.bits() == list(PYLN_FEATURE_BITS)
                    await check_our_init(pyln)
                    assert await check_ping_pong(node, pyln, pyln_id, num_pong_bytes=65531) is peer  # the largest pong that fits
                    await check_custom_message(node, collector, pyln, pyln_id)
                    await check_bulk_both_ways(peer, collector, pyln, pyln_id)
                finally:
                    await trio.to_thread.run_sync(pyln.close)
                node.stop()
    finally:
        server.close()


async def test_node_drops_bad_pyln_peers_and_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg")
    node, collector = make_node()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            address = node.listen_addresses[0]

            # The wrong node id: our node cannot read act one and hangs up.
            wrong_id = NodeKey.generate().node_id
            with pytest.raises(ValueError, match="act2"):
                await trio.to_thread.run_sync(pyln_dial, pyln_key("wrong id"), wrong_id, address)
            assert "inbound tcp from 127.0.0.1" in caplog.text and "handshake failed" in caplog.text
            assert not node.peers

            # The right one right after works (an init without networks is fine too).
            key = pyln_key("right id")
            pyln = await trio.to_thread.run_sync(PylnPeer.dial, key, node.node_id, address)
            try:
                await pyln.asend(hand_built_init(PYLN_FEATURE_BITS, None))
                await check_our_init(pyln)
                await check_ping_pong(node, pyln, pyln_node_id(key), num_pong_bytes=3)
            finally:
                await trio.to_thread.run_sync(pyln.close)

            # An unknown even message after init: a BOLT-1 warning naming it (an error with
            # the all-zero channel id would fail every channel), then the close.
            key = pyln_key("unknown even")
            with node.events.subscribe() as events:
                pyln = await trio.to_thread.run_sync(PylnPeer.dial, key, node.node_id, address)
                try:
                    await pyln.asend(hand_built_init(PYLN_FEATURE_BITS, [CHAIN_HASH_REGTEST]))
                    await check_our_init(pyln)
                    await pyln.asend(UNKNOWN_EVEN.to_bytes(2, "big") + b"boom")
                    data = await pyln.receive()
                    assert data is not None, pyln.end_reason
                    name, fields = pyln_decode(data)
                    assert name == "warning"
                    assert fields["channel_id"] == "00" * 32  # the whole connection
                    assert str(UNKNOWN_EVEN) in bytes.fromhex(fields["data"]).decode()
                    assert await pyln.receive() is None  # and then closed
                    assert pyln.end_reason is not None and "Short read" in pyln.end_reason
                finally:
                    await trio.to_thread.run_sync(pyln.close)
                gone = await next_event(events, PeerDisconnected, pyln_node_id(key))
            assert str(UNKNOWN_EVEN) in gone.reason
            assert not node.peers

            # The node still serves the next pyln-proto connection.
            key = pyln_key("after the bad ones")
            pyln = await trio.to_thread.run_sync(PylnPeer.dial, key, node.node_id, address)
            try:
                await pyln.asend(hand_built_init(PYLN_FEATURE_BITS, [CHAIN_HASH_REGTEST]))
                await check_our_init(pyln)
                await check_ping_pong(node, pyln, pyln_node_id(key), num_pong_bytes=0)
                await check_custom_message(node, collector, pyln, pyln_node_id(key))
            finally:
                await trio.to_thread.run_sync(pyln.close)
            node.stop()

