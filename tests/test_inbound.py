"""Inbound connections over loopback TCP: the handshake in the listener's accept
loop as far as it goes without waiting, a task for a connection only once it must
wait (then one), and the handshake's deadlines kept by the node's keepalive
schedule (no cancel scope per handshake)."""

from __future__ import annotations

import gc
import logging
import socket

import trio
import trio.testing

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node
from lnpmsg.node.peer import Peer
from lnpmsg.noise import ACT_ONE_SIZE, ACT_TWO_SIZE, FRAME_OVERHEAD, InitiatorHandshake, ResponderHandshake, TransportCipher
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import make_node, running, running_tasks
from lnpmsg.testing.virtual import memory_node
from lnpmsg.transports.base import Connection
from lnpmsg.transports.tcp import TcpConnection, TcpTransport
from lnpmsg.wire import DEFAULT_REGISTRY, Init

CONNECTION_TASK = "TcpListener.serve_accepting.<locals>.accepted"
#: an odd custom message type (the tests' traffic)
CUSTOM = 32769


def _dial_now(node: Node, act_one: bytes | None = None) -> tuple[socket.socket, InitiatorHandshake]:
    """Connect and send act one (or ``act_one``'s bytes) without a schedule point: they are
    there before the node's accept loop runs (a loopback connect completes at once)."""
    host, port = node.listen_addresses[0].rsplit(":", 1)
    handshake = InitiatorHandshake(NodeKey.generate().secret, node.node_id)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(handshake.act_one() if act_one is None else act_one)
    sock.setblocking(False)
    return sock, handshake


async def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        await trio.lowlevel.wait_readable(sock)
        chunk = sock.recv(size - len(data))
        if not chunk:
            return data
        data += chunk
    return data


async def _closed(sock: socket.socket) -> bool:
    """True once the node closed the connection (EOF or reset)."""
    await trio.lowlevel.wait_readable(sock)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


async def _close_from_our_side(node, peer, sock: socket.socket) -> None:
    """Close ``peer`` from the node's side; its socket sees the close and nothing of it stays."""
    peer.close("stopped by the test")
    sock.setblocking(False)
    with trio.fail_after(10):
        while not await _closed(sock):
            pass
        await peer.closed.wait()
    assert node.peers == {} and len(node.keepalive) == 0
    sock.close()


async def test_act_one_already_there_is_answered_in_the_accept_loop_and_one_task_runs_the_connection() -> None:
    node = make_node()
    seen: list[tuple[str, bool, bytes]] = []
    accept_now = node._accept_now

    def watched(conn: Connection) -> bool:
        accepted = accept_now(conn)
        pending = node._handshakes[conn]
        seen.append((trio.lowlevel.current_task().coro.__qualname__, pending.act_one_done, pending.unsent))
        return accepted

    node._accept_now = watched  # type: ignore[method-assign]
    async with running(node):
        sock, handshake = _dial_now(node)
        with trio.fail_after(10):
            act_two = await _receive(sock, ACT_TWO_SIZE)
        # act one was read and act two sent from the accept loop, before any task of the connection
        assert seen == [("TcpListener._accept_loop", True, b"")]
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks(CONNECTION_TASK) == 1 and node.pending_handshakes == 1
        sock.sendall(handshake.receive_act_two(act_two))
        with trio.fail_after(10):
            while node.pending_handshakes:  # act three taken: a peer (waiting for our init's answer)
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        # the same task took act three and runs the peer: no other task for it
        assert running_tasks(CONNECTION_TASK) == 1 and running_tasks("PeerWriting._write_loop") == 0
        assert node.pending_handshakes == 0 and len(node.keepalive) == 1  # the peer's init deadline only
        sock.close()


def _watch_tasks(node: Node) -> list[Connection]:
    """The connections the node's listener gave a task (recorded as each task starts)."""
    tasks: list[Connection] = []
    accept = node._accept

    async def watched(conn: Connection) -> None:
        tasks.append(conn)
        await accept(conn)

    node._accept = watched  # type: ignore[method-assign]
    return tasks


class _Initiator:
    """A dialer that answers act two from inside the node's accept loop, right after act
    two left (act three, maybe its init, maybe a half-close): all of it is there when the
    loop continues the connection, as when a busy node accepts late. Made before the node
    runs (its listener takes ``accept_now`` when it starts)."""

    def __init__(
        self,
        node: Node,
        *,
        with_init: bool,
        hang_up: bool,
        init_part: int | None = None,
        after_init: tuple[bytes, ...] = (),
        first: bytes | None = None,
        raw_after: bytes = b"",
    ) -> None:
        self.key = NodeKey.generate()
        self.handshake = InitiatorHandshake(self.key.secret, node.node_id)
        self.sock: socket.socket | None = None
        self.node = node
        #: the initiator's side of the transport (set once act three is made)
        self.cipher: TransportCipher | None = None
        #: what ``init_part`` left unsent of the init (and of ``after_init``)
        self.init_rest = b""
        accept_now = node._accept_now

        def answering(conn: Connection) -> bool:
            kept = accept_now(conn)
            assert self.sock is not None
            act_two = self.sock.recv(ACT_TWO_SIZE)  # loopback: there as soon as it was sent
            act_three = self.handshake.receive_act_two(act_two)
            self.cipher = TransportCipher(self.handshake.keys)
            # ``first``: another first message than the init; ``raw_after``: bytes past the frames, as they are
            messages = [Init().encode() if first is None else first, *after_init]
            init = self.cipher.encryptor.encrypt_joined(messages) + raw_after if with_init else b""
            self.sock.sendall(act_three + init[:init_part])
            self.init_rest = init[init_part:] if init_part is not None else b""
            if hang_up:
                self.sock.shutdown(socket.SHUT_WR)
            return kept

        node._accept_now = answering  # type: ignore[method-assign]

    def dial(self) -> socket.socket:
        host, port = self.node.listen_addresses[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(self.handshake.act_one())
        return self.sock


async def test_a_connection_that_hangs_up_after_act_three_gets_our_init_and_no_task() -> None:
    node = make_node()
    tasks = _watch_tasks(node)
    initiator = _Initiator(node, with_init=False, hang_up=True)  # a probe's, or a flood's
    async with running(node):
        sock = initiator.dial()
        sock.setblocking(False)
        with trio.fail_after(10):
            init_frame = await _receive(sock, FRAME_OVERHEAD + len(node.local_init().encode()))
            assert await _closed(sock)
        decrypted = TransportCipher(initiator.handshake.keys).decryptor.feed(init_frame)
        assert [DEFAULT_REGISTRY.decode(m).TYPE for m in decrypted] == [Init.TYPE]  # BOLT 1: our init first
        with trio.fail_after(10):
            while node.admission.connections_from("127.0.0.1"):
                await trio.sleep(0.01)
        # the accept loop took act three, sent our init and read the close: no task for it
        assert tasks == [] and node.pending_handshakes == 0 and len(node.keepalive) == 0
        assert node.peers == {} and node.stats["handshake_failed"] == 0
        sock.close()


class _Receives:
    """Counts the receives (of any kind) on the node's TCP connections, and the steps of
    connections' tasks (each a turn of the scheduler)."""

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.calls = 0
        self.steps = 0
        #: receives that found nothing there (None), and calls of ``receive_some``
        self.empty = 0
        self.waiting_calls = 0
        for name in ("receive_nowait", "receive_some", "receive_into_nowait"):
            monkeypatch.setattr(TcpConnection, name, self._counted(getattr(TcpConnection, name)))
        receives = self

        class Steps(trio.abc.Instrument):
            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                if getattr(task.coro, "__qualname__", "") == CONNECTION_TASK:
                    receives.steps += 1

        self.instrument = Steps()

    def _counted(self, method):  # type: ignore[no-untyped-def]
        if method.__name__ == "receive_some":

            async def counted_waiting(conn, *args):  # type: ignore[no-untyped-def]
                self.calls += 1
                self.waiting_calls += 1
                return await method(conn, *args)

            return counted_waiting

        def counted(conn, *args):  # type: ignore[no-untyped-def]
            self.calls += 1
            result = method(conn, *args)
            self.empty += result is None
            return result

        return counted


async def test_a_busy_accept_loop_looks_again_for_an_act_three_not_there_at_its_bursts_end() -> None:
    # Sixteen connections wait to be accepted: two bursts of the accept loop. The first
    # burst's act threes come only while the loop accepts the second: it looks for them
    # again at the second burst's end instead of starting a task to wait for each.
    node = make_node(max_pending_per_ip=32, max_pending_per_subnet=32, max_connections_per_ip=32)
    tasks = _watch_tasks(node)
    dialed: list[tuple[socket.socket, InitiatorHandshake]] = []
    accepted: list[Connection] = []
    accept_now = node._accept_now

    def answer(index: int) -> None:
        sock, handshake = dialed[index]
        sock.setblocking(True)
        sock.sendall(handshake.receive_act_two(sock.recv(ACT_TWO_SIZE)))  # loopback: act two is there
        sock.shutdown(socket.SHUT_WR)  # a hang-up right after act three
        sock.setblocking(False)

    def answering_late(conn: Connection) -> bool:
        kept = accept_now(conn)
        accepted.append(conn)
        if len(accepted) > 8:  # the second burst: the first's act threes come now, and its own
            answer(len(accepted) - 9)
            answer(len(accepted) - 1)
        return kept

    node._accept_now = answering_late  # type: ignore[method-assign]
    async with running(node):
        dialed.extend(_dial_now(node) for _ in range(16))  # all there before the loop looks
        with trio.fail_after(10):
            while len(accepted) < 16:  # the acts two are for the loop to read (in answer)
                await trio.sleep(0.001)
            for sock, _ in dialed:
                while not await _closed(sock):  # our init, then the close
                    pass
            while node.admission.connections_from("127.0.0.1"):
                await trio.sleep(0.01)
        assert len(accepted) == 16 and tasks == []
        assert node.pending_handshakes == 0 and len(node.keepalive) == 0 and node.stats["handshake_failed"] == 0
        for sock, _ in dialed:
            sock.close()


async def test_a_handshake_that_waits_for_act_three_waits_after_one_receive_that_found_nothing(monkeypatch) -> None:
    # The accept loop finds no act three, nor does the connection's task when it starts:
    # the task then waits without a receive of its own first (receive_some would try
    # once more), and reads act three when it comes.
    node = make_node()
    receives = _Receives(monkeypatch)
    async with running(node):
        sock, handshake = _dial_now(node)
        with trio.fail_after(10):
            act_two = await _receive(sock, ACT_TWO_SIZE)
        await trio.testing.wait_all_tasks_blocked()
        assert node.pending_handshakes == 1 and running_tasks(CONNECTION_TASK) == 1
        assert receives.empty == 2 and receives.waiting_calls == 0  # the loop's, the task's first
        sock.sendall(handshake.receive_act_two(act_two))
        with trio.fail_after(10):
            while node.pending_handshakes:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert receives.waiting_calls == 0 and node.pending_handshakes == 0
        sock.close()


async def _late_act_three(node: Node, receives: _Receives) -> tuple[socket.socket, InitiatorHandshake]:
    """Dial, take act two, and send act three only once the connection's task waits for it."""
    sock, handshake = _dial_now(node)
    with trio.fail_after(10):
        act_two = await _receive(sock, ACT_TWO_SIZE)
    await trio.testing.wait_all_tasks_blocked()
    assert node.pending_handshakes == 1 and running_tasks(CONNECTION_TASK) == 1
    sock.sendall(handshake.receive_act_two(act_two))
    return sock, handshake


async def test_a_connection_that_hangs_up_after_a_late_act_three_gets_our_init_and_no_peer_run(monkeypatch) -> None:
    # The connection's task took the handshake; the peer it made ends in start_now, as in
    # the accept loop: our init leaves, the close is read, and the peer never runs.
    node = make_node()
    receives = _Receives(monkeypatch)
    runs: list[Peer] = []
    run = Peer.run

    async def counted_run(peer: Peer) -> None:
        runs.append(peer)
        await run(peer)

    monkeypatch.setattr(Peer, "run", counted_run)
    async with running(node):
        sock, handshake = await _late_act_three(node, receives)
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        with trio.fail_after(10):
            init_frame = await _receive(sock, FRAME_OVERHEAD + len(node.local_init().encode()))
            assert await _closed(sock)
            while node.admission.connections_from("127.0.0.1"):
                await trio.sleep(0.01)
        decrypted = TransportCipher(handshake.keys).decryptor.feed(init_frame)
        assert [DEFAULT_REGISTRY.decode(m).TYPE for m in decrypted] == [Init.TYPE]
        assert runs == [] and node.peers == {} and len(node.keepalive) == 0 and node.pending_handshakes == 0
        assert node.stats["handshake_failed"] == 0 and running_tasks(CONNECTION_TASK) == 0
        sock.close()


async def test_a_peer_whose_init_comes_after_a_late_act_three_waits_for_it_after_one_empty_receive(monkeypatch) -> None:
    # A real peer's way: act three after a round trip, then its init. The task's start_now
    # finds nothing to read; the peer's run then waits for the init without another receive
    # first, takes it, and lives on (reads, keepalive, a close from our side).
    node = make_node(ping_interval=30)
    receives = _Receives(monkeypatch)
    received: list[bytes] = []
    node.add_handler(CUSTOM, lambda peer, message: received.append(message.payload))
    async with running(node):
        sock, handshake = await _late_act_three(node, receives)
        with trio.fail_after(10):
            while node.pending_handshakes:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        # the accept loop's and the task's first receive (act three not there), start_now's (no init yet)
        assert receives.empty == 3 and receives.waiting_calls == 0
        assert node.peers == {} and len(node.keepalive) == 1  # the peer's init deadline
        encryptor = TransportCipher(handshake.keys).encryptor
        sock.sendall(encryptor.encrypt_joined([Init().encode(), CUSTOM.to_bytes(2, "big") + b"first"]))
        with trio.fail_after(10):
            while not received:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        (peer,) = node.peers.values()
        # the init came to the wait: no receive found nothing since (the next read waits as any other)
        assert received == [b"first"] and peer.is_ready and receives.empty == 3
        assert node.keepalive.deadline_of(peer) is not None  # the first ping
        await _close_from_our_side(node, peer, sock)


async def test_act_one_in_pieces_is_completed_by_the_connection_task() -> None:
    node = make_node()
    async with running(node):
        handshake = InitiatorHandshake(NodeKey.generate().secret, node.node_id)
        act_one = handshake.act_one()
        sock, _ = _dial_now(node, act_one[:20])
        await trio.testing.wait_all_tasks_blocked()
        assert node.pending_handshakes == 1 and not list(node._handshakes.values())[0].act_one_done
        sock.sendall(act_one[20:])
        with trio.fail_after(10):
            act_two = await _receive(sock, ACT_TWO_SIZE)
        sock.sendall(handshake.receive_act_two(act_two))
        with trio.fail_after(10):
            while node.pending_handshakes:  # act three taken: a peer (waiting for our init's answer)
                await trio.sleep(0.01)
        sock.close()


async def test_a_running_inbound_peer_keeps_nothing_of_its_handshake() -> None:
    # The connection's task runs the peer for as long as it lives: the handshake's
    # state (with its last ChaCha20-Poly1305, ~2.3 KiB of OpenSSL state) must not
    # stay with it, or every idle peer pays for it.
    node = make_node()
    async with running(node):
        sock, handshake = _dial_now(node)
        with trio.fail_after(10):
            act_two = await _receive(sock, ACT_TWO_SIZE)
        gc.collect()
        assert sum(isinstance(o, ResponderHandshake) for o in gc.get_objects()) == 1  # this connection's
        sock.sendall(handshake.receive_act_two(act_two))
        with trio.fail_after(10):
            while node.pending_handshakes:  # act three taken: a peer (waiting for our init's answer)
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        assert running_tasks(CONNECTION_TASK) == 1  # the peer runs in the connection's task
        assert sum(isinstance(o, ResponderHandshake) for o in gc.get_objects()) == 0
        sock.close()


async def test_a_partial_act_one_times_out_at_the_act_one_deadline(caplog) -> None:
    caplog.set_level(logging.INFO, "lnpmsg.node")
    node = make_node(act_one_timeout=0.3, handshake_timeout=30)
    async with running(node):
        sock, _ = _dial_now(node, bytes(ACT_ONE_SIZE - 1))
        with trio.fail_after(10):
            assert await _closed(sock)
        assert node.stats["handshake_failed"] == 1 and node.pending_handshakes == 0
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks(CONNECTION_TASK) == 0 and len(node.keepalive) == 0
        sock.close()
    assert "no act one within 0.3 s" in caplog.text


async def test_a_missing_act_three_times_out_at_the_handshake_deadline(caplog) -> None:
    caplog.set_level(logging.INFO, "lnpmsg.node")
    node = make_node(act_one_timeout=0.2, handshake_timeout=0.5)
    async with running(node):
        sock, _ = _dial_now(node)
        with trio.fail_after(10):
            assert len(await _receive(sock, ACT_TWO_SIZE)) == ACT_TWO_SIZE
            started = trio.current_time()
            assert await _closed(sock)
        # act one came in time: the whole handshake's deadline closed it, not act one's
        assert trio.current_time() - started > 0.2
        assert node.stats["handshake_failed"] == 1 and node.pending_handshakes == 0
        await trio.testing.wait_all_tasks_blocked()
        assert running_tasks(CONNECTION_TASK) == 0 and len(node.keepalive) == 0
        sock.close()
    assert caplog.text.count("handshake timed out after 0.5 s") == 1


async def test_an_answered_handshake_is_evicted_once_and_its_task_ends() -> None:
    node = make_node(max_pending_per_ip=1, handshake_timeout=30)
    async with running(node):
        first, _ = _dial_now(node)
        with trio.fail_after(10):
            assert len(await _receive(first, ACT_TWO_SIZE)) == ACT_TWO_SIZE
        second, handshake = _dial_now(node)
        with trio.fail_after(10):
            assert await _closed(first)  # the oldest made room
            act_two = await _receive(second, ACT_TWO_SIZE)
        second.sendall(handshake.receive_act_two(act_two))
        with trio.fail_after(10):
            while node.pending_handshakes:  # act three taken: a peer (waiting for our init's answer)
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert node.stats["evicted"] == 1 and node.stats["handshake_failed"] == 0
        assert running_tasks(CONNECTION_TASK) == 1  # the peer's; the evicted one's task ended
        first.close()
        second.close()


async def test_the_tcp_listener_asks_accept_now_in_its_accept_loop_and_a_refusal_starts_no_task() -> None:
    listener = await TcpTransport().listen("127.0.0.1:0")
    asked: list[str] = []
    handled: list[Connection] = []

    def accept_now(conn: Connection) -> bool:
        asked.append(trio.lowlevel.current_task().coro.__qualname__)
        return len(asked) > 1  # refuse the first

    async def handler(conn: Connection) -> None:
        handled.append(conn)
        await conn.receive_some(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve_accepting, accept_now, handler)
        refused = await TcpTransport().dial(listener.local_address)
        with trio.fail_after(10):
            assert await refused.receive_some(10) == b""  # closed at once
        assert asked == ["TcpListener._accept_loop"] and handled == []
        kept = await TcpTransport().dial(listener.local_address)
        with trio.fail_after(10):
            while not handled:
                await trio.sleep(0.01)
        assert running_tasks(CONNECTION_TASK) == 1
        await kept.aclose()
        await refused.aclose()
        await listener.aclose()
        nursery.cancel_scope.cancel()


async def test_handshake_deadlines_stop_a_memory_connection_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """A transport whose listener runs the whole handshake in the connection's task (mem://)
    keeps the same deadlines, from the same schedule: a silent initiator is closed at act
    one's, one that stops after act two at the handshake's."""
    network = MemoryNetwork()
    node = memory_node(network, act_one_timeout=4.0, handshake_timeout=15.0)
    async with running(node):
        silent = await network.transport().dial(network.names[0])
        answered = await network.transport().dial(network.names[0])
        handshake = InitiatorHandshake(NodeKey.generate().secret, node.node_id)
        await answered.send_frames([handshake.act_one()])
        started = trio.current_time()
        assert len(await answered.receive_some(ACT_TWO_SIZE)) == ACT_TWO_SIZE
        assert await silent.receive_some(10) == b""
        assert 4.0 <= trio.current_time() - started <= 4.5  # act one's deadline, within a tick
        assert await answered.receive_some(10) == b""
        assert 15.0 <= trio.current_time() - started <= 15.5  # the whole handshake's
        assert node.stats["handshake_failed"] == 2 and node.pending_handshakes == 0
        await trio.testing.wait_all_tasks_blocked()
        assert len(node.keepalive) == 0
        await silent.aclose()
        await answered.aclose()


async def test_a_memory_connection_s_act_three_with_a_part_of_the_init_is_read_in_order(autojump_clock: trio.testing.MockClock) -> None:
    """A transport whose handshake runs in the connection's task (mem://): act three sent with
    a part of the init, the rest later with a message after it; nothing is lost or reordered,
    and the init deadline runs until the init is whole."""
    network = MemoryNetwork()
    node = memory_node(network, init_timeout=30.0, ping_interval=60.0)
    received: list[bytes] = []
    node.add_handler(CUSTOM, lambda peer, message: received.append(message.payload))
    async with running(node):
        conn = await network.transport().dial(network.names[0])
        handshake = InitiatorHandshake(NodeKey.generate().secret, node.node_id)
        await conn.send_frames([handshake.act_one()])
        act_three = handshake.receive_act_two(await conn.receive_some(ACT_TWO_SIZE))
        cipher = TransportCipher(handshake.keys)
        stream = cipher.encryptor.encrypt_joined([Init().encode(), CUSTOM.to_bytes(2, "big") + b"after"])
        await conn.send_frames([act_three + stream[:FRAME_OVERHEAD + 3]])
        await trio.sleep(10)
        assert node.pending_handshakes == 0 and node.peers == {} and len(node.keepalive) == 1
        await conn.send_frames([stream[FRAME_OVERHEAD + 3 :]])
        await trio.sleep(1)
        (peer,) = node.peers.values()
        assert peer.is_ready and received == [b"after"]
        # the peer's init leaves from its task, before anything else
        ours = cipher.decryptor.feed(await conn.receive_some(1000))
        assert DEFAULT_REGISTRY.decode(ours[0]).TYPE == Init.TYPE
        await conn.aclose()
        await trio.sleep(1)
        assert node.peers == {} and len(node.keepalive) == 0
