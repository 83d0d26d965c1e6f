"""Nodes in virtual time (lnpmsg.testing.virtual): a two-node app exchange
over the in-memory transport under trio's MockClock, where minutes of
keepalive pings and timeouts pass without waiting for them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from lnpmsg.app import App
from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.peer import Peer
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.virtual import memory_node, node_pair, record_events, run_virtual, virtual_clock
from lnpmsg.wire import Init, Message, message
from lnpmsg.wire.fields import u16_prefixed_bytes

PING_INTERVAL = 60.0


@message(type=32901)
@dataclass(frozen=True, slots=True)
class Ask(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


@message(type=32903)
@dataclass(frozen=True, slots=True)
class Answer(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


class Echo(App):
    """Answers every Ask with its text upper-cased; keeps the answers it gets."""

    def __init__(self) -> None:
        super().__init__("echo", feature_bit=333)
        self._answers_out, self.answers_in = trio.open_memory_channel[bytes](16)

    def setup(self) -> None:
        self.message(Ask)
        self.message(Answer)
        self.add_handler(Ask, self.on_ask)
        self.add_handler(Answer, self.on_answer)

    async def on_ask(self, peer: Peer, ask: Ask) -> None:
        await peer.send(Answer(text=ask.text.upper()))

    async def on_answer(self, peer: Peer, answer: Answer) -> None:
        self._answers_out.send_nowait(answer.text)

    async def ask(self, node_id: bytes, text: bytes) -> bytes:
        await self.send(node_id, Ask(text=text))
        return await self.answers_in.receive()


def _echo(node: object) -> Echo:
    app = node.apps["echo"]  # type: ignore[attr-defined]
    assert isinstance(app, Echo)
    return app


async def _exchange_across_idle_minutes() -> tuple[float, int]:
    """Ask, stay idle for five keepalive intervals, ask again; returns the virtual seconds and pings seen."""
    began = trio.current_time()
    async with node_pair([Echo()], [Echo()], ping_interval=PING_INTERVAL, pong_timeout=30.0) as (a, b):
        with record_events(a) as events:
            assert await _echo(b).ask(a.node_id, b"hello") == b"HELLO"
            await trio.sleep(5 * PING_INTERVAL)  # five minutes pass on the mock clock
            assert await _echo(b).ask(a.node_id, b"still there?") == b"STILL THERE?"
            pings = b.peers[a.node_id].session.stats.pings_in + a.peers[b.node_id].session.stats.pings_in
            assert not events.of(PeerDisconnected)
    return trio.current_time() - began, pings


def test_a_two_node_app_exchange_completes_in_virtual_time() -> None:
    clock = virtual_clock()
    wall_began = time.perf_counter()
    elapsed, pings = run_virtual(_exchange_across_idle_minutes, clock=clock)
    wall = time.perf_counter() - wall_began
    # Both nodes pinged each other once a minute, and the connection lived through it...
    assert elapsed >= 5 * PING_INTERVAL
    assert pings >= 2 * 4
    # ...on the mock clock: a real one would have needed those five minutes.
    assert wall < elapsed


async def test_under_the_pytest_fixture_too(autojump_clock: trio.testing.MockClock) -> None:
    elapsed, pings = await _exchange_across_idle_minutes()
    assert elapsed >= 5 * PING_INTERVAL and pings >= 8


async def test_a_silent_peer_is_dropped_after_the_pong_timeout_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with node_pair([Echo()], [Echo()], network=network, ping_interval=PING_INTERVAL, pong_timeout=30.0) as (a, b):
        with record_events(b) as events:
            silenced = trio.current_time()
            network.connections[-1][1].hang()  # a's end goes quiet, its connection open
            dropped = await events.wait_for(PeerDisconnected)
            assert dropped.node_id == a.node_id
            assert trio.current_time() - silenced <= PING_INTERVAL + 30.0 + 1.0
        assert a.node_id not in b.peers


async def test_a_raw_peer_that_never_answers_pings_is_dropped_on_the_dot(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    node = memory_node(network, ping_interval=PING_INTERVAL, pong_timeout=30.0)
    async with running(node):
        with record_events(node) as events:
            raw = await RawPeer.connect(network.names[0], node.node_id, transport=network.transport())
            await raw.send(Init())
            await events.wait_for(PeerConnected)
            ready = trio.current_time()
            dropped = await events.wait_for(PeerDisconnected)
        # the first keepalive ping leaves a minute after init, and its pong is due 30 s later
        assert "did not answer ping within 30 s" in dropped.reason
        assert trio.current_time() - ready == pytest.approx(PING_INTERVAL + 30.0, abs=1.0)
        await raw.aclose()
