"""Where an accepted connection's Python goes: cProfile of the accepting node, per connection.

Runs :func:`bolt8_handshakes.tcp_handshakes_two_processes` (the node in this
process, the load generator in another) under cProfile, once with connections
that hang up right after act three and once with connections that send an
``init`` with act three first (``--with-init`` of ``bench_bolt8.py``), and
prints per connection, for every function whose calls differ: calls and own
time (``tottime``) both ways, sorted by the difference in calls (``--by time``:
in own time). Times are inflated by the profiler; calls are exact, and are what
to compare between versions. ``--only init`` or ``--only plain`` prints one
run's heaviest functions instead.

Usage: ``python benchmarks/profile_handshakes.py [--count N] [--by calls|time] [--only init|plain] [--top N]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import trio

from bolt8_handshakes import tcp_handshakes_two_processes  # noqa: E402  (benchmarks/ is the script's directory)

#: per function ("file:line(name)"): (calls, own seconds)
Profile = dict[str, tuple[int, float]]


def profiled(count: int, with_init: bool) -> Profile:
    """Calls and own time of every function the node's process ran over ``count`` connections."""
    profiler = cProfile.Profile()
    profiler.enable()
    trio.run(tcp_handshakes_two_processes, count, 16, with_init)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {f"{path.rsplit('/', 1)[-1]}:{line}({name})": (calls, own) for (path, line, name), (_, calls, own, _, _) in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="connections per run (default 3000)")
    parser.add_argument("--by", choices=("calls", "time"), default="calls", help="sort the difference by calls or own time")
    parser.add_argument("--only", choices=("init", "plain"), help="profile one kind of connection only")
    parser.add_argument("--top", type=int, default=60, help="rows to print (default 60)")
    args = parser.parse_args()
    n = args.count
    if args.only:
        profile = profiled(n, args.only == "init")
        calls = sum(c for c, _ in profile.values()) / n
        print(f"{args.only}: {calls:.1f} calls, {sum(t for _, t in profile.values()) / n * 1e6:.1f} µs own time per connection")
        for name, (c, t) in sorted(profile.items(), key=lambda item: -item[1][1])[: args.top]:
            print(f"{t / n * 1e6:8.2f} µs {c / n:7.2f} calls  {name}")
        return
    plain, init = profiled(n, False), profiled(n, True)
    for label, profile in (("plain", plain), ("init", init)):
        calls = sum(c for c, _ in profile.values()) / n
        print(f"{label}: {calls:.1f} calls, {sum(t for _, t in profile.values()) / n * 1e6:.1f} µs own time per connection")
    rows = []
    for name in plain.keys() | init.keys():
        (c0, t0), (c1, t1) = plain.get(name, (0, 0.0)), init.get(name, (0, 0.0))
        if c0 != c1:
            rows.append(((c1 - c0) if args.by == "calls" else (t1 - t0), name, c0, c1, t0, t1))
    rows.sort(reverse=True)
    print(f"{'calls':>15} {'own µs':>15}  per connection, without -> with an init")
    for _, name, c0, c1, t0, t1 in rows[: args.top]:
        print(f"{c0 / n:6.2f} -> {c1 / n:6.2f} {t0 / n * 1e6:6.2f} -> {t1 / n * 1e6:6.2f}  {name}")


if __name__ == "__main__":
    main()
