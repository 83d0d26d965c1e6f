"""Re-syncs: once ``full_syncs`` are done, a range sync with one peer every
``resync_interval`` (the schedule, sans-IO; then the app in virtual time, its
peers hand-driven over the in-memory transport)."""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from lnpmsg.cli import build_parser, settings_from_args
from lnpmsg.gossip import commands as gossip_commands
from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.commands import node_gossip_app
from lnpmsg.gossip.errors import GossipError, ResyncRefused
from lnpmsg.gossip.messages import (
    QUERY_OPTION_TIMESTAMPS,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lnpmsg.gossip.resync import RESYNC_INTERVAL, ResyncSchedule
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.params import ParamsError
from lnpmsg.runtime import build_node
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.transports.base import ConnectionClosed
from lnpmsg.wire import CHAIN_HASH_REGTEST, Features, Init, Message, Ping, Pong, ShortChannelId
from lnpmsg.wire.bolt1 import INIT_TLVS
from tests.test_gossip_app import REGISTRY
from tests.test_gossip_sync_records import range_reply

A, B, C = b"\x02" + b"a" * 32, b"\x02" + b"b" * 32, b"\x02" + b"c" * 32

# ------------------------------------------------------------ the schedule


def test_the_schedule_is_armed_once_and_due_every_interval_after_a_start() -> None:
    schedule = ResyncSchedule(100.0)
    assert not schedule.due(10_000.0)  # not armed: no re-sync
    schedule.arm(5.0)
    schedule.arm(50.0)  # armed once: the first time counts
    assert schedule.next_at == 105.0 and not schedule.due(104.9) and schedule.due(105.0)
    schedule.start(A, 106.0)
    assert schedule.running == A and schedule.next_at == 206.0
    assert not schedule.due(500.0)  # one at a time: the next waits for this one's end
    schedule.ended(B)
    assert schedule.running == A
    schedule.ended(A)
    assert schedule.due(500.0)
    schedule.postpone(500.0)  # no peer to re-sync with: try again an interval later
    assert schedule.next_at == 600.0
    assert schedule.progress(550.0) == {"interval": 100.0, "next_in": 50.0, "peer": None, "started": 1, "manual": 0, "last": A.hex()}


def test_the_peer_is_one_never_synced_with_at_random_else_the_one_synced_longest_ago() -> None:
    schedule = ResyncSchedule(100.0, rng=random.Random(1))
    assert schedule.choose([]) is None
    schedule.synced_with(A, 1.0)
    picks = {schedule.choose([A, B, C]) for _ in range(50)}
    assert picks == {B, C}  # never synced with: at random among those
    schedule.synced_with(C, 2.0)
    schedule.synced_with(B, 3.0)
    assert schedule.choose([A, B, C]) == A
    schedule.synced_with(A, 4.0)
    assert schedule.choose([A, B, C]) == C
    assert schedule.choose([A, B]) == B


def test_a_schedule_with_interval_zero_never_arms_and_a_negative_one_is_refused() -> None:
    off = ResyncSchedule(0.0)
    off.arm(1.0)
    assert not off.enabled and off.next_at is None and not off.due(1e9)
    with pytest.raises(ValueError, match="0 or more"):
        ResyncSchedule(-1.0)


def test_a_re_sync_asked_for_goes_to_the_peer_given_or_the_timers_choice_and_leaves_the_timer_alone() -> None:
    schedule = ResyncSchedule(100.0, rng=random.Random(1))
    schedule.arm(0.0)
    schedule.synced_with(A, 1.0)
    peers = {A: True, B: True, C: False}  # C offers no gossip_queries
    assert schedule.choose_asked(A, peers, set(), 2) == A
    assert schedule.choose_asked(None, peers, set(), 2) == B  # never synced with (C cannot be)
    assert schedule.choose_asked(None, peers, {B}, 2) == A  # B's sync runs: the other
    schedule.start(B, 40.0, asked=True)
    assert (schedule.running, schedule.last, schedule.manual, schedule.started, schedule.next_at) == (B, B, 1, 0, 100.0)
    assert schedule.choose([A, B]) == A  # B is now the one synced with last
    assert not schedule.due(100.0)  # the timer's, due meanwhile, waits for its end
    schedule.ended(B)
    assert schedule.due(100.0)
    schedule.start(A, 100.0)
    assert (schedule.started, schedule.manual, schedule.last, schedule.next_at) == (1, 1, A, 200.0)
    assert schedule.progress(150.0) == {"interval": 100.0, "next_in": 50.0, "peer": A.hex(), "started": 1, "manual": 1, "last": A.hex()}
    assert schedule.progress(150.0, periodic=False)["interval"] == 0.0 and schedule.progress(150.0, periodic=False)["next_in"] is None
    # an asked-for re-sync with re-syncs off does not make the timer due
    off = ResyncSchedule(0.0)
    off.start(A, 5.0, asked=True)
    off.ended(A)
    assert off.next_at is None and not off.due(1e9) and off.manual == 1


@pytest.mark.parametrize(
    ("wanted", "peers", "syncing", "running", "code", "text"),
    [
        (None, {}, set(), None, "no-peer", "no connected peer offers gossip_queries"),
        (None, {C: False}, set(), None, "no-peer", "no connected peer offers gossip_queries"),
        (B, {A: True}, set(), None, "not-connected", f"peer {B.hex()} is not connected"),
        (C, {A: True, C: False}, set(), None, "no-gossip-queries", f"peer {C.hex()} does not offer gossip_queries"),
        (A, {A: True, B: True}, {A}, None, "already-syncing", f"a sync with {A.hex()} is running already"),
        (A, {A: True, B: True}, {A}, A, "already-syncing", f"a re-sync with {A.hex()} is running already"),
        (None, {A: True}, {A}, None, "already-syncing", "every connected peer offering gossip_queries is syncing already"),
        (B, {A: True, B: True}, {A}, A, "resync-running", f"a re-sync with {A.hex()} is running: one at a time"),
        (None, {A: True, B: True}, {A}, A, "resync-running", "one at a time"),
        (B, {A: True, B: True, C: True}, {A, C}, None, "sync-peers-full", "2 syncs are running, the sync_peers limit"),
        (None, {A: True, B: True, C: True}, {A, C}, None, "sync-peers-full", "the sync_peers limit"),
    ],
)
def test_a_re_sync_asked_for_is_refused_with_the_reason(wanted, peers, syncing, running, code, text) -> None:  # type: ignore[no-untyped-def]
    schedule = ResyncSchedule(100.0)
    schedule.running = running
    with pytest.raises(ResyncRefused, match=text) as refused:
        schedule.choose_asked(wanted, peers, syncing, 2)
    assert refused.value.code == code and refused.value.details == {"code": code}
    assert (schedule.manual, schedule.running) == (0, running)  # nothing started


def test_the_default_interval_is_lnds_twenty_minutes() -> None:
    assert RESYNC_INTERVAL == GossipConfig().resync_interval == 1200.0


# ------------------------------------------------------------ the app in virtual time


class GossipPeer:
    """A hand-driven peer offering ``gossip_queries_ex``: a task answers the node's pings
    (so that the keepalive keeps it through hours of virtual time) and queues the rest."""

    def __init__(self, raw: RawPeer) -> None:
        self.raw = raw
        self.node_id = raw.key.node_id
        self._lock = trio.Lock()
        self._in, self._out = trio.open_memory_channel[bytes](1000)

    async def send(self, message: Message) -> None:
        async with self._lock:  # the reading task's pongs and the test's replies, one at a time
            await self.raw.send(message)

    async def read(self) -> None:
        """Until the connection closes (either side)."""
        try:
            while True:
                data = await self.raw.receive()
                if struct.unpack_from(">H", data)[0] == Ping.TYPE:
                    await self.send(Pong(ignored=bytes(REGISTRY.decode(data).num_pong_bytes)))
                else:
                    self._in.send_nowait(data)
        except (EOFError, ConnectionClosed):
            return

    async def next_of(self, kind: int) -> bytes:
        while True:
            data = await self._out.receive()
            if struct.unpack_from(">H", data)[0] == kind:
                return data

    def types_received(self) -> list[int]:
        """The types of the messages queued so far (taken off the queue)."""
        types = []
        while True:
            try:
                types.append(struct.unpack_from(">H", self._out.receive_nowait())[0])
            except trio.WouldBlock:
                return types

    async def answer_range(self, channels: int = 0) -> None:
        """Answer the next query_channel_range with ``channels`` channels (the range
        complete), then their query (with nothing: the sync is done all the same)."""
        query = REGISTRY.decode(await self.next_of(QueryChannelRange.TYPE))
        ids = [ShortChannelId(100 + i, 0, 0) for i in range(channels)]
        await self.send(range_reply(query, ids))
        if channels:
            await self.next_of(QueryShortChannelIds.TYPE)
            await self.send(ReplyShortChannelIdsEnd(chain_hash=CHAIN_HASH_REGTEST, full_information=1))


#: the connect() of gossip_node: a new peer (or one back with its key), ready on the node
Connect = Callable[..., Awaitable[GossipPeer]]


@asynccontextmanager
async def gossip_node(config: GossipConfig, *, control_dir: Path | None = None) -> AsyncIterator[tuple[GossipApp, Connect]]:
    """A node with the gossip app (and a control server in ``control_dir``, if given), and
    how to connect a peer to it (offering ``gossip_queries_ex``, unless ``queries=False``)."""
    network = MemoryNetwork()
    app = GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST), config=config)
    node = Node(NodeKey.generate(), NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": network.transport()})
    node.mount(app)
    if control_dir is not None:
        node.mount(ControlServer(control_dir))
    async with running(node), trio.open_nursery() as nursery:

        async def connect(key: NodeKey | None = None, *, queries: bool = True) -> GossipPeer:
            raw = await RawPeer.connect(network.names[0], node.node_id, key, transport=network.transport())
            features = Features.from_names(optional=["gossip_queries", "gossip_queries_ex"]) if queries else Features()
            await raw.exchange_init(Init(features=features.to_bytes(), tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_REGTEST])))
            peer = GossipPeer(raw)
            nursery.start_soon(peer.read)
            while peer.node_id not in app._peers:
                await trio.sleep(0.01)
            return peer

        yield app, connect
        nursery.cancel_scope.cancel()


async def test_once_full_syncs_are_done_one_peer_is_re_synced_every_interval(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lnpmsg.gossip")
    config = GossipConfig(reply_timeout=1500.0, sync_peers=1, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config) as (app, connect):
        first = await connect()
        await first.answer_range(channels=2)
        synced_at = trio.current_time()
        while not app.progress()["synced"]:
            await trio.sleep(0.01)
        progress = app.progress()
        assert progress["resync"] == {"interval": 1200.0, "next_in": pytest.approx(1200.0, abs=0.1), "peer": None, "started": 0, "manual": 0, "last": None}
        assert "synced with 1 peers offering channels; 0 more waiting and the peers to come send only new gossip; a re-sync with one of them every 1200 s" in caplog.text
        # A later peer gets our timestamp filter only, until the re-sync picks it:
        # never synced with, it comes before the first peer.
        later = await connect()
        query = await later.next_of(QueryChannelRange.TYPE)
        assert 1200.0 <= trio.current_time() - synced_at <= 1201.5
        assert REGISTRY.decode(query).query_option == QUERY_OPTION_TIMESTAMPS  # timestamps: only what is newer comes
        progress = app.progress()
        assert progress["resync"]["peer"] == later.node_id.hex() and progress["resync"]["started"] == 1
        # The node is still synced while it re-syncs; the peer shows its re-sync.
        assert progress["synced"] and not progress["syncing"] and progress["percent"] == 100.0
        assert progress["peers"][later.node_id.hex()]["state"] == "range"
        await later.send(ReplyChannelRange(chain_hash=CHAIN_HASH_REGTEST, first_blocknum=0, number_of_blocks=0xFFFFFFFF, sync_complete=1, short_channel_ids=[]))
        while app._resync.running is not None:
            await trio.sleep(0.01)
        assert app.progress()["peers"][later.node_id.hex()]["state"] == "done"
        assert f"gossip re-sync with {later.node_id.hex()} done" in caplog.text
        # The next: the peer synced with longest ago. It never answers: the re-sync due
        # meanwhile waits until this one fails (one at a time, at most sync_peers syncs).
        await first.next_of(QueryChannelRange.TYPE)
        assert 2400.0 <= trio.current_time() - synced_at <= 2402.5
        query = await later.next_of(QueryChannelRange.TYPE)
        assert 2400.0 + 1500.0 <= trio.current_time() - synced_at <= 2400.0 + 1500.0 + 3.0
        assert app._syncs[first.node_id].state.value == "failed" and list(app._syncing) == [later.node_id]
        assert f"gossip re-sync with {first.node_id.hex()} failed: peer sent no reply within 1500 s" in caplog.text
        assert app.progress()["synced"]


async def test_a_re_sync_peer_that_leaves_ends_the_re_sync_and_without_peers_the_next_waits_an_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = GossipConfig(reply_timeout=60.0, full_syncs=1, resync_interval=600.0)
    async with gossip_node(config) as (app, connect):
        first = await connect()
        await first.answer_range(channels=1)
        while not app.progress()["synced"]:
            await trio.sleep(0.01)
        await first.next_of(QueryChannelRange.TYPE)  # the re-sync: the only peer
        started = trio.current_time()
        assert app._resync.running == first.node_id
        await first.raw.aclose()
        while app._peers:
            await trio.sleep(0.01)
        assert app._resync.running is None and not app._syncing
        # Due again with no peer: postponed by an interval; a peer come meanwhile is re-synced then.
        await trio.sleep(started + 600.0 + 2.0 - trio.current_time())
        assert app.progress()["resync"]["next_in"] == pytest.approx(600.0, abs=2.5)
        later = await connect()
        await later.next_of(QueryChannelRange.TYPE)
        assert 1200.0 <= trio.current_time() - started <= 1200.0 + 2.5


async def test_a_peer_synced_with_again_after_a_reconnection_counts_once(autojump_clock: trio.testing.MockClock) -> None:
    async with gossip_node(GossipConfig(full_syncs=2, resync_interval=600.0)) as (app, connect):
        first = await connect()
        await first.answer_range(channels=1)
        while app._full_syncs < 1:
            await trio.sleep(0.01)
        await first.raw.aclose()
        while app._peers:
            await trio.sleep(0.01)
        again = await connect(first.raw.key)  # not enough syncs yet: synced with again
        await again.answer_range(channels=1)
        while app._syncing:
            await trio.sleep(0.01)
        assert app._full_syncs == 1 and app.progress()["resync"]["next_in"] is None
        second = await connect()
        await second.answer_range(channels=1)
        while app._full_syncs < 2:
            await trio.sleep(0.01)
        assert app.progress()["resync"]["next_in"] == pytest.approx(600.0, abs=0.5)


async def test_without_full_syncs_there_is_no_re_sync(autojump_clock: trio.testing.MockClock) -> None:
    async with gossip_node(GossipConfig(full_syncs=0, resync_interval=600.0)) as (app, connect):
        peer = await connect()
        await peer.answer_range(channels=1)
        await trio.sleep(3600.0)
        assert app.progress()["resync"] is None and app._resync.started == 0
        assert QueryChannelRange.TYPE not in peer.types_received()


# ------------------------------------------------------------ re-syncs asked for (gossip.resync)


async def synced_node_peer(app: GossipApp, connect: Connect) -> tuple[GossipPeer, float]:
    """The first peer, synced with (its 2 channels): the node is synced; and when (the
    periodic re-syncs' timer armed then)."""
    first = await connect()
    await first.answer_range(channels=2)
    while not app.progress()["synced"]:
        await trio.sleep(0.01)
    armed = app._resync.next_at
    return first, trio.current_time() if armed is None else armed - app._resync.interval


async def resync_ended(app: GossipApp) -> None:
    while app._resync.running is not None:
        await trio.sleep(0.01)


async def test_a_re_sync_asked_for_with_a_peer_runs_at_once_and_leaves_the_periodic_schedule_alone(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lnpmsg.gossip")
    config = GossipConfig(reply_timeout=1500.0, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config) as (app, connect):
        resync = app.control_methods["resync"]
        first, synced_at = await synced_node_peer(app, connect)
        later = await connect()
        await trio.sleep(500.0)
        result = await resync(peer=later.node_id.hex())
        assert result == {"peer": later.node_id.hex(), "chosen": "given", "next_in": pytest.approx(700.0, abs=1.5)}
        query = await later.next_of(QueryChannelRange.TYPE)
        assert trio.current_time() - synced_at <= 501.5  # now, not when the timer says
        assert REGISTRY.decode(query).query_option == QUERY_OPTION_TIMESTAMPS
        r = app.progress()["resync"]
        assert (r["peer"], r["started"], r["manual"], r["last"]) == (later.node_id.hex(), 0, 1, later.node_id.hex())
        assert r["next_in"] == pytest.approx(700.0, abs=1.5)  # the timer did not move
        assert f"gossip re-sync with {later.node_id.hex()} (asked for): asking for its channels" in caplog.text
        assert app.progress()["synced"]  # a re-sync leaves the node synced
        await later.send(range_reply(REGISTRY.decode(query), []))
        await resync_ended(app)
        assert app.progress()["peers"][later.node_id.hex()]["state"] == "done"
        assert f"gossip re-sync with {later.node_id.hex()} done" in caplog.text
        # The periodic re-sync comes when it was due, with the peer synced with longest ago.
        await first.next_of(QueryChannelRange.TYPE)
        assert 1200.0 <= trio.current_time() - synced_at <= 1201.5
        assert QueryChannelRange.TYPE not in later.types_received()
        r = app.progress()["resync"]
        assert (r["peer"], r["started"], r["manual"]) == (first.node_id.hex(), 1, 1)


async def test_a_re_sync_asked_for_without_a_peer_takes_the_timers_choice_one_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    config = GossipConfig(reply_timeout=1500.0, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config) as (app, connect):
        resync = app.control_methods["resync"]
        first, _ = await synced_node_peer(app, connect)
        later = await connect()
        result = await resync()  # the timer's choice: never synced with
        assert (result["peer"], result["chosen"]) == (later.node_id.hex(), "schedule")
        query = await later.next_of(QueryChannelRange.TYPE)
        with pytest.raises(ResyncRefused, match="is running: one at a time") as refused:
            await resync()
        assert refused.value.code == "resync-running"
        with pytest.raises(ResyncRefused, match=f"a re-sync with {later.node_id.hex()} is running already") as refused:
            await resync(peer=later.node_id.hex())
        assert refused.value.code == "already-syncing"
        assert QueryChannelRange.TYPE not in first.types_received()  # refused: nothing asked of the other
        await later.send(range_reply(REGISTRY.decode(query), []))
        await resync_ended(app)
        result = await resync()  # now the one synced with longest ago
        assert result["peer"] == first.node_id.hex()
        await first.next_of(QueryChannelRange.TYPE)
        assert (app.progress()["resync"]["manual"], app.progress()["resync"]["started"]) == (2, 0)


async def test_a_periodic_re_sync_due_while_one_asked_for_runs_waits_for_its_end(autojump_clock: trio.testing.MockClock) -> None:
    config = GossipConfig(reply_timeout=1500.0, full_syncs=1, resync_interval=600.0)
    async with gossip_node(config) as (app, connect):
        first, synced_at = await synced_node_peer(app, connect)
        later = await connect()
        await trio.sleep(500.0)
        await app.control_methods["resync"](peer=later.node_id.hex())
        query = await later.next_of(QueryChannelRange.TYPE)
        await trio.sleep(synced_at + 700.0 - trio.current_time())  # due at +600: it waits
        assert app._resync.started == 0 and QueryChannelRange.TYPE not in first.types_received()
        await later.send(range_reply(REGISTRY.decode(query), []))
        await first.next_of(QueryChannelRange.TYPE)  # once the asked-for one ended
        assert 700.0 <= trio.current_time() - synced_at <= 701.5
        assert app._resync.started == 1 and app._resync.next_at == pytest.approx(trio.current_time() + 600.0, abs=1.0)


async def test_a_re_sync_asked_for_is_refused_with_the_reason_and_within_sync_peers(autojump_clock: trio.testing.MockClock) -> None:
    config = GossipConfig(reply_timeout=1500.0, sync_peers=1, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config) as (app, connect):
        resync = app.control_methods["resync"]
        with pytest.raises(ResyncRefused, match="no connected peer offers gossip_queries") as refused:
            await resync()
        assert refused.value.code == "no-peer"
        plain = await connect(queries=False)
        with pytest.raises(ResyncRefused, match="no connected peer offers gossip_queries"):
            await resync()
        with pytest.raises(ResyncRefused, match=f"peer {plain.node_id.hex()} does not offer gossip_queries") as refused:
            await resync(peer=plain.node_id.hex())
        assert refused.value.code == "no-gossip-queries"
        stranger = NodeKey.generate().node_id.hex()
        with pytest.raises(ResyncRefused, match=f"peer {stranger} is not connected") as refused:
            await resync(peer=stranger)
        assert refused.value.code == "not-connected"
        with pytest.raises(ParamsError, match="peer must be 33 bytes"):
            await resync(peer="02ab")
        # The first peer's sync takes the one sync at a time (sync_peers=1): no re-sync now.
        first = await connect()
        query = await first.next_of(QueryChannelRange.TYPE)
        second = await connect()  # waits for its first sync
        with pytest.raises(ResyncRefused, match=f"a sync with {first.node_id.hex()} is running already") as refused:
            await resync(peer=first.node_id.hex())
        assert refused.value.code == "already-syncing"
        for peer in (second.node_id.hex(), None):
            with pytest.raises(ResyncRefused, match="1 syncs are running, the sync_peers limit") as refused:
                await resync(peer=peer)
            assert refused.value.code == "sync-peers-full"
        assert list(app._syncing) == [first.node_id] and app._resync.manual == 0
        assert QueryChannelRange.TYPE not in second.types_received()
        await first.send(range_reply(REGISTRY.decode(query), []))
        await second.next_of(QueryChannelRange.TYPE)  # its first sync, from the queue as ever


async def test_a_peer_waiting_for_its_first_sync_can_be_asked_for_and_its_sync_counts(autojump_clock: trio.testing.MockClock) -> None:
    # One full sync wanted and under way: the second peer waits (the first may be enough).
    config = GossipConfig(reply_timeout=1500.0, sync_peers=2, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config) as (app, connect):
        first = await connect()
        await first.next_of(QueryChannelRange.TYPE)
        second = await connect()
        assert list(app._unsynced) == [second.node_id] and app.progress()["resync"]["next_in"] is None
        await app.control_methods["resync"](peer=second.node_id.hex())
        assert not app._unsynced and set(app._syncing) == {first.node_id, second.node_id}
        await second.answer_range(channels=3)
        while app._full_syncs < 1:
            await trio.sleep(0.01)
        # It offered channels: the full sync is done and the periodic re-syncs are armed.
        assert app.progress()["resync"]["next_in"] == pytest.approx(1200.0, abs=1.0)
        assert app.progress()["resync"]["manual"] == 1


async def test_a_re_sync_asked_for_before_any_sync_was_done_is_the_nodes_sync(autojump_clock: trio.testing.MockClock) -> None:
    async with gossip_node(GossipConfig(reply_timeout=60.0, full_syncs=1, resync_interval=1200.0)) as (app, connect):
        first = await connect()
        await first.next_of(QueryChannelRange.TYPE)  # never answered: its first sync fails
        while app._syncing:
            await trio.sleep(0.01)
        assert not app.progress()["synced"] and not app.progress()["syncing"]
        await app.control_methods["resync"]()
        progress = app.progress()
        assert progress["syncing"] and not progress["synced"] and progress["percent"] < 100.0  # not hidden as a re-sync
        await first.answer_range(channels=2)
        while app._full_syncs < 1:
            await trio.sleep(0.01)
        progress = app.progress()
        assert progress["synced"] and progress["resync"]["next_in"] == pytest.approx(1200.0, abs=1.0)


async def test_with_re_syncs_off_one_can_still_be_asked_for(autojump_clock: trio.testing.MockClock) -> None:
    async with gossip_node(GossipConfig(full_syncs=1, resync_interval=0.0)) as (app, connect):
        first, _ = await synced_node_peer(app, connect)
        assert app.progress()["resync"] is None
        result = await app.control_methods["resync"]()
        assert result == {"peer": first.node_id.hex(), "chosen": "schedule", "next_in": None}
        query = await first.next_of(QueryChannelRange.TYPE)
        resync = app.progress()["resync"]
        assert resync == {"interval": 0.0, "next_in": None, "peer": first.node_id.hex(), "started": 0, "manual": 1, "last": first.node_id.hex()}
        await first.send(range_reply(REGISTRY.decode(query), []))
        await resync_ended(app)
        await trio.sleep(3600.0)  # and no periodic one follows
        assert app._resync.started == 0 and QueryChannelRange.TYPE not in first.types_received()


# ------------------------------------------------------------ settings and status


def test_full_syncs_and_the_resync_interval_go_from_the_command_line_to_the_app(tmp_path: Path) -> None:
    argv = ["node", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", "--gossip-full-syncs", "5", "--gossip-resync-interval", "300"]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert (settings.gossip_full_syncs, settings.gossip_resync_interval) == (5, 300.0)
    app = build_node(settings).app("gossip")
    assert (app.config.full_syncs, app.config.resync_interval, app._resync.interval) == (5, 300.0, 300.0)
    app.store.close()
    defaults = settings_from_args(build_parser().parse_args(["node", "--data-dir", str(tmp_path)]))
    assert (defaults.gossip_full_syncs, defaults.gossip_resync_interval) == (None, None)  # the app's defaults
    for option, value, text in (("full_syncs", -1, "--gossip-full-syncs: peers, 0 or more"), ("resync_interval", -5.0, "--gossip-resync-interval: seconds")):
        with pytest.raises(GossipError, match=text):
            node_gossip_app(tmp_path / "node", "bitcoin", **{option: value})


def test_gossip_stats_says_when_the_next_re_sync_is_due(capsys: pytest.CaptureFixture[str]) -> None:
    progress = {"synced": True, "syncing": False, "percent": 100.0, "peers": {}, "channels": 12}
    stats = {
        "channels": 12, "channel_updates": 3, "nodes": 4, "node_announcements": 2, "decisions": {}, "reasons": {},
        "store": {"channels": 12, "updates": 3, "node_announcements": 2, "size_bytes": 4096}, "signature_checks": 0,
        "relayed": 0, "relay_queued": 0, "relay_dropped": 0, "queries_answered": 0, "replies_sent": 0,
        "warnings_sent": 0, "peers_disconnected": 0,
    }  # fmt: skip
    for resync, line in (
        (None, None),
        ({"interval": 1200.0, "next_in": None, "peer": None, "started": 0}, "re-sync:            once the first full syncs are done (every 20 min, 0 so far)"),
        ({"interval": 1200.0, "next_in": 754.2, "peer": None, "started": 2}, "re-sync:            next in 13 min (every 20 min, 2 so far)"),
        ({"interval": 90.0, "next_in": 30.0, "peer": "02" + "ab" * 32, "started": 3}, f"re-sync:            now, with 02{'ab' * 32} (every 90 s, 3 so far)"),
    ):
        gossip_commands._print_stats({**stats, "sync": {**progress, "resync": resync}})
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == line if line else out[-1].startswith("sync:   ")
