"""The node's keepalive and deadlines, in virtual time over the in-memory
transport: real BOLT-1 defaults (a ping a minute, 30 s for its pong) pass
in no wall time, and each deadline is checked to the second.

A :class:`~lnpmsg.testing.rawpeer.RawPeer` is a peer that does only what
the test says: here it completes ``init`` and then never answers a ping
(and, in one test, never reads)."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.node import Node
from lnpmsg.node.peer import CLOSE_FLUSH_TIMEOUT, PeerClosedError
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.virtual import memory_node, record_events
from lnpmsg.wire import Init

CUSTOM = 32769
PING_INTERVAL = 60.0
PONG_TIMEOUT = 30.0


async def _raw_peer(network: MemoryNetwork, node: Node) -> RawPeer:
    """A raw peer connected to ``node`` with init done; returns once the node sees it ready."""
    with record_events(node) as events:
        raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
        await raw.send(Init())
        await events.wait_for(PeerConnected)
    return raw


async def test_peer_that_stops_answering_pings_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    a = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(a):
        with record_events(a) as events:
            raw = await _raw_peer(network, a)
            ready = trio.current_time()
            event = await events.wait_for(PeerDisconnected)
        assert "did not answer ping" in event.reason
        assert trio.current_time() - ready == pytest.approx(PING_INTERVAL + PONG_TIMEOUT, abs=1.0)
        await raw.aclose()


async def test_an_app_ping_brings_the_pong_deadline_forward(autojump_clock: trio.testing.MockClock) -> None:
    """The reader's wait is bounded by the session's next timer; a ping moves that timer."""
    network = MemoryNetwork()
    a = memory_node(network, ping_interval=3600.0, pong_timeout=PONG_TIMEOUT)
    async with running(a):
        raw = await _raw_peer(network, a)  # never answers a ping
        peer = a.peers[raw.key.node_id]
        began = trio.current_time()
        with pytest.raises(PeerClosedError, match="did not answer ping"):
            await peer.ping(timeout=600)
        # the pong deadline, not the hour until the next keepalive nor the ping's own timeout
        assert trio.current_time() - began == pytest.approx(PONG_TIMEOUT, abs=1.0)
        await raw.aclose()


async def test_peer_that_neither_reads_nor_answers_pings_is_dropped_even_while_a_send_is_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A write blocked on a dead peer must not keep it alive: the pong timeout ends it."""
    network = MemoryNetwork(buffer_size=64 * 1024)
    a = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=PONG_TIMEOUT)
    async with running(a):
        stuck = await _raw_peer(network, a)  # never reads after this
        stuck_peer = a.peers[stuck.key.node_id]
        ready = trio.current_time()

        async def flood() -> None:
            message = CUSTOM.to_bytes(2, "big") + bytes(60000)
            with contextlib.suppress(PeerClosedError):
                while True:  # far beyond the link's buffer: the node's writer blocks
                    await stuck_peer.send(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await stuck_peer.closed.wait()
            nursery.cancel_scope.cancel()
        assert "did not answer ping" in (stuck_peer.close_reason or "")
        # the pong deadline, plus the flush window a closing peer's stuck writer gets
        assert trio.current_time() - ready == pytest.approx(PING_INTERVAL + PONG_TIMEOUT + CLOSE_FLUSH_TIMEOUT, abs=1.0)
        assert stuck.key.node_id not in a.peers
        await stuck.aclose()
