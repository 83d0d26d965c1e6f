"""Every transport side by side, and each medium's raw loopback limit, in one run.

For each transport (TCP, UDP/QUIC, ZeroMQ over tcp:// and ipc://):

- messages/s of 1 KiB and of 64 KiB (65,535 bytes, the BOLT-8 maximum)
  between two Nodes: a sending node in a child process, the receiving node
  here; a message counts when the receiving node's app has it (by default
  a batch handler, which takes what each read brings of the stream's type in
  one call; ``--handler message``: one handler call per message);
- ping round-trip time (``peer.ping``, BOLT-1 ping/pong through both nodes)
  as percentiles.

And, for the medium under each transport, its raw loopback limit from Python
with the same sizes and the same two processes (a sender child, a receiver
here), nothing but the medium itself:

- raw TCP: ``sendall`` of the message size in a loop, ``recv_into`` here;
- raw UDP: datagrams sent as fast as the child can, counted as delivered
  here (64 KiB means 65,507 bytes, the largest UDP payload);
- raw ZeroMQ: PUSH in the child, PULL here (tcp:// and ipc://), one ZeroMQ
  message per message. The ZeroMQ transport packs many small frames into
  one ZeroMQ message, so its 1 KiB figure can exceed this limit: the limit
  says what one message per ZeroMQ message would cost.

Every process (the nodes' and the limits') runs with the C allocator's
thresholds ``lnpmsg node`` sets (:mod:`lnpmsg.runtime.malloc_policy`): they
make raw pyzmq at 1 KiB about a quarter cheaper per message too (measured:
1.75 + 1.54 -> 1.31 + 1.18 µs), so a limit measured without them was weaker
than the medium under the node's own settings.

Rounds: on a shared machine a raw limit measured once moved 2x between
runs, so each (transport, size) runs ``--rounds`` rounds (default 3), each
a raw measurement then a node measurement back to back (the order alternates
between rounds). A round's ratio is its own node figure over its own raw
figure; the table gives the median round and the lowest round, for the
rates and for the ratio. Each measurement sends for ``--seconds`` (the
sender's clock) and is timed here from the first to the last message
received, so process start-up does not count.

CPU per message: where both sides can say it (every node run, the QUIC
floor and raw ZeroMQ), each round also gives the CPU time each process
spent per message while the messages flowed (the sender's from its first to its last send,
the receiver's from its first to its last message, start-ups excluded), and
the ratio of the two totals: the node's messages per CPU-second against the
limit's. Time a process waits for a core that another process of the machine
holds is no CPU time, so this ratio does not fall with a round that lost the
core, as the wall-clock ratio does; it is what one core shared by both
processes would carry.

Usage: ``python benchmarks/bench_transports.py [--quick] [--rounds N] [--seconds S] [--pings N] [--only T] [--size "1 KiB"] [--handler batch|message] [--json]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import trio
import zmq

from lnpmsg.app import App
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.runtime.malloc_policy import tune_malloc
from lnpmsg.transports.registry import default_transports
from lnpmsg.transports.udp_quic import self_signed_certificate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quic_floor  # noqa: E402  (benchmarks/ is not a package)

#: the message type carrying benchmark payloads (odd: custom range)
DATA = 0xB5A1
#: the last message of a run
END = 0xB5A3
#: message sizes (type included): 1 KiB and the BOLT-8 maximum
SIZES = {"1 KiB": 1024, "64 KiB": 65535}
#: the largest UDP payload over IPv4
MAX_UDP_PAYLOAD = 65507
#: a raw UDP run ends when nothing arrived for this long
UDP_IDLE = 0.5
#: BOLT-1 keepalive interval of both nodes in the ping runs: a node allows 20
#: pings per interval before it calls it a flood, so a short interval (and a
#: pause between pings) lets a run take hundreds of samples within the rule
PING_RUN_INTERVAL = 0.05
#: pause between two pings: at most 50 ms / 3 ms < 20 pings per interval
PING_GAP = 0.003
#: what each transport listens on; the medium its limit is measured on; and a
#: second, lower-level medium reported beside it (UDP: the limit is QUIC alone,
#: encrypted and reliable like the transport, see quic_floor.py; plain
#: datagrams are the second reference)
TRANSPORTS: dict[str, tuple[str, str, str | None]] = {
    "tcp": ("127.0.0.1:0", "tcp", None),
    "udp": ("udp://127.0.0.1:0", "quic", "udp"),
    "zmq+tcp": ("zmq+tcp://127.0.0.1:0", "zmq+tcp", None),
    "zmq+ipc": ("zmq+ipc://{dir}/bench.sock", "zmq+ipc", None),
}

Context = multiprocessing.context.SpawnContext


# ------------------------------------------------------------------ nodes


def _child_node(address: str, size: int, seconds: float, report: Any = None) -> None:
    """A sending node: connect, send ``size``-byte messages for ``seconds``, then END, then wait.

    ``report`` (a pipe's end) gets (CPU seconds, messages) of the sending loop."""
    tune_malloc()

    async def main() -> None:
        config = NodeConfig() if size else NodeConfig(ping_interval=PING_RUN_INTERVAL)
        node = Node(NodeKey.generate(), config)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            peer = await node.connect(address)
            if size:
                message = DATA.to_bytes(2, "big") + bytes(size - 2)
                deadline = time.perf_counter() + seconds
                cpu = time.process_time()
                sent = 0
                while time.perf_counter() < deadline:
                    for _ in range(64):
                        await peer.send(message)
                    sent += 64
                if report is not None:
                    report.send((time.process_time() - cpu, sent))
                await peer.send(END.to_bytes(2, "big"))
            await trio.sleep_forever()  # the parent terminates us

    trio.run(main)


@dataclass
class NodeResult:
    rate: float = 0.0
    messages: int = 0
    first_batch: int = 0
    #: CPU seconds per message: the sender's, the receiver's (0: not measured)
    sender_cpu: float = 0.0
    receiver_cpu: float = 0.0


async def _node_run(
    ctx: Context, listen: str, size: int, seconds: float, pings: int, per_message: bool = False
) -> tuple[NodeResult, list[float]]:
    config = NodeConfig(listen=[listen]) if size else NodeConfig(listen=[listen], ping_interval=PING_RUN_INTERVAL)
    node = Node(NodeKey.generate(), config, transports=default_transports())
    result = NodeResult()
    first = last = 0.0
    cpu_first = cpu_last = 0.0
    done = trio.Event()

    def arrived(count: int) -> None:
        nonlocal first, last, cpu_first, cpu_last
        last = time.perf_counter()
        cpu_last = time.process_time()
        if not result.messages:
            first = last
            cpu_first = cpu_last
            result.first_batch = count  # arrived by ``first``: the rate counts those after it
        result.messages += count

    if per_message:
        node.add_handler(DATA, lambda peer, message: arrived(1))
    else:
        # A stream of one type is what a batch handler is for: an app takes the runs each read
        # brings (as their bytes) in one call. Never blocks, so no timeout scope per call.
        receiver = App("receiver")
        receiver.add_batch_handler(DATA, lambda peer, messages: arrived(len(messages)), guard=False)
        node.mount(receiver)
    node.add_handler(END, lambda peer, message: done.set())
    rtts: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        report, child_report = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child_node, args=(node.addresses[0], size, seconds, child_report), daemon=True)
        child.start()
        child_report.close()
        try:
            with trio.fail_after(seconds + 60):
                if size:
                    await done.wait()
                else:
                    while not node.peers:
                        await trio.sleep(0.01)
                    peer = next(iter(node.peers.values()))
                    for _ in range(pings):
                        rtts.append(await peer.ping())
                        await trio.sleep(PING_GAP)
        finally:
            if size and report.poll(5):  # sent before END, so it is there by now
                cpu, sent = report.recv()
                result.sender_cpu = cpu / sent
            report.close()
            child.terminate()
            child.join()
            node.stop()
    if result.messages > result.first_batch:
        result.rate = (result.messages - result.first_batch) / (last - first)
        result.receiver_cpu = (cpu_last - cpu_first) / (result.messages - result.first_batch)
    return result, rtts


# ------------------------------------------------------------------ raw media


def _child_raw(medium: str, endpoint: str, size: int, seconds: float, report: Any = None) -> None:
    tune_malloc()
    if medium == "quic":
        host, port = endpoint.rsplit(":", 1)
        quic_floor.send(host, int(port), seconds, report)
        return
    payload = bytes(size)
    deadline = time.perf_counter() + seconds
    if medium == "tcp":
        host, port = endpoint.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as sock:
            while time.perf_counter() < deadline:
                for _ in range(64):
                    sock.sendall(payload)
        return
    if medium == "udp":
        host, port = endpoint.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            while time.perf_counter() < deadline:
                for _ in range(64):
                    try:
                        sock.sendto(payload, (host, int(port)))
                    except OSError:
                        pass  # a full buffer is the medium's answer: drop, like the kernel would
        return
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 10_000)
    push.connect(endpoint)
    cpu = time.process_time()
    sent = 0
    while time.perf_counter() < deadline:
        for _ in range(64):
            push.send(payload)
        sent += 64
    if report is not None:
        report.send((time.process_time() - cpu, sent))
    push.send(b"")  # the end marker: an empty message
    time.sleep(60)  # linger is no delivery guarantee over ipc://: the parent terminates us


def _raw_run(
    ctx: Context, medium: str, size: int, seconds: float, directory: str, cost: list[float] | None = None
) -> float:
    """Messages/s the raw medium delivers from a child process to this one.

    For the QUIC floor and ZeroMQ, ``cost`` gets the sender's and the receiver's CPU seconds per message."""
    if medium == "quic":
        sock, host, port = quic_floor.open_receiver()
        report, child_report = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child_raw, args=(medium, f"{host}:{port}", size, seconds, child_report), daemon=True)
        child.start()
        child_report.close()
        try:
            receiver: dict[str, float] = {}
            rate = quic_floor.receive(sock, size, *_certificate(), cost=receiver)
            if cost is not None and receiver and report.poll(5):
                cpu, sent = report.recv()
                cost[:] = [cpu / (sent / size), receiver["cpu"] / (receiver["bytes"] / size)]
            return rate
        finally:
            report.close()
            child.terminate()
            child.join()
            sock.close()
    if medium == "udp":
        size = min(size, MAX_UDP_PAYLOAD)
    if medium == "tcp":
        server = socket.create_server(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    elif medium == "udp":
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        server.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    else:
        context = zmq.Context()
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 10_000)
        pull.bind("tcp://127.0.0.1:0" if medium == "zmq+tcp" else f"ipc://{directory}/raw.sock")
        endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    report, child_report = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_raw, args=(medium, endpoint, size, seconds, child_report), daemon=True)
    child.start()
    child_report.close()
    try:
        if medium == "tcp":
            conn, _ = server.accept()
            buffer = bytearray(1 << 20)
            total = 0
            first = 0.0
            with conn:
                while True:
                    got = conn.recv_into(buffer)
                    if not got:
                        break
                    if not first:
                        first = time.perf_counter()
                    total += got
                    last = time.perf_counter()
            messages = total / size
        elif medium == "udp":
            buffer = bytearray(1 << 16)
            server.settimeout(30)
            server.recv_into(buffer)
            first = last = time.perf_counter()
            messages = 1
            server.settimeout(UDP_IDLE)
            while True:
                try:
                    server.recv_into(buffer)
                except TimeoutError:
                    break
                messages += 1
                last = time.perf_counter()
        else:
            pull.recv()
            first = time.perf_counter()
            cpu_first = time.process_time()
            messages = 1
            while pull.recv():
                messages += 1
            last = time.perf_counter()
            cpu_last = time.process_time()
            pull.close(linger=0)
            context.term()
            if cost is not None and messages > 1 and report.poll(5):  # sent before the end marker
                cpu, sent = report.recv()
                cost[:] = [cpu / sent, (cpu_last - cpu_first) / (messages - 1)]
    finally:
        report.close()
        child.terminate()
        child.join()
        if medium in ("tcp", "udp"):
            server.close()
    return (messages - 1) / (last - first) if last > first else 0.0


_CERTIFICATE: list[object] = []


def _certificate() -> tuple[object, object]:
    if not _CERTIFICATE:
        _CERTIFICATE.extend(self_signed_certificate(datetime.datetime.now(datetime.UTC)))
    return _CERTIFICATE[0], _CERTIFICATE[1]


# ------------------------------------------------------------------ report


def _usage() -> tuple[float, int, float, int, float, float]:
    """CPU seconds and involuntary context switches of this (receiving) process, then of its
    ended children (the sender, once joined), the wall clock, and the CPU seconds the whole
    machine was busy (Linux's /proc/stat; 0 elsewhere)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        own.ru_utime + own.ru_stime,
        own.ru_nivcsw,
        children.ru_utime + children.ru_stime,
        children.ru_nivcsw,
        time.perf_counter(),
        _machine_busy(),
    )


def _machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O), or 0."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _share(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """Each side's share of a core and its preemptions over one measurement (start-ups
    included), and the cores the rest of the machine kept busy meanwhile: on a shared
    machine a low round is usually one that other processes took cores from."""
    cpu, preempted, sender_cpu, sender_preempted, wall, busy = (a - b for a, b in zip(after, before))
    others = f", others {max(0.0, busy - cpu - sender_cpu) / wall:.2f} cores" if busy else ""
    return (
        f"receiver {cpu / wall:.0%} of a core, preempted {preempted:.0f}x, "
        f"sender {sender_cpu / wall:.0%}, preempted {sender_preempted:.0f}x{others}"
    )


@dataclass
class Figure:
    """One (transport, size): every round's node and raw rate (msg/s)."""

    node: list[float]
    raw: list[float]
    #: the second, lower-level medium, where there is one
    plain: list[float] = field(default_factory=list)
    #: CPU seconds per message of both processes, each round's (where the limit gives it)
    node_cpu: list[float] = field(default_factory=list)
    raw_cpu: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [n / r if r else 0.0 for n, r in zip(self.node, self.raw)]

    @property
    def cpu_ratios(self) -> list[float]:
        """The node's messages per CPU-second (both processes) over the limit's, per round."""
        return [r / n if n else 0.0 for n, r in zip(self.node_cpu, self.raw_cpu)]

    def summary(self) -> dict[str, float]:
        return {
            "node_median": statistics.median(self.node),
            "node_lowest": min(self.node),
            "raw_median": statistics.median(self.raw),
            "raw_lowest": min(self.raw),
            "ratio_median": statistics.median(self.ratios),
            "ratio_lowest": min(self.ratios),
            **({"plain_median": statistics.median(self.plain), "ratio_to_plain_median": statistics.median(
                n / p if p else 0.0 for n, p in zip(self.node, self.plain))} if self.plain else {}),
            **({"cpu_ratio_median": statistics.median(self.cpu_ratios), "cpu_ratio_lowest": min(self.cpu_ratios)}
               if self.raw_cpu else {}),
        }


@dataclass
class Row:
    transport: str
    figures: dict[str, dict[str, float]]
    ping_us: dict[str, float]


def _percentiles(rtts: list[float]) -> dict[str, float]:
    if len(rtts) < 2:
        return {}
    cuts = statistics.quantiles(rtts, n=100)
    return {"p50": cuts[49] * 1e6, "p90": cuts[89] * 1e6, "p99": cuts[98] * 1e6}


def _table(rows: list[Row]) -> str:
    lines = [
        "| transport | size | msg/s (median round) | lowest round | limit msg/s (median) | ratio, median round | ratio, lowest round | per CPU-second: ratio, median (lowest) | plain medium msg/s (ratio) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for label, fig in row.figures.items():
            lines.append(
                f"| {row.transport} | {label} | {fig['node_median']:,.0f} | {fig['node_lowest']:,.0f} "
                f"| {fig['raw_median']:,.0f} | {fig['ratio_median']:.0%} | {fig['ratio_lowest']:.0%} "
                + (f"| {fig['cpu_ratio_median']:.0%} ({fig['cpu_ratio_lowest']:.0%}) " if "cpu_ratio_median" in fig else "| — ")
                + (f"| {fig['plain_median']:,.0f} ({fig['ratio_to_plain_median']:.0%}) |" if "plain_median" in fig else "| — |")
            )
    lines += ["", "| transport | ping p50 µs | p90 µs | p99 µs |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.transport} | {row.ping_us.get('p50', 0):,.0f} | {row.ping_us.get('p90', 0):,.0f} | {row.ping_us.get('p99', 0):,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="sending time per measurement (default 1.5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved raw/node rounds per figure (default 3)")
    parser.add_argument("--pings", type=int, default=500, help="pings per transport (default 500)")
    parser.add_argument("--quick", action="store_true", help="a check that it works: 1 round of 0.5 s, 50 pings")
    parser.add_argument("--only", action="append", choices=list(TRANSPORTS), help="measure only these transports")
    parser.add_argument("--size", action="append", choices=list(SIZES), help="measure only these message sizes")
    parser.add_argument(
        "--handler",
        choices=("batch", "message"),
        default="batch",
        help="the receiving node's app takes the stream in runs (batch, the default: a batch handler, as an app "
        "taking a stream of one type would) or one handler call per message (message)",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.pings = 1, 0.5, 50
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    ctx = multiprocessing.get_context("spawn")
    tune_malloc()  # as `lnpmsg node` does; the limits' processes too, so both sides run alike
    load = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} CPUs, load {load:.1f}; {args.rounds} round(s) of {args.seconds:g} s per figure, {args.pings} pings",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lnpbench-", dir="/tmp") as directory:
        for name in args.only or TRANSPORTS:
            listen, medium, plain = TRANSPORTS[name]
            listen = listen.format(dir=directory)
            figures: dict[str, dict[str, float]] = {}
            for label, size in SIZES.items():
                if args.size and label not in args.size:
                    continue
                fig = Figure([], [])
                for round_no in range(args.rounds):
                    # alternate which goes first, so a drift in load favours neither
                    order = ("raw", "node") if round_no % 2 == 0 else ("node", "raw")
                    # How much of a core the receiving process had in each measurement: a
                    # round whose node measurement lost the core more often than its
                    # limit's is the machine's, not the code's.
                    shares = {}
                    node_cpu = 0.0
                    raw_cost: list[float] = []
                    for which in order:
                        before = _usage()
                        if which == "raw":
                            fig.raw.append(_raw_run(ctx, medium, size, args.seconds, directory, raw_cost))
                            shares[which] = _share(before, _usage())
                            if plain is not None:
                                fig.plain.append(_raw_run(ctx, plain, size, args.seconds, directory))
                        else:
                            result, _ = trio.run(_node_run, ctx, listen, size, args.seconds, 0, args.handler == "message")
                            fig.node.append(result.rate)
                            shares[which] = _share(before, _usage())
                            node_cpu = result.sender_cpu + result.receiver_cpu
                            node_parts = (result.sender_cpu, result.receiver_cpu)
                    cpu_line = ""
                    if raw_cost and node_cpu and result.sender_cpu:
                        fig.node_cpu.append(node_cpu)
                        fig.raw_cpu.append(sum(raw_cost))
                        cpu_line = (
                            f"\n           CPU µs per message (sender + receiver): node {node_parts[0] * 1e6:.2f} + "
                            f"{node_parts[1] * 1e6:.2f}, limit {raw_cost[0] * 1e6:.2f} + {raw_cost[1] * 1e6:.2f}; "
                            f"ratio per CPU-second {fig.cpu_ratios[-1]:.0%}"
                        )
                    print(
                        f"  {name:8} {label:6} round {round_no + 1}: {fig.node[-1]:>10,.0f} msg/s   "
                        f"limit {medium}: {fig.raw[-1]:>12,.0f} msg/s   ratio {fig.ratios[-1]:.0%}"
                        + (f"   (plain {plain}: {fig.plain[-1]:,.0f} msg/s)" if plain is not None else "")
                        + f"\n           node: {shares['node']}; limit: {shares['raw']}"
                        + cpu_line,
                        flush=True,
                    )
                figures[label] = fig.summary()
            _, rtts = trio.run(_node_run, ctx, listen, 0, args.seconds, args.pings)
            ping = _percentiles(rtts)
            print(f"  {name:8} ping  : p50 {ping.get('p50', 0):,.0f} µs, p99 {ping.get('p99', 0):,.0f} µs", flush=True)
            rows.append(Row(name, figures, ping))
    print()
    print(_table(rows))
    if args.json:
        print(json.dumps([asdict(row) for row in rows]))


if __name__ == "__main__":
    main()
