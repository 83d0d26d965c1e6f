"""The gossip app on real nodes over loopback TCP: sync, live gossip, relay, events, bad input."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from lnpmsg.gossip.app import FundingResult, GossipApp, GossipConfig
from lnpmsg.gossip.events import (
    ChannelRemovedEvent,
    GossipRejectedEvent,
    ChannelAnnouncementEvent,
    ChannelUpdateEvent,
    GossipSyncEvent,
)
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.messages import (
    ChannelAnnouncement,
    ChannelUpdate,
    GossipTimestampFilter,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
    register_gossip_messages,
)
from lnpmsg.gossip.sign import sign_channel_announcement, sign_channel_update
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.sync import MAX_U32
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.transports.base import ConnectionClosed
from lnpmsg.wire import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    DEFAULT_REGISTRY,
    Error,
    Features,
    Init,
    ShortChannelId,
    WarningMessage,
)
from lnpmsg.wire.bolt1 import INIT_TLVS

GOSSIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gossip"
PARTS = (str(GOSSIP / "gossip_store-part1.xz"), str(GOSSIP / "gossip_store-part2.xz"))
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
FAST = GossipConfig(flush_interval=0.05, reply_timeout=10.0)
TEST_TIMEOUT = 20


def make(network: str, path: str | Path = ":memory:", *, listen: bool = True, config: GossipConfig = FAST) -> tuple[Node, GossipApp]:
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"] if listen else [], network=network))
    chain = CHAIN_HASH_MAINNET if network == "bitcoin" else CHAIN_HASH_REGTEST
    return node, node.mount(GossipApp(GossipStore(path, chain), config=config))


@asynccontextmanager
async def running(*pairs: tuple[Node, GossipApp]) -> AsyncIterator[None]:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for node, _app in pairs:
                await nursery.start(node.run)  # starts the mounted gossip app
            try:
                yield
            finally:
                for node, _ in pairs:
                    node.stop()
                nursery.cancel_scope.cancel()


def address(node: Node) -> str:
    return f"{node.node_id.hex()}@{node.listen_addresses[0]}"


async def until(predicate: Callable[[], bool], interval: float = 0.02) -> None:
    while not predicate():
        await trio.sleep(interval)


def stored_raw(store: GossipStore) -> set[bytes]:
    out = set()
    for channel in store.list_channels(limit=100_000):
        scid = ShortChannelId.parse(channel["short_channel_id"]).to_int()
        out.add(store.channel_announcement(scid))
        out.update(u for u in store.channel_updates(scid) if u)
        for node_id in (channel["node_id_1"], channel["node_id_2"]):
            raw = store.node_announcement(bytes.fromhex(node_id))
            if raw:
                out.add(raw)
    return out


def preload(store: GossipStore, net: SyntheticNetwork, now: float) -> list[bytes]:
    graph = Graph(store.chain_hash)
    messages = list(net.messages())
    decisions = graph.process_many([(REGISTRY.decode(m), m) for m in messages], now)
    assert all(d.accepted for d in decisions)
    store.apply(decisions)
    return messages


# ------------------------------------------------------------ sync of the real mainnet gossip


async def test_node_syncs_the_real_mainnet_gossip_by_queries(tmp_path: Path) -> None:
    a_node, a = make("bitcoin")
    b_node, b = make("bitcoin", tmp_path / "b.sqlite3", listen=False)
    async with running((a_node, a), (b_node, b)):
        imported = await a.import_cln_store(*PARTS)
        assert imported.outcomes == {"channel_announcement: accepted": 88, "channel_update: accepted": 4}
        assert len(a.graph) == 87
        with b.subscribe() as events, b_node.events.subscribe(lambda e: isinstance(e, GossipSyncEvent)) as syncs:
            await b_node.connect(address(a_node))
            await until(lambda: b.progress()["synced"])
            await b.drain()
            got = []
            while len(got) < 87 + 4:
                got.append(await events.__anext__())
            states = []
            async for event in syncs:
                states.append(event)
                if event.state == "done":
                    break
        assert b.progress()["percent"] == 100.0
        assert states[-1].percent == 100.0 and states[-1].channels_answered == 87
        # The same channels and updates, byte for byte.
        assert stored_raw(b.store) == stored_raw(a.store)
        assert len(stored_raw(a.store)) == 87 + 4
        counts = b.store.counts()
        assert (counts["channels"], counts["updates"], counts["node_announcements"]) == (87, 4, 0)
        # Events: one per accepted message, raw and decoded.
        announcements = [e for e in got if isinstance(e, ChannelAnnouncementEvent)]
        updates = [e for e in got if isinstance(e, ChannelUpdateEvent)]
        assert len(announcements) == 87 and len(updates) == 4
        sample = announcements[0]
        assert bytes.fromhex(sample.raw_hex) == b.store.channel_announcement(ShortChannelId.parse(sample.short_channel_id).to_int())
        assert sample.source_hex == a_node.node_id.hex() and sample.decoded["type"] == "channel_announcement"
        assert sample.to_json()["topic"] == "gossip.channel_announcement"
        assert len(updates[0].node_ids) == 2 and updates[0].decoded["short_channel_id"] == updates[0].short_channel_id
        stats = await b.gossip_stats()
        assert stats["channels"] == 87 and stats["signature_checks"] == 87 * 4 + 4
        assert (await b.get_channel("686200x1137x0")) is not None
        assert (await b.get_channel("686386x1093x1")) is None
    # A restart keeps everything.
    b_again = GossipApp(GossipStore(tmp_path / "b.sqlite3", CHAIN_HASH_MAINNET))
    assert len(b_again.graph) == 87 and b_again.graph.update_count == 4
    assert stored_raw(b_again.store) == stored_raw(a.store)


# ------------------------------------------------------------ live gossip and relay


async def test_live_gossip_is_relayed_by_timestamp_filter_never_echoed() -> None:
    now = time.time()
    net = SyntheticNetwork(5, 8, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 5000)
    hub_node, hub = make("regtest")
    preload(hub.store, net, now)
    hub.store.load_into(hub.graph)
    b_node, b = make("regtest", listen=False)
    c_node, c = make("regtest", listen=False)
    async with running((hub_node, hub), (b_node, b), (c_node, c)):
        await b_node.connect(address(hub_node))
        to_hub = await c_node.connect(address(hub_node))
        await until(lambda: b.progress()["synced"] and c.progress()["synced"])
        await b.drain()
        await c.drain()
        assert len(b.graph) == len(c.graph) == 8
        c_updates_before = c.counters.received["ChannelUpdate"]
        with b.subscribe(types=["channel_update"]) as updates, b.subscribe(types=["channel_announcement"]) as announcements:
            # A fresh update of an existing channel, and a new channel with its first update,
            # originated at C (signed by the channel's nodes).
            ts = int(time.time())
            a0, a1 = net.ends(3)
            scid3 = net.short_channel_id(3)
            ann3 = REGISTRY.decode(net.channel_messages(3)[0])
            signer = net.node_secret(a0) if net.node_ids[a0] == ann3.node_id_1 else net.node_secret(a1)
            fresh = sign_channel_update(signer, scid3, CHAIN_HASH_REGTEST, ts, direction=0, fee_base_msat=4242)
            new_scid = ShortChannelId(net.first_block + 10, 0, 0)
            new_ann = sign_channel_announcement(
                net.node_secret(0), net.node_secret(1), b"\x31" * 32, b"\x32" * 32, new_scid, CHAIN_HASH_REGTEST
            )
            first_signer = net.node_secret(0) if net.node_ids[0] == new_ann.node_id_1 else net.node_secret(1)
            new_upd = sign_channel_update(first_signer, new_scid, CHAIN_HASH_REGTEST, ts, direction=0)
            await to_hub.send(fresh)
            await to_hub.send(new_ann)
            await to_hub.send(new_upd)
            got_updates = [await updates.__anext__(), await updates.__anext__()]
            got_ann = await announcements.__anext__()
        assert {e.decoded["fee_base_msat"] for e in got_updates} >= {4242}
        assert all(e.source_hex == hub_node.node_id.hex() for e in got_updates)
        assert got_ann.short_channel_id == str(new_scid)
        await b.drain()
        assert len(b.graph) == 9 and b.store.channel_announcement(new_scid.to_int()) == new_ann.encode()
        # The hub never echoed C's gossip back to C.
        for _ in range(5):
            await trio.sleep(FAST.flush_interval)
        await c.drain()
        assert c.counters.received["ChannelUpdate"] == c_updates_before
        assert c.counters.received["ChannelAnnouncement"] == 8
        assert hub.counters.relayed >= 3


# ------------------------------------------------------------ bad input from a raw peer


async def raw_peer(node: Node, chain: bytes, *, queries: bool = True) -> RawPeer:
    peer = await RawPeer.connect(node.listen_addresses[0], node.node_id)
    features = Features.from_names(optional=["gossip_queries", "gossip_queries_ex"]) if queries else Features()
    await peer.exchange_init(Init(features=features.to_bytes(), tlvs=INIT_TLVS.stream(networks=[chain])))
    return peer


async def test_syncs_run_with_sync_peers_at_a_time_and_the_next_starts_when_one_ends() -> None:
    node, app = make("regtest", config=GossipConfig(flush_interval=0.05, reply_timeout=60.0, sync_peers=2))
    async with running((node, app)):
        first, second, third = [await raw_peer(node, CHAIN_HASH_REGTEST) for _ in range(3)]
        for peer in (first, second):  # the two first asked, in arrival order; nobody answers
            await next_of(peer, QueryChannelRange.TYPE)
        await until(lambda: third.key.node_id in app._peers)
        assert list(app._syncing) == [first.key.node_id, second.key.node_id]
        assert list(app._unsynced) == [third.key.node_id]
        await first.aclose()  # a sync that ends makes room for the next peer's, now
        await next_of(third, QueryChannelRange.TYPE)
        assert app._syncs[first.key.node_id].reason == "peer disconnected"
        # The second comes back on a new connection: the old one's sync ends, the new one syncs anew.
        again = await RawPeer.connect(node.listen_addresses[0], node.node_id, second.key)
        await again.exchange_init(Init(features=Features.from_names(optional=["gossip_queries"]).to_bytes(), tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_REGTEST])))
        await next_of(again, QueryChannelRange.TYPE)
        assert app._peers[second.key.node_id].sync is app._syncs[second.key.node_id]
        assert list(app._syncing) == [third.key.node_id, second.key.node_id] and not app._unsynced
        assert app.progress()["syncing"]
        for peer in (second, third, again):
            await peer.aclose()
        await until(lambda: not app._peers)
        assert not app._syncing and not app._unsynced


async def until_closed(peer: RawPeer) -> list[bytes]:
    """Every message until the node hangs up (closed or reset)."""
    messages = []
    while True:
        try:
            messages.append(await peer.receive())
        except (EOFError, ConnectionClosed):
            return messages


async def next_of(peer: RawPeer, *types: int) -> bytes:
    """The next message of one of ``types`` (answering nothing, skipping the rest)."""
    while True:
        data = await peer.receive()
        if struct.unpack_from(">H", data)[0] in types:
            return data


async def test_bad_gossip_is_rejected_with_warnings_and_the_store_unchanged() -> None:
    now = time.time()
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    preload(app.store, net, now)
    app.store.load_into(app.graph)
    before = stored_raw(app.store)
    # A peer not offering gossip_queries: we send it no queries, so any reply is unsolicited.
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST, queries=False) as peer:
        # A bad signature: rejected, with a warning naming it.
        ann = REGISTRY.decode(net.channel_messages(0)[0])
        keys = [bytes([i]) * 32 for i in range(1, 5)]
        forged = sign_channel_announcement(*keys, ShortChannelId(1, 2, 3), CHAIN_HASH_REGTEST)
        forged = ChannelAnnouncement.decode(forged.encode()[:2] + ann.node_signature_1 + forged.encode()[66:])
        await peer.send(forged)
        warning = WarningMessage.decode(await next_of(peer, WarningMessage.TYPE))
        assert b"node_signature_1 invalid" in warning.data
        # Wrong chain and unknown channel: ignored quietly (BOLT 7 asks for no warning).
        other_chain = sign_channel_announcement(*keys, ShortChannelId(1, 2, 4), CHAIN_HASH_MAINNET)
        await peer.send(other_chain)
        await peer.send(sign_channel_update(keys[0], ShortChannelId(9, 9, 9), CHAIN_HASH_REGTEST, int(now), direction=0))
        # Replies to queries never made: warnings.
        await peer.send(ReplyChannelRange(chain_hash=CHAIN_HASH_REGTEST, first_blocknum=0, number_of_blocks=10, sync_complete=1, short_channel_ids=[]))
        warning = WarningMessage.decode(await next_of(peer, WarningMessage.TYPE))
        assert b"reply_channel_range" in warning.data
        await peer.send(ReplyShortChannelIdsEnd(chain_hash=CHAIN_HASH_REGTEST, full_information=1))
        warning = WarningMessage.decode(await next_of(peer, WarningMessage.TYPE))
        assert b"reply_short_channel_ids_end" in warning.data
        await app.drain()
        reasons = app.graph.counters.reasons
        assert reasons["channel_announcement: unknown chain"] == 1
        assert reasons["channel_update: unknown channel"] == 1
        assert reasons["channel_announcement: node_signature_1 invalid"] == 1
        # A query for 10^9 blocks is answered from what we hold, in replies that fit.
        await peer.send(QueryChannelRange(chain_hash=CHAIN_HASH_REGTEST, first_blocknum=0, number_of_blocks=10**9))
        ids = []
        while True:
            reply = ReplyChannelRange.decode(await next_of(peer, ReplyChannelRange.TYPE))
            ids.extend(reply.short_channel_ids)
            if reply.sync_complete:
                break
        assert {s.to_int() for s in ids} == set(app.graph.channels)
        assert reply.end_blocknum == 10**9
        # A query by ids gets the announcements and updates, then the end marker.
        await peer.send(QueryShortChannelIds(chain_hash=CHAIN_HASH_REGTEST, short_channel_ids=ids[:2]))
        answered = []
        while True:
            data = await next_of(peer, 256, 257, 258, ReplyShortChannelIdsEnd.TYPE)
            if data[:2] == b"\x01\x06":
                assert ReplyShortChannelIdsEnd.decode(data).full_information == 1
                break
            answered.append(data)
        assert sum(1 for d in answered if d[:2] == b"\x01\x00") == 2
        assert set(answered) <= before
        # A zlib bomb in a query: a malformed message, the connection is failed; nothing stored.
        bomb = zlib.compress(bytes(32 * 1024 * 1024), 9)
        body = b"\x01" + bomb
        await peer.send(struct.pack(">H", 261) + CHAIN_HASH_REGTEST + struct.pack(">H", len(body)) + body)
        rest = await until_closed(peer)
        assert any(m[:2] == struct.pack(">H", WarningMessage.TYPE) for m in rest)
        assert not any(m[:2] == struct.pack(">H", Error.TYPE) for m in rest)
        await app.drain()
    assert stored_raw(app.store) == before


async def test_truncated_gossip_fails_the_connection_store_unchanged() -> None:
    node, app = make("regtest")
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST, queries=False) as peer:
        # Not offering gossip_queries: the node asks for no gossip from us (BOLT 7).
        flt = GossipTimestampFilter.decode(await next_of(peer, GossipTimestampFilter.TYPE))
        assert (flt.first_timestamp, flt.timestamp_range) == (0xFFFFFFFF, 0)
        keys = [bytes([i]) * 32 for i in range(1, 5)]
        raw = sign_channel_announcement(*keys, ShortChannelId(1, 2, 3), CHAIN_HASH_REGTEST).encode()
        await peer.send(raw[:200])
        messages = await until_closed(peer)
        # A warning (an error with the all-zero channel id would ask us to fail every channel),
        # naming the field the message was cut in.
        warnings = [WarningMessage.decode(m) for m in messages if m[:2] == struct.pack(">H", WarningMessage.TYPE)]
        assert warnings and warnings[-1].channel_id == bytes(32)
        assert b"ChannelAnnouncement.bitcoin_signature_2: truncated" in warnings[-1].data, warnings[-1].data
        assert not any(m[:2] == struct.pack(">H", Error.TYPE) for m in messages)
        await app.drain()
    assert app.store.counts()["channels"] == 0 and len(app.graph) == 0


async def test_a_channel_update_with_a_bad_signature_gets_a_warning_and_the_connection_closed() -> None:
    """BOLT 7: "if signature is not a valid signature [...] SHOULD send a warning and close the connection"."""
    now = time.time()
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    preload(app.store, net, now)
    app.store.load_into(app.graph)
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST, queries=False) as peer:
        wrong_key = bytes([7]) * 32  # not either end of the channel
        await peer.send(sign_channel_update(wrong_key, net.short_channel_id(0), CHAIN_HASH_REGTEST, int(now), direction=0))
        messages = await until_closed(peer)
        warnings = [WarningMessage.decode(m) for m in messages if m[:2] == struct.pack(">H", WarningMessage.TYPE)]
        assert any(b"channel_update" in w.data and b"invalid" in w.data for w in warnings)
        assert app.counters.disconnected == 1


async def test_a_flood_of_invalid_gossip_gets_the_peer_disconnected() -> None:
    config = GossipConfig(flush_interval=0.05, max_invalid=5)
    node, app = make("regtest", config=config)
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST) as peer:
        keys = [bytes([i]) * 32 for i in range(1, 5)]
        for i in range(10):
            good = sign_channel_announcement(*keys, ShortChannelId(5, i, 0), CHAIN_HASH_REGTEST)
            try:
                await peer.send(ChannelAnnouncement.decode(good.encode()[:2] + bytes(64) + good.encode()[66:]))
            except ConnectionClosed:
                break  # already hung up on us
        await until_closed(peer)
        assert app.counters.disconnected == 1
        assert app.counters.warnings_sent <= 10
    assert len(app.graph) == 0


async def test_timestamp_filter_backfill_sends_what_is_stored() -> None:
    now = time.time()
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    messages = preload(app.store, net, now)
    app.store.load_into(app.graph)
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST) as peer:
        await peer.send(GossipTimestampFilter(chain_hash=CHAIN_HASH_REGTEST, first_timestamp=0, timestamp_range=0xFFFFFFFF))
        got = []
        while len(got) < len(messages):
            got.append(await next_of(peer, 256, 257, 258))
        assert set(got) == set(messages)
        # Every update comes after its channel's announcement.
        seen = set()
        for raw in got:
            msg = REGISTRY.decode(raw)
            if isinstance(msg, ChannelAnnouncement):
                seen.add(msg.short_channel_id)
            elif isinstance(msg, ChannelUpdate):
                assert msg.short_channel_id in seen


class HeldStore(GossipStore):
    """A real store whose writes wait while ``held`` is clear (a slow disk, on cue)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.held = threading.Event()
        self.held.set()
        self.writing = threading.Event()

    def apply(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.writing.set()
        self.held.wait(TEST_TIMEOUT)
        return super().apply(*args, **kwargs)


async def test_gossip_decided_before_the_peers_filter_reaches_it_while_the_store_is_behind() -> None:
    """Gossip accepted after a peer connected but before its gossip_timestamp_filter came is not
    relayed to it (no filter yet): the filter's backfill must send it, also when the store
    has not written it yet (e.g. a restarted node's channel_update to the peer it reconnects to)."""
    now = time.time()
    net = SyntheticNetwork(4, 2, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100, updates_per_channel=1)
    store = HeldStore(":memory:", CHAIN_HASH_REGTEST)
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="regtest"))
    app = node.mount(GossipApp(store, config=FAST))
    first, second = (REGISTRY.decode(m) for m in net.channel_messages(0)), (REGISTRY.decode(m) for m in net.channel_messages(1))
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST) as peer:
        await until(lambda: len(app._peers) == 1)  # the peer is ready (it sends no filter yet)
        store.held.clear()
        await app.add_own(list(first))
        await trio.to_thread.run_sync(store.writing.wait, TEST_TIMEOUT)  # the writer is busy with the first channel
        await app.add_own(list(second))
        second_scid = net.short_channel_id(1).to_int()
        await until(lambda: app.graph.has_channel(second_scid) and any(app.graph.channels[second_scid].update_ts))  # decided, not stored
        await peer.send(GossipTimestampFilter(chain_hash=CHAIN_HASH_REGTEST, first_timestamp=0, timestamp_range=0xFFFFFFFF))
        await trio.testing.wait_all_tasks_blocked(0.01)  # the backfill waits for the store
        store.held.set()
        wanted = set(net.channel_messages(0)) | set(net.channel_messages(1))
        got: set[bytes] = set()
        with trio.move_on_after(TEST_TIMEOUT / 2):
            while not wanted <= got:
                got.add(await next_of(peer, 256, 258))
        assert wanted <= got, "the second channel, decided before the filter, never reached the peer"


# ------------------------------------------------------------ the control API and the event socket


async def test_control_api_calls_and_gossip_events_over_the_event_socket() -> None:
    import shutil
    import tempfile

    from lnpmsg.rpc.control import ControlServer
    from lnpmsg.rpc.control_client import ControlClient

    now = time.time()
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    preload(app.store, net, now)
    app.store.load_into(app.graph)
    data_dir = Path(tempfile.mkdtemp(prefix="lnpmsg-g-"))
    node.mount(ControlServer(data_dir))
    other, other_app = make("regtest", listen=False)
    try:
        async with running((node, app), (other, other_app)), ControlClient.open(data_dir) as client:
            info = await client.call("getinfo")
            assert "gossip" in info["apps"] and "gossip.listchannels" in info["methods"]
            channels = (await client.call("gossip.listchannels", {"limit": 3}))["channels"]
            assert len(channels) == 3 and channels[0]["policies"][0]["source"] == channels[0]["node_id_1"]
            node_id = channels[0]["node_id_1"]
            mine = (await client.call("gossip.listchannels", {"node_id": node_id}))["channels"]
            assert mine and all(node_id in (c["node_id_1"], c["node_id_2"]) for c in mine)
            assert (await client.call("gossip.getnode", {"node_id": node_id}))["node"]["alias"].startswith("synthetic-")
            scid = channels[1]["short_channel_id"]
            assert (await client.call("gossip.getchannel", [scid]))["channel"]["short_channel_id"] == scid
            assert (await client.call("gossip.getchannel", ["1x1x1"]))["channel"] is None
            assert len((await client.call("gossip.listnodes"))["nodes"]) == 4
            stats = await client.call("gossip.stats")
            assert stats["channels"] == 6 and stats["store"]["updates"] == 12
            async with await client.subscribe("gossip.") as events:
                peer = await other.connect(address(node))
                ann = REGISTRY.decode(net.channel_messages(2)[0])
                a, b = net.ends(2)
                signer = net.node_secret(a) if net.node_ids[a] == ann.node_id_1 else net.node_secret(b)
                fresh = sign_channel_update(signer, ann.short_channel_id, CHAIN_HASH_REGTEST, int(time.time()), direction=0, fee_base_msat=777)
                await peer.send(fresh)
                event = await events.__anext__()
                while event.topic != "gossip.channel_update":
                    event = await events.__anext__()
                assert bytes.fromhex(event.data["raw"]) == fresh.encode()
                assert event.data["message"]["fee_base_msat"] == 777
                assert event.data["source"] == other.node_id.hex()
                assert event.data["short_channel_id"] == str(ann.short_channel_id)
                assert event.data["node_ids"] == [ann.node_id_1.hex(), ann.node_id_2.hex()]
            progress = await client.call("gossip.progress")
            assert "percent" in progress
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_funding_check_and_pruning() -> None:
    checked = []

    async def funding(ann: ChannelAnnouncement) -> FundingResult:
        checked.append(ann.short_channel_id)
        if ann.short_channel_id.tx == 1:
            return FundingResult(error="funding output spent")
        await trio.lowlevel.checkpoint()  # a chain lookup takes a while
        return FundingResult(capacity_sat=5_000_000)

    clock = [time.time()]
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="regtest"))
    app = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST), config=FAST, clock=lambda: clock[0], funding_check=funding))
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    async with running((node, app)), await raw_peer(node, CHAIN_HASH_REGTEST, queries=False) as peer:
        told = node.events.subscribe(lambda e: isinstance(e, (GossipRejectedEvent, ChannelRemovedEvent)))
        for tx in (1, 2):
            await peer.send(sign_channel_announcement(*keys, ShortChannelId(100, tx, 0), CHAIN_HASH_REGTEST))
        bad = sign_channel_announcement(*keys, ShortChannelId(100, 3, 0), CHAIN_HASH_REGTEST)
        await peer.send(ChannelAnnouncement.decode(bad.encode()[:2] + bytes(64) + bad.encode()[66:]))
        await until(lambda: sum(app.graph.counters.by_kind.values()) == 3)
        await app.drain()
        # Only announcements whose signatures hold are looked up on chain.
        assert sorted(checked) == [ShortChannelId(100, 1, 0), ShortChannelId(100, 2, 0)]
        assert app.graph.counters.reasons["channel_announcement: funding output spent"] == 1
        (channel,) = (await app.list_channels())
        assert channel["short_channel_id"] == "100x2x0" and channel["capacity_sat"] == 5_000_000
        # Two weeks and a bit later, with no update: pruned, from the graph and the store.
        clock[0] += 15 * 86_400
        removed = await app.prune()
        await app.drain()
        assert [r.short_channel_id for r in removed] == [ShortChannelId(100, 2, 0).to_int()]
        assert await app.list_channels() == [] and app.store.counts()["channels"] == 0
        assert await app.close_channel(ShortChannelId(100, 2, 0)) is False
        # The feed told of the rejection and of the removal.
        with told:
            rejected = await told.__anext__()
            assert isinstance(rejected, GossipRejectedEvent) and rejected.subject == "100x3x0"
            assert rejected.reason == "node_signature_1 invalid" and rejected.source == peer.key.node_id
            gone = await told.__anext__()
            assert isinstance(gone, ChannelRemovedEvent) and gone.short_channel_id == "100x2x0"
            assert gone.reason == "stale: no update for 14 days" and len(gone.node_ids) == 2


async def test_relay_queue_is_bounded_and_drops_gossip_not_replies() -> None:
    now = time.time()
    net = SyntheticNetwork(6, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 5000)
    hub_node, hub = make("regtest", config=GossipConfig(flush_interval=3600, max_gossip_queue=2))
    preload(hub.store, net, now)
    hub.store.load_into(hub.graph)
    b_node, b = make("regtest", listen=False)
    c_node, c = make("regtest", listen=False)
    async with running((hub_node, hub), (b_node, b), (c_node, c)):
        await b_node.connect(address(hub_node))
        to_hub = await c_node.connect(address(hub_node))
        await until(lambda: b.progress()["synced"] and c.progress()["synced"])
        await until(lambda: all(s.their_filter is not None for s in hub._peers.values()))
        # Peers that have been sent no gossip keep no queue and no warning times (nor an instance dict).
        assert all(s.queue is None and s.warnings is None and not hasattr(s, "__dict__") for s in hub._peers.values())
        ts = int(time.time())
        for i in range(5):
            ann = REGISTRY.decode(net.channel_messages(i)[0])
            x, y = net.ends(i)
            signer = net.node_secret(x) if net.node_ids[x] == ann.node_id_1 else net.node_secret(y)
            await to_hub.send(sign_channel_update(signer, ann.short_channel_id, CHAIN_HASH_REGTEST, ts, direction=0, fee_base_msat=9))
        await until(lambda: hub.graph.counters.by_kind[("channel_update", "accepted")] == 5)
        # B's queue holds 2, the other 3 are dropped; C, the source, gets nothing queued.
        assert hub.counters.relay_dropped == 3
        assert [len(s.queue) for s in hub._peers.values() if s.node_id == b_node.node_id] == [2]
        assert [s.queue for s in hub._peers.values() if s.node_id == c_node.node_id] == [None]
        with b.subscribe(types=["channel_update"]) as updates:
            hub.flush_relay()
            got = [await updates.__anext__(), await updates.__anext__()]
        assert all(e.decoded["fee_base_msat"] == 9 for e in got)
        assert all(s.queue is None for s in hub._peers.values())  # a queue flushed empty is let go
        # Direct replies are never dropped: a query is still answered in full.
        async with await raw_peer(hub_node, CHAIN_HASH_REGTEST, queries=False) as peer:
            await peer.send(QueryChannelRange(chain_hash=CHAIN_HASH_REGTEST, first_blocknum=0, number_of_blocks=MAX_U32))
            reply = ReplyChannelRange.decode(await next_of(peer, ReplyChannelRange.TYPE))
            assert len(reply.short_channel_ids) == 6 and reply.sync_complete


async def test_two_nodes_syncing_from_each_other_under_back_pressure() -> None:
    """Each answers the other's big queries while its own outbox is tiny: no deadlock."""
    now = time.time()
    nodes = []
    for seed in (b"left", b"right"):
        net = SyntheticNetwork(40, 200, CHAIN_HASH_REGTEST, seed=seed, base_timestamp=int(now) - 100, first_block=500_000 + len(nodes) * 1000)
        node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="regtest", max_queued_bytes=16 * 1024))
        app = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST), config=GossipConfig(flush_interval=0.05, max_query_ids=150)))
        preload(app.store, net, now)
        app.store.load_into(app.graph)
        nodes.append((node, app))
    (left, left_app), (right, right_app) = nodes
    async with running(*nodes):
        await left.connect(address(right))
        await until(lambda: left_app.progress()["synced"] and right_app.progress()["synced"])
        await left_app.drain()
        await right_app.drain()
        assert len(left_app.graph) == len(right_app.graph) == 400
        assert stored_raw(left_app.store) == stored_raw(right_app.store)


async def test_a_peer_asking_for_initial_routing_sync_without_queries_gets_a_full_dump() -> None:
    """initial_routing_sync (bit 3), from before gossip queries: everything we hold, unasked."""
    now = time.time()
    net = SyntheticNetwork(4, 6, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    messages = preload(app.store, net, now)
    app.store.load_into(app.graph)
    async with running((node, app)):
        peer = await RawPeer.connect(node.listen_addresses[0], node.node_id)
        async with peer:
            features = Features.from_bits([3])
            await peer.exchange_init(Init(features=features.to_bytes(), tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_REGTEST])))
            got = set()
            while len(got) < len(messages):
                got.add(await next_of(peer, 256, 257, 258))
            assert got == set(messages)
        assert "initial_routing_sync (optional, legacy)" in node.describe_features(features)


async def test_initial_routing_sync_is_not_honoured_when_gossip_queries_are_negotiated() -> None:
    now = time.time()
    net = SyntheticNetwork(2, 1, CHAIN_HASH_REGTEST, base_timestamp=int(now) - 100)
    node, app = make("regtest")
    preload(app.store, net, now)
    app.store.load_into(app.graph)
    async with running((node, app)):
        peer = await RawPeer.connect(node.listen_addresses[0], node.node_id)
        async with peer:
            features = Features.from_bits([3]) | Features.from_names(optional=["gossip_queries"])
            await peer.exchange_init(Init(features=features.to_bytes(), tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_REGTEST])))
            with trio.move_on_after(1):
                data = await next_of(peer, 256, 257, 258)
                raise AssertionError(f"gossip sent unasked: {data[:2].hex()}")


async def test_importing_another_chains_store_says_which_network_was_meant(caplog) -> None:
    node, app = make("bitcoin")
    async with running((node, app)):
        result = await app.import_cln_store(str(GOSSIP / "gossip_store.simple.xz"))
    assert not result.accepted and result.other_chains == {"regtest": 3}  # an announcement, two updates
    assert "unknown chain: did you mean --network regtest?" in caplog.text


async def test_importing_a_stale_store_says_how_many_channels_will_be_pruned_and_when(caplog) -> None:
    # The real mainnet store is from 2021: every channel is long past the two weeks.
    node, app = make("bitcoin", config=GossipConfig(flush_interval=0.05, prune_interval=600))
    async with running((node, app)):
        result = await app.import_cln_store(*PARTS)
        assert result.stale_channels == len(app.graph) == 87
        assert "87 of 87 channel(s) have had no update for 14 days (stale)" in caplog.text
        assert "pruned at the next prune, in 10 min" in caplog.text
    # a horizon of ten years keeps them
    caplog.clear()
    node, app = make("bitcoin", config=GossipConfig(flush_interval=0.05, stale_after=10 * 365 * 86400))
    async with running((node, app)):
        assert (await app.import_cln_store(*PARTS)).stale_channels == 0
    assert "stale" not in caplog.text


def test_the_prune_interval_and_horizon_come_from_the_command_line(tmp_path) -> None:
    from lnpmsg.gossip.commands import node_gossip_app
    from lnpmsg.gossip.errors import GossipError

    app = node_gossip_app(tmp_path / "node", "bitcoin", prune_interval=120, prune_after_days=30)
    assert (app.config.prune_interval, app.config.stale_after) == (120, 30 * 86400)
    app.store.close()
    with pytest.raises(GossipError, match="days"):
        node_gossip_app(tmp_path / "node", "bitcoin", prune_after_days=0)
