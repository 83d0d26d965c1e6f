#!/usr/bin/env python3
"""Attack a node on this machine, as long as you like: fuzz every network decoder, and
flood its admission while legitimate peers connect.

    python scripts/attack.py all --duration 600          # ten minutes, half fuzz, half floods
    python scripts/attack.py fuzz --duration 3600        # an hour of fuzzing
    python scripts/attack.py admission --duration 120 --json

``fuzz`` runs the targets of :mod:`lnpmsg.testing.fuzz_targets` (every decoder that
bytes from the network reach) round robin with hypothesis, until the time is up; a
target raising anything but its documented error is a finding (printed with the
input that caused it). ``admission`` runs three floods against a fresh node on
127.0.0.1, one after the other, each while legitimate peers keep connecting:

- ``tcp``: silent sockets from many loopback IPs in several /24s, reconnecting;
- ``zmq``: ZeroMQ sessions from one IP that never send act one;
- ``quic``: QUIC Initials that never continue, from many sources.

It reports how long each legitimate connect took (they must all succeed). Only
127.0.0.0/8 is used; everything is bounded by ``--duration`` and the rates below.
CI runs a short version (``tests/test_attack_script.py``). Exit status: 0 when
nothing was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import trio


def fuzz(duration: float, seed: int) -> dict[str, Any]:
    """Run every fuzz target round robin for ``duration`` seconds."""
    from hypothesis import HealthCheck, given, settings

    from lnpmsg.testing.fuzz_targets import targets

    rng = random.Random(seed)
    report: dict[str, Any] = {"examples": {}, "findings": []}
    deadline = time.monotonic() + duration
    found: set[str] = set()
    first_round = True  # every target runs at least once, however short the time
    while first_round or time.monotonic() < deadline:
        for target in targets():
            if time.monotonic() >= deadline and not first_round:
                break
            if target.name in found:
                continue
            count = [0]
            run = _fuzz_run(target, count, settings, given, HealthCheck)
            run._hypothesis_internal_use_seed = rng.getrandbits(64)  # type: ignore[attr-defined]
            try:
                run()
            except Exception as exc:  # a finding: hypothesis has shrunk the input already
                found.add(target.name)
                report["findings"].append({"target": target.name, "reached_by": target.reached_by, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            report["examples"][target.name] = report["examples"].get(target.name, 0) + count[0]
        first_round = False
    return report


def _fuzz_run(target: Any, count: list[int], settings: Any, given: Any, health: Any) -> Any:
    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(health))
    @given(target.strategy)
    def run(data: Any) -> None:
        count[0] += 1
        try:
            target.run(data)
        except target.allowed:
            pass

    return run


async def _legit_connects(node: Any, legit: list[Any], times: list[float], address: str, interval: float) -> None:
    for peer_node in legit:
        start = trio.current_time()
        await peer_node.connect(address, timeout=30)
        times.append(trio.current_time() - start)
        await peer_node.disconnect(node.node_id)
        await trio.sleep(interval)


async def admission(duration: float) -> dict[str, Any]:
    """The three floods, a third of ``duration`` each, each while legitimate peers connect."""
    from lnpmsg.testing.attacks import attacker_sources, quic_initial_flood, quic_initials, silent_flood
    from lnpmsg.testing.nodes import address_of, make_node, running

    share = max(2.0, duration / 3)
    report: dict[str, Any] = {}

    # tcp: silent sockets from 40 IPs in 10 subnets, 60 connections/s: more than every pending budget
    node = make_node(handshake_timeout=60, act_one_timeout=60)
    legit = [make_node(listen=False) for _ in range(max(3, int(share)))]
    times: list[float] = []
    async with running(node, *legit) as nursery:
        host, port = node.listen_addresses[0].rsplit(":", 1)
        flood = {}

        async def tcp_flood() -> None:
            flood["stats"] = await silent_flood(host, int(port), attacker_sources(10, 4), per_second=60, hold=8, duration=share)

        nursery.start_soon(tcp_flood)
        await trio.sleep(min(1.0, share / 4))
        await _legit_connects(node, legit, times, address_of(node), share / (2 * len(legit)))
        while "stats" not in flood:
            await trio.sleep(0.1)
        report["tcp"] = {"opened": flood["stats"].opened, "evicted": node.stats["evicted"], "connect_seconds": _summary(times)}
        nursery.cancel_scope.cancel()

    # zmq: sessions from 127.0.0.5 that never send act one
    import zmq

    node = make_node(listen=["127.0.0.1:0", "zmq+tcp://127.0.0.1:0"], handshake_timeout=60, act_one_timeout=60)
    legit = [make_node(listen=False) for _ in range(3)]
    times = []
    context = zmq.Context()
    dealers = []
    try:
        async with running(node, *legit) as nursery:
            endpoint = node.listen_addresses[1].removeprefix("zmq+tcp://")
            end = trio.current_time() + share

            async def zmq_flood() -> None:
                while trio.current_time() < end:
                    dealer = context.socket(zmq.DEALER)
                    dealer.setsockopt(zmq.LINGER, 0)
                    dealer.connect(f"tcp://127.0.0.5:0;{endpoint}")
                    dealer.send(b"x")
                    dealers.append(dealer)
                    if len(dealers) > 200:
                        dealers.pop(0).close()
                    await trio.sleep(0.05)

            nursery.start_soon(zmq_flood)
            await trio.sleep(min(1.0, share / 4))
            await _legit_connects(node, legit, times, address_of(node), share / 6)
            report["zmq"] = {"sessions": len(dealers), "evicted": node.stats["evicted"], "connect_seconds": _summary(times)}
            nursery.cancel_scope.cancel()
    finally:
        for dealer in dealers:
            dealer.close()
        context.term()

    # quic: Initials that never continue, from 30 sources
    node = make_node(listen=["udp://127.0.0.1:0"])
    legit = [make_node(listen=False) for _ in range(3)]
    times = []
    initials = quic_initials(300)
    async with running(node, *legit) as nursery:
        host, port = node.listen_addresses[0].removeprefix("udp://").rsplit(":", 1)

        async def quic_flood() -> None:
            end = trio.current_time() + share
            while trio.current_time() < end:
                await quic_initial_flood(host, int(port), attacker_sources(3, 10), initials, per_second=600)

        nursery.start_soon(quic_flood)
        await trio.sleep(min(1.0, share / 4))
        await _legit_connects(node, legit, times, address_of(node), share / 6)
        udp_listener = node.listeners[0]
        report["quic"] = {"listener": dict(getattr(udp_listener, "stats", {})), "connect_seconds": _summary(times)}
        nursery.cancel_scope.cancel()
    return report


def _summary(times: list[float]) -> dict[str, float | int]:
    if not times:
        return {"count": 0}
    return {"count": len(times), "median": round(statistics.median(times), 3), "max": round(max(times), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("what", choices=["fuzz", "admission", "all"], help="what to run")
    parser.add_argument("--duration", type=float, default=60.0, metavar="SECONDS", help="total time (default: %(default)g; 'all' splits it in half)")
    parser.add_argument("--seed", type=int, default=None, help="fuzz seed (default: random, printed)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    report: dict[str, Any] = {"seed": seed}
    fuzz_time = args.duration if args.what == "fuzz" else args.duration / 2 if args.what == "all" else 0
    if fuzz_time:
        report["fuzz"] = fuzz(fuzz_time, seed)
    if args.what in ("admission", "all"):
        report["admission"] = trio.run(admission, args.duration - fuzz_time)
    findings = report.get("fuzz", {}).get("findings", [])
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
        print(f"{len(findings)} finding(s)" + (f"; rerun with --seed {seed}" if findings else ""), file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
