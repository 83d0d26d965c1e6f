"""The app API over real loopback TCP: declared messages, handlers with the peer,
feature bits, sends, broadcasts, odd/even for peers without the app, bad handlers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.app import App, AppError, PeerNotConnected
from lnpmsg.node.events import ErrorReported, PeerDisconnected
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    WarningMessage,
    Message,
    TlvSchema,
    TlvStream,
    WireError,
    message,
)
from lnpmsg.wire.fields import tu32, u16, u16_prefixed_bytes
from lnpmsg.wire.tlv import EMPTY_TLV_STREAM

NOTE_TLVS = TlvSchema({1: ("priority", tu32)}, name="note_tlvs")


@message(type=32771, tlvs=NOTE_TLVS)
@dataclass(frozen=True, slots=True)
class Note(Message):
    FIELDS = (("room", u16), ("text", u16_prefixed_bytes))
    room: int
    text: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


@message(type=32772)
@dataclass(frozen=True, slots=True)
class MustKnow(Message):
    FIELDS = (("text", u16_prefixed_bytes),)
    text: bytes


FEATURE = 333  # odd: optional


def notes_app(received, *, handler_timeout=10.0):
    app = App("notes", feature_bit=FEATURE, handler_timeout=handler_timeout)
    app.message(Note)
    app.message(MustKnow)

    @app.on(Note)
    async def on_note(peer, msg):
        received.append((peer.node_id, peer.address, peer.transport_kind, msg))

    return app


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def test_messages_handlers_feature_and_replies_with_the_peer_in_context():
    got_a, got_b = [], []
    a, b = make_node(), make_node(listen=False)
    app_a, app_b = a.mount(notes_app(got_a)), b.mount(notes_app(got_b))
    assert a.registry.get(Note.TYPE) is Note and DEFAULT_REGISTRY.get(Note.TYPE) is None
    async with running(a, b):
        peer = await b.connect(address_of(a))
        assert app_b.supports(peer) and app_b.peers() == [peer]
        assert peer.session.remote_features.supports(FEATURE)
        note = Note(room=7, text=b"hi", tlvs=Note.tlv_stream(priority=3))
        await app_b.send(a.node_id, note)
        await wait_for(lambda: got_a)
        node_id, address, kind, msg = got_a[0]
        assert (node_id, kind, msg) == (b.node_id, "tcp", note) and address.startswith("127.0.0.1:")
        assert msg.tlvs["priority"] == 3
        # the handler's side answers the peer it got the message from
        await app_a.send(app_a.peer(b.node_id.hex()), Note(room=8, text=b"back"))
        await wait_for(lambda: got_b)
        assert got_b[0][0] == a.node_id and got_b[0][3].text == b"back"


async def test_declarations_are_checked():
    app = App("x")
    with pytest.raises(AppError, match="custom range"):

        @app.message
        @message(type=300)
        @dataclass(frozen=True, slots=True)
        class Low(Message):
            FIELDS = ()

    with pytest.raises(AppError, match="custom range"):
        app.add_handler(18, lambda peer, msg: None)

    @message(type=Note.TYPE)
    @dataclass(frozen=True, slots=True)
    class Clash(Message):
        FIELDS = ()

    app.message(Note)
    with pytest.raises(AppError, match="already Note"):
        app.message(Clash)
    with pytest.raises(AppError, match="not mounted"):
        app.peers()
    with pytest.raises(AppError):
        App("bad name!")
    node = make_node()
    node.mount(app)
    with pytest.raises(ValueError, match="already mounted"):
        node.mount(App("x"))
    other = App("other")
    other.message(Clash)
    with pytest.raises(AppError, match="already Note"):
        node.mount(other)


async def test_broadcast_reaches_only_peers_that_advertise_the_app():
    hub, with_app, without_app = make_node(), make_node(listen=False), make_node(listen=False)
    got_with, got_hub = [], []
    app_hub = hub.mount(notes_app(got_hub))
    with_app.mount(notes_app(got_with))
    async with running(hub, with_app, without_app):
        with without_app.events.subscribe() as events_without:
            await with_app.connect(address_of(hub))
            await without_app.connect(address_of(hub))
            await wait_for(lambda: len(hub.peers) == 2)
            assert [p.node_id for p in app_hub.peers()] == [with_app.node_id]
            assert app_hub.broadcast(Note(room=1, text=b"all")) == 1
            await wait_for(lambda: got_with)
            assert got_with[0][3].text == b"all"
            # explicitly to the peer without the app: an odd type is ignored, the connection stays
            assert app_hub.broadcast(Note(room=1, text=b"odd"), peers=list(hub.peers.values())) == 2
            await wait_for(lambda: len(got_with) == 2)
            with trio.fail_after(5):
                async for event in events_without:
                    if getattr(event, "type", None) == Note.TYPE:
                        break
            assert hub.node_id in without_app.peers


async def test_peer_without_the_app_disconnects_on_an_even_type():
    a, plain = make_node(), make_node(listen=False)
    app = a.mount(notes_app([]))
    async with running(a, plain):
        with plain.events.subscribe(lambda e: isinstance(e, PeerDisconnected)) as events:
            await plain.connect(address_of(a))
            await wait_for(lambda: plain.node_id in a.peers)
            await app.send(plain.node_id, MustKnow(text=b"x"))
            with trio.fail_after(5):
                event = await events.__anext__()
            assert "unknown even message type 32772" in event.reason
        await wait_for(lambda: plain.node_id not in a.peers)
        with pytest.raises(PeerNotConnected):
            app.peer(plain.node_id)


async def test_handler_that_raises_is_reported_and_the_connection_stays():
    a, b = make_node(), make_node(listen=False)
    seen = []
    app = App("fragile", feature_bit=FEATURE)
    app.message(Note)

    @app.on(Note)
    async def on_note(peer, msg):
        seen.append(msg.text)
        if msg.text == b"boom":
            raise RuntimeError("handler bug")

    a.mount(app)
    sender = b.mount(notes_app([]))
    async with running(a, b):
        with a.events.subscribe(lambda e: isinstance(e, ErrorReported)) as errors:
            await b.connect(address_of(a))
            await sender.send(a.node_id, Note(room=1, text=b"boom"))
            await sender.send(a.node_id, Note(room=1, text=b"fine"))
            with trio.fail_after(5):
                error = await errors.__anext__()
            assert error.source == "app.fragile" and "handler bug" in error.text and error.node_id == b.node_id
            await wait_for(lambda: seen == [b"boom", b"fine"])
        assert b.node_id in a.peers and a.peers[b.node_id].is_ready


async def test_handler_that_hangs_is_cancelled_and_only_its_peer_waits():
    a, b, c = make_node(), make_node(listen=False), make_node(listen=False)
    seen = []
    app = App("slow", feature_bit=FEATURE, handler_timeout=0.3)
    app.message(Note)

    @app.on(Note)
    async def on_note(peer, msg):
        if msg.text == b"hang":
            await trio.sleep_forever()
        seen.append((peer.node_id, msg.text))

    a.mount(app)
    send_b, send_c = b.mount(notes_app([])), c.mount(notes_app([]))
    async with running(a, b, c):
        with a.events.subscribe(lambda e: isinstance(e, ErrorReported)) as errors:
            await b.connect(address_of(a))
            await c.connect(address_of(a))
            await send_b.send(a.node_id, Note(room=1, text=b"hang"))
            await send_b.send(a.node_id, Note(room=1, text=b"after"))
            await send_c.send(a.node_id, Note(room=1, text=b"other peer"))
            # c is served while b's handler hangs
            await wait_for(lambda: (c.node_id, b"other peer") in seen)
            assert (b.node_id, b"after") not in seen
            with trio.fail_after(5):
                error = await errors.__anext__()
            assert "longer than 0.3 s" in error.text
            await wait_for(lambda: (b.node_id, b"after") in seen)
        assert a.peers[b.node_id].is_ready


async def test_malformed_app_message_fails_only_that_connection():
    a, b = make_node(), make_node(listen=False)
    a.mount(notes_app([]))
    b.mount(notes_app(got := []))
    async with running(a, b):
        raw = await RawPeer.connect(a.listen_addresses[0], a.node_id)
        await raw.exchange_init()
        await raw.send(Note.TYPE.to_bytes(2, "big") + b"\x00")  # truncated room
        error = DEFAULT_REGISTRY.decode((await raw.receive_until_closed())[-1])
        assert isinstance(error, WarningMessage) and b"malformed message of type 32771" in error.data
        await raw.aclose()
        await b.connect(address_of(a))
        await a.apps["notes"].send(b.node_id, Note(room=2, text=b"still here"))
        await wait_for(lambda: got)


async def test_app_mounted_on_a_running_node_starts_at_once():
    a = make_node()

    class Ticker(App):
        def setup(self):
            self.message(Note)

        async def serve(self):
            self.served = True

    app = Ticker("ticker")
    async with running(a):
        a.mount(app)
        await wait_for(lambda: app.running)
        assert app.served and a.registry.get(Note.TYPE) is Note
        done = trio.Event()

        async def task():
            done.set()

        app.spawn(task)
        await wait_for(done.is_set)


@given(st.binary(max_size=300))
def test_app_messages_decode_any_bytes_or_raise_wire_error(payload):
    try:
        decoded = Note.decode_payload(payload)
    except WireError:
        return
    assert Note.decode_payload(decoded.encode()[2:]) == decoded
