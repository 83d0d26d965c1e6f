"""The reading handed on to a new task (``Peer.hold_reading``, ``Peer.resume_reading``),
over loopback TCP, caused as an app causes it: a peer RPC method served in the
reading task that awaits (``rpc.handover.run_until_waiting`` hands the reading on).

A new reading task's first read takes what is there without a scheduler pass of
its own (``fresh`` in ``PeerReading._read_messages``): bytes that were waiting at
the hand-off are read and handled in that task's first step, in order, with
nothing lost or read twice (the bytes and messages the peer counts are exactly
those sent); bytes that come later are read once the task has waited for them;
a peer that closes during the hand-off ends cleanly, leaving no task behind.
"""

from __future__ import annotations

import select
from collections.abc import Callable

import pytest
import trio

from lnpmsg.node.peer import Peer
from lnpmsg.noise.run_reads import BATCH_CHUNK, RUN_BEFORE_BATCH
from lnpmsg.rpc.peer import ErrorCode, PeerRpc, RpcRequest, RpcResponse
from lnpmsg.testing.nodes import make_node, running, running_tasks
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import Init, MessageRegistry

REGISTRY = MessageRegistry()
for _cls in (RpcRequest, RpcResponse):
    REGISTRY.register(_cls)


class StepCounter(trio.abc.Instrument):
    """How many steps each task has taken (a step: one resumption by the scheduler)."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


class HandoffServer:
    """A node serving ``held`` (an awaiting method, read alone: it runs in the reading task
    and hands the reading on as it waits) and ``note`` (a plain function, served
    inline by whichever task reads it, which it records with that task's steps)."""

    def __init__(self) -> None:
        self.node = make_node()
        self.rpc = self.node.mount(PeerRpc())
        self.counter = StepCounter()
        self.gate = trio.Event()
        #: (value, reading task, that task's steps so far) per ``note`` served
        self.notes: list[tuple[int, trio.lowlevel.Task, int]] = []
        self.held_task: trio.lowlevel.Task | None = None
        #: run by ``held`` before it waits (while it still has the reading task)
        self.before_wait: Callable[[Peer], None] = lambda peer: None
        self.held_running = 0
        self.held_cancelled = 0

        @self.rpc.method()
        async def held(peer: Peer) -> str:
            self.held_task = trio.lowlevel.current_task()
            self.held_running += 1
            try:
                self.before_wait(peer)
                await self.gate.wait()  # a real wait: the reading goes on in a new task
            except trio.Cancelled:
                self.held_cancelled += 1
                raise
            finally:
                self.held_running -= 1
            return "released"

        @self.rpc.method()
        def note(peer: Peer, value: int) -> int:
            task = trio.lowlevel.current_task()
            self.notes.append((value, task, self.counter.steps.get(task, 0)))
            return value

        @self.rpc.method()
        async def warm(peer: Peer) -> int:
            await trio.lowlevel.checkpoint()
            return 0


def _request(req_id: int, method: str, params: str = "") -> bytes:
    return RpcRequest(id=req_id, timeout_ms=30_000, method=method.encode(), params=params.encode()).encode()


async def _reply(raw: RawPeer) -> RpcResponse:
    with trio.fail_after(5):
        while True:
            msg = REGISTRY.decode(await raw.receive())
            if isinstance(msg, RpcResponse):
                return msg


def _counted_exactly(peer: Peer, sent: list[bytes]) -> None:
    """Nothing read twice or lost: the peer counted exactly the messages and bytes sent."""
    assert peer.counters.messages_in == len(sent)
    assert peer.counters.bytes_in == sum(len(p) + FRAME_OVERHEAD for p in sent)


def _wait_readable(peer: Peer) -> None:
    """Block (briefly) until the server's socket holds the bytes just sent on loopback:
    they are then there for the new reading task's first read, whatever the kernel's timing."""
    readable, _, _ = select.select([peer.conn._sock], [], [], 5.0)  # type: ignore[attr-defined]
    assert readable


async def _handed_on(server: HandoffServer) -> tuple[RawPeer, Peer, list[bytes]]:
    """A raw peer past init and one warm-up call (a connection's first held request goes to
    a worker; its reading task then reads under the scope hold_reading gives), and the
    node's Peer for it; plus the plaintexts sent so far."""
    raw = await RawPeer.connect(server.node.listen_addresses[0], server.node.node_id)
    sent = [Init().encode(), _request(1, "warm")]
    await raw.exchange_init(Init())
    await raw.send(sent[1])
    reply = await _reply(raw)
    assert reply.id == 1 and reply.code == ErrorCode.OK
    return raw, server.node.peers[raw.key.node_id], sent


FRAME_OVERHEAD = 2 + 16 + 16


@pytest.mark.parametrize("split", [False, True], ids=["whole-frames", "frame-split-across-the-hand-off"])
async def test_bytes_waiting_at_the_hand_off_are_read_in_the_new_task_s_first_step(split: bool) -> None:
    server = HandoffServer()
    trio.lowlevel.add_instrument(server.counter)
    try:
        async with running(server.node):
            raw, peer, sent = await _handed_on(server)
            served: list[int] = []
            reading_tasks: list[trio.lowlevel.Task] = []
            # twice: the reading goes from run's task to a new one, then from that to another
            for round_ in range(2):
                server.gate = trio.Event()
                base = 10 * (round_ + 1)
                notes = [_request(base + i, "note", f"[{base + i}]") for i in range(5)]
                held = _request(round_ + 2, "held")
                head = raw.encrypt(held)  # first: the frames' nonces go in the order they are sent
                frames = [raw.encrypt(p) for p in notes]
                tail = b"".join(frames)
                if split:
                    # the held request's read ends inside the next frame: one message, so it is
                    # held, and the new task completes the frame the old one began
                    cut = len(frames[0]) // 2
                    head, tail = head + tail[:cut], tail[cut:]

                def send_the_rest(peer: Peer, tail: bytes = tail) -> None:
                    assert raw.conn.send_nowait(tail) == len(tail)
                    _wait_readable(peer)

                server.before_wait = send_the_rest
                await raw.send_raw(head)
                replies = [await _reply(raw) for _ in notes]
                assert [r.id for r in replies] == [base + i for i in range(5)]
                assert [r.result for r in replies] == [str(base + i).encode() for i in range(5)]
                # served once each, in order, by one new reading task, all in its first step
                served += [base + i for i in range(5)]
                assert [value for value, _, _ in server.notes] == served
                tasks = {task for _, task, _ in server.notes[-5:]}
                assert len(tasks) == 1 and server.held_task not in tasks
                assert {steps for _, _, steps in server.notes[-5:]} == {1}
                if reading_tasks:
                    assert server.held_task is reading_tasks[-1]  # the last new task handed on
                reading_tasks += tasks
                # the new task reads; the one that handed on to it (a task of its own from the
                # second round on) runs the held method until it returns
                assert server.held_running == 1 and running_tasks("PeerReading._read_loop") == 1 + round_
                sent += [held, *notes]
                _counted_exactly(peer, sent)
                server.gate.set()
                reply = await _reply(raw)
                assert reply.id == round_ + 2 and reply.result == b'"released"'
            # the reading stays with the last new task: a later call is read and answered once
            await raw.send(_request(99, "note", "[99]"))
            assert (await _reply(raw)).id == 99
            assert [value for value, _, _ in server.notes] == [*served, 99]
            assert server.notes[-1][1] is reading_tasks[-1]
            assert running_tasks("PeerReading._read_loop") == 1  # the one that handed on ended
            assert peer.counters.messages_in == len(sent) + 1
            assert server.rpc._serving_total == 0
            await raw.aclose()
    finally:
        trio.lowlevel.remove_instrument(server.counter)


@pytest.mark.parametrize("split", [False, True], ids=["whole-frames", "frame-split-across-the-hand-off"])
async def test_a_hand_off_within_a_run_of_frames_of_one_size_loses_and_repeats_nothing(split: bool) -> None:
    # Frames of one size read into the decryptor's kept buffer (MessageDecryptor.read_buffer):
    # the held request is read there, and the new task reads on into the same buffer.
    server = HandoffServer()
    async with running(server.node):
        raw, peer, sent = await _handed_on(server)
        # every request below is as long as the others ('held' as long as 'note'), and the
        # first ones come as one chunk of over BATCH_CHUNK bytes: a run (see MessageDecryptor.feed)
        width = 1024
        before = [_request(100 + i, "note", f"[{i}]".ljust(width)) for i in range(RUN_BEFORE_BATCH + 16)]
        chunk = b"".join(raw.encrypt(p) for p in before)
        assert len(chunk) > BATCH_CHUNK
        await raw.send_raw(chunk)
        replies = [await _reply(raw) for _ in before]
        assert [r.id for r in replies] == [100 + i for i in range(len(before))]
        held = _request(2, "held", "[]".ljust(width))
        assert {len(p) for p in before} == {len(held)}
        head = raw.encrypt(held)
        after = [_request(200 + i, "note", f"[{1000 + i}]".ljust(width)) for i in range(RUN_BEFORE_BATCH + 16)]
        tail = b"".join(raw.encrypt(p) for p in after)
        if split:
            cut = len(head) // 3
            head, tail = head + tail[:cut], tail[cut:]

        def send_the_rest(peer: Peer) -> None:
            assert raw.conn.send_nowait(tail) == len(tail)
            _wait_readable(peer)

        server.before_wait = send_the_rest
        await raw.send_raw(head)
        replies = [await _reply(raw) for _ in after]
        assert [r.id for r in replies] == [200 + i for i in range(len(after))]
        values = [value for value, _, _ in server.notes]
        assert values == list(range(len(before))) + [1000 + i for i in range(len(after))]
        late_tasks = {task for _, task, _ in server.notes[len(before):]}
        assert len(late_tasks) == 1 and server.held_task not in late_tasks
        sent += [*before, held, *after]
        _counted_exactly(peer, sent)
        server.gate.set()
        assert (await _reply(raw)).id == 2
        assert server.rpc._serving_total == 0 and peer.is_ready
        await raw.aclose()


async def test_bytes_that_come_after_the_hand_off_are_read_once_the_new_task_waited() -> None:
    server = HandoffServer()
    trio.lowlevel.add_instrument(server.counter)
    try:
        async with running(server.node):
            raw, peer, sent = await _handed_on(server)
            held = _request(2, "held")
            await raw.send(held)
            with trio.fail_after(5):
                while running_tasks("PeerReading._read_loop") != 1:
                    await trio.sleep(0.005)
            await trio.sleep(0.05)  # the new task is waiting for bytes
            assert server.held_running == 1 and server.notes == []
            notes = [_request(10 + i, "note", f"[{i}]") for i in range(3)]
            await raw.send_raw(b"".join(raw.encrypt(p) for p in notes))
            replies = [await _reply(raw) for _ in notes]
            assert [r.id for r in replies] == [10, 11, 12]
            assert [value for value, _, _ in server.notes] == [0, 1, 2]
            tasks = {task for _, task, _ in server.notes}
            assert len(tasks) == 1 and server.held_task not in tasks
            # its first step found nothing and waited; the second read what came
            assert {steps for _, _, steps in server.notes} == {2}
            sent += [held, *notes]
            _counted_exactly(peer, sent)
            server.gate.set()
            assert (await _reply(raw)).id == 2
            assert server.rpc._serving_total == 0 and peer.is_ready
            await raw.aclose()
    finally:
        trio.lowlevel.remove_instrument(server.counter)


@pytest.mark.parametrize("when", ["before-the-new-task-reads", "while-the-new-task-waits"])
async def test_a_peer_that_closes_during_the_hand_off_ends_cleanly(when: str) -> None:
    server = HandoffServer()
    async with running(server.node):
        raw, peer, _ = await _handed_on(server)
        if when == "before-the-new-task-reads":

            def hang_up(peer: Peer) -> None:
                raw.conn.close_nowait()  # everything the node sent was read: a clean FIN
                _wait_readable(peer)

            server.before_wait = hang_up
            await raw.send(_request(2, "held"))
        else:
            await raw.send(_request(2, "held"))
            with trio.fail_after(5):
                while running_tasks("PeerReading._read_loop") != 1:
                    await trio.sleep(0.005)
            await trio.sleep(0.05)
            assert server.held_running == 1
            await raw.aclose()
        with trio.fail_after(5):
            await peer.closed.wait()
        assert peer.close_reason == "peer closed the connection"
        assert raw.key.node_id not in server.node.peers
        # the held method was cancelled with the peer's tasks; no reading task is left
        assert server.held_running == 0 and server.held_cancelled == 1
        assert running_tasks("PeerReading._read_loop") == 0 and running_tasks("PeerWriting._write_loop") == 0
        assert server.rpc._serving_total == 0 and not server.gate.is_set()
        # the node serves the next peer as before
        other, _, _ = await _handed_on(server)
        await other.aclose()
