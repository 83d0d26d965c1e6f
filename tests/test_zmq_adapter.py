"""The trio <-> pyzmq adapter: round trips, cancellation, concurrency, close, idleness."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import TypeAlias

import pytest
import trio
import zmq

from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket, open_socket

Ctx: TypeAlias = "zmq.Context[zmq.Socket[bytes]]"

#: a hang guard, not a speed bound: every awaited thing here is local
HANG_GUARD = 10.0


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def short_dir() -> Iterator[str]:
    # ipc:// paths are limited to ~100 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="lnpz", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, short_dir: str) -> str:
    return (
        f"ipc://{short_dir}/a.sock" if request.param == "ipc" else "tcp://127.0.0.1:0"
    )


def pair(
    ctx: Ctx,
    endpoint: str,
    bind_type: int,
    connect_type: int,
    hwm: int | None = None,
) -> tuple[TrioSocket, TrioSocket]:
    """A bound and a connected TrioSocket."""
    bound = open_socket(bind_type, ctx)
    other = open_socket(connect_type, ctx)
    for sock in (bound, other):
        sock.socket.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            sock.socket.setsockopt(zmq.SNDHWM, hwm)
            sock.socket.setsockopt(zmq.RCVHWM, hwm)
    other.connect(bound.bind(endpoint))
    return bound, other


# --------------------------------------------------------------- round trips


async def test_push_pull_round_trip(ctx: Ctx, endpoint: str) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH)
    with pull, push, trio.fail_after(HANG_GUARD):
        messages = [bytes([i % 256]) * (i * 37 % 5000) for i in range(300)] + [b""]
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for message in messages:
                    await push.send(message)

            nursery.start_soon(send_all)
            got = [await pull.recv() for _ in messages]
        assert got == messages


async def test_req_rep_round_trip(ctx: Ctx, endpoint: str) -> None:
    rep, req = pair(ctx, endpoint, zmq.REP, zmq.REQ)
    with rep, req, trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                while True:
                    request = await rep.recv()
                    await rep.send(b"re:" + request)

            nursery.start_soon(serve)
            for i in range(200):
                await req.send(b"%d" % i)
                assert await req.recv() == b"re:%d" % i
            nursery.cancel_scope.cancel()


async def test_router_dealer_multipart_round_trip(
    ctx: Ctx, endpoint: str
) -> None:
    router, dealer = pair(ctx, endpoint, zmq.ROUTER, zmq.DEALER)
    with router, dealer, trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:

            async def echo() -> None:
                while True:
                    routing_id, *parts = await router.recv_multipart()
                    await router.send_multipart([routing_id, b"echo", *parts])

            nursery.start_soon(echo)
            replies: list[list[bytes]] = []

            async def read_replies() -> None:
                for _ in range(500):
                    replies.append(await dealer.recv_multipart())

            # Reading and writing the same DEALER from two tasks: each send may
            # swallow the descriptor's notification meant for the reader.
            async with trio.open_nursery() as inner:
                inner.start_soon(read_replies)
                for i in range(500):
                    await dealer.send_multipart([b"%d" % i, b"", b"x" * (i % 7)])
            nursery.cancel_scope.cancel()
        assert replies == [
            [b"echo", b"%d" % i, b"", b"x" * (i % 7)] for i in range(500)
        ]


async def test_a_send_that_swallows_the_readiness_notice_wakes_the_receiver(
    ctx: Ctx, endpoint: str
) -> None:
    router, dealer = pair(ctx, endpoint, zmq.ROUTER, zmq.DEALER)
    with router, dealer, trio.fail_after(HANG_GUARD):
        await dealer.send(b"hi")
        routing_id, _ = await router.recv_multipart()
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                got.append(await dealer.recv())

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await router.send_multipart([routing_id, b"reply"])
            # Hold the trio thread (deliberately blocking) while libzmq's I/O
            # thread posts the reply's notice to the dealer's descriptor; the
            # send below then consumes that notice before trio polls for it.
            time.sleep(0.2)  # noqa: ASYNC251 (blocking on purpose)
            assert dealer.try_send_multipart([b"other"])
        assert got == [b"reply"]


# -------------------------------------------------------------- cancellation


async def test_cancelled_recv_loses_no_message(ctx: Ctx, endpoint: str) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH)
    with pull, push, trio.fail_after(HANG_GUARD):
        with trio.move_on_after(0.05) as scope:
            await pull.recv()
        assert scope.cancelled_caught
        await push.send(b"kept")
        assert await pull.recv() == b"kept"


async def test_recv_under_random_cancellation_gets_every_message_once(
    ctx: Ctx, endpoint: str
) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH, hwm=4)
    rng = random.Random(1)
    count = 2000
    with pull, push, trio.fail_after(HANG_GUARD * 3):
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for i in range(count):
                    await push.send(b"%d" % i)
                    if i % 50 == 0:
                        await trio.sleep(0.001)

            nursery.start_soon(send_all)
            cancelled = 0
            while len(got) < count:
                with trio.move_on_after(
                    rng.choice([0, 0, 0.0001, 0.0005, 0.002])
                ) as scope:
                    got.append(await pull.recv())
                cancelled += scope.cancelled_caught
        assert got == [b"%d" % i for i in range(count)]
        assert cancelled > 0


async def test_cancelled_send_multipart_is_all_or_nothing(
    ctx: Ctx, endpoint: str
) -> None:
    # PUSH with no peer cannot take anything: the send must wait, and a
    # cancelled send must leave nothing behind once a peer appears.
    push = open_socket(zmq.PUSH, ctx)
    push.socket.setsockopt(zmq.LINGER, 0)
    push.socket.setsockopt(zmq.SNDHWM, 2)
    with push, trio.fail_after(HANG_GUARD):
        with trio.move_on_after(0.05) as scope:
            await push.send_multipart([b"lost", b"lost"])
        assert scope.cancelled_caught
        pull = open_socket(zmq.PULL, ctx)
        with pull:
            push.connect(pull.bind(endpoint))
            await push.send_multipart([b"first", b"1"])
            assert await pull.recv_multipart() == [b"first", b"1"]

            rng = random.Random(2)
            sent: list[list[bytes]] = []
            got: list[list[bytes]] = []

            async def read_all(
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                task_status.started()
                while True:
                    got.append(await pull.recv_multipart())
                    if rng.random() < 0.05:
                        await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                await nursery.start(read_all)
                for i in range(1500):
                    parts = [b"%d" % i, b"a" * (i % 3), b"z"]
                    with trio.move_on_after(rng.choice([0, 0.0001, 0.001])):
                        await push.send_multipart(parts)
                        sent.append(parts)
                await push.send_multipart([b"end"])
                while not got or got[-1] != [b"end"]:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert got[:-1] == sent
        assert 0 < len(sent) < 1500


# --------------------------------------------------------------- concurrency


async def test_many_senders_and_receivers_on_one_socket(
    ctx: Ctx, endpoint: str
) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH, hwm=50)
    tasks, per_task = 20, 500
    total = tasks * per_task
    seen: list[bytes] = []
    with pull, push, trio.fail_after(HANG_GUARD * 3):
        async with trio.open_nursery() as nursery:

            async def sender(n: int) -> None:
                for i in range(per_task):
                    await push.send(b"%d:%d" % (n, i))

            async def receiver() -> None:
                while True:
                    seen.append(await pull.recv())
                    if len(seen) == total:
                        nursery.cancel_scope.cancel()

            for n in range(tasks):
                nursery.start_soon(receiver)
                nursery.start_soon(sender, n)
    assert len(seen) == total
    assert set(seen) == {
        b"%d:%d" % (n, i) for n in range(tasks) for i in range(per_task)
    }


async def test_descriptor_watch_is_handed_over_when_its_watcher_is_cancelled(
    ctx: Ctx, endpoint: str
) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH)
    with pull, push, trio.fail_after(HANG_GUARD):
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def first_receiver() -> None:
                with first:
                    got.append(await pull.recv())

            async def receiver() -> None:
                got.append(await pull.recv())

            # the first one to wait watches the descriptor; the others park
            nursery.start_soon(first_receiver)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(receiver)
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            await push.send(b"a")
            await push.send(b"b")
        assert sorted(got) == [b"a", b"b"]


# ---------------------------------------------------------------------- close


async def test_close_wakes_every_waiting_task_with_a_clear_error(
    ctx: Ctx, endpoint: str
) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH)
    lonely = open_socket(zmq.PUSH, ctx)  # no peer: its sends wait forever
    lonely.socket.setsockopt(zmq.LINGER, 0)
    errors: list[BaseException] = []
    with pull, push, trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:

            async def wait_recv() -> None:
                try:
                    await pull.recv_multipart()
                except SocketClosedError as exc:
                    errors.append(exc)

            async def wait_send() -> None:
                try:
                    await lonely.send(b"never")
                except SocketClosedError as exc:
                    errors.append(exc)

            for _ in range(3):
                nursery.start_soon(wait_recv)
                nursery.start_soon(wait_send)
            await trio.testing.wait_all_tasks_blocked()
            pull.close()
            await lonely.aclose()
        assert len(errors) == 6
        assert all(isinstance(e, trio.ClosedResourceError) for e in errors)
        with pytest.raises(SocketClosedError):
            await pull.recv()
        with pytest.raises(SocketClosedError):
            await lonely.send(b"x")
        pull.close()  # idempotent
        await pull.aclose()
        assert pull.closed and pull.socket.closed


async def test_context_managers_close(ctx: Ctx) -> None:
    with open_socket(zmq.PUSH, ctx) as sync_managed:
        pass
    assert sync_managed.closed and sync_managed.socket.closed
    async with open_socket(zmq.PULL, ctx) as async_managed:
        pass
    assert async_managed.closed and async_managed.socket.closed


async def test_socket_closed_behind_the_wrapper_gives_the_clear_error() -> None:
    context = zmq.Context()
    sock = open_socket(zmq.PULL, context)
    sock.socket.setsockopt(zmq.LINGER, 0)
    sock.socket.close()  # closed behind the wrapper's back
    with pytest.raises(SocketClosedError):
        await sock.recv()
    context.term()


async def test_bad_arguments(ctx: Ctx) -> None:
    with open_socket(zmq.PUSH, ctx) as sock:
        with pytest.raises(ValueError):
            await sock.send_multipart([])
        with pytest.raises(ValueError):
            sock.try_send_multipart([])
    raw = ctx.socket(zmq.PUSH)
    raw.close()
    with pytest.raises(SocketClosedError):
        TrioSocket(raw)


async def test_try_send_multipart(ctx: Ctx, endpoint: str) -> None:
    lonely = open_socket(zmq.PUSH, ctx)
    lonely.socket.setsockopt(zmq.LINGER, 0)
    with lonely:
        assert lonely.try_send_multipart([b"x"]) is False
    router, dealer = pair(ctx, endpoint, zmq.ROUTER, zmq.DEALER)
    router.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
    with router, dealer, trio.fail_after(HANG_GUARD):
        with pytest.raises(zmq.ZMQError) as info:
            router.try_send_multipart([b"nobody", b"x"])
        assert info.value.errno == zmq.EHOSTUNREACH
        await dealer.send(b"hello")
        routing_id, hello = await router.recv_multipart()
        assert hello == b"hello"
        assert router.try_send_multipart([routing_id, b"a", b"b"]) is True
        assert await dealer.recv_multipart() == [b"a", b"b"]


# ------------------------------------------------------------------ idleness


async def test_waiting_tasks_do_not_burn_cpu(ctx: Ctx, endpoint: str) -> None:
    pull, push = pair(ctx, endpoint, zmq.PULL, zmq.PUSH)
    lonely = open_socket(zmq.PUSH, ctx)
    lonely.socket.setsockopt(zmq.LINGER, 0)
    with pull, push, lonely, trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            # one task on the descriptor, two parked, one sender waiting
            for _ in range(3):
                nursery.start_soon(pull.recv)
            nursery.start_soon(lonely.send, b"never")
            await trio.testing.wait_all_tasks_blocked()
            cpu_before = time.process_time()
            await trio.sleep(0.5)
            cpu_used = time.process_time() - cpu_before
            nursery.cancel_scope.cancel()
        # A polling loop would use about the whole 0.5 s; waiting uses ~nothing.
        assert cpu_used < 0.15, f"waiting used {cpu_used:.3f} s of CPU in 0.5 s"


async def test_asyncio_sockets_are_refused() -> None:
    import zmq.asyncio

    context = zmq.asyncio.Context()
    sock = context.socket(zmq.PUSH)
    with pytest.raises(TypeError):
        TrioSocket(sock)
    sock.close(linger=0)
    context.term()
