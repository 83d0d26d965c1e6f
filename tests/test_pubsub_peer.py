"""Peer pub/sub between real nodes: subscribe, publish, unsubscribe, refusals,
bounded queues with gaps reported, a subscriber that never reads."""

from __future__ import annotations

import pytest
import trio

from lnpmsg.pubsub.peer import (
    MAX_DATA,
    PeerPubSub,
    PubSubError,
    PubSubSubscribe,
    PubSubSubscribed,
    SubscribeRefused,
)
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import Init, MessageRegistry


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def pair(**publisher_options):
    pub_node, sub_node = make_node(), make_node(listen=False)
    return pub_node, pub_node.mount(PeerPubSub(**publisher_options)), sub_node, sub_node.mount(PeerPubSub())


async def test_subscribe_publish_unsubscribe():
    pub_node, publisher, sub_node, subscriber = await pair()
    async with running(pub_node, sub_node):
        peer = await sub_node.connect(address_of(pub_node))
        assert publisher.publish("news", b"before anyone listens") == 0
        sub = await subscriber.subscribe(peer, "news")
        also = await subscriber.subscribe(pub_node.node_id, "news")  # shares the remote subscription
        assert publisher.subscribers("news") == [sub_node.node_id]
        assert publisher.publish("news", b"one") == 1
        assert publisher.publish("other", b"not for us") == 0
        assert publisher.publish("news", b"two") == 1
        first, second = await sub.__anext__(), await sub.__anext__()
        assert (first.topic, first.seq, first.data, first.missed) == ("news", 2, b"one", 0)
        assert (second.seq, second.data, second.missed) == (3, b"two", 0)
        assert (await also.__anext__()).data == b"one"
        await sub.aclose()
        assert publisher.subscribers("news") == [sub_node.node_id]  # `also` still listens
        await also.aclose()
        await wait_for(lambda: publisher.subscribers("news") == [])
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


async def test_refused_subscriptions():
    class Picky(PeerPubSub):
        def authorize(self, peer, topic):
            return "secret topic" if topic.startswith("secret") else None

    pub_node, sub_node = make_node(), make_node(listen=False)
    pub_node.mount(Picky(max_topics_per_peer=2))
    subscriber = sub_node.mount(PeerPubSub())
    async with running(pub_node, sub_node):
        peer = await sub_node.connect(address_of(pub_node))
        with pytest.raises(SubscribeRefused, match="secret topic"):
            await subscriber.subscribe(peer, "secret.plans")
        await subscriber.subscribe(peer, "a")
        await subscriber.subscribe(peer, "b")
        with pytest.raises(SubscribeRefused, match="too many subscriptions"):
            await subscriber.subscribe(peer, "c")
        with pytest.raises(PubSubError, match="1..255 bytes"):
            await subscriber.subscribe(peer, "x" * 256)


async def test_bad_subscribe_messages_are_refused_not_fatal():
    pub_node = make_node()
    pub_node.mount(PeerPubSub())
    registry = MessageRegistry([PubSubSubscribed])
    async with running(pub_node):
        raw = await RawPeer.connect(pub_node.listen_addresses[0], pub_node.node_id)
        await raw.exchange_init(Init())
        await raw.send(PubSubSubscribe(topic=b"\xff\xfe"))
        with trio.fail_after(5):
            while not isinstance(reply := registry.decode(await raw.receive()), PubSubSubscribed):
                pass
        assert reply.status == 1 and b"not UTF-8" in reply.reason
        assert pub_node.peers[raw.key.node_id].is_ready
        await raw.aclose()


async def test_local_queue_overflow_is_reported_as_missed():
    pub_node, publisher, sub_node, subscriber = await pair()
    async with running(pub_node, sub_node):
        peer = await sub_node.connect(address_of(pub_node))
        sub = await subscriber.subscribe(peer, "ticks", max_queue=5)
        for i in range(50):
            publisher.publish("ticks", str(i).encode())
        await wait_for(lambda: len(sub._queue) == 5 and peer.counters.messages_in >= 52)
        got = [await sub.__anext__() for _ in range(5)]
        assert [p.seq for p in got] == [1, 2, 3, 4, 5] and all(p.missed == 0 for p in got)
        publisher.publish("ticks", b"late")
        late = await sub.__anext__()
        assert (late.seq, late.data, late.missed) == (51, b"late", 45)
        assert sub.missed == 45


async def test_a_subscriber_that_never_reads_does_not_slow_the_publisher():
    pub_node, publisher, good_node, good = await pair(max_queued_bytes=64 * 1024)
    registry = MessageRegistry([PubSubSubscribed])
    async with running(pub_node, good_node):
        stuck = await RawPeer.connect(pub_node.listen_addresses[0], pub_node.node_id)
        await stuck.exchange_init(Init())
        await stuck.send(PubSubSubscribe(topic=b"firehose"))
        with trio.fail_after(5):
            while not isinstance(registry.decode(await stuck.receive()), PubSubSubscribed):
                pass
        # from here on `stuck` never reads
        peer = await good_node.connect(address_of(pub_node))
        sub = await good.subscribe(peer, "firehose", max_queue=100_000)
        data = bytes(4000)
        count = 3000  # 12 MB: far beyond the stuck peer's socket buffers and its 64 KiB bound
        received = []
        done = trio.Event()

        async def read():
            async for pub in sub:
                received.append(pub.seq)
                if pub.data == b"end":
                    done.set()
                    return

        with trio.fail_after(20):  # a hang guard: publish() itself never waits
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for i in range(count):
                    publisher.publish("firehose", data)
                    if i % 20 == 0:
                        await trio.sleep(0.001)  # let the good subscriber's writer run
                while not done.is_set():  # an end marker, repeated until it gets through
                    publisher.publish("firehose", b"end")
                    await trio.sleep(0.01)
        stuck_peer = pub_node.peers[stuck.key.node_id]
        assert publisher.skipped[stuck.key.node_id] > 0
        assert stuck_peer.queued_bytes <= 64 * 1024 + 5000
        assert stuck_peer.is_ready and len(received) > count // 10
        assert sub.missed == received[-1] - len(received)  # every gap was reported
        await stuck.aclose()


async def test_subscription_ends_when_the_publisher_goes_away():
    pub_node, publisher, sub_node, subscriber = await pair()
    async with running(pub_node, sub_node):
        peer = await sub_node.connect(address_of(pub_node))
        sub = await subscriber.subscribe(peer, "news")
        publisher.publish("news", b"last words")
        assert (await sub.__anext__()).data == b"last words"
        await pub_node.disconnect(sub_node.node_id)
        rest = []
        with trio.fail_after(5):
            async for publication in sub:  # the loop simply ends: nothing escapes
                rest.append(publication)
        assert rest == [] and sub.ended and "disconnected" in sub.end_reason
        await wait_for(lambda: publisher.subscribers("news") == [])


async def test_a_publisher_leaving_mid_loop_crashes_neither_node():
    """The README's loop, in a task of each node's app, while the publisher's peer drops."""
    pub_node, publisher, sub_node, subscriber = await pair()
    got = []
    loop_ended = trio.Event()
    async with running(pub_node, sub_node):
        peer = await sub_node.connect(address_of(pub_node))

        async def presence():
            async with await subscriber.subscribe(peer, "presence") as sub:
                async for publication in sub:
                    got.append(publication.data)
            loop_ended.set()

        subscriber.spawn(presence)
        await wait_for(lambda: publisher.subscribers("presence"))
        publisher.publish("presence", b"here")
        await wait_for(lambda: got == [b"here"])
        await sub_node.disconnect(pub_node.node_id)
        with trio.fail_after(5):
            await loop_ended.wait()
        assert subscriber.state.value == "running" and publisher.state.value == "running"
        assert subscriber.failures == 0 and publisher.failures == 0
        # Both nodes still serve: reconnect and subscribe again.
        peer = await sub_node.connect(address_of(pub_node))
        async with await subscriber.subscribe(peer, "presence") as sub:
            publisher.publish("presence", b"back")
            with trio.fail_after(5):
                assert (await sub.__anext__()).data == b"back"


async def test_publish_checks_its_input_and_peers_without_pubsub_are_refused():
    pub_node, publisher, sub_node, subscriber = await pair()
    plain = make_node()
    async with running(pub_node, sub_node, plain):
        with pytest.raises(PubSubError, match="exceeds"):
            publisher.publish("t", bytes(MAX_DATA + 1))
        with pytest.raises(PubSubError, match="1..255 bytes"):
            publisher.publish("", b"x")
        peer = await sub_node.connect(address_of(plain))
        with pytest.raises(PubSubError, match="does not advertise"):
            await subscriber.subscribe(peer, "t")
        with pytest.raises(PubSubError, match="not connected"):
            await subscriber.subscribe(pub_node.node_id, "t")
