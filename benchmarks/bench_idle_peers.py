"""Many idle peers on one node: how many, memory per peer, idle CPU, and a new peer's wait.

What runs, all on this machine, in this one run:

- the node under test: a Node listening on loopback TCP, default settings
  except the per-IP connection limit and ``--ping-interval`` (the node's
  default, 60 s, unless told), in a child process of its own, so its memory
  and CPU are its peers' alone. ``--apps none`` (the default) runs a bare
  Node; ``--apps node`` the node ``lnpmsg node`` runs (built by
  ``build_node`` with its default apps: peer RPC, pub/sub, gossip, the
  control API; run by ``run_node``, so with its garbage collector's and
  malloc's policies) in a fresh data dir; ``--apps chain`` that of
  ``lnpmsg node --chain regtest`` (also the embedded chain and wallet,
  channels, payments, the announce app);
- a load generator in a second child: ``--peers`` connections, each with its
  own node key, ``--concurrency`` handshakes in flight at a time; plain
  sockets under ``selectors`` driving the sans-IO initiator and cipher, it
  sends ``init`` and answers pings, nothing else (so the peers stay idle);
- this process reads the node's RSS and CPU time from ``/proc``.

Reported:

- peers connected (the node's own count) and how long the ramp took;
- memory per peer: the node's RSS growth from before the first connection
  to after the last, divided by the peers;
- idle CPU: the node's CPU time over ``--idle`` seconds with every peer
  connected and silent but for the keepalive, as a share of one core, and
  its split into user and kernel time (the kernel's part: the loopback
  sends and receives, epoll). The window is longer than the ping interval
  by default, so every peer's ping/pong falls in it (once: the pings of a
  fast ramp are bunched in a few seconds of each interval). The pings the
  peers answered in the window are counted: the node's CPU per ping round
  trip is the figure that does not depend on how many fell in it. Before
  the window the node runs the full garbage collection the ramp left due
  (its CPU time is reported): a one-off that otherwise fell in the window
  or not by chance, ~0.5% of a core over 70 s at 10,000 peers. ``--profile FILE``
  runs cProfile in the node over the window and writes its stats there
  (the profiler's own cost then inflates the CPU figures);
- a new peer at full load: ``--samples`` fresh Nodes from this process
  connect one after another (TCP, handshake, init both ways, until the
  connection is ready), as percentiles;
- with ``--diagnose``: the Python objects the peers added, per peer and by
  the file that allocated them (``tracemalloc``, which slows the ramp; RSS
  also counts what it does not see: OpenSSL's cipher states, the kernel's
  socket buffers are not in RSS), and over the idle window trio's scheduler
  passes (one epoll wait each) and task steps per second, by task (an
  instrument on every step: the CPU figures are inflated then).

On a shared machine the CPU and latency figures move with the load: quote
them with the machine and its load (printed first).

Usage: ``python benchmarks/bench_idle_peers.py [--quick | --peers N] [--apps none|node|chain] [--ping-interval S] [--idle S] [--profile FILE] [--diagnose] [--json]``
(the default: 10,000 peers, 60 s pings, 70 s idle; ``--quick``: 3,000 peers,
5 s pings, 8 s idle.)
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import multiprocessing
import os
import resource
import selectors
import socket
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.session import PING_INTERVAL
from lnpmsg.noise import ACT_TWO_SIZE, InitiatorHandshake
from lnpmsg.noise import TransportCipher
from lnpmsg.wire import Init, Pong

#: BOLT-1 message types the generator reacts to
INIT, PING = 16, 18
#: how often the node child publishes its peer count
REPORT_INTERVAL = 0.5
#: handshakes the node lets one source have under way (above any --concurrency used)
MAX_PENDING = 1024
#: file descriptors per peer on each side, and some to spare
FD_MARGIN = 256

Context = multiprocessing.context.SpawnContext


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


# ------------------------------------------------------------------ the node


#: the node's apps: none (a bare Node), those of ``lnpmsg node`` (``node``: peer RPC,
#: pub/sub, gossip, the control API) or of ``lnpmsg node --chain regtest`` (``chain``: with
#: the embedded chain and wallet, channels, payments, the announce app)
APP_SETS = ("none", "node", "chain")
#: what the parent asks of the node child (it answers with the negative): the peers are
#: connected; the idle window starts; it ends
RAMPED, IDLE_START, IDLE_END = 1, 2, 3


def _limits(peers: int, ping_interval: float) -> dict[str, Any]:
    """NodeConfig fields of the node under test: every peer comes from 127.0.0.1, so the
    per-source limits (and the peer cap) that would refuse a crowd from one address are lifted."""
    return {
        "max_connections_per_ip": peers + 100,
        "max_peers": peers + 200,
        "reserved_peer_slots": 100,  # the new peers sampled at full load come on top
        "max_pending_per_ip": MAX_PENDING,
        "max_pending_per_subnet": MAX_PENDING,
        "max_pending_handshakes": MAX_PENDING,
        "ping_interval": ping_interval,
    }


class _SchedulerCounts(trio.abc.Instrument):
    """trio's scheduler over the idle window: passes (one I/O wait each), task steps by task name."""

    def __init__(self) -> None:
        self.io_waits = 0
        self.steps: dict[str, int] = {}

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


class _GcCounts:
    """The garbage collector over the idle window: collections by generation, and their time."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.collections[info["generation"]] += 1
            self.seconds += time.process_time() - self._started


class _Probes:
    """The node child's side of ``--profile`` and ``--diagnose`` (and of the phases)."""

    def __init__(self, phase: Any, collect_seconds: Any, profile_path: str, diagnose_path: str) -> None:
        self.phase = phase
        self.collect_seconds = collect_seconds
        self.profile_path = profile_path
        self.profiler = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
        self.diagnose_path = diagnose_path
        self.diagnosis: dict[str, Any] = {}
        self.snapshot: Any = None
        self.scheduler = _SchedulerCounts()
        self.gc = _GcCounts()

    def before_peers(self) -> None:
        if self.diagnose_path:
            tracemalloc.start()
            self.snapshot = tracemalloc.take_snapshot()

    def poll(self) -> None:
        asked = self.phase.value
        if asked <= 0:
            return
        if asked == RAMPED:
            # The collection the ramp left due: its survivors make a full one due at the
            # garbage collector's next older-generation pass, a one-off that would fall in
            # the idle window or not by chance (~0.3-0.5 s of CPU at 10,000 peers).
            started = time.process_time()
            gc.collect()
            self.collect_seconds.value = time.process_time() - started
        if asked == RAMPED and self.diagnose_path:
            # The Python objects the peers added, by the file that allocated them.
            stats = tracemalloc.take_snapshot().compare_to(self.snapshot, "filename")
            tracemalloc.stop()
            self.snapshot = None
            self.diagnosis["files"] = [(s.traceback[0].filename, s.size_diff, s.count_diff) for s in stats if s.size_diff > 0]
        elif asked == IDLE_START:
            if self.diagnose_path:
                trio.lowlevel.add_instrument(self.scheduler)
                gc.callbacks.append(self.gc)
            if self.profile_path:
                self.profiler.enable()
        elif asked == IDLE_END:
            if self.profile_path:
                self.profiler.disable()
                self.profiler.dump_stats(self.profile_path)
            if self.diagnose_path:
                trio.lowlevel.remove_instrument(self.scheduler)
                gc.callbacks.remove(self.gc)
                self.diagnosis["gc"] = {"collections": self.gc.collections, "seconds": self.gc.seconds, "thresholds": gc.get_threshold()}
                self.diagnosis["io_waits"] = self.scheduler.io_waits
                self.diagnosis["task_steps"] = self.scheduler.steps
                with open(self.diagnose_path, "w") as f:
                    json.dump(self.diagnosis, f)
        self.phase.value = -asked


def _node_child(
    peers: int, ping_interval: float, apps: str, data_dir: str, address: Any, count: Any, ready: Any,
    phase: Any, collect_seconds: Any, profile_path: str, diagnose_path: str,
) -> None:  # fmt: skip
    """The node under test: listen, publish the peer count, run until terminated."""
    _raise_fd_limit(peers + FD_MARGIN)
    probes = _Probes(phase, collect_seconds, profile_path, diagnose_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if apps == "none":
                node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], **_limits(peers, ping_interval)))
                await nursery.start(node.run)
            else:
                # The node `lnpmsg node` runs: built the one way every node is built, with its
                # apps, run with its garbage collector's and malloc's policies.
                from lnpmsg.runtime import NodeSettings, build_node, run_node

                chain = "regtest" if apps == "chain" else None
                settings = NodeSettings(data_dir=Path(data_dir), listen=["127.0.0.1:0"], chain=chain, network=chain, node_config=_limits(peers, ping_interval))
                built = build_node(settings)
                node = built.node
                nursery.start_soon(functools.partial(run_node, built, handle_signals=False))
                await node.started.wait()
            address.value = f"{node.node_id.hex()}@{node.listen_addresses[0]}".encode()
            probes.before_peers()
            ready.set()
            while True:
                count.value = len(node.peers)
                probes.poll()
                await trio.sleep(REPORT_INTERVAL)

    trio.run(main)


# ------------------------------------------------------------------ the generator


class _Conn:
    __slots__ = ("buffer", "cipher", "handshake", "ready")

    def __init__(self, handshake: InitiatorHandshake) -> None:
        self.handshake: InitiatorHandshake | None = handshake
        self.buffer = b""
        self.cipher: TransportCipher | None = None
        self.ready = False


def _generator(address: str, peers: int, concurrency: int, connected: Any, failed: Any, pings: Any) -> None:
    """Open ``peers`` idle connections; then keep answering pings until terminated."""
    _raise_fd_limit(peers + FD_MARGIN)
    node_id_hex, _, host_port = address.partition("@")
    host, port = host_port.rsplit(":", 1)
    node_id = bytes.fromhex(node_id_hex)
    init = Init().encode()
    selector = selectors.DefaultSelector()
    started = in_flight = 0

    def start_one() -> None:
        nonlocal started, in_flight
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, int(port)))  # loopback: completes at once
        handshake = InitiatorHandshake(NodeKey.generate().secret, node_id)
        sock.sendall(handshake.act_one())
        selector.register(sock, selectors.EVENT_READ, _Conn(handshake))
        started += 1
        in_flight += 1

    def drop(sock: socket.socket, conn: _Conn) -> None:
        nonlocal in_flight
        selector.unregister(sock)
        sock.close()
        failed.value += 1
        if not conn.ready:
            in_flight -= 1

    while True:
        while started < peers and in_flight < concurrency:
            start_one()
        for key, _events in selector.select(timeout=1.0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            conn: _Conn = key.data
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                drop(sock, conn)
                continue
            if conn.handshake is not None:
                conn.buffer += data
                if len(conn.buffer) < ACT_TWO_SIZE:
                    continue
                act_three = conn.handshake.receive_act_two(conn.buffer[:ACT_TWO_SIZE])
                data = conn.buffer[ACT_TWO_SIZE:]
                conn.cipher = TransportCipher(conn.handshake.keys)
                conn.handshake = None
                conn.buffer = b""
                sock.sendall(act_three + conn.cipher.encryptor.encrypt(init))
                if not data:
                    continue
            assert conn.cipher is not None
            for message in conn.cipher.decryptor.feed(data):
                kind = int.from_bytes(message[:2], "big")
                if kind == INIT and not conn.ready:
                    conn.ready = True
                    in_flight -= 1
                    connected.value += 1
                elif kind == PING:
                    pings.value += 1
                    wanted = int.from_bytes(message[2:4], "big")
                    sock.sendall(conn.cipher.encryptor.encrypt(Pong(ignored=bytes(wanted)).encode()))


# ------------------------------------------------------------------ /proc


def _proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """A process's (user, kernel) CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime and stime: fields 14 and 15 of stat, 12 and 13 after the name
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ new peers


async def _new_peer_times(address: str, samples: int, network: str) -> list[float]:
    """Seconds from dial to a ready connection, for ``samples`` fresh nodes one after another."""
    times: list[float] = []
    for _ in range(samples):
        node = Node(NodeKey.generate(), NodeConfig(network=network))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            started = time.perf_counter()
            with trio.fail_after(60):
                await node.connect(address)
            times.append(time.perf_counter() - started)
            node.stop()
    return times


# ------------------------------------------------------------------ main


def _ask(phase: Any, what: int, timeout: float = 120.0) -> None:
    """Ask the node child for ``what`` and wait until it is done."""
    phase.value = what
    deadline = time.monotonic() + timeout
    while phase.value != -what:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not answer phase {what}")
        time.sleep(0.05)


def run(
    peers: int, concurrency: int, ping_interval: float, idle: float, samples: int,
    apps: str = "none", profile_path: str = "", diagnose: bool = False,
) -> dict[str, Any]:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    phase = ctx.Value("i", 0)
    collect_seconds = ctx.Value("d", 0.0)
    address = ctx.Array("c", 256)
    node_count = ctx.Value("i", 0)
    connected = ctx.Value("i", 0)
    failed = ctx.Value("i", 0)
    pings = ctx.Value("i", 0)
    ready = ctx.Event()
    data_dir = tempfile.mkdtemp(prefix="bench-idle-")
    diagnose_path = os.path.join(data_dir, "diagnosis.json") if diagnose else ""
    node = ctx.Process(
        target=_node_child,
        args=(peers, ping_interval, apps, data_dir, address, node_count, ready, phase, collect_seconds, profile_path, diagnose_path),
        daemon=True,
    )
    node.start()
    generator = None
    try:
        if not ready.wait(120):
            raise RuntimeError("the node did not start")
        target = address.value.decode()
        time.sleep(1.0)  # let the node settle after start-up
        assert node.pid is not None
        rss_before = _proc_rss_kb(node.pid)
        generator = ctx.Process(target=_generator, args=(target, peers, concurrency, connected, failed, pings), daemon=True)
        ramp_started = time.perf_counter()
        generator.start()
        deadline = ramp_started + max(120.0, peers / 20) * (10 if diagnose else 1)
        while node_count.value < peers and time.perf_counter() < deadline:
            if failed.value > peers // 100 + 10:
                raise RuntimeError(f"{failed.value} connections failed")
            time.sleep(0.1)
        ramp = time.perf_counter() - ramp_started
        time.sleep(2 * REPORT_INTERVAL + 1.0)  # settle: the last handshakes' garbage, the count
        rss_after = _proc_rss_kb(node.pid)
        count = node_count.value
        _ask(phase, RAMPED)
        _ask(phase, IDLE_START)
        user_before, kernel_before = _proc_cpu_seconds(node.pid)
        pings_before = pings.value
        idle_started = time.perf_counter()
        time.sleep(idle)
        user_after, kernel_after = _proc_cpu_seconds(node.pid)
        idle_wall = time.perf_counter() - idle_started
        idle_pings = pings.value - pings_before
        _ask(phase, IDLE_END)
        new_peer = trio.run(_new_peer_times, target, samples, "regtest" if apps == "chain" else "bitcoin")
        result = {
            "apps": apps,
            "peers_wanted": peers,
            "peers_connected": count,
            "connections_failed": failed.value,
            "ramp_seconds": ramp,
            "rss_before_mb": rss_before / 1024,
            "rss_after_mb": rss_after / 1024,
            "kib_per_peer": (rss_after - rss_before) / max(1, count),
            "collect_after_ramp_ms": collect_seconds.value * 1e3,
            "idle_seconds": idle,
            "ping_interval": ping_interval,
            "idle_cpu_share_of_one_core": (user_after - user_before + kernel_after - kernel_before) / idle_wall,
            "idle_cpu_user_share": (user_after - user_before) / idle_wall,
            "idle_cpu_kernel_share": (kernel_after - kernel_before) / idle_wall,
            "idle_pings": idle_pings,
            "idle_cpu_us_per_ping": (user_after - user_before + kernel_after - kernel_before) / max(1, idle_pings) * 1e6,
            "profiled": bool(profile_path),
            "diagnosed": diagnose,
            "new_peer_ms": {
                "p50": statistics.median(new_peer) * 1e3,
                "max": max(new_peer) * 1e3,
                "min": min(new_peer) * 1e3,
            },
        }
        if diagnose:
            with open(diagnose_path) as f:
                result["diagnosis"] = _diagnosis(json.load(f), count, idle_wall)
        return result
    finally:
        for child in (generator, node):
            if child is not None:
                child.terminate()
                child.join()
        shutil.rmtree(data_dir, ignore_errors=True)


def _diagnosis(raw: dict[str, Any], peers: int, idle_wall: float) -> dict[str, Any]:
    """Bytes of Python objects per peer by file (top 20), scheduler passes and task steps per second."""
    files = sorted(raw["files"], key=lambda row: -row[1])
    steps = sorted(raw["task_steps"].items(), key=lambda item: -item[1])
    return {
        "python_bytes_per_peer": sum(row[1] for row in files) / max(1, peers),
        "python_bytes_per_peer_by_file": {_short(name): round(size / max(1, peers), 1) for name, size, _ in files[:20]},
        "scheduler_passes_per_second": raw["io_waits"] / idle_wall,
        "task_steps_per_second": sum(raw["task_steps"].values()) / idle_wall,
        "task_steps_per_second_by_task": {name: round(n / idle_wall, 1) for name, n in steps[:15]},
        "gc": raw["gc"],
    }


def _short(filename: str) -> str:
    """A file's path from its package (``lnpmsg/node/peer.py``, ``trio/_core/_run.py``)."""
    parts = Path(filename).parts
    for anchor in ("lnpmsg", "site-packages", "lib"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[index + (anchor != "lnpmsg"):])
    return filename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=10_000, help="idle peers to connect (default 10,000)")
    parser.add_argument("--apps", choices=APP_SETS, default="none",
                        help="the node's apps: none (a bare Node, the default), node (those of `lnpmsg node`), "
                        "chain (those of `lnpmsg node --chain regtest`)")  # fmt: skip
    parser.add_argument("--ping-interval", type=float, default=PING_INTERVAL, help=f"the node's ping interval (default {PING_INTERVAL:g} s)")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU measurement (default: ping interval + 10 s)")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight while connecting (default 64)")
    parser.add_argument("--samples", type=int, default=20, help="new peers timed at full load (default 20)")
    parser.add_argument("--quick", action="store_true", help="3,000 peers, 5 s pings, 8 s idle, 10 samples")
    parser.add_argument("--profile", metavar="FILE", default="", help="cProfile the node over the idle window into FILE (inflates the CPU figures)")
    parser.add_argument("--diagnose", action="store_true",
                        help="where memory and idle CPU go: the Python objects the peers added by file (tracemalloc), trio's "
                        "scheduler passes and task steps over the idle window (slows the ramp, inflates the CPU figures)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.peers, args.ping_interval, args.idle, args.samples = 3_000, 5.0, 8.0, 10
    if not args.idle:
        args.idle = args.ping_interval + 10
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; apps: {args.apps}; {args.peers:,} peers, "
        f"pings every {args.ping_interval:g} s, {args.idle:g} s idle",
        flush=True,
    )
    profile = os.path.abspath(args.profile) if args.profile else ""
    result = run(args.peers, args.concurrency, args.ping_interval, args.idle, args.samples, args.apps, profile, args.diagnose)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"peers connected: {result['peers_connected']:,} of {result['peers_wanted']:,} in {result['ramp_seconds']:.1f} s ({result['connections_failed']} failed)")
    print(
        f"node memory: {result['rss_before_mb']:.0f} MB before, {result['rss_after_mb']:.0f} MB after: "
        f"{result['kib_per_peer']:.1f} KiB per peer"
    )
    print(f"the full garbage collection the ramp left due, run before the idle window: {result['collect_after_ramp_ms']:.0f} ms of CPU")
    print(
        f"idle CPU: {100 * result['idle_cpu_share_of_one_core']:.2f}% of one core over {result['idle_seconds']:g} s "
        f"(user {100 * result['idle_cpu_user_share']:.2f}%, kernel {100 * result['idle_cpu_kernel_share']:.2f}%)"
        + (", profiled" if result["profiled"] else "")
        + (", diagnosed" if result["diagnosed"] else "")
    )
    print(f"  {result['idle_pings']:,} pings answered in the window: {result['idle_cpu_us_per_ping']:.1f} µs of node CPU per ping round trip")
    times = result["new_peer_ms"]
    print(f"a new peer at full load: p50 {times['p50']:.1f} ms, min {times['min']:.1f} ms, max {times['max']:.1f} ms (dial to ready)")
    if args.diagnose:
        diagnosis = result["diagnosis"]
        print(f"Python objects per peer: {diagnosis['python_bytes_per_peer']:,.0f} bytes, by file:")
        for name, size in diagnosis["python_bytes_per_peer_by_file"].items():
            print(f"  {size:8,.1f}  {name}")
        print(
            f"idle: {diagnosis['scheduler_passes_per_second']:,.1f} scheduler passes/s, "
            f"{diagnosis['task_steps_per_second']:,.1f} task steps/s, by task:"
        )
        for name, rate in diagnosis["task_steps_per_second_by_task"].items():
            print(f"  {rate:8,.1f}  {name}")
        collected = diagnosis["gc"]
        print(
            f"garbage collector (thresholds {tuple(collected['thresholds'])}): collections by generation "
            f"{'/'.join(map(str, collected['collections']))}, {collected['seconds'] * 1e3:.0f} ms of CPU in the window"
        )


if __name__ == "__main__":
    main()
