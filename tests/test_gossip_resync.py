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
from lnpmsg.gossip.errors import GossipError
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
    assert schedule.progress(550.0) == {"interval": 100.0, "next_in": 50.0, "peer": None, "started": 1}


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
async def gossip_node(config: GossipConfig) -> AsyncIterator[tuple[GossipApp, Connect]]:
    network = MemoryNetwork()
    app = GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST), config=config)
    node = Node(NodeKey.generate(), NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": network.transport()})
    node.mount(app)
    async with running(node), trio.open_nursery() as nursery:

        async def connect(key: NodeKey | None = None) -> GossipPeer:
            raw = await RawPeer.connect(network.names[0], node.node_id, key, transport=network.transport())
            features = Features.from_names(optional=["gossip_queries", "gossip_queries_ex"])
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
        assert progress["resync"] == {"interval": 1200.0, "next_in": pytest.approx(1200.0, abs=0.1), "peer": None, "started": 0}
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
