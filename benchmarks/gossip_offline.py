"""The gossip ingest's serial work, offline: bench_gossip's network without network or workers.

Runs the event loop's per-message steps over the same cached messages
(``bench_gossip.py`` generates them) in batches, each step timed by CPU
time (``time.process_time``): decoding, the raw bytes the graph gets, the
graph's prepare and commit (every signature taken as valid: verification
is not timed here), the routing feed, and the SQLite writes (a store in a
temporary directory, the final checkpoint included). Prints µs per
signature of each, the lowest of ``--rounds`` rounds (each a fresh graph
and store), under the node's garbage collector policy.

Usage: ``python benchmarks/gossip_offline.py [--scale 0.2] [--rounds 3] [--profile FILE]``
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_gossip  # noqa: E402

from lnpmsg.gossip.decision import Decision, Outcome, Pending  # noqa: E402
from lnpmsg.gossip.graph import Graph  # noqa: E402
from lnpmsg.gossip.messages import GOSSIP_MESSAGES  # noqa: E402
from lnpmsg.gossip.routing import RoutingFeed  # noqa: E402
from lnpmsg.gossip.store import DB_FILE_NAME, GossipStore  # noqa: E402
from lnpmsg.runtime.gc_policy import node_gc  # noqa: E402
from lnpmsg.wire import CHAIN_HASH_REGTEST  # noqa: E402

STEPS = ("decode", "raw", "prepare", "commit", "routing", "sqlite")


def one_round(raws: list[bytes], batch: int, store_dir: Path) -> tuple[dict[str, float], int]:
    """CPU seconds per step over every message, and the signatures checked."""
    classes = {cls.TYPE: cls for cls in GOSSIP_MESSAGES}
    graph = Graph(CHAIN_HASH_REGTEST)
    routing = RoutingFeed()
    store = GossipStore(store_dir / DB_FILE_NAME, CHAIN_HASH_REGTEST)
    spent = dict.fromkeys(STEPS, 0.0)
    clock = time.process_time
    now = 1_700_000_000 + 10**6
    for start in range(0, len(raws), batch):
        chunk = raws[start : start + batch]
        t0 = clock()
        messages = [classes[(r[0] << 8) | r[1]]._unpack(r, 2, len(r)) for r in chunk]
        t1 = clock()
        pairs = [(m, m.encode()) for m in messages]
        t2 = clock()
        steps = [graph.prepare(m, r, now, source=b"\x02" * 33) for m, r in pairs]
        t3 = clock()
        decisions = [s if isinstance(s, Decision) else graph.commit(s, [True] * len(s.checks), now) for s in steps]
        t4 = clock()
        accepted = [d for d in decisions if d.outcome is Outcome.ACCEPTED]
        routing.apply(accepted)
        t5 = clock()
        store.apply(accepted)
        t6 = clock()
        for name, spent_here in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            spent[name] += spent_here
        assert all(not isinstance(s, Pending) or s.checks for s in steps)
    t0 = clock()
    store.checkpoint()
    spent["sqlite"] += clock() - t0
    store.close()
    return spent, graph.counters.signature_checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lnpmsg-bench-gossip")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one round to this file")
    args = parser.parse_args()
    raws = bench_gossip.read_messages(bench_gossip.cached_messages(bench_gossip.network(args.scale), args.cache_dir, 2))
    best: dict[str, float] = {}
    sigs = 0
    with node_gc():
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                if args.profile is not None:
                    profiler = cProfile.Profile(time.process_time)
                    profiler.enable()
                spent, sigs = one_round(raws, args.batch_size, Path(tmp))
                if args.profile is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
            for name, seconds in spent.items():
                best[name] = min(best.get(name, seconds), seconds)
    print(f"{len(raws)} messages, {sigs} signatures; µs of CPU per signature (lowest of {args.rounds} rounds):")
    for name in STEPS:
        print(f"  {name:8} {1e6 * best[name] / sigs:6.2f}")
    print(f"  {'all':8} {1e6 * sum(best.values()) / sigs:6.2f}")


if __name__ == "__main__":
    main()
