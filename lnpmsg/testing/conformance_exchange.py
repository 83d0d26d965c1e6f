"""Conformance checks that peers connect and exchange messages over a medium.

Handshake and init both ways, a wrong node id, features, pings, bulk and
concurrent traffic, and back-pressure from a receiver that stops reading
(see :mod:`lnpmsg.testing.conformance`).
"""

from __future__ import annotations

from dataclasses import replace

import trio

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError
from lnpmsg.node.peer import Peer
from lnpmsg.noise import MAX_MESSAGE_SIZE
from lnpmsg.testing.conformance_nodes import (
    _address,
    _connect,
    _events_of,
    _forgot,
    _stat_above,
    _wait_unpaired,
    make_node,
    recording,
    wait_until,
)
from lnpmsg.testing.media import Medium
from lnpmsg.testing.nodes import running
from lnpmsg.testing.traffic import MESSAGE_TYPE, ConformanceFailure, Traffic, _require
from lnpmsg.transports.address import format_peer_address, parse_peer_address
from lnpmsg.wire import Features, Message

__all__ = [
    "check_backpressure",
    "check_bulk_both_ways",
    "check_concurrent_senders",
    "check_handshake",
    "check_init_and_features",
    "check_ping_pong",
    "check_wrong_node_id",
]

#: seconds before the caller's deadline at which :func:`check_bulk_both_ways`
#: stops waiting and reports its progress (time to fail and stop the nodes
#: before the deadline itself strikes)
_PROGRESS_MARGIN = 3.0


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


async def check_backpressure(medium: Medium, *, max_queued: int = 1 << 20) -> None:
    """A receiver that stops reading holds the sender back; the bytes between them stay bounded.

    Bounded by the sender's queue plus :meth:`Medium.in_flight_bound`, or, on
    a medium that reports :meth:`Medium.bytes_taken` (one with no bound of
    its own), by the sender's queue beyond what the medium took.
    """
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
        taken = medium.bytes_taken(outbound.conn)
        if taken is None:
            _require(accepted <= bound, f"{accepted} bytes left the sender, above the bound of {bound}")
        else:
            # The medium reads ahead without a bound of its own (Tor): beyond what it
            # took (wire bytes, a little more than the messages in them), the node
            # may hold no more than its queue.
            held = accepted - taken
            _require(
                held <= max_queued + MAX_MESSAGE_SIZE,
                f"{accepted} bytes left the sender and the medium took {taken}: the node holds {held} (limit {max_queued})",
            )
        _require(peak_queue <= max_queued + MAX_MESSAGE_SIZE, f"the sender queued {peak_queue} bytes (limit {max_queued})")
        release.set()
        await sender_done.wait()
        await traffic.wait_for({0: sent})
        _require(outbound.is_ready, "the connection did not survive the stall")
