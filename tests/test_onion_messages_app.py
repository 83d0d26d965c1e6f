"""The onion-messages app on real nodes in this process (loopback TCP): features, relaying,
delivery to handlers and as events, replies along a reply path, path_id checks, the flood
bound, and malformed messages that are dropped without hurting the peer."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import coincurve
import pytest
import trio

from lnpmsg.app import AppError
from lnpmsg.onion_messages import BlindedPath, OnionMessagesApp, blinded_path_to, build_onion_message
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.onion_messages.app import OnionMessage, OnionMessageReceived, ReceivedOnionMessage, reply_path_key
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.wire import Features
from lnpmsg.wire.primitives import ShortChannelId


async def wait_for(predicate, timeout=5.0):  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def _trio_of_nodes(**options):  # type: ignore[no-untyped-def]
    nodes = [make_node() for _ in range(3)]
    apps = [n.mount(OnionMessagesApp(**options)) for n in nodes]
    return nodes, apps


async def _line(a, b, c):  # type: ignore[no-untyped-def]
    """A - B - C: A and C are not connected."""
    await a.connect(address_of(b))
    await c.connect(address_of(b))
    await wait_for(lambda: len(b.peers) == 2 and all(p.is_ready for p in b.peers.values()))


@asynccontextmanager
async def a_to_b(node_config=None, **options):  # type: ignore[no-untyped-def]
    """A connected to B, whose app (``options``) hands the records of type 65 it gets to ``got``:
    A, B, B's app, ``got`` and A's peer B (``node_config``: the nodes' NodeConfig fields)."""
    a, b = make_node(**(node_config or {})), make_node(**(node_config or {}))
    a.mount(OnionMessagesApp())
    app_b = b.mount(OnionMessagesApp(**options))
    got: list[object] = []
    app_b.on_tlv(65)(got.append)
    async with running(a, b):
        await a.connect(address_of(b))
        await wait_for(lambda: b.peers and all(p.is_ready for p in b.peers.values()))
        yield a, b, app_b, got, a.peers[b.node_id]


async def test_a_message_through_b_reaches_cs_handler_and_the_reply_comes_back() -> None:
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes()
    got_c, got_a = [], []
    app_c.on_tlv(65)(got_c.append)

    @app_a.on_tlv(67)
    async def on_reply(received):  # type: ignore[no-untyped-def]
        got_a.append(received)

    async with running(a, b, c):
        await _line(a, b, c)
        peer_b = a.peers[b.node_id]
        assert peer_b.session.remote_features.has(39) and app_a.features == Features.from_bits([39])
        assert app_a.node_announcement_features.has(39)
        # what the announce app puts in our node_announcement (init's N-context bits, the apps' own)
        from lnpmsg.gossip.announce import node_features

        assert Features.from_bytes(node_features(a.local_features(), app_a.node_announcement_features)).has(39)
        sent = await app_a.send(c.node_id, {65: b"ping"}, reply_path=True, via=[b.node_id])
        assert sent["first_hop"] == b.node_id.hex() and sent["size"] == 1366
        await wait_for(lambda: got_c)
        received = got_c[0]
        assert received.records == {65: b"ping"} and received.reply_to is None and received.reply_path is not None
        assert received.from_peer == b.node_id and app_b.counts["relayed"] == 1
        # C answers along the reply path (B is its introduction node: C's peer)
        await app_c.reply(received, {67: b"pong"})
        await wait_for(lambda: got_a)
        assert got_a[0].records == {67: b"pong"} and got_a[0].reply_to == sent["id"]
        listed = await app_a.control_received()
        assert listed["messages"][-1]["reply_to"] == sent["id"] and listed["messages"][-1]["records"] == {"67": b"pong".hex()}


async def test_direct_peer_blinded_path_and_the_received_event() -> None:
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes()
    seen: list[object] = []
    c.events.add_listener(lambda e: seen.append(e) if isinstance(e, OnionMessageReceived) else None)
    async with running(a, b, c):
        await _line(a, b, c)
        # a blinded path C made (B then C), used by A: A only knows B
        path = blinded_path_to(bytes([5]) * 32, [b.node_id, c.node_id])
        await app_a.send(path, {65: b"blinded"})
        await wait_for(lambda: seen)
        assert seen[0].records == {"65": b"blinded"} and seen[0].topic == "onion_message.received"  # type: ignore[attr-defined]
        # direct: C's peer B
        await app_c.send(b.node_id, {65: b"hi"})
        await wait_for(lambda: app_b.counts["delivered"] == 1)
        # no path: C is not A's peer and A has no gossip
        with pytest.raises(AppError, match="not a connected peer"):
            await app_a.send(c.node_id, {65: b"x"})
        with pytest.raises(AppError, match="first hop"):
            await app_a.send(c.node_id, {65: b"x"}, via=[c.node_id])


async def test_paths_to_us_end_with_dummy_hops_we_peel() -> None:
    """C's path to itself through B, and A's reply path, each padded to 4 hops with dummy hops of their
    maker (BOLT 4), who peels them on receipt; a path padded past what a node peels is dropped."""
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes()
    got_c, got_a = [], []
    app_c.on_tlv(65)(got_c.append)
    app_a.on_tlv(67)(got_a.append)
    async with running(a, b, c):
        await _line(a, b, c)
        path, path_id = app_c.blinded_path_to_us([b.node_id])
        assert path.first_node_id == b.node_id and len(path.hops) == 4 and app_c.blinded_path_length == 4
        assert c.node_id not in (h.blinded_node_id for h in path.hops)
        sent = await app_a.send(path, {65: b"through the dummies"}, reply_path=True)
        await wait_for(lambda: got_c)
        received = got_c[0]
        assert received.records == {65: b"through the dummies"} and received.reply_to == path_id and app_b.counts["relayed"] == 1
        assert received.reply_path is not None and len(received.reply_path.hops) == 4  # (B, then A and A's 2 dummies)
        await app_c.reply(received, {67: b"back through A's"})
        await wait_for(lambda: got_a)
        assert got_a[0].reply_to == sent["id"] and app_b.counts["relayed"] == 2
        # unpadded when asked so; padded past the limit of our own hops: dropped
        app_c.blinded_path_length = 0
        assert len(app_c.blinded_path_to_us([b.node_id])[0].hops) == 2
        too_long = blinded_path_to(os.urandom(32), [b.node_id, *[c.node_id] * 10])
        await app_a.send(too_long, {65: b"never"})
        await wait_for(lambda: app_c.drops.total.get("malformed", 0) == 1)
        assert len(got_c) == 1


async def test_a_reply_path_id_we_did_not_make_and_unknown_even_records_are_dropped() -> None:
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes()
    got: list[object] = []
    app_b.on_tlv(65)(got.append)
    async with running(a, b, c):
        await _line(a, b, c)
        # a path to B whose path_id B never made
        forged = blinded_path_to(bytes([6]) * 32, [b.node_id], path_id=bytes(24))
        await app_a.send(forged, {65: b"probe"})
        # an even record B has no handler for
        await app_a.send(b.node_id, {66: b"?"})
        await app_a.send(b.node_id, {65: b"fine"})
        await wait_for(lambda: got)
        assert [r.records for r in got] == [{65: b"fine"}]
        assert app_b.drops.total["path_id not ours"] == 1 and app_b.drops.total["unknown even record"] == 1
        assert a.peers[b.node_id].is_ready


async def test_a_flood_is_dropped_over_the_rate_and_the_peer_stays() -> None:
    async with a_to_b(rate=1.0, burst=5) as (a, b, app_b, got, peer):
        key = bytes([9]) * 32
        for i in range(200):
            out = build_onion_message(key, bytes([i + 1]) * 32, [], b.node_id, {65: i.to_bytes(2, "big")})
            await peer.send(OnionMessage(path_key=out.path_key, onion_message_packet=out.packet))
        await wait_for(lambda: sum(app_b.drops.total.values()) + len(got) == 200)
        # the burst passes (one more may have refilled while the flood was read), the rest is dropped
        assert 5 <= len(got) <= 8 and app_b.drops.total["rate limited (from the peer)"] == 200 - len(got)
        assert b.peers[a.node_id].is_ready


async def test_malformed_messages_are_dropped_without_a_disconnect() -> None:
    async with a_to_b() as (a, b, app_b, got, peer):
        good = build_onion_message(bytes([1]) * 32, bytes([2]) * 32, [], b.node_id, {65: b"ok"})
        other = coincurve.PrivateKey(bytes([3]) * 32).public_key.format()
        bad = [
            OnionMessage(path_key=good.path_key, onion_message_packet=good.packet[:-1] + b"\x00"),  # HMAC
            OnionMessage(path_key=other, onion_message_packet=good.packet),  # wrong path key
            OnionMessage(path_key=b"\x02" + bytes(32), onion_message_packet=good.packet),  # not a point
            OnionMessage(path_key=good.path_key, onion_message_packet=bytes(40000)),  # oversize
            OnionMessage(path_key=good.path_key, onion_message_packet=b""),
        ]
        for msg in bad:
            await peer.send(msg)
        await peer.send(OnionMessage(path_key=good.path_key, onion_message_packet=good.packet))
        await wait_for(lambda: got)
        assert app_b.drops.total["malformed"] == len(bad) and b.peers[a.node_id].is_ready
        stats = await app_b.control_stats()
        assert stats["delivered"] == 1 and stats["dropped"] == {"malformed": len(bad)}


# ---------------------------------------------------------------- a path from the gossip graph


def _gossip(secrets: dict[str, bytes], channels: list[tuple[str, str]], announce_feature: set[str]) -> list[object]:
    """Signed gossip: each channel announced with both directions' updates, then every node's
    node_announcement (bit 39 for those in ``announce_feature``)."""
    from lnpmsg.gossip.sign import sign_channel_announcement, sign_channel_update, sign_node_announcement
    from lnpmsg.wire import CHAIN_HASH_REGTEST

    now = int(__import__("time").time())
    out: list[object] = []
    for i, (x, y) in enumerate(channels):
        scid = ShortChannelId(100 + i, 1, 0)
        ann = sign_channel_announcement(secrets[x], secrets[y], bytes([200 + 2 * i]) * 32, bytes([201 + 2 * i]) * 32, scid, CHAIN_HASH_REGTEST)
        out.append(ann)
        by_id = {coincurve.PrivateKey(s).public_key.format(): s for s in (secrets[x], secrets[y])}
        for direction, node in enumerate((ann.node_id_1, ann.node_id_2)):
            out.append(sign_channel_update(by_id[node], scid, CHAIN_HASH_REGTEST, now - 10, direction=direction))
    for name, secret in secrets.items():
        features = Features.from_bits([39]).to_bytes() if name in announce_feature else b""
        out.append(sign_node_announcement(secret, now - 5, alias=name, features=features))
    return out


async def test_without_hops_the_path_comes_from_the_gossip_graph_over_nodes_announcing_the_feature(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lnpmsg.gossip.app import GossipApp, GossipConfig
    from lnpmsg.gossip.store import GossipStore
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import Node, NodeConfig
    from lnpmsg.wire import CHAIN_HASH_REGTEST

    secrets = {name: bytes([i + 1]) * 32 for i, name in enumerate("abcde")}
    nodes = {name: Node(NodeKey.from_secret(s), NodeConfig(listen=["127.0.0.1:0"], network="regtest")) for name, s in secrets.items()}
    apps = {name: n.mount(OnionMessagesApp()) for name, n in nodes.items()}
    gossip = nodes["a"].mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST), config=GossipConfig(flush_interval=0.05)))
    # B - C - D announces onion messages; B - E - D is as short, but E does not read them
    messages = _gossip(secrets, [("b", "c"), ("c", "d"), ("b", "e"), ("e", "d")], {"b", "c", "d"})
    got: list[object] = []
    apps["d"].on_tlv(65)(got.append)
    answers: list[object] = []
    apps["a"].on_tlv(67)(answers.append)
    async with running(*nodes.values()):
        await gossip.add_own(messages)  # type: ignore[arg-type]
        await gossip.drain()
        assert len(gossip.graph) == 4
        for x, y in (("a", "b"), ("b", "c"), ("c", "d"), ("b", "e"), ("e", "d")):
            await nodes[x].connect(address_of(nodes[y]))
        await wait_for(lambda: all(p.is_ready for n in nodes.values() for p in n.peers.values()))
        a, d = apps["a"], nodes["d"]
        sent = await a.send(d.node_id, {65: b"over gossip"}, reply_path=True)
        assert sent["first_hop"] == nodes["b"].node_id.hex() and sent["hops"] == 3
        await wait_for(lambda: got)
        assert apps["c"].counts["relayed"] == 1 and apps["e"].counts["relayed"] == 0
        await apps["d"].reply(got[0], {67: b"back"})  # type: ignore[arg-type]
        await wait_for(lambda: answers)
        assert answers[0].reply_to == sent["id"]  # type: ignore[attr-defined]
        with pytest.raises(AppError, match="does not announce onion messages"):
            await a.send(nodes["e"].node_id, {65: b"x"})
        # a blinded path whose introduction is given as a sciddir: C, as an end of channel B-C (100x1x0)
        c_id = nodes["c"].node_id
        direction = 0 if c_id < nodes["b"].node_id else 1
        path = blinded_path_to(bytes([7]) * 32, [c_id, d.node_id])
        sciddir = BlindedPath(bytes([direction]) + ShortChannelId(100, 1, 0).to_int().to_bytes(8, "big"), path.first_path_key, path.hops)
        sent = await a.send(sciddir, {65: b"via sciddir"})
        assert sent["first_hop"] == nodes["b"].node_id.hex()
        await wait_for(lambda: len(got) == 2)
        unknown = BlindedPath(bytes([0]) + ShortChannelId(999, 1, 0).to_int().to_bytes(8, "big"), path.first_path_key, path.hops)
        with pytest.raises(AppError, match="which our gossip does not know"):
            await a.send(unknown, {65: b"x"})


async def test_undecodable_onion_messages_from_a_raw_peer_are_dropped_and_it_stays() -> None:
    from lnpmsg.testing.rawpeer import RawPeer
    from lnpmsg.wire.bolt1 import Init

    b = make_node()
    app_b = b.mount(OnionMessagesApp())
    got: list[object] = []
    app_b.on_tlv(65)(got.append)
    async with running(b):
        host_port = address_of(b).split("@", 1)[1]
        async with await RawPeer.connect(host_port, b.node_id) as raw:
            await raw.exchange_init(Init(globalfeatures=b"", features=Features.from_bits([39]).to_bytes()))
            good = build_onion_message(bytes([1]) * 32, bytes([2]) * 32, [], b.node_id, {65: b"ok"})
            kind = (513).to_bytes(2, "big")
            frame = good.path_key + len(good.packet).to_bytes(2, "big") + good.packet
            for bad in (
                kind + b"\x05" + frame[1:],  # a path key that is not a compressed point
                kind + frame[:500],  # the packet cut short of its length
                kind + b"\x02",  # almost nothing
            ):
                await raw.send(bad)
            await raw.send(kind + frame + b"extension")  # bytes after the packet are allowed
            await wait_for(lambda: got)
            assert app_b.drops.total["malformed"] == 3 and b.peers[raw_node_id(raw)].is_ready


def raw_node_id(raw) -> bytes:  # type: ignore[no-untyped-def]
    return raw.key.node_id  # type: ignore[no-any-return]


async def test_relaying_is_bounded_towards_each_next_peer_too() -> None:
    """Two peers each within their own limit still cannot push more than the limit to one next peer."""
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes(rate=0.01, burst=5)
    d = make_node()
    d.mount(OnionMessagesApp())
    got: list[object] = []
    app_c.on_tlv(65)(got.append)
    async with running(a, b, c, d):
        await _line(a, b, c)
        await d.connect(address_of(b))
        await wait_for(lambda: len(b.peers) == 3 and all(p.is_ready for p in b.peers.values()))
        for sender in (a, d):
            peer = sender.peers[b.node_id]
            for i in range(5):
                out = build_onion_message(bytes([9]) * 32, bytes([i + 1]) * 32, [b.node_id], c.node_id, {65: bytes([i])})
                await peer.send(OnionMessage(path_key=out.path_key, onion_message_packet=out.packet))
        await wait_for(lambda: app_b.counts["relayed"] + app_b.drops.total["rate limited (to the next peer)"] == 10)
        assert app_b.counts["relayed"] == 5 and app_b.drops.total["rate limited (from the peer)"] == 0
        await wait_for(lambda: len(got) == 5)


async def test_a_reply_along_a_path_given_before_a_restart_is_taken_and_a_forged_one_is_not() -> None:
    """A asks C for a reply (through B), then restarts (same key, a new app: nothing kept between runs);
    C's reply along the path A gave before arrives as the reply to A's message. A path_id A never made,
    or one of A's with its MAC changed, is dropped as not ours, also after the restart."""
    (a, b, c), (app_a, app_b, app_c) = _trio_of_nodes()
    got_c: list[ReceivedOnionMessage] = []
    app_c.on_tlv(65)(got_c.append)
    async with running(b, c):
        async with running(a):
            await _line(a, b, c)
            sent = await app_a.send(c.node_id, {65: b"ping"}, reply_path=True, via=[b.node_id])
            await wait_for(lambda: got_c)
        a2 = Node(a.key, NodeConfig(listen=["127.0.0.1:0"]))
        app_a2 = a2.mount(OnionMessagesApp())
        got_a: list[ReceivedOnionMessage] = []
        app_a2.on_tlv(67)(got_a.append)
        async with running(a2):
            await a2.connect(address_of(b))
            await wait_for(lambda: a2.node_id in b.peers and b.peers[a2.node_id].is_ready)
            await app_c.reply(got_c[0], {67: b"pong"})
            await wait_for(lambda: got_a)
            assert got_a[0].records == {67: b"pong"} and got_a[0].reply_to == sent["id"]
            # forged: a path_id of the right shape under another node's key (B's), and A's own with one bit of its MAC flipped
            own = app_a2._path_id(bytes(8))
            for path_id in (app_b._path_id(bytes(8)), own[:-1] + bytes([own[-1] ^ 1])):
                await app_b.send(blinded_path_to(os.urandom(32), [a2.node_id], path_id=path_id), {67: b"forged"})
            await wait_for(lambda: app_a2.drops.total["path_id not ours"] == 2)
            assert len(got_a) == 1
    assert reply_path_key(a.key.secret) == app_a2._path_key != reply_path_key(b.key.secret)



async def test_drops_are_logged_as_one_summary_of_counts_a_minute(mock_clock, caplog) -> None:  # type: ignore[no-untyped-def]
    """Virtual time (the clock jumps when nothing moves for 50 ms; real TCP underneath): a flood gives one
    debug line per reason, then one INFO line a minute with the counts; a quiet minute logs nothing."""
    import logging

    from lnpmsg.onion_messages.app import SUMMARY_INTERVAL

    mock_clock.autojump_threshold = 0.05
    caplog.set_level(logging.DEBUG, logger="lnpmsg.onion_messages.app")
    # (a token every 1000 virtual seconds: the minutes the clock jumps give none back)
    # (no keepalive pings: the clock's jumps would outrun their pongs over real TCP)
    async with a_to_b(node_config={"ping_interval": 1e9}, rate=0.001, burst=5) as (a, b, app_b, got, peer):
        started = trio.current_time()
        good = build_onion_message(bytes([1]) * 32, bytes([2]) * 32, [], b.node_id, {65: b"ok"})
        for _ in range(3):  # malformed (within the burst: they get past the rate limit)
            await peer.send(OnionMessage(path_key=good.path_key, onion_message_packet=b""))
        for _ in range(197):
            await peer.send(OnionMessage(path_key=good.path_key, onion_message_packet=good.packet))
        await wait_for(lambda: sum(app_b.drops.total.values()) + len(got) == 200, timeout=SUMMARY_INTERVAL / 2)
        assert len(got) == 2 and trio.current_time() - started < SUMMARY_INTERVAL

        def summaries() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "onion messages dropped" in r.getMessage()]

        firsts = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "more such drops are counted" in r.getMessage()]
        assert len(firsts) == 2 and any("malformed" in m for m in firsts) and any("rate limited (from the peer)" in m for m in firsts)
        assert summaries() == []  # not before the minute is over
        await trio.sleep(SUMMARY_INTERVAL)
        assert summaries() == ["onion messages dropped in the last 60 s: 3 malformed, 195 rate limited (from the peer)"]
        await trio.sleep(SUMMARY_INTERVAL)  # a minute without drops: no line
        assert len(summaries()) == 1
        await peer.send(OnionMessage(path_key=good.path_key, onion_message_packet=good.packet))
        await wait_for(lambda: app_b.drops.total["rate limited (from the peer)"] == 196, timeout=SUMMARY_INTERVAL / 2)
        await trio.sleep(SUMMARY_INTERVAL)
        assert summaries()[1:] == ["onion messages dropped in the last 60 s: 1 rate limited (from the peer)"]
        # the counts since start stay in the stats
        assert (await app_b.control_stats())["dropped"] == {"malformed": 3, "rate limited (from the peer)": 196}
        assert b.peers[a.node_id].is_ready
