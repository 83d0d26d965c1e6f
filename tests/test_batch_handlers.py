"""Batch handlers over real loopback TCP: an app takes a type's messages in runs,
as their bytes. Every message exactly once and in order with the peer's other
messages, whatever the reads' cuts; ownership as for any handler; unknown even
types, tampered frames and a stopped owner fail the peer as they always do."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import trio

from lnpmsg.app import App, AppError, AppState, MountError
from lnpmsg.node.events import CustomMessageReceived, ErrorReported, PeerDisconnected
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.transports.base import ConnectionClosed
from lnpmsg.wire import DEFAULT_REGISTRY, Error, Init, Message, message
from lnpmsg.wire.fields import u16_prefixed_bytes

STREAM = 33001  # odd: taken in runs
MUST = 33002  # even: taken in runs, so it does not fail the peer


@message(type=33003)
@dataclass(frozen=True, slots=True)
class Note(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


def wire(type_number: int, payload: bytes) -> bytes:
    return type_number.to_bytes(2, "big") + payload


async def wait_for(predicate, timeout=10.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def disconnect_reason(node, events) -> str:
    """Why the node dropped its one peer (from its ``peer.disconnected`` event)."""
    with trio.fail_after(10):
        async for event in events:
            if isinstance(event, PeerDisconnected):
                return event.reason
    raise AssertionError("no disconnection")


async def raw_peer(node) -> RawPeer:
    raw = await RawPeer.connect(node.listen_addresses[0], node.node_id)
    await raw.exchange_init(Init())
    return raw


def recording_app(log: list, calls: list) -> App:
    """An app taking STREAM and MUST in runs and Note one by one, logging all in arrival order."""
    app = App("recorder")
    app.message(Note)

    @app.on_batch(STREAM)
    def on_stream(peer, messages):
        calls.append((STREAM, len(messages)))
        log.extend(messages)

    @app.on_batch(MUST)
    async def on_must(peer, messages):  # an async one too
        calls.append((MUST, len(messages)))
        log.extend(messages)

    @app.on(Note)
    def on_note(peer, msg):
        log.append(msg.encode())

    return app


# ------------------------------------------------------------------ declaring


def test_a_batch_type_is_owned_like_any_type_and_never_decoded():
    node = make_node()
    first = App("first")
    first.add_batch_handler(STREAM, lambda peer, messages: None)
    node.mount(first)
    assert node.apphost.owner_of(STREAM) is first and STREAM in node.apphost.batch_types
    second = App("second")
    second.add_handler(STREAM, lambda peer, msg: None)
    with pytest.raises(MountError, match="app 'first' owns it"):
        node.mount(second)
    with pytest.raises(MountError, match="app 'first' owns it"):
        node.add_handler(STREAM, lambda peer, msg: None)
    # one app: one handler per type, of either kind
    with pytest.raises(MountError, match="already handles"):
        first.add_handler(STREAM, lambda peer, msg: None)
    with pytest.raises(MountError, match="already handles"):
        first.add_batch_handler(STREAM, lambda peer, messages: None)
    # a batch type stays undecoded: not declared by the app, nor on the node, nor later
    declaring = App("declaring")
    declaring.message(Note)
    with pytest.raises(AppError, match="declares type 33003"):
        declaring.add_batch_handler(Note.TYPE, lambda peer, messages: None)
    with pytest.raises(AppError, match="has a batch handler"):
        first.message(message(type=STREAM)(dataclass(frozen=True, slots=True)(type("Late", (Message,), {"FIELDS": ()}))))
    node.mount(declaring)
    third = App("third")
    third.add_batch_handler(Note.TYPE, lambda peer, messages: None)
    with pytest.raises(MountError, match="declared as Note"):
        node.mount(third)
    assert "third" not in node.apps and node.apphost.owner_of(Note.TYPE) is None
    # ... and the range rule of every app type; a type number only
    with pytest.raises(AppError, match="custom range"):
        App("low").add_batch_handler(600, lambda peer, messages: None)
    assert App("proto", protocol=True).add_batch_handler(601, lambda peer, messages: None) is None
    with pytest.raises(AppError, match="type number"):
        App("cls").add_batch_handler(Note, lambda peer, messages: None)  # type: ignore[arg-type]
    # unmounting frees the type for decoding again
    node.unmount("first")
    assert STREAM not in node.apphost.batch_types and node.apphost.owner_of(STREAM) is None


# ------------------------------------------------------------------ delivery


async def test_runs_carry_every_message_once_in_order_with_the_peers_other_messages():
    node = make_node()
    log: list[bytes] = []
    calls: list[tuple[int, int]] = []
    node.mount(recording_app(log, calls))
    sent: list[bytes] = []
    for n in range(300):
        sent.append(wire(STREAM, n.to_bytes(2, "big") * 300))
        if n % 50 == 7:  # runs broken by a decoded message and by the other batch type
            sent.append(Note(text=b"note %d" % n).encode())
            sent += [wire(MUST, b"must %d" % n)] * 3
    async with running(node):
        raw = await raw_peer(node)
        stream = b"".join(raw.encrypt(m) for m in sent)
        await raw.send_raw(stream)
        await wait_for(lambda: len(log) == len(sent))
        assert log == sent
        assert all(type(m) is bytes for m in log)
        # runs, not a call per message: far fewer calls than messages of the two types
        assert sum(count for _, count in calls) == len(sent) - 6
        assert len(calls) < 60
        assert len(node.peers) == 1
        await raw.aclose()


async def test_the_reader_holds_nothing_of_a_run_once_its_handlers_returned():
    # A handler may keep a run's list; the reader does not: once the handlers of a
    # read returned, a peer that goes quiet holds none of its last read's messages
    # (and a streaming one frees them before its next read fills new ones).
    import sys

    node = make_node()
    runs: list[list[bytes]] = []
    app = App("keeper")
    app.add_batch_handler(STREAM, lambda peer, messages: runs.append(messages), guard=False)
    node.mount(app)
    sent = [wire(STREAM, n.to_bytes(2, "big") * 500) for n in range(200)]
    async with running(node):
        raw = await raw_peer(node)
        await raw.send_raw(b"".join(raw.encrypt(m) for m in sent))
        await wait_for(lambda: sum(map(len, runs)) == len(sent))
        await trio.sleep(0.05)  # the reader waits for the peer's next bytes
        assert [m for run in runs for m in run] == sent
        # the only references: ``runs``, the name ``run`` and getrefcount's argument
        assert [sys.getrefcount(run) for run in runs] == [3] * len(runs)
        await raw.aclose()


async def test_frames_split_across_reads_still_arrive_whole_and_in_order():
    node = make_node()
    log: list[bytes] = []
    node.mount(recording_app(log, []))
    sent = [wire(STREAM, bytes([n]) * (n * 7)) for n in range(200)]
    async with running(node):
        raw = await raw_peer(node)
        stream = b"".join(raw.encrypt(m) for m in sent)
        # cuts inside headers and bodies, with pauses: the node reads the pieces apart
        cuts = [0, 5, 17, 19, 1000, 1001, len(stream) // 2, len(stream) - 3, len(stream)]
        for start, end in zip(cuts, cuts[1:]):
            await raw.send_raw(stream[start:end])
            await trio.sleep(0.02)
        await wait_for(lambda: len(log) == len(sent))
        assert log == sent
        await raw.aclose()


async def test_a_tampered_frame_mid_run_fails_the_peer_after_the_messages_before_it():
    node = make_node()
    log: list[bytes] = []
    node.mount(recording_app(log, []))
    sent = [wire(STREAM, bytes([n]) * 1000) for n in range(100)]
    async with running(node):
        raw = await raw_peer(node)
        frames = [raw.encrypt(m) for m in sent]
        bad = bytearray(frames[60])
        bad[500] ^= 1  # in the body: its MAC fails
        frames[60] = bytes(bad)
        try:
            with node.events.subscribe(lambda e: isinstance(e, PeerDisconnected)) as events:
                # the node may close on the bad frame before it has read the rest: our send
                # then fails with a reset, which is the node doing its job
                with contextlib.suppress(ConnectionClosed):
                    await raw.send_raw(b"".join(frames))
                assert "bad encrypted frame from peer: bad MAC on an encrypted message" in await disconnect_reason(node, events)
            assert log == sent[:60]
        finally:
            await raw.aclose()


async def test_an_unknown_even_type_mid_run_fails_the_peer_after_the_run_before_it():
    node = make_node()
    log: list[bytes] = []
    node.mount(recording_app(log, []))
    sent = [wire(STREAM, b"a")] * 40 + [wire(33004, b"nobody's")] + [wire(STREAM, b"b")] * 40
    async with running(node):
        raw = await raw_peer(node)
        try:
            with node.events.subscribe(lambda e: isinstance(e, PeerDisconnected)) as events:
                with contextlib.suppress(ConnectionClosed):  # as above: the node may close first
                    await raw.send_raw(b"".join(raw.encrypt(m) for m in sent))
                assert await disconnect_reason(node, events) == "unknown even message type 33004"
            assert log == sent[:40]
        finally:
            await raw.aclose()


async def test_a_stopped_owners_even_batch_type_fails_the_peer_and_its_odd_one_is_ignored():
    class Stopping(App):
        async def serve(self) -> None:
            raise RuntimeError("gone")

    node = make_node()
    app = Stopping("stopping", restart="never")
    taken: list[bytes] = []
    app.add_batch_handler(STREAM, lambda peer, messages: taken.extend(messages))
    app.add_batch_handler(MUST, lambda peer, messages: taken.extend(messages))
    node.mount(app)
    async with running(node):
        await wait_for(lambda: app.state is AppState.STOPPED)
        raw = await raw_peer(node)
        await raw.send_raw(b"".join(raw.encrypt(wire(STREAM, b"x")) for _ in range(5)))
        await wait_for(lambda: node.ignored_messages == 5)
        assert len(node.peers) == 1
        await raw.send_raw(b"".join(raw.encrypt(wire(MUST, b"x")) for _ in range(5)))
        error = DEFAULT_REGISTRY.decode((await raw.receive_until_closed())[-1])
        assert isinstance(error, Error) and "unknown even message type 33002" in error.data.decode()
        await wait_for(lambda: not node.peers)
        assert taken == []
        await raw.aclose()


async def test_a_batch_handler_that_raises_is_reported_and_subscribers_see_each_message():
    a, b = make_node(), make_node(listen=False)
    app = App("fragile")
    calls = []

    @app.on_batch(STREAM)
    def on_stream(peer, messages):
        calls.append(list(messages))
        raise ValueError("bad batch handling")

    a.mount(app)
    async with running(a, b):
        with a.events.subscribe(lambda e: isinstance(e, ErrorReported | CustomMessageReceived)) as events:
            peer = await b.connect(address_of(a))
            for n in range(3):
                await peer.send(wire(STREAM, b"m%d" % n))
            seen = []
            with trio.fail_after(10):
                while len([e for e in seen if isinstance(e, CustomMessageReceived)]) < 3:
                    seen.append(await events.__anext__())
        assert any(isinstance(e, ErrorReported) and e.source == "app.fragile" and "bad batch handling" in e.text for e in seen)
        payloads = [e.payload for e in seen if isinstance(e, CustomMessageReceived)]
        assert payloads == [b"m0", b"m1", b"m2"] and all(e.type == STREAM for e in seen if isinstance(e, CustomMessageReceived))
        assert [m for call in calls for m in call] == [wire(STREAM, b"m%d" % n) for n in range(3)]
        assert app.state is AppState.RUNNING and b.node_id in a.peers
