"""Inbound connections over loopback TCP, the peer's first reads: what came with act
three (the peer's ``init``, part of it, more messages, its close) read as the
handshake ends, handled at once when nothing in it has to wait (a node without apps:
no task at all for a peer that hangs up after its ``init``), else handed on to the
peer's run in the connection's task."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from lnpmsg.app import App
from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.noise import FRAME_OVERHEAD
from lnpmsg.testing.nodes import make_node, running, running_tasks
from lnpmsg.wire import DEFAULT_REGISTRY, Init, WarningMessage
from tests.test_inbound import CONNECTION_TASK, CUSTOM, _close_from_our_side, _closed, _Initiator, _receive, _Receives, _watch_tasks


async def test_an_init_that_came_with_act_three_is_handled_in_the_connections_task() -> None:
    node = make_node()
    tasks = _watch_tasks(node)
    initiator = _Initiator(node, with_init=True, hang_up=False)
    async with running(node):
        sock = initiator.dial()
        with trio.fail_after(10):
            while not node.peers:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        # the peer had something to say: one task took it, and reads on as the peer's
        assert len(tasks) == 1 and running_tasks(CONNECTION_TASK) == 1
        (peer,) = node.peers.values()
        assert peer.is_ready and node.pending_handshakes == 0
        # its first ping is due (not its init deadline), as for any ready peer
        assert len(node.keepalive) == 1 and node.keepalive.deadline_of(peer) == pytest.approx(
            peer.connected_at + node.config.ping_interval, abs=1.0
        )
        sock.close()


async def test_an_init_and_a_close_that_came_with_act_three_take_three_receives_and_no_task(monkeypatch, caplog) -> None:
    # Act one; act three with the init that came with it; the close. A node without apps
    # handles the init (nothing in it has to wait) and reads the close in the accept loop:
    # the peer was ready (logged and published as any other) and ended, without a task.
    caplog.set_level(logging.INFO, logger="lnpmsg.node")
    node = make_node()
    receives = _Receives(monkeypatch)
    initiator = _Initiator(node, with_init=True, hang_up=True)
    async with running(node):
        with node.events.subscribe(lambda event: isinstance(event, (PeerConnected, PeerDisconnected))) as events:
            trio.lowlevel.add_instrument(receives.instrument)
            try:
                sock = initiator.dial()
                sock.setblocking(False)
                with trio.fail_after(10):
                    while not await _closed(sock):  # our init, then the close
                        pass
                    while node.admission.connections_from("127.0.0.1"):
                        await trio.sleep(0.01)
            finally:
                trio.lowlevel.remove_instrument(receives.instrument)
            assert receives.calls == 3 and receives.steps == 0
            assert node.peers == {} and len(node.keepalive) == 0 and node.stats["handshake_failed"] == 0
            connected, gone = events.receive.receive_nowait(), events.receive.receive_nowait()
        node_id = initiator.key.node_id
        assert type(connected) is PeerConnected and connected.node_id == node_id
        assert type(gone) is PeerDisconnected and gone.node_id == node_id and gone.reason == "peer closed the connection"
        assert f"peer {node_id.hex()} connected" in caplog.text and f"peer {node_id.hex()} disconnected" in caplog.text
        sock.close()


async def test_an_init_and_a_close_that_came_with_act_three_reach_the_apps_through_a_task(monkeypatch) -> None:
    # With an app the init's peer_ready is awaited: the connection's task handles the init
    # and the close, and the app hears of the peer's start and end as of any other's.
    node = make_node()
    heard: list[tuple[str, bytes]] = []
    app = App("watcher")
    app.on_peer_ready(lambda peer: heard.append(("ready", peer.node_id)))
    app.on_peer_gone(lambda peer, reason: heard.append(("gone", peer.node_id)))
    node.mount(app)
    receives = _Receives(monkeypatch)
    initiator = _Initiator(node, with_init=True, hang_up=True)
    async with running(node):
        trio.lowlevel.add_instrument(receives.instrument)
        try:
            sock = initiator.dial()
            sock.setblocking(False)
            with trio.fail_after(10):
                while not await _closed(sock):
                    pass
                while node.admission.connections_from("127.0.0.1"):
                    await trio.sleep(0.01)
        finally:
            trio.lowlevel.remove_instrument(receives.instrument)
        assert receives.steps == 1
        node_id = initiator.key.node_id
        assert heard == [("ready", node_id), ("gone", node_id)]
        assert node.peers == {} and len(node.keepalive) == 0
        sock.close()


@pytest.mark.parametrize("case", ["bad frame", "not an init"])
async def test_a_first_read_the_node_cannot_take_at_once_goes_to_the_peers_run(case: str) -> None:
    # What came with act three, read in the accept loop, ends the peer: a bad frame after the
    # init, or a first message that is not an init (BOLT 1: an error back, then the close).
    # The peer's run hands those events on and closes, as its read loop does.
    node = make_node()
    tasks = _watch_tasks(node)
    if case == "bad frame":
        initiator = _Initiator(node, with_init=True, hang_up=False, raw_after=bytes(FRAME_OVERHEAD + 10))
    else:
        initiator = _Initiator(node, with_init=True, hang_up=False, first=CUSTOM.to_bytes(2, "big") + b"hello")
    async with running(node):
        with node.events.subscribe(lambda event: isinstance(event, PeerDisconnected)) as events:
            sock = initiator.dial()
            sock.setblocking(False)
            received = b""
            with trio.fail_after(10):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                while node.admission.connections_from("127.0.0.1"):
                    await trio.sleep(0.01)
            assert initiator.cipher is not None
            decrypted = [DEFAULT_REGISTRY.decode(m) for m in initiator.cipher.decryptor.feed(received)]
            assert len(tasks) == 1 and node.peers == {} and len(node.keepalive) == 0
            if case == "bad frame":
                # the peer was ready (its init was good) and ends at the bad frame
                assert [m.TYPE for m in decrypted] == [Init.TYPE]
                gone = events.receive.receive_nowait()
                assert gone.reason.startswith("bad encrypted frame from peer")
            else:
                # never ready: our init, then the warning the session queued (BOLT 1), then the close
                assert [m.TYPE for m in decrypted] == [Init.TYPE, WarningMessage.TYPE]
                assert events.receive.statistics().current_buffer_used == 0  # never ready, never gone
        sock.close()


async def test_a_peer_whose_init_came_with_act_three_is_read_kept_alive_and_stoppable() -> None:
    # A real peer stays: what came past the accept loop's receive, what it sends later
    # (once the reader waits), its keepalive, and a close from our side.
    node = make_node(ping_interval=30)
    received: list[bytes] = []
    node.add_handler(CUSTOM, lambda peer, message: received.append(message.payload))
    first = CUSTOM.to_bytes(2, "big") + bytes(range(256)) * 12  # past the bytes taken with act three
    initiator = _Initiator(node, with_init=True, hang_up=False, after_init=(first,))
    async with running(node):
        sock = initiator.dial()
        with trio.fail_after(10):
            while not received:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        (peer,) = node.peers.values()
        assert received == [first[2:]] and peer.is_ready
        # the first ping is due (not the init deadline any more), and the reader waits for bytes
        assert node.keepalive.deadline_of(peer) is not None and len(node.keepalive) == 1
        assert initiator.cipher is not None
        sock.sendall(initiator.cipher.encryptor.encrypt(CUSTOM.to_bytes(2, "big") + b"later"))
        with trio.fail_after(10):
            while len(received) < 2:
                await trio.sleep(0.01)
        assert received[1] == b"later"
        await _close_from_our_side(node, peer, sock)


async def test_a_part_of_an_init_that_came_with_act_three_leaves_the_init_deadline_running(caplog) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg.node")
    node = make_node(init_timeout=0.5)
    initiator = _Initiator(node, with_init=True, hang_up=False, init_part=10)  # no whole frame
    async with running(node):
        sock = initiator.dial()
        sock.setblocking(False)
        with trio.fail_after(30):
            # our init, then the node gives up on the peer's at its deadline (a warning, the close)
            await _receive(sock, FRAME_OVERHEAD + len(node.local_init().encode()))
            while not await _closed(sock):
                pass
        assert "peer sent no init in time" in caplog.text
        assert node.peers == {} and len(node.keepalive) == 0
        sock.close()


@pytest.mark.parametrize("init_part", [10, FRAME_OVERHEAD + 5])  # within the length header, within the body
async def test_an_init_whose_first_part_came_with_act_three_is_completed_by_the_peers_reads(init_part: int) -> None:
    # The accept loop's receive took act three and a part of the init (the peer's leftover):
    # the rest comes once the reader waits, and joins it in order, with what follows it.
    node = make_node(ping_interval=30)
    received: list[bytes] = []
    node.add_handler(CUSTOM, lambda peer, message: received.append(message.payload))
    initiator = _Initiator(node, with_init=True, hang_up=False, init_part=init_part, after_init=(CUSTOM.to_bytes(2, "big") + b"after",))
    async with running(node):
        sock = initiator.dial()
        with trio.fail_after(10):
            while node.pending_handshakes or not len(node.keepalive):
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert node.peers == {} and len(node.keepalive) == 1  # the init deadline, while the reader waits
        rest = initiator.init_rest
        sock.sendall(rest[:7])  # and the rest in pieces too
        await trio.testing.wait_all_tasks_blocked()
        sock.sendall(rest[7:])
        with trio.fail_after(10):
            while not received:
                await trio.sleep(0.01)
        (peer,) = node.peers.values()
        assert received == [b"after"] and peer.is_ready and len(node.keepalive) == 1
        assert node.keepalive.deadline_of(peer) is not None
        await _close_from_our_side(node, peer, sock)


async def test_a_peer_that_hangs_up_after_a_part_of_its_init_ends_unheard() -> None:
    # Act three and a part of the init in the accept loop's receive, then the close: the
    # peer's task reads the close, and nothing of it stays (no peer, no deadline, no task).
    node = make_node()
    initiator = _Initiator(node, with_init=True, hang_up=True, init_part=FRAME_OVERHEAD + 5)
    async with running(node):
        sock = initiator.dial()
        sock.setblocking(False)
        with trio.fail_after(10):
            await _receive(sock, FRAME_OVERHEAD + len(node.local_init().encode()))  # our init
            while not await _closed(sock):
                pass
            while node.admission.connections_from("127.0.0.1"):
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert node.peers == {} and len(node.keepalive) == 0 and node.pending_handshakes == 0
        assert running_tasks(CONNECTION_TASK) == 0
        sock.close()
