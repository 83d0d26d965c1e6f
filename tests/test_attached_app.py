"""Attached apps are full apps: an app in another process owns message types, adds
feature bits, serves peer RPC methods, subscribes to peers' topics and gets the
lifecycle events, over the node's real control and event sockets (ZeroMQ)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from lnpmsg.app import AppState
from lnpmsg.pubsub.peer import PeerPubSub
from lnpmsg.rpc.attached_client import AttachedAppClient
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.control_client import ControlCallError, ControlClient
from lnpmsg.rpc.peer import PeerRpc, RemoteError
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.wire import UnknownMessage

ROOT = Path(__file__).resolve().parent.parent
ECHO = 32902  # even
BIT = 343


async def wait_for(predicate, timeout=10.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def nodes(data_dir):
    """A: the node the app attaches to (control, rpc, pubsub); B: a peer of A."""
    a, b = make_node(), make_node(listen=False)
    a.mount(ControlServer(data_dir))
    a.mount(PeerRpc())
    a.mount(PeerPubSub())
    rpc_b, pubsub_b = b.mount(PeerRpc()), b.mount(PeerPubSub())
    echoes = []
    b.add_handler(ECHO, lambda peer, msg: echoes.append(msg.payload))
    return a, b, rpc_b, pubsub_b, echoes


async def next_event(events, kind, timeout=10.0):
    with trio.fail_after(timeout):
        async for event in events:
            if event.kind == kind:
                return event
    raise AssertionError(f"no {kind} event")


async def test_an_attached_app_gets_the_whole_contract_over_the_control_socket(data_dir):
    a, b, rpc_b, pubsub_b, echoes = nodes(data_dir)
    async with running(a, b):
        async with AttachedAppClient.attach(data_dir, "echo", types=[ECHO], feature_bits=[BIT]) as app:
            events = app.events()
            assert app.info["events"] == "app.echo."
            stand_in = a.apps["echo"]
            assert stand_in.state is AppState.RUNNING and a.apphost.owner_of(ECHO) is stand_in
            assert a.local_features().supports(BIT)
            await app.serve("shout")

            # lifecycle: peer_ready, with the peer's features
            peer = await b.connect(address_of(a))
            assert peer.session.remote_features.supports(BIT)  # A's init carries the app's bit
            ready = await next_event(events, "peer_ready")
            assert ready.data["node_id"] == b.node_id.hex() and ready.data["transport"] == "tcp"
            async with ControlClient.open(data_dir) as control:
                listed = (await control.call("listpeers"))["peers"][0]
                info = await control.call("getinfo")
            assert "echo" in info["apps"] and "echo (optional, bit 343)" in info["feature_names"]
            assert listed["node_id"] == b.node_id.hex()

            # an owned (even) type reaches the app; it answers with app.send
            await peer.send(UnknownMessage(ECHO, b"marco"))
            message = await next_event(events, "message")
            assert message.data["type"] == ECHO and bytes.fromhex(message.data["payload"]) == b"marco"
            await app.send(message.data["node_id"], ECHO, b"polo")
            await wait_for(lambda: echoes == [b"polo"])

            # peer RPC served from this process
            async def answer():
                request = await next_event(events, "rpc_request")
                assert request.data["method"] == "shout" and request.data["node_id"] == b.node_id.hex()
                assert await app.reply(request.data["request"], request.data["params"]["text"].upper())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                assert await rpc_b.call(peer, "shout", {"text": "hello"}) == "HELLO"

            # a subscription to the peer's topic, ended by the peer leaving
            await app.subscribe(b.node_id.hex(), "news")
            await wait_for(lambda: pubsub_b.subscribers("news") == [a.node_id])
            pubsub_b.publish("news", b"extra!")
            publication = await next_event(events, "publication")
            assert bytes.fromhex(publication.data["data"]) == b"extra!" and publication.data["seq"] == 1

            # a second app cannot take the type
            with pytest.raises(ControlCallError, match="app 'echo' owns it"):
                await app.call("app.attach", {"name": "thief", "types": [ECHO]})

            await b.disconnect(a.node_id)
            gone = await next_event(events, "peer_gone")
            assert gone.data["node_id"] == b.node_id.hex() and gone.data["reason"]
            ended = await next_event(events, "subscription_ended")
            assert ended.data["topic"] == "news" and "disconnected" in ended.data["reason"]
        # detached on the way out: the type, the bit and the method are gone
        await wait_for(lambda: "echo" not in a.apps)
        assert a.apphost.owner_of(ECHO) is None and not a.local_features().supports(BIT)
        assert "shout" not in a.apps["rpc"].methods
        peer = await b.connect(address_of(a))
        with pytest.raises(RemoteError, match="no method"):
            await rpc_b.call(peer, "shout", {"text": "anyone?"})
        await peer.send(UnknownMessage(ECHO, b"marco"))  # even, unowned again: A fails the peer
        await wait_for(lambda: b.node_id not in a.peers)


async def test_an_attached_app_that_goes_silent_is_detached_after_its_lease(data_dir):
    a, b, *_ = nodes(data_dir)
    async with running(a, b), ControlClient.open(data_dir) as control:
        await control.call("app.attach", {"name": "ghost", "types": [ECHO], "lease": 1.0})
        assert a.apphost.owner_of(ECHO) is a.apps["ghost"]
        await wait_for(lambda: "ghost" not in a.apps)
        assert a.apphost.owner_of(ECHO) is None
        with pytest.raises(ControlCallError, match="no attached app named 'ghost'"):
            await control.call("app.keepalive", {"name": "ghost"})


async def test_the_attached_app_example_in_its_own_process(data_dir):
    a, b, rpc_b, pubsub_b, echoes = nodes(data_dir)
    async with running(a, b):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = await trio.lowlevel.open_process(
            [sys.executable, str(ROOT / "examples" / "attached_app.py"), "--attach", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        lines: list[str] = []
        buffer = b""

        async def line(prefix):
            nonlocal buffer
            with trio.fail_after(30):
                while True:
                    while b"\n" in buffer:
                        raw, buffer = buffer.split(b"\n", 1)
                        lines.append(raw.decode(errors="replace"))
                        if lines[-1].startswith(prefix):
                            return lines[-1]
                    chunk = await process.stdout.receive_some(65536)
                    if not chunk:
                        raise AssertionError(f"the example exited: {lines}")
                    buffer += chunk

        try:
            await line("* attached as echo")
            peer = await b.connect(address_of(a))
            assert await line("ready ") == f"ready {b.node_id.hex()}"
            await wait_for(lambda: pubsub_b.subscribers("news") == [a.node_id])
            pubsub_b.publish("news", b"hot off the press")
            assert await line("news ") == f"news {b.node_id.hex()} 1 hot off the press"
            await peer.send(UnknownMessage(ECHO, b"ping"))
            await wait_for(lambda: echoes == [b"ping"])
            assert await rpc_b.call(peer, "shout", {"text": "quiet"}) == "QUIET"
            await b.disconnect(a.node_id)
            assert (await line("gone ")).startswith(f"gone {b.node_id.hex()} ")
            process.terminate()
        finally:
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        # SIGTERM gives the app no goodbye: its lease (30 s) would free the type; detach it now.
        a.unmount("echo")
        assert a.apphost.owner_of(ECHO) is None

