"""Conformance checks of closes and misbehaving peers over a medium.

Graceful and abrupt closes from either side, a silent (half-open) peer, a
listener's restart, a corrupt frame and a flood of unfinished handshakes:
each time the node notices, and serves on (see :mod:`lnpmsg.testing.conformance`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable

import trio

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.peer import HandshakeFailed, PeerClosedError, handshake_as_responder
from lnpmsg.testing.conformance_nodes import (
    _address,
    _connect,
    _events_of,
    _raw_dial,
    _transport_for,
    make_node,
    recording,
    wait_until,
)
from lnpmsg.testing.media import Medium
from lnpmsg.testing.nodes import running
from lnpmsg.testing.traffic import _HEADER, MESSAGE_TYPE, Traffic, _require
from lnpmsg.transports.address import (
    PeerAddress,
    format_peer_address,
    parse_listen_address,
    parse_peer_address,
)
from lnpmsg.transports.base import Connection, TransportError
from lnpmsg.wire import Init

__all__ = [
    "check_abrupt_close",
    "check_corrupt_frame",
    "check_graceful_close",
    "check_handshake_flood",
    "check_reconnect_after_restart",
    "check_silent_peer",
]


async def check_graceful_close(medium: Medium, closer: str = "dialer") -> None:
    """Messages queued before ``peer.close`` all arrive, in order, before the other side sees the close."""
    count = medium.close_messages
    a, b = make_node(medium), make_node(medium)
    traffic = Traffic(seed=5)
    async with running(a, b), recording(a) as a_events, recording(b) as b_events:
        outbound, inbound = await _connect(medium, b, a)
        sender, receiver, receiver_events = (outbound, a, a_events) if closer == "dialer" else (inbound, b, b_events)
        receiver.add_handler(MESSAGE_TYPE, traffic.handler)
        await traffic.send(sender, 0, count)
        sender.close("done sending")
        await wait_until(lambda: _events_of(receiver_events, PeerDisconnected), "the receiver to see the close")
        traffic.check()
        _require(traffic.received[0] == count, f"{traffic.received[0]} of {count} messages arrived before the close")
        # After the close, both nodes serve a new connection.
        await _connect(medium, b, a)


async def check_abrupt_close(medium: Medium, closer: str = "dialer") -> None:
    """Closing the transport under a busy peer: the other side notices, got an intact prefix, and both recover."""
    a, b = make_node(medium), make_node(medium)
    traffic = Traffic(seed=6)
    a.add_handler(MESSAGE_TYPE, traffic.handler)
    b.add_handler(MESSAGE_TYPE, traffic.handler)
    async with running(a, b) as nursery, recording(a) as a_events, recording(b) as b_events:
        outbound, inbound = await _connect(medium, b, a)
        sender, receiver_events, sender_events = (outbound, a_events, b_events) if closer == "dialer" else (inbound, b_events, a_events)

        async def stream_until_closed() -> None:
            with contextlib.suppress(PeerClosedError):
                await traffic.send(sender, 0, 1_000_000)

        nursery.start_soon(stream_until_closed)
        await wait_until(lambda: traffic.received[0] >= 50, "traffic before the abrupt close")
        # No session close, no flush, no error message: the connection just goes.
        await sender.conn.aclose()
        await wait_until(lambda: _events_of(receiver_events, PeerDisconnected), "the receiver to notice the abrupt close")
        await wait_until(lambda: _events_of(sender_events, PeerDisconnected), "the closing side to drop its peer")
        traffic.check()
        reason = _events_of(receiver_events, PeerDisconnected)[0].reason
        _require("bad encrypted frame" not in reason, f"a damaged frame reached the receiver: {reason}")
        await wait_until(lambda: not a.peers and not b.peers, "both sides to forget the peer")
        outbound, _ = await _connect(medium, b, a)
        await traffic.send(outbound, 1, 20)
        await traffic.wait_for({1: 20})


async def check_silent_peer(medium: Medium, silent: str = "dialer") -> None:
    """A peer that goes silent with its connection open (half-open) is found out by pings and dropped."""
    node = make_node(medium, ping_interval=0.2, pong_timeout=0.5)
    async with running(node) as nursery, recording(node) as events:
        if silent == "dialer":
            raw = await _raw_dial(medium, node)
            await raw.send(Init())
            await wait_until(lambda: _events_of(events, PeerConnected), "the node to accept the raw peer")
            raw_id = raw.key.node_id
            close: Callable[[], Awaitable[None]] = raw.aclose
        else:
            key = NodeKey.generate()
            transport = medium.transports()[medium.kind]
            listener = await transport.listen(parse_listen_address(medium.listen_address()).target)
            done = trio.Event()

            async def silent_responder(conn: Connection) -> None:
                try:
                    cipher, _remote, _leftover = await handshake_as_responder(conn, key)
                except HandshakeFailed:
                    return
                await conn.send_frames([cipher.encryptor.encrypt(Init().encode())])
                await done.wait()  # never read, never answer

            async def close_listener() -> None:
                await listener.aclose()
                done.set()

            nursery.start_soon(listener.serve, silent_responder)
            local = format_peer_address(PeerAddress(medium.kind, listener.local_address))
            await node.connect(await medium.reachable(local, key.node_id))
            raw_id = key.node_id
            close = close_listener
        await wait_until(lambda: _events_of(events, PeerDisconnected), "the node to drop the silent peer", timeout=15)
        disconnected = _events_of(events, PeerDisconnected)[0]
        _require(disconnected.node_id == raw_id, "the wrong peer was dropped")
        _require("pong" in disconnected.reason or "ping" in disconnected.reason, f"dropped for another reason: {disconnected.reason}")
        await close()


async def check_reconnect_after_restart(medium: Medium) -> None:
    """A node keeping a peer connected finds it again after the peer's listener restarts."""
    key = NodeKey.generate()
    a = make_node(medium, key=key)
    async with running(a) as nursery:
        address = await _address(medium, a)
        b = make_node(medium, listen=False, connect=[address])
        await nursery.start(b.run)
        with b.events.subscribe() as events:
            await wait_until(lambda: key.node_id in b.peers, "the first connection")
            await wait_until(lambda: b.node_id in a.peers, "the listener to see the dialer")
            listen_at = a.listen_addresses[0]
            a.stop()
            async for event in events:
                if isinstance(event, PeerDisconnected):
                    break
            # The same node comes back on the same address.
            a2 = make_node(medium, key=key, listen=[listen_at])
            traffic = Traffic(seed=8)
            a2.add_handler(MESSAGE_TYPE, traffic.handler)
            await nursery.start(a2.run)
            async for event in events:
                if isinstance(event, PeerConnected):
                    _require(event.node_id == key.node_id and event.outbound, f"unexpected reconnection {event}")
                    break
            await traffic.send(b.peers[key.node_id], 0, 50)
            await traffic.wait_for({0: 50})
            b.stop()
            a2.stop()


async def check_corrupt_frame(medium: Medium) -> None:
    """A frame whose MAC does not verify drops that peer only; an established peer carries on."""
    a, b = make_node(medium), make_node(medium, listen=False)
    traffic = Traffic(seed=10)
    a.add_handler(MESSAGE_TYPE, traffic.handler)
    async with running(a, b), recording(a) as events:
        outbound, _ = await _connect(medium, b, a)
        raw = await _raw_dial(medium, a)
        try:
            await raw.send(Init())
            await wait_until(lambda: raw.key.node_id in a.peers, "the raw peer to be accepted")
            frame = bytearray(raw.encrypt(_HEADER.pack(MESSAGE_TYPE, 9, 0) + bytes(100)))
            frame[-1] ^= 1
            await raw.send_raw(bytes(frame))
            await wait_until(lambda: raw.key.node_id not in a.peers, "the node to drop the corrupting peer")
        finally:
            await raw.aclose()
        dropped = [e for e in _events_of(events, PeerDisconnected) if e.node_id == raw.key.node_id]
        _require(dropped and "bad encrypted frame" in dropped[0].reason, f"dropped for another reason: {dropped}")
        await traffic.send(outbound, 0, 100)
        await traffic.wait_for({0: 100})
        _require(b.node_id in a.peers, "the established peer was disturbed")


async def check_handshake_flood(medium: Medium) -> None:
    """Many connections that never finish the handshake are dropped and counted; established peers carry on."""
    flood = medium.flood_connections
    a = make_node(medium, handshake_timeout=1.0)
    b = make_node(medium, listen=False)
    traffic = Traffic(seed=11)
    a.add_handler(MESSAGE_TYPE, traffic.handler)
    async with running(a, b) as nursery:
        outbound, _ = await _connect(medium, b, a)
        target = parse_peer_address(await _address(medium, a))
        transport = _transport_for(medium, target)
        conns: list[Connection] = []
        rng = random.Random(12)

        async def attacker(index: int) -> None:
            try:
                conn = await transport.dial(target.target)
            except TransportError:
                return  # refused under load: that is a fine answer to a flood
            conns.append(conn)
            with contextlib.suppress(TransportError):
                if index % 2:
                    await conn.send_frames([rng.randbytes(50)])  # an act one that cannot decrypt
                # the even ones stay silent until the handshake timeout

        async with trio.open_nursery() as attackers:
            for index in range(flood):
                attackers.start_soon(attacker, index)
            await traffic.send(outbound, 0, 200)  # the established peer, during the flood
        await traffic.wait_for({0: 200})
        _require(outbound.is_ready and b.node_id in a.peers, "the established peer was disturbed by the flood")
        dropped = ("handshake_failed", "refused_ip_limit", "evicted")
        # a transport with a handshake of its own (QUIC) may drop a dial before the node sees it
        transport_dropped = ("evicted", "handshake_timeouts")

        def counted() -> int:
            below = sum(getattr(listener, "stats", {}).get(k, 0) for listener in a.listeners for k in transport_dropped)
            return sum(a.stats[k] for k in dropped) + below

        await wait_until(lambda: counted() >= len(conns) // 2, "the node to count the dropped handshakes")
        for conn in conns:
            await conn.aclose()
        await wait_until(lambda: not a.pending_handshakes, "the flood to drain")
        # A new, honest peer is served after the flood.
        c = make_node(medium, listen=False)
        await nursery.start(c.run)
        await _connect(medium, c, a)
        c.stop()
