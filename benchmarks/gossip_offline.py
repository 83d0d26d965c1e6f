"""The gossip ingest's serial work, offline: bench_gossip's network without network or workers.

Runs the event loop's per-message steps over the same cached messages
(``bench_gossip.py`` generates them) in batches, each step timed by CPU
time (``time.process_time``): decoding, the raw bytes the graph gets, the
graph's prepare and commit (every signature taken as valid: verification
is not timed here), the routing feed, and the SQLite writes (a store in a
temporary directory, the final checkpoint included). Prints µs per
signature of each, the lowest of ``--rounds`` rounds (each a fresh graph
and store), under the node's garbage collector policy, and the bytes the
store wrote per signature (WAL and checkpoints, from ``/proc/self/io``):
SQLite writes every page a transaction changed whole, so this shows how
scattered a batch's writes are. The synthetic network's timestamps rise
with its channels; ``--shuffle-timestamps`` gives the store (only: the
graph has decided already) each update's and node announcement's
timestamp drawn over two weeks instead, as a real sync brings them.

``--verify-processes N`` also times the signature workers' side, in this
process: the checks of each batch split as a pool of N workers splits them,
each part packed into a frame and checked by ``verify_blob`` with one key
cache per worker, against bare libsecp256k1 verification of the same checks
(keys and signatures parsed beforehand); and the same loops with the
verification call swapped for a stub, so that what the workers spend beyond
``secp256k1_ecdsa_verify`` (key and signature parsing, the Python loop) is
measured without the verification's own noise. ``--pool-batches`` runs
batches of 64 to 8,192 checks through a real ``VerifyPool`` of that many
workers, one batch at a time, and prints this process's CPU per check (the
packing, the pipes, the answers' unpacking): the trip's fixed cost per batch.

Usage: ``python benchmarks/gossip_offline.py [--scale 0.2] [--rounds 3] [--profile FILE] [--verify-processes 2] [--pool-batches 2]``
"""

from __future__ import annotations

import argparse
import cProfile
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_gossip  # noqa: E402

from lnpmsg.gossip import verify_worker  # noqa: E402
from lnpmsg.gossip.decision import Decision, Outcome, Pending  # noqa: E402
from lnpmsg.gossip.graph import Graph  # noqa: E402
from lnpmsg.gossip.messages import GOSSIP_MESSAGES  # noqa: E402
from lnpmsg.gossip.pipeline import VerifyPool, pack_checks, split_checks  # noqa: E402
from lnpmsg.gossip.verify import SigCheck, SignatureVerifier  # noqa: E402
from lnpmsg.gossip.routing import RoutingFeed  # noqa: E402
from lnpmsg.gossip.store import DB_FILE_NAME, GossipStore  # noqa: E402
from lnpmsg.runtime.gc_policy import node_gc  # noqa: E402
from lnpmsg.wire import CHAIN_HASH_REGTEST  # noqa: E402

STEPS = ("decode", "raw", "prepare", "commit", "routing", "sqlite")


def written() -> int:
    """Bytes this process has written (``wchar``; 0 where ``/proc/self/io`` is missing)."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return 0


def one_round(raws: list[bytes], batch: int, store_dir: Path, shuffle: bool = False) -> tuple[dict[str, float], int, int]:
    """CPU seconds per step over every message, the signatures checked, and the bytes the store wrote."""
    rng = random.Random(1)
    classes = {cls.TYPE: cls for cls in GOSSIP_MESSAGES}
    graph = Graph(CHAIN_HASH_REGTEST)
    routing = RoutingFeed()
    store = GossipStore(store_dir / DB_FILE_NAME, CHAIN_HASH_REGTEST)
    spent = dict.fromkeys(STEPS, 0.0)
    clock = time.process_time
    store_bytes = 0
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
        if shuffle:  # not timed
            for d in accepted:
                if hasattr(d.message, "timestamp"):
                    object.__setattr__(d.message, "timestamp", 1_700_000_000 + rng.randrange(14 * 86_400))
        t5_store = clock()
        w0 = written()
        store.apply(accepted)
        t6 = clock()
        store_bytes += written() - w0
        for name, spent_here in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5_store), strict=True):
            spent[name] += spent_here
        assert all(not isinstance(s, Pending) or s.checks for s in steps)
    t0, w0 = clock(), written()
    store.checkpoint()
    spent["sqlite"] += clock() - t0
    store.close()
    return spent, graph.counters.signature_checks, store_bytes + written() - w0


def worker_frames(raws: list[bytes], batch: int, processes: int) -> tuple[list[SigCheck], list[list[bytes]]]:
    """Every check the graph asks for, and the frames each of ``processes`` workers gets (as VerifyPool splits a batch)."""
    classes = {cls.TYPE: cls for cls in GOSSIP_MESSAGES}
    graph = Graph(CHAIN_HASH_REGTEST)
    now = 1_700_000_000 + 10**6
    checks: list[SigCheck] = []
    frames: list[list[bytes]] = [[] for _ in range(processes)]
    for start in range(0, len(raws), batch):
        messages = [classes[(r[0] << 8) | r[1]]._unpack(r, 2, len(r)) for r in raws[start : start + batch]]
        steps = [graph.prepare(m, m.encode(), now, source=b"\x02" * 33) for m in messages]
        here = [c for s in steps if isinstance(s, Pending) for c in s.checks]
        for s in steps:
            if isinstance(s, Pending):
                graph.commit(s, [True] * len(s.checks), now)
        for i, part in enumerate(split_checks(here, processes)):
            frames[i].append(pack_checks(part))
        checks += here
    return checks, frames


class _StubVerify:
    """libsecp256k1 as ``verify_blob`` sees it, with ``secp256k1_ecdsa_verify`` a stub that says yes."""

    def __init__(self, lib: object) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> object:
        return (lambda ctx, sig, digest, key: 1) if name == "secp256k1_ecdsa_verify" else getattr(self._lib, name)


def verify_costs(raws: list[bytes], batch: int, processes: int, rounds: int) -> None:
    """Print the workers' CPU per check: bare verification, ``verify_blob``, and both with the verification stubbed."""
    from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
    from coincurve.context import GLOBAL_CONTEXT

    checks, frames = worker_frames(raws, batch, processes)
    ctx = GLOBAL_CONTEXT.ctx
    parsed = []
    for c in checks:
        key, sig = ffi.new("secp256k1_pubkey *"), ffi.new("secp256k1_ecdsa_signature *")
        assert lib.secp256k1_ec_pubkey_parse(ctx, key, c.key, 33) and lib.secp256k1_ecdsa_signature_parse_compact(ctx, sig, c.signature)
        parsed.append((sig, c.digest, key))

    def bare(secp: object) -> None:
        verify = secp.secp256k1_ecdsa_verify  # type: ignore[attr-defined]
        for sig, digest, key in parsed:
            verify(ctx, sig, digest, key)

    def workers(secp: object) -> None:
        for own in frames:
            verifier = SignatureVerifier()  # each worker has its own key cache, empty at first
            for blob in own:
                verify_worker.verify_blob(verifier, blob)

    stub = _StubVerify(lib)
    best: dict[str, float] = {}
    clock = time.process_time
    for _ in range(rounds):
        for name, run, secp in (("bare", bare, lib), ("workers", workers, lib), ("bare, stub", bare, stub), ("workers, stub", workers, stub)):
            verify_worker.lib = secp
            try:
                t0 = clock()
                run(secp)
                best[name] = min(best.get(name, float("inf")), clock() - t0)
            finally:
                verify_worker.lib = lib
    uncached = sum(1 for c in checks if not c.cache)
    distinct = len({c.key for c in checks if c.cache})
    print(
        f"signature workers ({processes}, {sum(map(len, frames))} frames): {len(checks)} checks; keys parsed:"
        f" {uncached} kept by none (bitcoin keys), {distinct} node keys once per worker; µs of CPU per check (lowest of {rounds} rounds):"
    )
    us = {name: 1e6 * seconds / len(checks) for name, seconds in best.items()}
    print(f"  bare verify {us['bare']:6.2f}, verify_blob {us['workers']:6.2f}: overhead {us['workers'] - us['bare']:+.2f}")
    print(f"  with the verification stubbed: bare loop {us['bare, stub']:.2f}, verify_blob {us['workers, stub']:.2f}: overhead {us['workers, stub'] - us['bare, stub']:+.2f}")


def pool_costs(raws: list[bytes], processes: int, rounds: int) -> None:
    """This process's CPU per check for batches of several sizes through a real pool, one batch at a time."""
    import trio

    checks, _ = worker_frames(raws[:6000], 1024, processes)
    # every key kept: after the first pass no worker parses a key, so only the trip's costs vary
    checks = [c._replace(cache=True) for c in checks][:8192]

    async def run() -> None:
        async with VerifyPool(processes, SignatureVerifier(), min_checks=1) as pool:
            await pool.verify(checks)
            print(f"a pool of {processes} workers, {len(checks)} checks a pass; µs of this process's CPU per check (lowest of {rounds} passes):")
            for size in (64, 256, 1024, 2048, 8192):
                best = float("inf")
                for _ in range(rounds):
                    t0 = time.process_time()
                    for i in range(0, len(checks), size):
                        await pool.verify(checks[i : i + size])
                    best = min(best, time.process_time() - t0)
                print(f"  batches of {size:5} checks: {1e6 * best / len(checks):5.2f}")

    trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lnpmsg-bench-gossip")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one round to this file")
    parser.add_argument("--verify-processes", type=int, default=0, help="also time the signature workers' loop, split as for this many workers")
    parser.add_argument("--shuffle-timestamps", action="store_true", help="the store gets timestamps in random order, as from a real sync")
    parser.add_argument("--pool-batches", type=int, default=0, help="also time batches through a real pool of this many workers")
    args = parser.parse_args()
    raws = bench_gossip.read_messages(bench_gossip.cached_messages(bench_gossip.network(args.scale), args.cache_dir, 2))
    if args.pool_batches > 0:
        pool_costs(raws, args.pool_batches, args.rounds)
    if args.verify_processes > 0:
        verify_costs(raws, args.batch_size, args.verify_processes, args.rounds)
    best: dict[str, float] = {}
    sigs = store_bytes = 0
    with node_gc():
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                if args.profile is not None:
                    profiler = cProfile.Profile(time.process_time)
                    profiler.enable()
                spent, sigs, store_bytes = one_round(raws, args.batch_size, Path(tmp), args.shuffle_timestamps)
                if args.profile is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
            for name, seconds in spent.items():
                best[name] = min(best.get(name, seconds), seconds)
    print(f"{len(raws)} messages, {sigs} signatures; µs of CPU per signature (lowest of {args.rounds} rounds):")
    for name in STEPS:
        print(f"  {name:8} {1e6 * best[name] / sigs:6.2f}")
    print(f"  {'all':8} {1e6 * sum(best.values()) / sigs:6.2f}")
    print(f"the store wrote {store_bytes / sigs:.0f} bytes per signature (WAL and checkpoints)")


if __name__ == "__main__":
    main()
