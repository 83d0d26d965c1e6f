"""PUSH/PULL throughput: the trio adapter against raw blocking pyzmq, in one run.

    python benchmarks/bench_zmq_adapter.py [--count N] [--size BYTES] [--repeat R]

Rows (messages/s, higher is better), each over ipc:// and tcp://127.0.0.1:
- ``trio adapter``: sender and receiver are two trio tasks in one thread,
  each socket wrapped in ``TrioSocket``;
- ``trio adapter, 4+4 tasks``: four sending and four receiving tasks sharing
  the same two sockets;
- ``raw pyzmq, threads``: blocking ``send``/``recv`` in two threads of this
  process (the GIL is shared, like the adapter's single thread);
- ``raw pyzmq, processes``: blocking sender in a child process, receiver here
  (no GIL sharing: the medium's ceiling).

The receiver stops on a final marker message rather than on the socket's
linger, because over ipc:// a sender that closes at once can lose its tail.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

import trio
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.io.zmq_trio import TrioSocket

Ctx: TypeAlias = "zmq.Context[zmq.Socket[bytes]]"
Sock: TypeAlias = "zmq.Socket[bytes]"

END = b"END"


def _endpoints(tmp: str) -> dict[str, str]:
    return {"ipc": f"ipc://{tmp}/bench.sock", "tcp": "tcp://127.0.0.1:0"}


def _pull(ctx: Ctx, endpoint: str) -> tuple[Sock, str]:
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 10_000)
    pull.bind(endpoint)
    return pull, pull.getsockopt_string(zmq.LAST_ENDPOINT)


def _push(ctx: Ctx, endpoint: str) -> Sock:
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 10_000)
    push.connect(endpoint)
    return push


def bench_adapter(endpoint: str, count: int, size: int, tasks: int = 1) -> float:
    ctx = zmq.Context()
    payload = b"x" * size
    result: list[float] = []

    async def main() -> None:
        pull_raw, bound = _pull(ctx, endpoint)
        pull = TrioSocket(pull_raw)
        push = TrioSocket(_push(ctx, bound))
        per_task = count // tasks
        done = 0

        async def sender() -> None:
            for _ in range(per_task):
                await push.send(payload)

        async def receiver(nursery: trio.Nursery) -> None:
            nonlocal done
            while True:
                msg = await pull.recv()
                if msg == END:
                    nursery.cancel_scope.cancel()
                    return
                done += 1
                if done == per_task * tasks:
                    nursery.cancel_scope.cancel()
                    return

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(receiver, nursery)
            async with trio.open_nursery() as senders:
                for _ in range(tasks):
                    senders.start_soon(sender)
        result.append(time.perf_counter() - start)
        push.close(linger=0)
        pull.close(linger=0)

    trio.run(main)
    ctx.term()
    return count / result[0]


def bench_threads(endpoint: str, count: int, size: int) -> float:
    ctx = zmq.Context()
    pull, bound = _pull(ctx, endpoint)
    push = _push(ctx, bound)
    payload = b"x" * size

    def send_all() -> None:
        for _ in range(count):
            push.send(payload)
        push.send(END)

    start = time.perf_counter()
    thread = threading.Thread(target=send_all)
    thread.start()
    while pull.recv() != END:
        pass
    elapsed = time.perf_counter() - start
    thread.join()
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()
    return count / elapsed


def _child_sender(endpoint: str, count: int, size: int) -> None:
    ctx = zmq.Context()
    push = _push(ctx, endpoint)
    payload = b"x" * size
    for _ in range(count):
        push.send(payload)
    push.send(END)
    # Linger is not a delivery guarantee over ipc://: wait for the parent to
    # be done reading (it terminates us) rather than exit at once.
    time.sleep(30)


def bench_processes(endpoint: str, count: int, size: int) -> float:
    ctx = zmq.Context()
    pull, bound = _pull(ctx, endpoint)
    proc = multiprocessing.get_context("spawn").Process(target=_child_sender, args=(bound, count, size))
    proc.start()
    first = pull.recv()  # start the clock at the first message: process start-up is not throughput
    start = time.perf_counter()
    received = 1 if first != END else 0
    while pull.recv() != END:
        received += 1
    elapsed = time.perf_counter() - start
    proc.terminate()
    proc.join()
    pull.close(linger=0)
    ctx.term()
    return max(received - 1, 1) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="messages per run (default 100000)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best counts (default 3)")
    args = parser.parse_args()
    print(
        f"PUSH/PULL, {args.count} messages of {args.size} bytes, best of {args.repeat}, {os.cpu_count()} CPUs"
    )
    print(f"{'path':32} {'ipc msg/s':>12} {'tcp msg/s':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[tuple[str, Callable[[str], float]]] = [
            ("trio adapter", lambda ep: bench_adapter(ep, args.count, args.size)),
            ("trio adapter, 4+4 tasks", lambda ep: bench_adapter(ep, args.count, args.size, tasks=4)),
            ("raw pyzmq, threads", lambda ep: bench_threads(ep, args.count, args.size)),
            ("raw pyzmq, processes", lambda ep: bench_processes(ep, args.count, args.size)),
        ]
        results: dict[str, dict[str, float]] = {}
        for name, run in rows:
            results[name] = {
                kind: max(run(ep) for _ in range(args.repeat)) for kind, ep in _endpoints(tmp).items()
            }
            print(f"{name:32} {results[name]['ipc']:>12,.0f} {results[name]['tcp']:>12,.0f}", flush=True)
        base = results["raw pyzmq, threads"]
        adapter = results["trio adapter"]
        print(
            f"adapter / raw threads: ipc {adapter['ipc'] / base['ipc']:.0%}, tcp {adapter['tcp'] / base['tcp']:.0%}"
        )


if __name__ == "__main__":
    main()
