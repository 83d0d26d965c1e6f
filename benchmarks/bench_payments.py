"""Payments: payments/s and latency (p50, p99) between two nodes and over three hops.

Four nodes A-B-C-D in one process, linked by the in-memory transport, each
with a wallet, the channel app and the payments app on one embedded regtest
chain; every store on disk with fsync. A pays invoices of B (direct) and of
D (three hops: A-B, B-C, C-D), first one at a time (the latency of one
``pay``: invoice lookup, onion, two or six commitment round trips, settle
back), then ``--concurrency`` at a time (throughput). The routing graph is
filled with the channels as gossip would announce them.

Usage: ``python benchmarks/bench_payments.py [--quick] [--json] [--concurrency N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lnpmsg.chain.embedded import EmbeddedChainSource  # noqa: E402
from lnpmsg.channels.app import ChannelsApp  # noqa: E402
from lnpmsg.channels.params import ChannelConfig  # noqa: E402
from lnpmsg.channels.state import Phase  # noqa: E402
from lnpmsg.node.identity import NodeKey  # noqa: E402
from lnpmsg.node.node import Node, NodeConfig  # noqa: E402
from lnpmsg.payments.app import PaymentsApp  # noqa: E402
from lnpmsg.payments.graph import RoutingGraph  # noqa: E402
from lnpmsg.payments.htlcs import FeePolicy  # noqa: E402
from lnpmsg.testing import MemoryNetwork  # noqa: E402
from lnpmsg.testing.nodes import running  # noqa: E402
from lnpmsg.wallet.app import ChainApp  # noqa: E402

POLICY = FeePolicy()


def _node(tmp: Path, name: str, source: EmbeddedChainSource, network: MemoryNetwork, graph: RoutingGraph) -> Node:
    node = Node(NodeKey.generate(), NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": network.transport()})
    node.mount(ChainApp(tmp / name / "wallet", source=source))
    node.mount(ChannelsApp(tmp / name / "channels", config=ChannelConfig(minimum_depth=1, max_accepted_htlcs=100)))
    node.mount(PaymentsApp(tmp / name / "payments", policy=POLICY, graph=graph))
    return node


def _ready(nodes: list[Node]) -> bool:
    for node in nodes:
        for c in node.apps["channels"].manager.channels.values():  # type: ignore[attr-defined]
            if c.phase is not Phase.NEW and (c.phase is not Phase.NORMAL or not c.core.state.short_channel_id or not c.core.state.connected):
                return False
    return True


async def _open(source: EmbeddedChainSource, nodes: list[Node], graph: RoutingGraph) -> None:
    for funder in nodes[:3]:
        await source.faucet(funder.apps["chain"].wallet.new_address(), 5_000_000)  # type: ignore[attr-defined]
    await source.mine(1)
    for funder, peer in zip(nodes, nodes[1:], strict=False):
        await funder.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
        await funder.connect(peer.addresses[0])
        await funder.apps["channels"].fundchannel(peer.node_id.hex(), 4_000_000)  # type: ignore[attr-defined]
        await source.mine(1)
    await source.mine(1)
    with trio.fail_after(120):
        while not _ready(nodes):
            await trio.sleep(0.05)
    for funder, peer in zip(nodes, nodes[1:], strict=False):
        info = next(c for c in funder.apps["channels"].htlcs.channels() if c.peer_id == peer.node_id)  # type: ignore[attr-defined]
        a, b = sorted([funder.node_id, peer.node_id])
        graph.add_channel(info.short_channel_id, a, b, 4_000_000)
        for direction in (0, 1):
            graph.update(info.short_channel_id, direction, fee_base_msat=POLICY.fee_base_msat, fee_proportional_millionths=POLICY.fee_proportional_millionths,
                         cltv_expiry_delta=POLICY.cltv_expiry_delta, htlc_minimum_msat=1, htlc_maximum_msat=4_000_000_000)  # fmt: skip


async def _measure(payer: Node, payee: Node, count: int, concurrency: int, label: str) -> dict[str, Any]:
    pay_app, inv_app = payer.apps["payments"], payee.apps["payments"]
    invoices = [(await inv_app.invoice(10_000, f"{label}-{concurrency}-{i}", "bench"))["bolt11"] for i in range(count)]  # type: ignore[attr-defined]
    latencies: list[float] = []
    limiter = trio.CapacityLimiter(concurrency)

    async def one(text: str) -> None:
        async with limiter:
            t0 = time.perf_counter()
            result = await pay_app.pay(text)  # type: ignore[attr-defined]
            latencies.append(time.perf_counter() - t0)
            assert result["status"] == "complete"

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for text in invoices:
            nursery.start_soon(one, text)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "route": label, "concurrency": concurrency, "payments": count, "payments_per_s": round(count / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
    }  # fmt: skip


async def run(count: int, concurrency: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedChainSource.open(Path(tmp) / "chain") as source:
            await source.mine(101)
            graph = RoutingGraph()
            network = MemoryNetwork()
            nodes = [_node(Path(tmp), n, source, network, graph) for n in "abcd"]
            async with running(*nodes):
                await _open(source, nodes, graph)
                a, b, _, d = nodes
                results = []
                for label, payee in (("direct", b), ("three_hops", d)):
                    results.append(await _measure(a, payee, count, 1, label))
                    results.append(await _measure(a, payee, count, concurrency, label))
                return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer payments (a smoke run)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--concurrency", type=int, default=8, help="payments in flight at once in the throughput run (default: %(default)s)")
    args = parser.parse_args()
    results = trio.run(run, 10 if args.quick else 100, args.concurrency)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['route']:<11} x{r['concurrency']:<3} {r['payments']:>4} payments: {r['payments_per_s']:>7} /s   "
              f"p50 {r['p50_ms']:>8} ms   p99 {r['p99_ms']:>8} ms")  # fmt: skip


if __name__ == "__main__":
    main()
