"""One conformance suite that every peer transport passes, through real Nodes.

Like trio's ``check_two_way_stream``, the checks here take a description of
a medium (:class:`Medium`) and drive two or more :class:`~lnpmsg.node.node.Node`
objects over it: ``node.connect``, message handlers, ``peer.send``,
``peer.ping`` and node events, exactly as an app would. Nothing in a check
looks at the transport beyond :meth:`Medium.transports`,
:meth:`Medium.listen_address` and :meth:`Medium.reachable`, so a check that
passes over every medium shows that the node and its apps are unaware of
which medium carries a peer.

Run every check on a medium::

    await check_all(TcpMedium())

or one at a time (a test per check reads better)::

    for name, check in CHECKS.items():
        await check(UdpMedium())

A new transport passes the suite by adding a :class:`Medium` subclass
(the media live in :mod:`lnpmsg.testing.media`, the numbered messages in
:mod:`lnpmsg.testing.traffic`; both are re-exported here). A
failed check raises :class:`ConformanceFailure` (an ``AssertionError``) with
what went wrong; every check guards against hangs with a generous deadline
(:attr:`Medium.deadline`), which is not a speed requirement.

The messages are numbered on independent *streams* and sized at random up
to the 65,535 bytes of BOLT 8 (:class:`Traffic`); the receiver rebuilds
each expected message and compares it, so loss, duplication, reordering,
truncation and corruption are all caught.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.node.peer import (
    HandshakeFailed,
    Peer,
    PeerClosedError,
    handshake_as_initiator,
    handshake_as_responder,
)
from lnpmsg.noise import MAX_MESSAGE_SIZE
from lnpmsg.testing.media import (
    BULK_MESSAGES,
    Medium,
    MemoryMedium,
    OnionPool,
    TcpMedium,
    TorMedium,
    UdpMedium,
    ZmqMedium,
)
from lnpmsg.testing.nodes import running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.traffic import _HEADER, MESSAGE_TYPE, ConformanceFailure, Traffic, _require
from lnpmsg.transports.address import (
    PeerAddress,
    format_peer_address,
    parse_listen_address,
    parse_peer_address,
)
from lnpmsg.transports.base import Connection, Transport, TransportError
from lnpmsg.wire import Features, Init, Message

__all__ = [
    "BULK_MESSAGES",
    "CHECKS",
    "MESSAGE_TYPE",
    "ConformanceFailure",
    "Medium",
    "MemoryMedium",
    "OnionPool",
    "TcpMedium",
    "TorMedium",
    "Traffic",
    "UdpMedium",
    "ZmqMedium",
    "check_abrupt_close",
    "check_all",
    "check_backpressure",
    "check_bulk_both_ways",
    "check_concurrent_senders",
    "check_corrupt_frame",
    "check_graceful_close",
    "check_handshake",
    "check_handshake_flood",
    "check_init_and_features",
    "check_ping_pong",
    "check_reconnect_after_restart",
    "check_silent_peer",
    "check_wrong_node_id",
    "make_node",
    "recording",
    "running",
    "wait_until",
]

#: seconds before the caller's deadline at which :func:`check_bulk_both_ways`
#: stops waiting and reports its progress (time to fail and stop the nodes
#: before the deadline itself strikes)
_PROGRESS_MARGIN = 3.0


# --------------------------------------------------------------------- helpers


def make_node(medium: Medium, *, listen: bool | list[str] = True, key: NodeKey | None = None, **config: Any) -> Node:
    """A node with the medium's transports and the given NodeConfig settings.

    ``listen``: True for one fresh address of the medium, False for none, or the addresses.
    """
    settings = medium.node_config() | config
    if isinstance(listen, list):
        settings["listen"] = listen
    else:
        settings["listen"] = [medium.listen_address()] if listen else []
    return Node(key or NodeKey.generate(), NodeConfig(**settings), transports=medium.transports())


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise ConformanceFailure(f"gave up after {timeout:g} s waiting for {what}")


async def _address(medium: Medium, node: Node) -> str:
    return await medium.reachable(node.listen_addresses[0], node.node_id)


async def _connect(medium: Medium, dialer: Node, listener: Node) -> tuple[Peer, Peer]:
    """Connect ``dialer`` to ``listener``; returns (dialer's peer, listener's peer), both ready."""
    outbound = await dialer.connect(await _address(medium, listener))
    _require(outbound.is_ready, "connect returned a peer that is not ready")
    await wait_until(lambda: dialer.node_id in listener.peers, "the listener to accept the dialer")
    return outbound, listener.peers[dialer.node_id]


async def _wait_unpaired(a: Node, b: Node) -> None:
    await wait_until(lambda: b.node_id not in a.peers and a.node_id not in b.peers, "both sides to drop the peer")


def _stat_above(node: Node, key: str, value: int) -> Callable[[], bool]:
    return lambda: node.stats[key] > value


def _forgot(node: Node, other: Node) -> Callable[[], bool]:
    return lambda: other.node_id not in node.peers


def _transport_for(medium: Medium, address: PeerAddress) -> Transport:
    return medium.transports()[address.kind]


async def _raw_dial(medium: Medium, node: Node, key: NodeKey | None = None) -> RawPeer:
    """A hand-driven BOLT-8 initiator to ``node`` over the medium, handshake done, nothing else sent."""
    key = key or NodeKey.generate()
    address = parse_peer_address(await _address(medium, node))
    conn = await _transport_for(medium, address).dial(address.target)
    try:
        cipher, leftover = await handshake_as_initiator(conn, key, node.node_id)
    except BaseException:
        await conn.aclose()
        raise
    return RawPeer(conn, cipher, key, leftover)


def _events_of(events: list[object], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@asynccontextmanager
async def recording(node: Node) -> AsyncIterator[list[object]]:
    """Collect the node's events into a list while the block runs."""
    events: list[object] = []
    remove = node.events.add_listener(events.append)
    try:
        yield events
    finally:
        remove()


# ---------------------------------------------------------------------- checks


async def check_handshake(medium: Medium) -> None:
    """BOLT-8 handshake and init in both directions; both sides see the right peer and kind."""
    a, b = make_node(medium), make_node(medium)
    async with running(a, b), recording(a) as a_events, recording(b) as b_events:
        for dialer, listener, dialer_events, listener_events in ((b, a, b_events, a_events), (a, b, a_events, b_events)):
            outbound, inbound = await _connect(medium, dialer, listener)
            for peer, remote, is_outbound in ((outbound, listener, True), (inbound, dialer, False)):
                _require(peer.node_id == remote.node_id, "peer has the wrong node id")
                _require(peer.outbound is is_outbound, "outbound flag is wrong")
                _require(peer.transport_kind == medium.kind, f"peer runs over {peer.transport_kind}, not {medium.kind}")
            connected = _events_of(dialer_events, PeerConnected)[-1]
            _require(connected.outbound and connected.transport == medium.kind, f"dialer's event is wrong: {connected}")
            connected = _events_of(listener_events, PeerConnected)[-1]
            _require(not connected.outbound and connected.node_id == dialer.node_id, f"listener's event is wrong: {connected}")
            await dialer.disconnect(listener.node_id)
            await _wait_unpaired(dialer, listener)
        _require(len(_events_of(a_events, PeerDisconnected)) == 2, "a disconnect was not reported")


async def check_wrong_node_id(medium: Medium) -> None:
    """Dialing with a node id the listener does not own fails clearly, both ways; the listener serves on."""
    a, b = make_node(medium), make_node(medium)
    async with running(a, b):
        for dialer, listener in ((b, a), (a, b)):
            right = parse_peer_address(await _address(medium, listener))
            wrong = format_peer_address(replace(right, node_id=NodeKey.generate().node_id))
            failed_before = listener.stats["handshake_failed"]
            try:
                await dialer.connect(wrong)
            except ConnectError as exc:
                _require("node id" in str(exc), f"the error does not point at the node id: {exc}")
            else:
                raise ConformanceFailure(f"connect to {wrong} succeeded with the wrong node id")
            _require(not dialer.peers and not listener.peers, "a peer exists after a failed handshake")
            await wait_until(_stat_above(listener, "handshake_failed", failed_before), "the listener to count the failed handshake")
            await _connect(medium, dialer, listener)
            await dialer.disconnect(listener.node_id)
            await _wait_unpaired(dialer, listener)


async def check_init_and_features(medium: Medium) -> None:
    """Feature bits cross in init; an unknown required bit or a foreign chain is refused."""
    features_a = Features.from_names(optional=["gossip_queries", "payment_secret", "basic_mpp"])
    features_b = Features.from_names(optional=["option_onion_messages"], required=["option_static_remotekey"])
    a = make_node(medium, features=features_a)
    b = make_node(medium, features=features_b)
    odd = make_node(medium, features=Features.from_bits([301]))  # unknown, optional: fine
    demanding = make_node(medium, features=Features.from_bits([300]))  # unknown, required: refused
    regtest = make_node(medium, network="regtest")
    async with running(a, b, odd, demanding, regtest), recording(a) as a_events:
        outbound, inbound = await _connect(medium, b, a)
        _require(outbound.session.remote_features == features_a, "the dialer did not get the listener's features")
        _require(inbound.session.remote_features == features_b, "the listener did not get the dialer's features")
        connected = _events_of(a_events, PeerConnected)[-1]
        _require("option_onion_messages (optional)" in connected.features, f"features missing from the event: {connected.features}")
        peer, _ = await _connect(medium, odd, a)
        _require(peer.is_ready, "an unknown optional feature was refused")
        # The dialer checks the listener's init before connect returns, so it is the one refusing.
        for node, reason in ((demanding, "300"), (regtest, "chain")):
            try:
                await a.connect(await _address(medium, node))
            except ConnectError as exc:
                _require(reason in str(exc), f"refusal does not say why ({reason}): {exc}")
            else:
                raise ConformanceFailure(f"a peer with {reason} trouble was accepted")
            await wait_until(_forgot(node, a), "the refused peer to be dropped")
            _require(node.node_id not in a.peers, "the refused peer stayed connected")
        _require(b.node_id in a.peers and odd.node_id in a.peers, "refusing one peer disturbed others")


async def check_ping_pong(medium: Medium) -> None:
    """``peer.ping`` works from both sides, and the node's own keepalive pings are answered."""
    a = make_node(medium, ping_interval=0.1, pong_timeout=10.0)
    b = make_node(medium)
    async with running(a, b):
        outbound, inbound = await _connect(medium, b, a)
        for peer in (outbound, inbound, outbound, inbound):
            rtt = await peer.ping()
            _require(rtt >= 0, f"negative round-trip time {rtt}")
        pings_before = outbound.session.stats.pings_in
        await wait_until(lambda: outbound.session.stats.pings_in >= pings_before + 3, "the listener's keepalive pings")
        _require(inbound.is_ready and outbound.is_ready, "keepalive pings cost the connection")


async def check_bulk_both_ways(medium: Medium) -> None:
    """``medium.bulk_messages`` messages of random sizes up to 65,535 bytes each way at once, intact and in order.

    Under a caller's deadline (``trio.fail_after``), the check gives up
    :data:`_PROGRESS_MARGIN` seconds before it and fails saying how many
    messages had arrived each way.
    """
    count = medium.bulk_messages
    a, b = make_node(medium), make_node(medium)
    to_a, to_b = Traffic(seed=1), Traffic(seed=2)
    a.add_handler(MESSAGE_TYPE, to_a.handler)
    b.add_handler(MESSAGE_TYPE, to_b.handler)
    began = trio.current_time()
    async with running(a, b) as nursery:
        outbound, inbound = await _connect(medium, b, a)
        nursery.start_soon(to_a.send, outbound, 1, count)
        nursery.start_soon(to_b.send, inbound, 2, count)
        with trio.move_on_at(trio.current_effective_deadline() - _PROGRESS_MARGIN) as waiting:
            await to_a.wait_for({1: count})
            await to_b.wait_for({2: count})
        if waiting.cancelled_caught:
            # stop the senders and the nodes now; the failure is raised below, on its own
            nursery.cancel_scope.cancel()
        else:
            _require(to_a.senders[1] == b.node_id and to_b.senders[2] == a.node_id, "messages came from the wrong peer")
            _require(outbound.is_ready and inbound.is_ready, "the connection did not survive the bulk transfer")
    _require(
        not waiting.cancelled_caught,
        f"out of time after {trio.current_time() - began:.0f} s: {to_a.received[1]} of {count} messages "
        f"reached the listener, {to_b.received[2]} of {count} the dialer "
        f"({(to_a.bytes_received + to_b.bytes_received) / 1e6:.0f} MB in all)",
    )


async def check_concurrent_senders(medium: Medium, *, dialers: int = 3, streams: int = 4) -> None:
    """Several dialers, each with several tasks sending on one peer, while the listener sends back to all."""
    count = medium.concurrent_messages
    hub = make_node(medium)
    clients = [make_node(medium, listen=False) for _ in range(dialers)]
    to_hub, to_clients = Traffic(seed=3), Traffic(seed=4)
    hub.add_handler(MESSAGE_TYPE, to_hub.handler)
    for client in clients:
        client.add_handler(MESSAGE_TYPE, to_clients.handler)
    async with running(hub, *clients) as nursery:
        pairs = [await _connect(medium, client, hub) for client in clients]
        expected_hub: dict[int, int] = {}
        expected_clients: dict[int, int] = {}
        for index, (outbound, inbound) in enumerate(pairs):
            for task in range(streams):
                stream = index * streams + task
                nursery.start_soon(to_hub.send, outbound, stream, count)
                expected_hub[stream] = count
            stream = 1000 + index
            nursery.start_soon(to_clients.send, inbound, stream, count)
            expected_clients[stream] = count
        await to_hub.wait_for(expected_hub)
        await to_clients.wait_for(expected_clients)
        for index, client in enumerate(clients):
            _require(to_hub.senders[index * streams] == client.node_id, "a stream reached the hub from the wrong peer")
            _require(to_clients.senders[1000 + index] == hub.node_id, "a stream reached a client from the wrong peer")
        _require(len(hub.peers) == dialers, "the hub lost a peer")


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


async def check_backpressure(medium: Medium, *, max_queued: int = 1 << 20) -> None:
    """A receiver that stops reading holds the sender back; the bytes between them stay bounded."""
    a = make_node(medium)
    b = make_node(medium, max_queued_bytes=max_queued)
    traffic = Traffic(seed=9)
    release = trio.Event()
    sender_done = trio.Event()

    async def stuck_handler(peer: Peer, message: Message) -> None:
        await release.wait()  # the node's reader for this peer waits here: it stops reading
        traffic.handler(peer, message)

    a.add_handler(MESSAGE_TYPE, stuck_handler)
    bound = max_queued + MAX_MESSAGE_SIZE + medium.in_flight_bound()
    cap = 3 * bound // 32_000 + 100  # the sender tries three bounds' worth (messages average 32 KiB)
    accepted = sent = peak_queue = 0
    async with running(a, b) as nursery:
        outbound, _ = await _connect(medium, b, a)

        async def sender() -> None:
            nonlocal accepted, sent, peak_queue
            for data in traffic.messages(0, cap):
                if release.is_set():
                    break
                await outbound.send(data)
                accepted += len(data)
                sent += 1
                peak_queue = max(peak_queue, outbound.queued_bytes)
            sender_done.set()

        nursery.start_soon(sender)
        # Wait until the sender makes no progress any more (or has sent everything).
        last, still = -1, 0
        with trio.fail_after(medium.deadline):
            while still < 30 and not sender_done.is_set():
                await trio.sleep(0.02)
                still = still + 1 if accepted == last else 0
                last = accepted
        _require(not sender_done.is_set(), "the sender was never held back by a receiver that does not read")
        _require(accepted <= bound, f"{accepted} bytes left the sender, above the bound of {bound}")
        _require(peak_queue <= max_queued + MAX_MESSAGE_SIZE, f"the sender queued {peak_queue} bytes (limit {max_queued})")
        release.set()
        await sender_done.wait()
        await traffic.wait_for({0: sent})
        _require(outbound.is_ready, "the connection did not survive the stall")


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


async def _graceful_dialer(medium: Medium) -> None:
    await check_graceful_close(medium, "dialer")


async def _graceful_listener(medium: Medium) -> None:
    await check_graceful_close(medium, "listener")


async def _abrupt_dialer(medium: Medium) -> None:
    await check_abrupt_close(medium, "dialer")


async def _abrupt_listener(medium: Medium) -> None:
    await check_abrupt_close(medium, "listener")


async def _silent_dialer(medium: Medium) -> None:
    await check_silent_peer(medium, "dialer")


async def _silent_listener(medium: Medium) -> None:
    await check_silent_peer(medium, "listener")


#: every check by name, each taking only the medium (parametrize tests with it)
CHECKS: dict[str, Callable[[Medium], Awaitable[None]]] = {
    "handshake": check_handshake,
    "wrong_node_id": check_wrong_node_id,
    "init_and_features": check_init_and_features,
    "ping_pong": check_ping_pong,
    "bulk_both_ways": check_bulk_both_ways,
    "concurrent_senders": check_concurrent_senders,
    "graceful_close_by_dialer": _graceful_dialer,
    "graceful_close_by_listener": _graceful_listener,
    "abrupt_close_by_dialer": _abrupt_dialer,
    "abrupt_close_by_listener": _abrupt_listener,
    "silent_dialer": _silent_dialer,
    "silent_listener": _silent_listener,
    "reconnect_after_restart": check_reconnect_after_restart,
    "backpressure": check_backpressure,
    "corrupt_frame": check_corrupt_frame,
    "handshake_flood": check_handshake_flood,
}


async def check_all(medium: Medium) -> None:
    """Run every check on ``medium``, one after the other, each under the medium's deadline."""
    for name, check in CHECKS.items():
        with trio.fail_after(medium.deadline_for(name)):
            try:
                await check(medium)
            except ConformanceFailure as exc:
                raise ConformanceFailure(f"{medium.name}: {name}: {exc}") from exc
