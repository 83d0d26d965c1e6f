"""Two onion-only nodes through a private Tor network, next to the same traffic over plain TCP.

The run starts its own :class:`~lnpmsg.testing.tornet.PrivateTorNetwork`
(1 authority + 3 relays on 127.0.0.1), then two node pairs in this process:

- **tor**: two ``onion_only`` nodes, each with its own launched tor and
  onion service (:class:`~lnpmsg.tor_app.NodeTor`); A dials
  ``NODEID@<B's onion>.onion:9735``, so every byte crosses A's tor, a
  rendezvous circuit of relays, and B's tor (six hops, each with its own
  onion encryption, all on this machine);
- **tcp**: two nodes over loopback TCP.

For each pair and message size: A sends messages as fast as its queue takes
them for ``--seconds``, then an END message; B counts them, timed from the
first to END (messages/s, MB/s of payload). Then ``--echoes`` round trips of
a small message that B's handler sends straight back (the latency an app
sees: both nodes, both BOLT-8 layers, and for Tor both tors and the circuit).

Both nodes of a pair run in this one process (one core for both), the same
for both pairs, so the comparison is like for like; the tors are separate
processes. Set-up figures (network start, tor bootstrap plus onion
publication, first connection) are printed too.

Usage: ``python benchmarks/bench_tor.py [--seconds S] [--echoes N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.tor_app import NodeTor, TorSettings
from lnpmsg.testing.tornet import PrivateTorNetwork
from lnpmsg.transports.tcp import TcpTransport
from lnpmsg.wire import UnknownMessage

#: message types (odd: BOLT 1's custom range)
DATA = 0xB5B1
END = 0xB5B3
ECHO = 0xB5B5
#: message sizes, type included
SIZES = {"100 B": 100, "1 KiB": 1024, "16 KiB": 16384}
#: messages queued between two checkpoints of the sender (lets the writer run)
SEND_BATCH = 64
#: generous limits: the private network needs a few seconds
TOR_TIMEOUT = 120.0


@dataclass
class Throughput:
    messages: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


@dataclass
class Result:
    transport: str
    setup_seconds: float
    connect_seconds: float
    rates: dict[str, float] = field(default_factory=dict)
    mbps: dict[str, float] = field(default_factory=dict)
    rtt_ms: dict[str, float] = field(default_factory=dict)


class Receiver:
    """B's handlers: count DATA until END, echo ECHO."""

    def __init__(self, node: Node) -> None:
        self.count = 0
        self.first = 0.0
        self.done = trio.Event()
        node.add_handler(DATA, self.on_data)
        node.add_handler(END, self.on_end)
        node.add_handler(ECHO, self.on_echo)

    def reset(self) -> None:
        self.count = 0
        self.done = trio.Event()

    def on_data(self, peer: Peer, message: UnknownMessage) -> None:
        if not self.count:
            self.first = time.perf_counter()
        self.count += 1

    def on_end(self, peer: Peer, message: UnknownMessage) -> None:
        self.done.set()

    def on_echo(self, peer: Peer, message: UnknownMessage) -> None:
        peer.send_nowait(ECHO.to_bytes(2, "big") + message.payload)


async def throughput(peer: Peer, receiver: Receiver, size: int, seconds: float) -> Throughput:
    receiver.reset()
    message = DATA.to_bytes(2, "big") + bytes(size - 2)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(SEND_BATCH):
            await peer.send(message)
        await trio.lowlevel.checkpoint()
    await peer.send(END.to_bytes(2, "big"))
    with trio.move_on_after(seconds + 120):
        await receiver.done.wait()
    if not receiver.done.is_set():
        raise RuntimeError(
            f"END never arrived: {receiver.count} messages received, sender {peer!r} ready={peer.is_ready} "
            f"close_reason={peer.close_reason} queued={peer.queued_bytes} counters={peer.counters}"
        )
    # the first message starts the clock, so it is not counted
    return Throughput(receiver.count - 1, time.perf_counter() - receiver.first)


async def echo_rtts(node: Node, peer: Peer, count: int) -> list[float]:
    answered = trio.Event()

    def on_echo(_: Peer, message: UnknownMessage) -> None:
        answered.set()

    node.add_handler(ECHO, on_echo)
    rtts = []
    for i in range(count):
        answered = trio.Event()
        start = time.perf_counter()
        await peer.send(ECHO.to_bytes(2, "big") + i.to_bytes(4, "big"))
        with trio.fail_after(60):
            await answered.wait()
        rtts.append(time.perf_counter() - start)
    return rtts


def percentiles_ms(rtts: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(rtts, n=100)
    return {"p50": cuts[49] * 1e3, "p90": cuts[89] * 1e3, "p99": cuts[98] * 1e3, "mean": statistics.fmean(rtts) * 1e3}


async def measure(transport: str, a: Node, b: Node, address: str, setup: float, args: argparse.Namespace) -> Result:
    receiver = Receiver(b)
    start = time.perf_counter()
    peer = await a.connect(address, timeout=TOR_TIMEOUT)
    result = Result(transport, setup, time.perf_counter() - start)
    for label, size in SIZES.items():
        measured = await throughput(peer, receiver, size, args.seconds)
        result.rates[label] = measured.rate
        result.mbps[label] = measured.rate * size / 1e6
    result.rtt_ms = percentiles_ms(await echo_rtts(a, peer, args.echoes))
    return result


async def run(network: PrivateTorNetwork, args: argparse.Namespace, directory: Path) -> list[Result]:
    results = []
    async with trio.open_nursery() as nursery:
        # Tor: two onion-only nodes, each with its own tor and onion service
        nodes = []
        started = time.perf_counter()
        for name in ("a", "b"):
            node = Node(NodeKey.generate(), NodeConfig(onion_only=True))
            node.mount(
                NodeTor(
                    TorSettings(
                        directory / name,
                        extra_torrc=tuple(network.client_torrc_lines()),
                        bootstrap_timeout=TOR_TIMEOUT,
                        publish_timeout=TOR_TIMEOUT,
                    )
                )
            )
            nodes.append(node)
        async with trio.open_nursery() as starting:
            for node in nodes:
                starting.start_soon(nursery.start, node.run)
        a, b = nodes
        results.append(await measure("tor (onion-only)", a, b, b.addresses[0], time.perf_counter() - started, args))

        # TCP: the same traffic between two plain nodes
        started = time.perf_counter()
        tcp_a = Node(NodeKey.generate(), NodeConfig(), transports={"tcp": TcpTransport()})
        tcp_b = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]), transports={"tcp": TcpTransport()})
        await nursery.start(tcp_a.run)
        await nursery.start(tcp_b.run)
        results.append(await measure("tcp", tcp_a, tcp_b, tcp_b.addresses[0], time.perf_counter() - started, args))
        for node in (a, b, tcp_a, tcp_b):
            node.stop()
    return results


def tables(results: list[Result]) -> str:
    head = " | ".join(f"{label} msg/s | {label} MB/s" for label in SIZES)
    lines = [
        f"| transport | {head} | echo RTT p50 ms | p90 ms | p99 ms | set-up s | first connect s |",
        "|---|" + "---:|" * (2 * len(SIZES) + 5),
    ]
    for r in results:
        cells = " | ".join(f"{r.rates[label]:,.0f} | {r.mbps[label]:,.1f}" for label in SIZES)
        lines.append(
            f"| {r.transport} | {cells} | {r.rtt_ms['p50']:.2f} | {r.rtt_ms['p90']:.2f} | {r.rtt_ms['p99']:.2f} "
            f"| {r.setup_seconds:.1f} | {r.connect_seconds:.2f} |"
        )
    tor, tcp = results
    ratios = ", ".join(f"{label} {tor.rates[label] / tcp.rates[label]:.0%}" for label in SIZES)
    lines.append("")
    lines.append(f"Tor / TCP messages/s: {ratios}; echo RTT p50 {tor.rtt_ms['p50'] / tcp.rtt_ms['p50']:.0f}x TCP's.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="sending time per size (default 3)")
    parser.add_argument("--echoes", type=int, default=300, help="echo round trips per transport (default 300)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.seconds:g} s per size, {args.echoes} echoes", flush=True)
    started = time.perf_counter()
    with PrivateTorNetwork() as network, tempfile.TemporaryDirectory(prefix="lnpbench-tor-", dir="/tmp") as directory:
        print(f"private Tor network: consensus {network.startup_seconds:.1f} s after its tors started", flush=True)
        results = trio.run(run, network, args, Path(directory))
    print()
    print(tables(results))
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
    if args.json:
        print(json.dumps([asdict(r) for r in results]))


if __name__ == "__main__":
    main()
