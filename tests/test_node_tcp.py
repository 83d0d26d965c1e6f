"""Nodes over real loopback TCP: peers, limits, and every kind of bad input.

The keepalive deadlines are tested in virtual time (tests/test_node_keepalive.py)."""

import logging

import pytest
import trio

from lnpmsg.node.events import CustomMessageReceived, PeerConnected, PeerDisconnected, PeerReplaced
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError
from lnpmsg.node.peer import PeerClosedError
from lnpmsg.noise import FRAME_OVERHEAD, LENGTH_HEADER_SIZE, MessageDecryptor
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer, dial_blocking
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    WarningMessage,
    Features,
    Init,
    Ping,
    Pong,
    UnknownMessage,
)
from lnpmsg.wire.bolt1 import INIT_TLVS

CUSTOM = 32769


async def test_two_nodes_exchange_init_ping_and_custom_messages():
    a, b = make_node(), make_node(listen=[])
    received = []

    async def on_custom(peer, message):
        received.append((peer.node_id, message))

    a.add_handler(CUSTOM, on_custom)
    async with running(a, b):
        with a.events.subscribe() as events:
            peer = await b.connect(address_of(a))
            assert peer.is_ready and peer.transport_kind == "tcp"
            connected = await events.__anext__()
            assert isinstance(connected, PeerConnected) and connected.node_id == b.node_id and not connected.outbound
            assert await peer.ping() >= 0
            await peer.send(CUSTOM.to_bytes(2, "big") + b"hi")
            event = await events.__anext__()
            assert event == CustomMessageReceived(b.node_id, CUSTOM, b"hi")
            assert received == [(b.node_id, UnknownMessage(CUSTOM, b"hi"))]
            await b.disconnect(a.node_id)
            event = await events.__anext__()
            assert isinstance(event, PeerDisconnected) and event.node_id == b.node_id
            assert "peer closed the connection" in event.reason
        assert b.node_id not in a.peers


async def test_connect_with_wrong_node_id_fails_clearly_and_node_serves_on():
    a, b = make_node(), make_node(listen=[])
    async with running(a, b):
        wrong = NodeKey.generate().node_id.hex()
        with pytest.raises(ConnectError, match="right node id"):
            await b.connect(f"{wrong}@{a.listen_addresses[0]}")
        assert (await b.connect(address_of(a))).is_ready


async def test_connect_to_nothing_fails_clearly():
    b = make_node(listen=[])
    async with running(b):
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(ConnectError, match="refused"):
            await b.connect(f"{NodeKey.generate().node_id.hex()}@127.0.0.1:{port}")


async def test_silent_and_garbage_peers_do_not_block_others(caplog):
    caplog.set_level(logging.INFO)
    a, b = make_node(handshake_timeout=0.5), make_node(listen=[])
    async with running(a, b):
        host, port = a.listen_addresses[0].rsplit(":", 1)
        silent = await trio.open_tcp_stream(host, int(port))
        garbage = await trio.open_tcp_stream(host, int(port))
        await garbage.send_all(b"\x01" + bytes(49))  # act one with version 1
        # a good peer is served while the others hang or misbehave
        assert (await b.connect(address_of(a))).is_ready
        assert await garbage.receive_some(100) == b""  # dropped at once
        with trio.fail_after(3):
            assert await silent.receive_some(100) == b""  # dropped after the handshake timeout
        assert b.node_id in a.peers
        await silent.aclose()
        await garbage.aclose()
    assert "act one: unsupported handshake version 1" in caplog.text
    assert "handshake timed out" in caplog.text


async def _raw(node, key=None):
    raw = await RawPeer.connect(node.listen_addresses[0], node.node_id, key)
    init = DEFAULT_REGISTRY.decode(await raw.exchange_init())
    assert isinstance(init, Init)
    return raw


async def test_unknown_even_message_gets_error_and_disconnect(caplog):
    a = make_node()
    async with running(a):
        raw = await _raw(a)
        await raw.send(b"\x80\x02boom")
        messages = await raw.receive_until_closed()
        error = DEFAULT_REGISTRY.decode(messages[-1])
        assert isinstance(error, WarningMessage) and b"unknown even message type 32770" in error.data
        # the node carries on
        async with await RawPeer.connect(a.listen_addresses[0], a.node_id) as again:
            assert isinstance(DEFAULT_REGISTRY.decode(await again.exchange_init()), Init)
        await raw.aclose()


async def test_unknown_odd_message_is_ignored_and_connection_stays():
    a = make_node()
    async with running(a):
        raw = await _raw(a)
        await raw.send(b"\x80\x03whatever")
        await raw.send(Ping(num_pong_bytes=3))
        assert DEFAULT_REGISTRY.decode(await raw.receive()) == Pong(ignored=bytes(3))
        assert a.ignored_messages == 1
        await raw.aclose()


async def test_bad_tlv_ordering_in_init_gets_error():
    a = make_node()
    async with running(a):
        raw = await RawPeer.connect(a.listen_addresses[0], a.node_id)
        await raw.receive()  # the node's init
        # init with TLV type 3 before type 1: not strictly increasing
        bad = Init().encode() + bytes([3, 0, 1, 0])
        await raw.send(bad)
        messages = await raw.receive_until_closed()
        error = DEFAULT_REGISTRY.decode(messages[-1])
        assert isinstance(error, WarningMessage) and b"malformed init" in error.data
        await raw.aclose()


async def test_unknown_required_feature_in_init_gets_error():
    a = make_node()
    async with running(a):
        raw = await RawPeer.connect(a.listen_addresses[0], a.node_id)
        await raw.receive()
        await raw.send(Init(features=Features.from_bits([300]).to_bytes()))
        error = DEFAULT_REGISTRY.decode((await raw.receive_until_closed())[-1])
        assert b"bit(s) 300" in error.data
        await raw.aclose()


async def test_wrong_chain_gets_error():
    a = make_node(network="regtest")
    async with running(a):
        raw = await RawPeer.connect(a.listen_addresses[0], a.node_id)
        await raw.receive()
        from lnpmsg.wire.bolt1 import CHAIN_HASH_MAINNET

        await raw.send(Init(tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_MAINNET])))
        error = DEFAULT_REGISTRY.decode((await raw.receive_until_closed())[-1])
        assert b"chains" in error.data
        await raw.aclose()


@pytest.mark.parametrize("damage", ["mac", "truncated"])
async def test_corrupt_and_truncated_frames_close_the_connection(damage, caplog):
    caplog.set_level(logging.INFO)
    a = make_node()
    async with running(a):
        with a.events.subscribe() as events:
            raw = await _raw(a)
            await events.__anext__()  # connected
            frame = raw.encrypt(b"\x80\x01" + bytes(100))
            if damage == "mac":
                frame = frame[:-1] + bytes([frame[-1] ^ 1])
                await raw.send_raw(frame)
            else:
                await raw.send_raw(frame[:50])
                await raw.conn.aclose()
            event = await events.__anext__()
            assert isinstance(event, PeerDisconnected)
            expected = "bad encrypted frame" if damage == "mac" else "peer closed the connection"
            assert expected in event.reason
            await raw.aclose()
        assert expected in caplog.text


async def test_frames_before_a_bad_mac_in_the_same_write_are_handled_first():
    """BOLT 8: a bad MAC ends the connection, but the authentic ping before it still gets its pong."""
    a = make_node()
    async with running(a):
        raw = await _raw(a)
        ping = raw.encrypt(Ping(num_pong_bytes=7, ignored=b"").encode())
        bad = raw.encrypt(b"\x80\x01" + bytes(100))
        await raw.send_raw(ping + bad[:-1] + bytes([bad[-1] ^ 1]))  # one write, one read
        messages = [DEFAULT_REGISTRY.decode(m) for m in await raw.receive_until_closed(timeout=10)]
        assert Pong(ignored=bytes(7)) in messages
        await raw.aclose()


@pytest.mark.parametrize("damage", ["header", "body"])
async def test_a_run_of_like_messages_and_a_bad_frame_read_with_or_without_libsodium(libsodium, damage, monkeypatch):
    """A stream of 1 KiB messages with a bad frame deep in it: with libsodium the node reads
    the run into its kept buffer and opens the frames where they lie; without it (the
    fallback) every read goes through the copying path. Either way the handler gets
    exactly the messages before the bad frame, in order, and the same error ends the peer."""
    in_place = []
    feed_read = MessageDecryptor.feed_read

    def counted(self, size):  # the real method, counted: which path the reads took
        in_place.append(size)
        return feed_read(self, size)

    monkeypatch.setattr(MessageDecryptor, "feed_read", counted)
    a = make_node()
    received = []

    async def on_custom(peer, message):
        received.append(message.payload)

    a.add_handler(CUSTOM, on_custom)
    payloads = [bytes([n % 251]) * 1022 for n in range(1501)]
    bad, step = 1500, 1024 + FRAME_OVERHEAD
    async with running(a):
        with a.events.subscribe(lambda event: isinstance(event, PeerDisconnected)) as events:
            raw = await _raw(a)
            stream = bytearray(b"".join(raw.encrypt(CUSTOM.to_bytes(2, "big") + payload) for payload in payloads))
            stream[bad * step + (5 if damage == "header" else LENGTH_HEADER_SIZE + 5)] ^= 1
            # the bad frame last: the node closes on it, and a send of more would find the connection reset
            await raw.send_raw(bytes(stream[: (bad + 1) * step]))
            with trio.fail_after(30):
                event = await events.__anext__()
            await raw.aclose()
    what = "length" if damage == "header" else "message"
    assert event.reason == f"bad encrypted frame from peer: bad MAC on an encrypted {what}"
    assert received == payloads[:bad]
    assert (sum(in_place) > 0) is libsodium


def test_decrypt_error_carries_the_authentic_prefix():
    from lnpmsg.noise import DecryptError, MessageDecryptor, MessageEncryptor

    key, chaining_key = bytes(range(32)), bytes(32)
    encryptor, decryptor = MessageEncryptor(key, chaining_key), MessageDecryptor(key, chaining_key)
    good, bad = encryptor.encrypt(b"one"), encryptor.encrypt(b"two")
    with pytest.raises(DecryptError) as failed:
        decryptor.feed(good + bad[:-1] + bytes([bad[-1] ^ 1]))
    assert failed.value.decoded == [b"one"]


async def test_peer_that_does_not_read_only_blocks_its_own_sender():
    """Back-pressure: a peer that never reads fills its own queue; others are unaffected."""
    a = make_node(max_queued_bytes=256 * 1024)
    c = make_node()
    got = []

    async def on_custom(peer, message):
        got.append(message)

    c.add_handler(CUSTOM, on_custom)
    async with running(a, c):
        stuck = await RawPeer.connect(a.listen_addresses[0], a.node_id)  # never reads after this
        await stuck.send(Init())
        with trio.fail_after(3):
            while len(a.peers) < 1:
                await trio.sleep(0.01)
        stuck_peer = a.peers[stuck.key.node_id]
        peer_c = await a.connect(address_of(c))
        blocked = trio.Event()

        async def flood():
            message = CUSTOM.to_bytes(2, "big") + bytes(60000)
            for _ in range(1000):  # 60 MB: far beyond socket buffers and the queue bound
                await stuck_peer.send(message)
            blocked.set()  # never reached while the peer does not read

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.fail_after(10):  # until the socket is full and the queue holds all a sender may add
                while stuck_peer.queued_bytes + 60002 <= 256 * 1024:
                    await trio.sleep(0.01)
            assert stuck_peer.queued_bytes <= 256 * 1024 + 60002
            for i in range(100):
                await peer_c.send(CUSTOM.to_bytes(2, "big") + i.to_bytes(4, "big"))
            with trio.fail_after(3):
                while len(got) < 100:
                    await trio.sleep(0.01)
            assert not blocked.is_set()
            nursery.cancel_scope.cancel()
        await stuck.aclose()


async def test_sending_to_a_closed_peer_raises():
    a, b = make_node(), make_node(listen=[])
    async with running(a, b):
        peer = await b.connect(address_of(a))
        await b.disconnect(a.node_id)
        with pytest.raises(PeerClosedError):
            await peer.send(b"\x80\x01x")


async def test_connect_to_a_connected_peer_returns_the_live_session():
    a, b = make_node(), make_node(listen=[])
    async with running(a, b):
        first = await b.connect(address_of(a))
        again = await b.connect(address_of(a))
        assert again is first and first.is_ready and len(a.peers) == 1


async def test_reconnect_replaces_the_old_connection_with_a_log_and_an_event(caplog):
    a, b = make_node(), make_node(listen=[])
    async with running(a, b):
        first = await b.connect(address_of(a))
        with a.events.subscribe(lambda e: isinstance(e, PeerReplaced)) as replaced_a, b.events.subscribe(
            lambda e: isinstance(e, PeerReplaced)
        ) as replaced_b:
            second = await b.connect(address_of(a), reconnect=True)
            with trio.fail_after(3):
                await first.closed.wait()
                event_b = await replaced_b.__anext__()
                event_a = await replaced_a.__anext__()
        assert second is not first and second.is_ready and len(a.peers) == 1
        assert event_b.node_id == a.node_id and event_a.node_id == b.node_id
        assert "replaces the live one" in caplog.text


async def test_configured_peers_are_connected_and_reconnected():
    a = make_node()
    async with running(a):
        b = make_node(listen=[], connect=[address_of(a)])
        async with running(b):
            with trio.fail_after(5):
                while a.node_id not in b.peers:
                    await trio.sleep(0.01)
            await a.disconnect(b.node_id)
            with trio.fail_after(5):
                while a.node_id in b.peers and b.peers[a.node_id].is_ready is False or b.node_id not in a.peers:
                    await trio.sleep(0.05)
            assert b.peers[a.node_id].is_ready


def _node_taking(messages: list[bytes]):
    """A node that keeps the payloads of CUSTOM messages, and an event set once it has as many as ``messages``."""
    received: list[bytes] = []
    all_in = trio.Event()

    def on_message(peer, message):
        received.append(message.payload)
        if len(received) == len(messages):
            all_in.set()

    node = make_node()
    node.add_handler(CUSTOM, on_message)
    return node, received, all_in


def _stream_to(node_id: bytes, address: str, messages: list[bytes]) -> None:
    """A client in a thread: the handshake, an init, then all of ``messages`` encrypted
    first and written at once (faster than any node decrypts), then its close."""
    import socket

    sock, cipher = dial_blocking(address, node_id)
    with sock:
        encryptor = cipher.encryptor
        sock.sendall(encryptor.encrypt_joined([Init().encode(), *messages]))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def test_reads_into_a_run_buffer_that_end_short_share_a_turn_within_turn_bytes():
    # The reader's turn policy between reads into a run's kept buffer: full reads take
    # a turn each; reads that end short (the peer's bytes come in pieces) share one,
    # the next read filling at most the room left; never more than TURN_BYTES between
    # two turns.
    from lnpmsg.node.peer_reading import RUN_READ_BYTES, TURN_BYTES, room_before_turn

    full = RUN_READ_BYTES // 1058 * 1058  # a buffer of whole 1 KiB messages' frames
    assert room_before_turn(TURN_BYTES, full) == 0  # a task's first read: a turn first
    assert room_before_turn(0, full) == full
    assert room_before_turn(full, full) == 0  # after a full read
    assert room_before_turn(100_000, full) == TURN_BYTES - 100_000  # a short read: the rest of the turn
    assert room_before_turn(TURN_BYTES - full // 2, full) == full // 2
    assert room_before_turn(TURN_BYTES - full // 2 + 1, full) == 0

    def turns(available: list[int]) -> tuple[int, int]:
        """Turns taken, and the most bytes read between two, for reads that find these sizes there."""
        unturned, count, most, since = TURN_BYTES, 0, 0, 0
        for there in available:
            room = room_before_turn(unturned, full)
            if not room:
                count, unturned, since = count + 1, 0, 0
                room = full
            size = min(there, room)
            unturned += size
            since += size
            most = max(most, since)
        return count, most

    assert turns([full] * 10) == (10, full)
    short_turns, short_most = turns([60_000] * 40)
    assert short_turns <= 40 // 3 + 1 and short_most <= TURN_BYTES  # three reads a turn, not one
    for there in (1, 1058, 50_000, 127_000, 140_000, 200_000, full):
        assert turns([there] * 50)[1] <= TURN_BYTES


async def test_a_peer_streaming_a_run_reads_a_whole_turn_at_a_time(libsodium, monkeypatch):
    # In a run of like frames, the reads into the run's kept buffer take up to
    # RUN_READ_BYTES (a turn's worth, more than a read returning new bytes asks for):
    # half the reads, and half the window updates, of 128 KiB ones. Without
    # libsodium every read goes through receive_some, at most RECEIVE_CHUNK.
    from lnpmsg.node.peer_reading import RECEIVE_CHUNK, RUN_READ_BYTES, TURN_BYTES
    from lnpmsg.transports.tcp import TcpConnection

    sizes: list[int] = []
    read_into = TcpConnection.receive_into_nowait

    def recording(self, buffer):
        size = read_into(self, buffer)
        if size is not None:
            sizes.append(size)
        return size

    monkeypatch.setattr(TcpConnection, "receive_into_nowait", recording)
    messages = [CUSTOM.to_bytes(2, "big") + bytes([n % 256]) * 1022 for n in range(4000)]
    node, received, all_in = _node_taking(messages)
    async with running(node) as nursery:
        nursery.start_soon(trio.to_thread.run_sync, _stream_to, node.node_id, node.listen_addresses[0], messages)
        with trio.fail_after(30):
            await all_in.wait()
    assert received == [message[2:] for message in messages]
    assert RUN_READ_BYTES == TURN_BYTES > RECEIVE_CHUNK
    if not libsodium:
        assert not sizes
        return
    assert RECEIVE_CHUNK < max(sizes) <= RUN_READ_BYTES


async def test_a_peer_streaming_full_reads_lets_other_tasks_run_every_turn_bytes(libsodium):
    # A stream that is always there is read into the run's kept buffer read after
    # read, with a turn of the scheduler after at most TURN_BYTES (one per full read
    # of RUN_READ_BYTES; reads that end short share one). Trio runs each task once
    # per pass of its run loop, in either order, so between two turns of another
    # task the reader has had at most two: the peer's bytes grow by at most
    # 2 * TURN_BYTES, and at times by more than two reads of RECEIVE_CHUNK.
    # Without libsodium the reads go through receive_some, each its own turn.
    from lnpmsg.node.peer_reading import RECEIVE_CHUNK, TURN_BYTES

    messages = [CUSTOM.to_bytes(2, "big") + bytes([n % 256]) * 1022 for n in range(8000)]
    node, received, all_in = _node_taking(messages)
    async with running(node) as nursery:
        address = node.listen_addresses[0]
        nursery.start_soon(trio.to_thread.run_sync, _stream_to, node.node_id, address, messages)
        seen = []  # the peer's bytes read at each turn of this task
        while not all_in.is_set():
            peer = next(iter(node.peers.values()), None)
            if peer is not None:
                seen.append(peer.counters.bytes_in)
            await trio.lowlevel.checkpoint()
    assert received == [message[2:] for message in messages]
    gaps = [after - before for before, after in zip(seen, seen[1:])]
    if not libsodium:
        assert max(gaps) <= 2 * RECEIVE_CHUNK
        return
    assert max(gaps) <= 2 * TURN_BYTES
    assert any(gap > 2 * RECEIVE_CHUNK for gap in gaps)
