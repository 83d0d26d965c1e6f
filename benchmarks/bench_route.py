"""Route computation on the synthetic gossip network of ``bench_gossip.py``.

What runs, in this one process:

1. the network of ``bench_gossip.py`` (20,000 * scale nodes, 60,000 * scale
   channels, two channel_updates each; the same generator and the same
   message cache), decoded and fed to a :class:`RoutingGraph` exactly as
   accepted gossip would be;
2. the floor: plain Dijkstra passes over the same graph (heapq, every
   channel direction weighs 1, no fee model, no early stop), from random
   nodes: the least any route search in Python on this graph costs when it
   has to look at most of it;
3. ``find_route`` (fees, success probability, CLTV, HTLC limits) between
   random pairs: p50, p99 and the slowest, with how many found no route.

The floor passes run among the route searches, so both see the same load,
and each is timed in wall time and in this process's CPU time.

Timings on a loaded machine vary from run to run; compare the two numbers
of the same run.

Usage: ``python benchmarks/bench_route.py [--scale 0.1] [--pairs 200] [--json]``
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gossip  # noqa: E402  (the benchmark next door: its network and message cache)

from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate  # noqa: E402
from lnpmsg.payments.graph import RoutingGraph  # noqa: E402
from lnpmsg.payments.pathfind import find_route  # noqa: E402
from lnpmsg.payments.route import NoRouteError  # noqa: E402
from lnpmsg.payments.scorer import MissionControl  # noqa: E402

_ANNOUNCEMENT = b"\x01\x00"
_UPDATE = b"\x01\x02"


def build_graph(messages: list[bytes]) -> RoutingGraph:
    graph = RoutingGraph()
    for raw in messages:
        kind = raw[:2]
        if kind == _ANNOUNCEMENT:
            msg = ChannelAnnouncement.decode(raw)
            graph.add_channel(msg.short_channel_id.to_int(), msg.node_id_1, msg.node_id_2)
        elif kind == _UPDATE:
            graph.apply_update(ChannelUpdate.decode(raw))
    return graph


def plain_dijkstra(graph: RoutingGraph, start: bytes) -> int:
    """Hop distances from ``start`` to every node (walking channels backwards, as routing does): how many were reached."""
    dist = {start: 0}
    heap = [(0, start)]
    while heap:
        d, v = heapq.heappop(heap)
        if d > dist[v]:
            continue
        for edge in graph.incoming(v):
            u = edge.source
            if d + 1 < dist.get(u, 1 << 60):
                dist[u] = d + 1
                heapq.heappush(heap, (d + 1, u))
    return len(dist)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="network size relative to 20k nodes / 60k channels")
    parser.add_argument("--pairs", type=int, default=200, help="random source/destination pairs routed")
    parser.add_argument("--floor-passes", type=int, default=5, help="plain Dijkstra passes timed")
    parser.add_argument("--amount-msat", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lnpmsg-bench-gossip")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes generating the network (first run only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    net = bench_gossip.network(args.scale)
    path = bench_gossip.cached_messages(net, args.cache_dir, args.workers)
    started = time.perf_counter()
    graph = build_graph(bench_gossip.read_messages(path))
    build_s = time.perf_counter() - started
    nodes = sorted(graph._incoming)
    rng = random.Random(args.seed)

    # Floor passes are spread among the route searches, so both see the same load;
    # CPU time (this process only) is reported beside wall time, as it moves less
    # when other programs take the cores.
    scorer = MissionControl()
    floor_wall, floor_cpu, times, cpu_times, hops, fees, failed, reached = [], [], [], [], [], [], 0, 0
    every = max(1, args.pairs // max(1, args.floor_passes))
    for i in range(args.pairs):
        if i % every == 0 and len(floor_wall) < args.floor_passes:
            wall, cpu = time.perf_counter(), time.process_time()
            reached = plain_dijkstra(graph, rng.choice(nodes))
            floor_wall.append(time.perf_counter() - wall)
            floor_cpu.append(time.process_time() - cpu)
        source, target = rng.sample(nodes, 2)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            route = find_route(graph, source, target, args.amount_msat, current_height=800_000, now=1_700_000_000, scorer=scorer)
        except NoRouteError:
            failed += 1
            route = None
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
        if route is not None:
            hops.append(len(route.hops))
            fees.append(route.fee_msat)

    result = {
        "nodes": graph.node_count,
        "channels": len(graph),
        "graph_build_s": build_s,
        "floor_dijkstra_ms_median": 1000 * statistics.median(floor_wall),
        "floor_dijkstra_cpu_ms_median": 1000 * statistics.median(floor_cpu),
        "floor_nodes_reached": reached,
        "route_pairs": args.pairs,
        "route_ms_p50": 1000 * percentile(times, 0.50),
        "route_ms_p99": 1000 * percentile(times, 0.99),
        "route_ms_max": 1000 * max(times),
        "route_cpu_ms_p50": 1000 * percentile(cpu_times, 0.50),
        "route_cpu_ms_p99": 1000 * percentile(cpu_times, 0.99),
        "no_route": failed,
        "hops_median": statistics.median(hops) if hops else None,
        "fee_msat_median": statistics.median(fees) if fees else None,
        "amount_msat": args.amount_msat,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"graph: {result['nodes']:,} nodes, {result['channels']:,} channels (built from gossip in {build_s:.1f} s)")
    print(
        "floor, one plain Dijkstra pass (heapq, unit weights, whole graph):"
        f" {result['floor_dijkstra_ms_median']:.1f} ms median ({result['floor_dijkstra_cpu_ms_median']:.1f} ms CPU)"
    )
    print(
        f"find_route, {args.pairs} random pairs, {args.amount_msat:,} msat:"
        f" p50 {result['route_ms_p50']:.1f} ms, p99 {result['route_ms_p99']:.1f} ms, max {result['route_ms_max']:.1f} ms"
        f" (CPU p50 {result['route_cpu_ms_p50']:.1f} ms, p99 {result['route_cpu_ms_p99']:.1f} ms; goal: p50 under 50 ms)"
    )
    print(f"routes: median {result['hops_median']} hops, median fee {result['fee_msat_median']} msat; {failed} pairs without a route")
    print("timings come from a shared, loaded machine: compare the two numbers of one run, not runs")


if __name__ == "__main__":
    main()
