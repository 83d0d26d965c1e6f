"""The app contract over real loopback TCP: ownership, protocol types, unowned even
types, features from apps, ordered hooks, channel errors to their owner, execution
policy (timeouts, shielded handlers) and supervision of app tasks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import trio

import lnpmsg.node.apphost as apphost
from lnpmsg.app import DONE, App, AppError, AppState, MountError
from lnpmsg.node.events import AppStateChanged, ErrorReported, PeerErrorReceived
from lnpmsg.rpc.peer import PeerRpc, RemoteError
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import DEFAULT_REGISTRY, Error, Features, Init, Message, WarningMessage, message
from lnpmsg.wire.fields import u16_prefixed_bytes


@message(type=32801 + 100)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


@message(type=32802 + 100)  # even: a peer must understand it
@dataclass(frozen=True, slots=True)
class MustHandle(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


@message(type=600)  # an unassigned even BOLT type, for a protocol app
@dataclass(frozen=True, slots=True)
class ProtocolThing(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def raw_peer(node, init: Init | None = None) -> RawPeer:
    raw = await RawPeer.connect(node.listen_addresses[0], node.node_id)
    await raw.exchange_init(init)
    return raw


# ------------------------------------------------------------------ ownership


def test_one_owner_per_type_and_conflicts_change_nothing():
    node = make_node()
    first = App("first")
    first.message(Hello)
    first.add_handler(Hello, lambda peer, msg: DONE)
    node.mount(first)
    second = App("second")
    second.message(Hello)
    second.add_handler(Hello, lambda peer, msg: DONE)
    with pytest.raises(MountError, match="app 'first' owns it"):
        node.mount(second)
    assert "second" not in node.apps and node.apphost.owner_of(Hello.TYPE) is first
    with pytest.raises(MountError, match="app 'first' owns it"):
        node.add_handler(Hello, lambda peer, msg: DONE)
    # A type the node itself took is refused to apps too.
    node.add_handler(MustHandle, lambda peer, msg: DONE)
    third = App("third")
    third.add_handler(MustHandle, lambda peer, msg: DONE)
    with pytest.raises(MountError, match="the node"):
        node.mount(third)
    # ... and a second handler for one type in one app.
    with pytest.raises(MountError, match="already handles"):
        first.add_handler(Hello, lambda peer, msg: DONE)
    # After mount, a new handler is checked against the node at once.
    late = App("late")
    node.mount(late)
    with pytest.raises(MountError, match="owns it"):
        late.add_handler(Hello, lambda peer, msg: DONE)
    assert MountError.__mro__[1:3] == (AppError, ValueError)


def test_protocol_types_need_the_explicit_opt_in():
    user = App("user")
    with pytest.raises(AppError, match="protocol=True"):
        user.message(ProtocolThing)
    with pytest.raises(AppError, match="protocol=True"):
        user.add_handler(ProtocolThing.TYPE, lambda peer, msg: DONE)
    proto = App("proto", protocol=True)
    proto.message(ProtocolThing)
    proto.add_handler(ProtocolThing, lambda peer, msg: DONE)
    node = make_node()
    node.mount(proto)
    assert node.apphost.owner_of(600) is proto


async def test_a_protocol_app_owns_an_even_bolt_type_over_the_wire():
    node = make_node()
    got = []
    proto = App("proto", protocol=True)
    proto.message(ProtocolThing)

    @proto.on(ProtocolThing)
    async def on_thing(peer, msg):
        got.append(msg.text)

    node.mount(proto)
    async with running(node):
        raw = await raw_peer(node)
        await raw.send(ProtocolThing(text=b"mine"))
        await wait_for(lambda: got == [b"mine"])
        assert len(node.peers) == 1
        await raw.aclose()


async def test_an_even_type_nobody_owns_fails_the_peer_and_an_odd_one_is_ignored():
    node = make_node()
    declared = App("declares")  # declares MustHandle (so it decodes) but handles nothing
    declared.message(MustHandle)
    declared.message(Hello)
    node.mount(declared)
    async with running(node):
        raw = await raw_peer(node)
        await raw.send(Hello(text=b"odd, unowned"))
        await raw.send(MustHandle(text=b"even, unowned"))
        error = DEFAULT_REGISTRY.decode((await raw.receive_until_closed())[-1])
        assert isinstance(error, Error) and error.data == f"unknown even message type {MustHandle.TYPE}".encode()
        await wait_for(lambda: not node.peers)
        assert node.ignored_messages == 1
        await raw.aclose()


# ------------------------------------------------------------------- features


async def test_features_come_from_apps_and_carry_their_names(caplog):
    caplog.set_level(logging.INFO, logger="lnpmsg.node")
    a, b = make_node(), make_node(listen=False)
    config_before = a.config.features
    a.mount(App("chat", feature_bit=331))
    b.mount(App("chat", feature_bit=331))
    b.mount(PeerRpc())
    assert a.config.features == config_before  # the config is never changed
    assert a.local_features().supports(331)
    async with running(a, b):
        await b.connect(address_of(a))
        await wait_for(lambda: b.node_id in a.peers)
        remote = a.peers[b.node_id].session.remote_features
        names = a.describe_features(remote)
        assert "chat (optional, bit 331)" in names
        assert "bit 327 (unknown, optional)" in names  # rpc is not mounted on a
        assert "chat (optional, bit 331)" in caplog.text


async def test_an_app_may_offer_features_per_peer():
    a, b, c = make_node(), make_node(listen=False), make_node(listen=False)

    class Picky(App):
        def init_features(self, node_id):
            return Features.from_bits([341]) if node_id == b.node_id else Features()

    a.mount(Picky("picky"))
    async with running(a, b, c):
        peer_b = await b.connect(address_of(a))
        peer_c = await c.connect(address_of(a))
        assert peer_b.session.remote_features.supports(341)
        assert not peer_c.session.remote_features.supports(341)


# ---------------------------------------------------------------------- hooks


async def test_peer_ready_runs_in_mount_order_before_the_first_message_is_dispatched():
    node = make_node()
    order = []
    first, second = App("first"), App("second")
    second.message(Hello)

    @first.on_peer_ready
    async def first_ready(peer):
        await trio.sleep(0.2)  # a slow hook: the message must still wait for it
        order.append("first ready")

    @second.on_peer_ready
    def second_ready(peer):
        order.append("second ready")

    @second.on(Hello)
    async def on_hello(peer, msg):
        order.append("message")

    node.mount(first)
    node.mount(second)
    async with running(node):
        raw = await RawPeer.connect(node.listen_addresses[0], node.node_id)
        # init and a message in one write: one read, one batch
        await raw.send_raw(raw.encrypt(Init().encode()) + raw.encrypt(Hello(text=b"right away").encode()))
        await wait_for(lambda: "message" in order)
        assert order == ["first ready", "second ready", "message"]
        await raw.aclose()


async def test_peer_gone_with_the_reason_and_starting_stopping_hooks():
    a, b = make_node(), make_node(listen=False)
    seen = []
    app = App("watcher")
    app.on_starting(lambda: seen.append("starting"))
    app.on_peer_ready(lambda peer: seen.append(("ready", peer.node_id)))
    app.on_peer_gone(lambda peer, reason: seen.append(("gone", peer.node_id, reason)))
    app.on_stopping(lambda: seen.append(("stopping", len(a.peers))))
    a.mount(app)
    async with running(a, b):
        assert seen == ["starting"]
        await b.connect(address_of(a))
        await wait_for(lambda: len(seen) == 2)
        await a.disconnect(b.node_id, "enough for today")
        await wait_for(lambda: len(seen) == 3)
        assert seen[1:] == [("ready", b.node_id), ("gone", b.node_id, "enough for today")]
        # b learns of the close when it next reads: until then its connect finds the old session
        await wait_for(lambda: a.node_id not in b.peers)
        await b.connect(address_of(a))
        await wait_for(lambda: len(seen) == 4)
    # stopping ran while the peer was still there; then the peer left
    assert seen[4] == ("stopping", 1)
    assert seen[5][0] == "gone" and seen[5][2] == "node shutting down"


async def test_an_app_mounted_on_a_running_node_hears_of_the_peers_already_there():
    a, b = make_node(), make_node(listen=False)
    ready = []
    async with running(a, b):
        await b.connect(address_of(a))
        await wait_for(lambda: b.node_id in a.peers)
        late = App("late")
        late.on_peer_ready(lambda peer: ready.append(peer.node_id))
        a.mount(late)
        await wait_for(lambda: ready == [b.node_id])
        assert late.state is AppState.RUNNING


async def test_the_peers_told_to_each_app_are_one_mask_per_peer_forgotten_when_it_leaves():
    a, b = make_node(), make_node(listen=False)
    heard: list[tuple[str, str]] = []

    def watcher(name: str) -> App:
        app = App(name)
        app.on_peer_ready(lambda peer: heard.append((name, "ready")))
        app.on_peer_gone(lambda peer, reason: heard.append((name, "gone")))
        return app

    a.mount(watcher("one"))
    a.mount(watcher("two"))
    async with running(a, b):
        await b.connect(address_of(a))
        await wait_for(lambda: len(heard) == 2)
        peer = a.peers[b.node_id]
        assert a.apphost.told("one") == a.apphost.told("two") == [peer]
        a.unmount("one")
        assert a.apphost.told("one") == [] and a.apphost.told("two") == [peer]
        # The next app takes the freed bit: it hears of the peer itself, as a new app does.
        a.mount(watcher("three"))
        await wait_for(lambda: ("three", "ready") in heard)
        assert a.apphost.told("three") == [peer]
        await a.disconnect(b.node_id, "bye")
        await wait_for(lambda: len(heard) == 5)
        assert heard[3:] == [("three", "gone"), ("two", "gone")]
        assert a.apphost.told("two") == a.apphost.told("three") == []
        assert not a.apphost._told  # nothing is kept for a peer that left


async def test_channel_errors_and_warnings_go_to_the_app_that_claimed_the_channel():
    node = make_node()
    owned, other = bytes(range(32)), bytes([7]) * 32
    heard = []
    channels = App("channels", protocol=True)
    channels.on_channel_error(lambda peer, cid, text: heard.append(("error", cid, text)))
    channels.on_channel_warning(lambda peer, cid, text: heard.append(("warning", cid, text)))
    node.mount(channels)
    async with running(node):
        channels.claim_channel(owned)
        with pytest.raises(MountError, match="belongs to app 'channels'"):
            node.claim_channel(owned, App("thief"))
        with node.events.subscribe(lambda e: isinstance(e, PeerErrorReceived)) as errors:
            raw = await raw_peer(node)
            await raw.send(Error(channel_id=other, data=b"not yours"))
            await raw.send(Error(channel_id=owned, data=b"bad commitment"))
            await raw.send(WarningMessage(channel_id=owned, data=b"fee too low"))
            await wait_for(lambda: len(heard) == 2)
            assert heard == [("error", owned, "bad commitment"), ("warning", owned, "fee too low")]
            # every error is still an event for observers
            with trio.fail_after(5):
                assert (await errors.__anext__()).channel_id == other
                assert (await errors.__anext__()).channel_id == owned
        channels.release_channel(owned)
        await raw.send(Error(channel_id=owned, data=b"after release"))
        await raw.send(WarningMessage(channel_id=owned, data=b"sync"))
        await trio.sleep(0.2)
        assert len(heard) == 2
        await raw.aclose()


# ----------------------------------------------------------- execution policy


async def test_a_shielded_handler_survives_its_timeout_and_its_peer_closing():
    a, b = make_node(), make_node(listen=False)
    steps = []
    app = App("ledger", handler_timeout=0.05)
    app.message(Hello)
    started = trio.Event()

    @app.on(Hello, shield=True)
    async def persist_then_send(peer, msg):
        started.set()
        steps.append("persist")
        await trio.sleep(0.3)  # past the timeout, and the peer closes meanwhile
        steps.append("send")

    a.mount(app)
    sender = b.mount(App("ledger"))
    sender.message(Hello)
    async with running(a, b):
        with a.events.subscribe(lambda e: isinstance(e, ErrorReported)) as errors:
            await b.connect(address_of(a))
            await sender.send(a.node_id, Hello(text=b"commit"))
            with trio.fail_after(5):
                await started.wait()
            a.peers[b.node_id].close("going away mid-handler")
            await wait_for(lambda: steps == ["persist", "send"])
            with trio.fail_after(5):
                error = await errors.__anext__()
        assert "shielded: not cancelled" in error.text


async def test_no_timeout_means_a_handler_may_run_long():
    a, b = make_node(), make_node(listen=False)
    done = []
    app = App("patient", handler_timeout=None)
    app.message(Hello)

    @app.on(Hello)
    async def slow(peer, msg):
        await trio.sleep(0.3)
        done.append(msg.text)

    a.mount(app)
    sender = b.mount(App("patient"))
    sender.message(Hello)
    async with running(a, b):
        await b.connect(address_of(a))
        await sender.send(a.node_id, Hello(text=b"take your time"))
        await wait_for(lambda: done == [b"take your time"])


# ---------------------------------------------------------------- supervision


class Crashy(App):
    """Serves, then fails after ``fail_after_starts`` starts."""

    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.starts = 0
        self.message(MustHandle)
        self.add_handler(MustHandle, lambda peer, msg: DONE)
        self.add_control_method("hello", self.hello)

    async def hello(self):
        return "hi"

    async def serve(self):
        self.starts += 1
        await trio.sleep(0.01)
        raise RuntimeError(f"bug number {self.starts}")


async def test_an_app_task_that_raises_is_restarted_then_stopped_and_the_node_carries_on(monkeypatch, tmp_path):
    from lnpmsg.rpc.control import ControlServer
    from lnpmsg.rpc.control_client import ControlCallError, ControlClient

    monkeypatch.setattr(apphost, "RESTART_MIN_DELAY", 0.01)
    a, b = make_node(), make_node(listen=False)
    crashy = a.mount(Crashy("crashy", max_restarts=2, restart_window=60))
    rpc_a, rpc_b = a.mount(PeerRpc()), b.mount(PeerRpc())
    a.mount(ControlServer(tmp_path / "a"))

    @rpc_a.method()
    async def echo(peer, text: str) -> str:
        return text

    # Subscribed before the node starts: the first failure comes at once.
    with a.events.subscribe(lambda e: isinstance(e, AppStateChanged | ErrorReported)) as events:
        async with running(a, b), ControlClient.open(tmp_path / "a") as client:
            peer = await b.connect(address_of(a))
            await wait_for(lambda: crashy.state is AppState.STOPPED)
            seen = []
            while True:
                with trio.move_on_after(0.5):
                    seen.append(await events.__anext__())
                    continue
                break
            states = [e.state for e in seen if isinstance(e, AppStateChanged) and e.app == "crashy"]
            assert states.count("restarting") == 2 and states[-1] == "stopped"
            assert crashy.starts == 3 and crashy.failures == 3
            assert "bug number 3" in crashy.stop_reason and "3 failures within 60 s" in crashy.stop_reason
            assert any(isinstance(e, ErrorReported) and e.source == "app.crashy" and "bug number 1" in e.text for e in seen)
            # The node, its other apps, its peers and its control API carry on.
            assert await rpc_b.call(peer, "echo", {"text": "still here"}) == "still here"
            assert (await client.call("getinfo"))["node_id"] == a.node_id.hex()
            with pytest.raises(ControlCallError, match="app crashy is stopped"):
                await client.call("crashy.hello")
            # A stopped app's even types fail the peer like unknown ones.
            await peer.send(MustHandle(text=b"anyone?"))
            await wait_for(lambda: b.node_id not in a.peers)
            # ... and its features leave new inits.
            assert a.local_features() == a.config.features | rpc_a.features


async def test_restart_never_stops_at_the_first_failure_and_a_start_failure_is_the_nodes():
    a = make_node()
    once = a.mount(Crashy("once", restart="never"))
    async with running(a):
        await wait_for(lambda: once.state is AppState.STOPPED)
        assert once.starts == 1 and "restart='never'" in once.stop_reason

    class BrokenStart(App):
        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
            raise OSError("cannot open the database")

    b = make_node()
    b.mount(BrokenStart("broken"))
    with pytest.raises(BaseExceptionGroup) as info:
        async with running(b):
            pass
    assert info.group_contains(OSError, match="cannot open the database")


async def test_a_handler_that_raises_is_contained_without_restarting_the_app():
    a, b = make_node(), make_node(listen=False)
    app = App("fragile")
    app.message(Hello)

    @app.on(Hello)
    def on_hello(peer, msg):
        raise ValueError("bad input handling")

    a.mount(app)
    sender = b.mount(App("fragile"))
    sender.message(Hello)
    async with running(a, b):
        with a.events.subscribe(lambda e: isinstance(e, ErrorReported)) as errors:
            await b.connect(address_of(a))
            await sender.send(a.node_id, Hello(text=b"x"))
            with trio.fail_after(5):
                error = await errors.__anext__()
        assert error.source == "app.fragile" and "bad input handling" in error.text
        assert app.state is AppState.RUNNING and b.node_id in a.peers


# --------------------------------------------------------------- no polling


async def test_gossip_rpc_and_pubsub_run_no_task_per_peer_and_no_polling(tmp_path):
    from lnpmsg.gossip import app as gossip_app
    from lnpmsg.gossip.app import GossipApp
    from lnpmsg.gossip.store import GossipStore
    from lnpmsg.pubsub.peer import PeerPubSub
    from lnpmsg.wire import CHAIN_HASHES

    assert not hasattr(gossip_app, "PEER_POLL_INTERVAL") and not hasattr(GossipApp, "_watch_peers")
    assert not hasattr(PeerRpc, "_watch") and not hasattr(PeerPubSub, "_watch")
    hub = make_node()
    gossip = hub.mount(GossipApp(GossipStore(tmp_path / "g.sqlite3", CHAIN_HASHES["bitcoin"]), config=None))
    rpc, pubsub = hub.mount(PeerRpc()), hub.mount(PeerPubSub())
    clients = [make_node(listen=False) for _ in range(3)]
    for client in clients:
        client.mount(PeerRpc())
        client.mount(PeerPubSub())
    async with running(hub, *clients):
        base = {name: len(app._nursery.child_tasks) for name, app in (("gossip", gossip), ("rpc", rpc), ("pubsub", pubsub))}
        for client in clients:
            peer = await client.connect(address_of(hub))
            sub = await client.apps["pubsub"].subscribe(peer, "t")
            with pytest.raises(RemoteError, match="no method"):
                await client.apps["rpc"].call(peer, "missing")
            await sub.aclose()
        await wait_for(lambda: len(gossip._peers) == 3)  # told by peer_ready, not by polling
        for name, app in (("gossip", gossip), ("rpc", rpc), ("pubsub", pubsub)):
            assert len(app._nursery.child_tasks) == base[name], name
        await clients[0].disconnect(hub.node_id)
        await wait_for(lambda: len(gossip._peers) == 2)


async def test_restart_back_off_and_the_limit_in_virtual_time(autojump_clock):
    """The supervisor's schedule, with no network and no wall-clock wait: a node
    without listeners, one app whose task fails at once every time it starts."""
    node = make_node(listen=False)
    starts = []

    class Failing(App):
        async def serve(self):
            starts.append(trio.current_time())
            raise RuntimeError("always")

    app = node.mount(Failing("failing", max_restarts=3, restart_window=60))
    async with running(node):
        t0 = trio.current_time()
        while app.state is not AppState.STOPPED:
            await trio.sleep(0.1)
        # back-off 0.5, 1, 2 s between starts; the 4th failure in 60 s stops it
        assert [round(t - t0, 1) for t in starts] == [0.0, 0.5, 1.5, 3.5]
        assert app.failures == 4 and "4 failures within 60 s" in app.stop_reason
        await trio.sleep(3600)  # and it stays stopped
        assert len(starts) == 4


async def test_a_run_longer_than_the_window_forgives_old_failures(autojump_clock):
    node = make_node(listen=False)
    starts = []

    class Flaky(App):
        async def serve(self):
            starts.append(trio.current_time())
            await trio.sleep(100)  # longer than the window each time
            raise RuntimeError("rare")

    app = node.mount(Flaky("flaky", max_restarts=1, restart_window=60))
    async with running(node):
        await trio.sleep(1000)
        assert app.state is AppState.RUNNING and len(starts) > 5


async def test_an_even_type_handled_without_a_declaration_still_reaches_its_handler():
    node = make_node()
    got = []
    app = App("bare")
    app.add_handler(32904, lambda peer, msg: got.append(msg.payload) or DONE)  # even, never declared
    node.mount(app)
    async with running(node):
        raw = await raw_peer(node)
        await raw.send((32904).to_bytes(2, "big") + b"raw bytes")
        await wait_for(lambda: got == [b"raw bytes"])
        assert len(node.peers) == 1
        await raw.aclose()
