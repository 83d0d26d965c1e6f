"""Watch the Lightning gossip a node receives: a live summary, from another process.

The watcher talks to a node only through the node's control and event
sockets (``lnpmsg.rpc``), the way any separate program would: it subscribes
to the ``gossip.`` topics (every accepted channel_announcement,
node_announcement and channel_update, raw and decoded) and asks
``gossip.stats`` once a second.

Two ways to run it:

1. Against a running node that has the gossip app mounted::

       python examples/gossip_watch.py --attach ~/.lnpmsg

2. A self-contained demo: two local nodes over TCP, one holding real
   mainnet gossip (Core Lightning's gossip_store test data,
   ``gossip_store-part1.xz`` and ``-part2.xz``), the other syncing it by
   queries and serving the control API in a temporary data dir; the
   watcher attaches to that::

       python examples/gossip_watch.py --demo [--gossip-data DIR]

   The data is looked for in ``--gossip-data``, ``$LNPMSG_GOSSIP_DATA``,
   then ``shared/data/gossip`` beside the checkout (``../shared`` from its
   root, where the project's tests find it) and under the current
   directory; when it is nowhere, the demo says where it looked (exit 2).

Each second it prints one line: channels, updates and announced nodes in the
graph, messages per type seen in the last second, and the sync's progress.
``--json`` prints every event as a JSON line instead (for ``jq``). Ctrl-C
stops it quietly (exit 130).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.gossip import GossipApp, GossipConfig, GossipStore
from lnpmsg.io.interrupt import run_interruptible
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.control_client import ControlClient, ControlClientError
from lnpmsg.wire import CHAIN_HASH_MAINNET

#: the demo's data: the two parts of one Core Lightning gossip_store (real mainnet gossip)
GOSSIP_PARTS = ("gossip_store-part1.xz", "gossip_store-part2.xz")
#: where the project keeps it, relative to a checkout's root and to the current directory
SHARED_GOSSIP = Path("shared") / "data" / "gossip"


def gossip_data_candidates(given: Path | None) -> list[Path]:
    """The directories the demo looks in for its data, in order."""
    if given is not None:
        return [given.expanduser()]
    candidates = []
    if os.environ.get("LNPMSG_GOSSIP_DATA"):
        candidates.append(Path(os.environ["LNPMSG_GOSSIP_DATA"]).expanduser())
    checkout = Path(__file__).resolve().parents[1]
    candidates += [checkout.parent / SHARED_GOSSIP, checkout / SHARED_GOSSIP, Path.cwd() / SHARED_GOSSIP, Path.cwd().parent / SHARED_GOSSIP]
    return list(dict.fromkeys(candidates))


def find_gossip_data(given: Path | None) -> list[Path]:
    """The demo's gossip_store parts; exits 2 naming the places it looked when they are nowhere."""
    candidates = gossip_data_candidates(given)
    for directory in candidates:
        parts = [directory / name for name in GOSSIP_PARTS]
        if all(p.is_file() for p in parts):
            return parts
    looked = "\n".join(f"  {d}" for d in candidates)
    print(
        f"gossip_watch: the demo needs {' and '.join(GOSSIP_PARTS)} (real mainnet gossip from Core Lightning's "
        f"test data, kept in the project's shared/data/gossip); looked in:\n{looked}\n"
        "give the directory with --gossip-data DIR (or LNPMSG_GOSSIP_DATA), or watch a running node with --attach",
        file=sys.stderr,
    )
    sys.exit(2)


async def watch(data_dir: Path, *, as_json: bool, seconds: float | None) -> None:
    """Subscribe to the node's gossip events and print a summary line per second."""
    async with ControlClient.open(data_dir) as client, await client.subscribe("gossip.") as events:
        seen: Counter[str] = Counter()
        deadline = trio.current_time() + seconds if seconds is not None else float("inf")

        async def summarise() -> None:
            while trio.current_time() < deadline:
                await trio.sleep(1.0)
                stats: dict[str, Any] = await client.call("gossip.stats")
                sync = stats["sync"]
                per_type = ", ".join(f"{n} {t.removeprefix('gossip.')}" for t, n in sorted(seen.items())) or "no gossip"
                if not as_json:
                    print(
                        f"{time.strftime('%H:%M:%S')}  channels {stats['channels']:>6}  updates {stats['channel_updates']:>6}"
                        f"  nodes {stats['node_announcements']:>5}  | last second: {per_type}"
                        f"  | sync {sync['percent']:.0f}%{' (done)' if sync['synced'] else ''}",
                        flush=True,
                    )
                seen.clear()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(summarise)
            async for event in events:
                if event.topic == "gossip.sync":
                    continue
                seen[event.topic] += 1
                if as_json:
                    print(json.dumps({"topic": event.topic, **event.data}), flush=True)


async def demo(parts: list[Path], as_json: bool, seconds: float) -> None:
    """Two nodes: A serves the real mainnet gossip, B syncs it and is watched."""
    with tempfile.TemporaryDirectory(prefix="lnpmsg-gw-") as tmp:
        data_dir = Path(tmp)
        a = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="bitcoin"))
        a_gossip = a.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_MAINNET)))
        b = Node(NodeKey.generate(), NodeConfig(network="bitcoin"))
        b.mount(GossipApp(GossipStore(data_dir / "gossip.sqlite3", CHAIN_HASH_MAINNET), config=GossipConfig(flush_interval=1.0)))
        b.mount(ControlServer(data_dir))
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            result = await a_gossip.import_cln_store(*map(str, parts))
            print(f"# node A holds {len(a_gossip.graph)} mainnet channels ({dict(result.outcomes)})", file=sys.stderr)

            async def connect_soon() -> None:
                await trio.sleep(1.5)  # let the watcher subscribe first
                await b.connect(f"{a.node_id.hex()}@{a.listen_addresses[0]}")

            nursery.start_soon(connect_soon)
            await watch(data_dir, as_json=as_json, seconds=seconds)
            a.stop()
            b.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Print a live summary of the gossip a node receives.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--attach", type=Path, metavar="DATA_DIR", help="the data dir of a running node with the gossip app")
    mode.add_argument("--demo", action="store_true", help="run two local nodes (real mainnet gossip) and watch one")
    parser.add_argument("--json", action="store_true", help="print every gossip event as a JSON line")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (the demo: 5 s by default)")
    parser.add_argument("--gossip-data", type=Path, metavar="DIR", help="the demo's gossip_store parts are in DIR (default: see the module docs)")
    args = parser.parse_args()
    try:
        if args.demo:
            code = run_interruptible(demo, find_gossip_data(args.gossip_data), args.json, args.seconds or 5.0)
        else:
            code = run_interruptible(lambda: watch(args.attach.expanduser(), as_json=args.json, seconds=args.seconds))
    except ControlClientError as exc:
        print(f"gossip_watch: {exc}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
