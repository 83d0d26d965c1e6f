"""Where an accepted connection's Python goes: cProfile of the accepting node, per connection.

Runs :func:`bolt8_handshakes.tcp_handshakes_two_processes` (the node in this
process, the load generator in another) under cProfile, once with connections
that hang up right after act three and once with connections that send an
``init`` with act three first (``--with-init`` of ``bench_bolt8.py``), and
prints per connection, for every function whose calls differ: calls and own
time (``tottime``) both ways, sorted by the difference in calls (``--by time``:
in own time). Times are inflated by the profiler; calls are exact, and are what
to compare between versions. ``--only init`` or ``--only plain`` prints one
run's heaviest functions instead. ``--parts`` times alone (CPU time, no
profiler) what a connection whose peer sends its ``init`` may cost beyond one
that hangs up after act three: the peer's task and its cancel scope (only a
peer that stays, or whose ``init`` the node cannot take at once, has them), the
receiving cipher's set-up, the ``init``'s frame, the session's ``init`` and the
first ping's keepalive entry (also only a peer that stays).

Usage: ``python benchmarks/profile_handshakes.py [--count N] [--by calls|time] [--only init|plain] [--top N] [--parts]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

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


async def _parts(count: int, rounds: int = 5) -> dict[str, list[float]]:
    """CPU µs of each piece of a peer's start and end, timed alone, ``rounds`` times over ``count``."""
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.keepalive import KeepaliveSchedule
    from lnpmsg.node.node import Node, NodeConfig
    from lnpmsg.node.session import PeerSession
    from lnpmsg.noise import InitiatorHandshake, ResponderHandshake
    from lnpmsg.noise.cipher import MessageEncryptor
    from lnpmsg.noise.transport_cipher import TransportCipher

    clock = time.thread_time
    node = Node(NodeKey.generate(), NodeConfig())
    setup = node._session_setup(b"")
    initiator_key, responder_key = NodeKey.generate(), NodeKey.generate()
    handshakes = []  # (the responder's keys, the initiator's init as its first frame)
    for _ in range(64):
        initiator = InitiatorHandshake(initiator_key.secret, responder_key.node_id)
        responder = ResponderHandshake(responder_key.secret)
        responder.receive_act_three(initiator.receive_act_two(responder.receive_act_one(initiator.act_one())))
        keys = initiator.keys
        handshakes.append((responder.keys, MessageEncryptor(keys.send_key, keys.chaining_key).encrypt(setup.init_bytes)))
    times: dict[str, list[float]] = {}

    def took(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds / count * 1e6)

    async def nothing() -> None:
        pass

    for _ in range(rounds):
        async with trio.open_nursery() as nursery:
            start = clock()
            for _ in range(count // 8):  # the accept loop's bursts: up to 8 tasks before a schedule point
                for _ in range(8):
                    nursery.start_soon(nothing)
                await trio.lowlevel.checkpoint()
            took("a task: started, run once, ended (in bursts of 8)", clock() - start)
        start = clock()
        for _ in range(count):
            with trio.CancelScope():
                pass
        took("a cancel scope: made, entered, left", clock() - start)
        start = clock()
        for index in range(count):
            TransportCipher(handshakes[index % 64][0])
        bare = clock() - start
        start = clock()
        for index in range(count):
            TransportCipher(handshakes[index % 64][0]).decryptor
        took("the receiving cipher's set-up (MessageDecryptor)", clock() - start - bare)
        decryptors = [TransportCipher(handshakes[index % 64][0]).decryptor for index in range(count)]
        start = clock()
        for index, decryptor in enumerate(decryptors):
            decryptor.feed(handshakes[index % 64][1])
        took("the init's frame: MessageDecryptor.feed (two decrypts)", clock() - start)
        sessions = [
            PeerSession(
                setup.init, 0.0, known_features=setup.understood, registry=node.registry, chains=node._chains,
                local_init_bytes=setup.init_bytes, local_features=setup.offered, init_verdicts=setup.verdicts,
            )
            for _ in range(count)
        ]
        now = trio.current_time()
        start = clock()
        for session in sessions:
            session.receive_messages([setup.init_bytes], now)
        took("the session's init (its verdict kept)", clock() - start)
        schedule, peers = KeepaliveSchedule(), [object() for _ in range(count)]
        start = clock()
        for peer in peers:
            schedule.set(peer, now + 60.0)  # the first ping
            schedule.set(peer, None)  # the close
            schedule.set(peer, None)  # run's end
        took("the first ping's keepalive entry, in and out", clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="connections per run (default 3000)")
    parser.add_argument("--by", choices=("calls", "time"), default="calls", help="sort the difference by calls or own time")
    parser.add_argument("--only", choices=("init", "plain"), help="profile one kind of connection only")
    parser.add_argument("--top", type=int, default=60, help="rows to print (default 60)")
    parser.add_argument("--parts", action="store_true", help="time the pieces of a peer's start and end alone instead")
    args = parser.parse_args()
    n = args.count
    if args.parts:
        for name, values in trio.run(_parts, max(n, 8000)).items():
            print(f"{statistics.median(values):6.2f} µs (lowest {min(values):.2f})  {name}")
        return
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
