"""BOLT-8 stack benchmark: handshakes/s and messages/s, next to their limits.

Everything is measured in this one run, on this machine:

- raw AEAD: ChaCha20-Poly1305 alone doing the work of one BOLT-8 message
  (encrypt length + body, decrypt both): the physical limit of this design
  in Python when one core does both ends. Bodies and sealed headers on
  ``cryptography``; headers opened in runs through libsodium when PyNaCl
  is there, as the node's reader opens them (``noise/length_headers.py``);
- lnpmsg: two Nodes over loopback TCP in one process; a message counts when
  the receiving node's handler has it. The limit and the stack take turns
  over one connection, in 20 slices per round, so both see the same seconds
  of a shared machine (``lnpmsg_and_limit``);
- pyln-proto: Core Lightning's Python BOLT-8 implementation, same traffic
  (a sender thread and a reader thread, loopback TCP);
- node receiving, in a second process, fed by a lean sender here (an
  independent client: the handshake, an ``init``, then frames encrypted
  before the first write and written in batches, far less work per message
  than the node's, so the node takes a full stream): the node's
  messages per second of its own CPU time, against one core's AEAD decrypt
  of the same frames (per CPU-second, measured in the node's process in
  slices between its reads: the same seconds of a shared host);
- handshakes: sans-IO (both roles in memory); over loopback TCP (dial +
  acts 1-3 against a listening node), with the dialers in the same process
  and with a lean load generator in a second process (then also per second
  of the node's own CPU time: what one core accepts); pyln-proto's over TCP;
- the handshake limit: the least cryptography a responder must do (ECDHs,
  one ephemeral key, HKDFs, hashes, AEADs straight on the libraries), per
  CPU-second, measured in the accepting node's process in slices between
  its connections (the same seconds of a shared host); the node's accepted
  handshakes per CPU-second (the slices' CPU taken off) over it is the ratio.

The rounds (``--rounds``, default 5) interleave every measurement; each
figure is its best round, and each ratio is each round's own (its two
figures measured side by side): the tables give the median and the lowest
round. Per CPU-second figures do not move with the load of a shared
machine the way wall-clock rates do.

Usage: ``python benchmarks/bench_bolt8.py [--quick] [--rounds N] [--json] [--receiving-only | --handshakes-only [--with-init]]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import threading
import time
from itertools import repeat

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.pyln import WholeReads

from bolt8_receiving import (  # noqa: E402  (benchmarks/ is the script's directory, not a package)
    CUSTOM,
    lnpmsg_throughput_two_processes,
)
from bolt8_receiving import drain as _drain  # noqa: E402
from bolt8_receiving import open_headers as _open_headers  # noqa: E402
from bolt8_handshakes import (  # noqa: E402
    LimitSlices,
    pyln_handshakes,
    pyln_server,
    raw_responder_crypto,
    sans_io_handshakes,
    tcp_handshakes,
    tcp_handshakes_two_processes,
)



def raw_aead(count: int, size: int) -> float:
    """Messages/s of the bare AEAD work of BOLT-8 framing (2 encrypts + 2 decrypts).

    The length headers are opened as the receiving node opens them
    (:func:`_open_headers`: through libsodium when it is there), so the
    limit is never dearer than the node's own path.
    """
    key = os.urandom(32)
    aead = ChaCha20Poly1305(key)
    body = os.urandom(size)
    header = struct.pack(">H", size)
    nonces = [struct.pack("<4xQ", i) for i in range(1000)]
    header_nonces, body_nonces = nonces[0::2], nonces[1::2]
    encrypt, decrypt = aead.encrypt, aead.decrypt
    done = 0
    start = time.perf_counter()
    while done < count:
        batch = min(500, count - done)
        headers = [encrypt(n, header, None) for n in header_nonces[:batch]]
        bodies = [encrypt(n, body, None) for n in body_nonces[:batch]]
        _open_headers(aead, key, header_nonces[:batch], headers, header)
        _drain(map(decrypt, body_nonces, bodies, repeat(None)))
        done += batch
    return count / (time.perf_counter() - start)


async def lnpmsg_and_limit(count: int, size: int, slices: int = 20) -> tuple[float, float]:
    """Messages/s through two nodes over loopback TCP, and the raw AEAD limit, in alternating slices.

    One connection carries all the traffic. Before each slice of it, the bare
    AEAD work of as many messages runs in the same process, so the stack and
    its limit are measured over the same seconds of a shared machine and a
    burst of load elsewhere moves both. A message counts when the receiving
    node's handler has it. Returns (lnpmsg messages/s, limit messages/s).
    """
    a = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
    b = Node(NodeKey.generate(), NodeConfig())
    per_slice = max(1, count // slices)
    received = expected = 0
    arrived = trio.Event()

    def on_message(peer, message) -> None:  # type: ignore[no-untyped-def]
        # A plain function, as in the two-process run: the figure is the stack's, not an app's.
        nonlocal received
        received += 1
        if received == expected:
            arrived.set()

    a.add_handler(CUSTOM, on_message)
    message = CUSTOM.to_bytes(2, "big") + bytes(size - 2)
    stack_seconds = limit_seconds = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        peer = await b.connect(f"{a.node_id.hex()}@{a.listen_addresses[0]}")
        for _ in range(slices):
            limit_seconds += per_slice / raw_aead(per_slice, size)
            expected += per_slice
            arrived = trio.Event()
            start = time.perf_counter()
            for _ in range(per_slice):
                await peer.send(message)
            await arrived.wait()
            stack_seconds += time.perf_counter() - start
        a.stop()
        b.stop()
    total = per_slice * slices
    return total / stack_seconds, total / limit_seconds


def pyln_throughput(count: int, size: int) -> float:
    from pyln.proto import wire

    server, server_key, client_key, port = pyln_server(1)
    accepted: list = []
    acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    acceptor.start()
    client = wire.connect(client_key, server_key.public_key(), "127.0.0.1", port)
    acceptor.join()
    receiver = accepted[0]
    # pyln-proto reads a frame header with one recv() and fails on a short
    # read, which TCP may give it under load: give it whole reads.
    receiver.connection = WholeReads(receiver.connection)
    message = CUSTOM.to_bytes(2, "big") + bytes(size - 2)

    def send_all() -> None:
        for _ in range(count):
            client.send_message(message)

    start = time.perf_counter()
    sender = threading.Thread(target=send_all)
    sender.start()
    for _ in range(count):
        receiver.read_message()
    elapsed = time.perf_counter() - start
    sender.join()
    client.connection.close()
    receiver.connection.close()
    server.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages and handshakes, 2 rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds to run (default 5)")
    parser.add_argument(
        "--receiving-only",
        action="store_true",
        help="only the node receiving 1 KiB messages in a second process (to compare two versions of the receive path)",
    )
    parser.add_argument(
        "--handler",
        choices=("batch", "message", "both"),
        default="batch",
        help="with --receiving-only: the receiving app takes the messages in runs (batch, the default), "
        "one handler call per message (message), or both in turn each round",
    )
    parser.add_argument(
        "--handshakes-only",
        action="store_true",
        help="only the node accepting handshakes from a second process, against the responder crypto limit "
        "measured in slices between its connections (and, for comparison, just before and after its run)",
    )
    parser.add_argument("--handshakes", type=int, default=4000, help="handshakes per round with --handshakes-only (default 4000)")
    parser.add_argument(
        "--with-init",
        action="store_true",
        help="with --handshakes-only: each dialer sends an init with act three (as real peers do) before it hangs up; "
        "by default it hangs up right after act three",
    )
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    rounds = 2 if args.quick else args.rounds
    if args.receiving_only:
        _receiving_only(int(200_000 * scale), rounds, args.json, args.handler)
        return
    if args.handshakes_only:
        _handshakes_only(int(args.handshakes * scale), rounds, args.json, args.with_init)
        return
    results: dict[str, float] = {}
    # Each round's own ratios (its two figures measured side by side); the table gives their median and lowest.
    round_ratios: dict[str, list[float]] = {"1KiB": [], "64KiB": [], "2proc_1KiB": [], "2proc_64KiB": [], "handshakes": []}

    def keep_best(key: str, value: float) -> None:
        results[key] = max(results.get(key, 0.0), value)

    # Every figure is the best of several interleaved rounds, limit and ours
    # alike, so a burst of load on a shared machine does not decide a ratio.
    for _ in range(rounds):
        for size, count in ((1024, int(200_000 * scale)), (65535, int(10_000 * scale))):
            label = "1KiB" if size == 1024 else "64KiB"
            ours, limit = trio.run(lnpmsg_and_limit, count, size)
            keep_best(f"raw_aead_{label}", limit)
            keep_best(f"lnpmsg_{label}", ours)
            round_ratios[label].append(ours / limit)
            keep_best(f"pyln_{label}", pyln_throughput(max(count // 4, 100), size))
            wall, per_cpu_second, decrypt_limit, _, _ = lnpmsg_throughput_two_processes(count, size)
            keep_best(f"lnpmsg_2proc_{label}", wall)
            keep_best(f"lnpmsg_2proc_per_cpu_second_{label}", per_cpu_second)
            keep_best(f"raw_decrypt_{label}", decrypt_limit)
            round_ratios[f"2proc_{label}"].append(per_cpu_second / decrypt_limit)
        keep_best("handshakes_sans_io", sans_io_handshakes(int(3000 * scale)))
        keep_best("handshakes_tcp", trio.run(tcp_handshakes, int(2000 * scale)))
        slices = LimitSlices()
        rate, per_cpu_second = trio.run(tcp_handshakes_two_processes, int(4000 * scale), 16, False, slices)
        limit = slices.limit  # measured between the node's connections: the node's own seconds
        keep_best("handshakes_tcp_server", rate)
        keep_best("handshakes_tcp_server_per_cpu_second", per_cpu_second)
        keep_best("handshakes_pyln_tcp", pyln_handshakes(int(1000 * scale)))
        keep_best("handshakes_responder_crypto", limit)
        round_ratios["handshakes"].append(per_cpu_second / limit)
    for label, ratios in round_ratios.items():
        results[f"ratio_{label}_median_of_rounds"] = statistics.median(ratios)
        results[f"ratio_{label}_lowest_round"] = min(ratios)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    _print_tables(results, rounds)


def _receiving_only(count: int, rounds: int, as_json: bool, handler: str = "batch") -> None:
    """The node-receiving figure alone at 1 KiB, ``rounds`` times: each round's CPU µs per message and ratio.

    ``handler``: the receiving app's batch handler, a handler per message, or both in turn.
    """
    kinds = ["batch", "message"] if handler == "both" else [handler]
    per_round = []
    for index in range(rounds):
        for kind in kinds:
            _, per_cpu_second, limit, (waited, preempted), (user, system) = lnpmsg_throughput_two_processes(
                count, 1024, per_message=kind == "message"
            )
            per_round.append(
                {
                    "round": index + 1,
                    "handler": kind,
                    "node_cpu_us_per_message": 1e6 / per_cpu_second,
                    "node_user_us_per_message": 1e6 * user,
                    "node_system_us_per_message": 1e6 * system,
                    "limit_cpu_us_per_message": 1e6 / limit,
                    "ratio": per_cpu_second / limit,
                    "voluntary_switches": waited,
                    "involuntary_switches": preempted,
                }
            )
    if as_json:
        print(json.dumps(per_round, indent=2))
        return
    print("| round | handler | node CPU µs per 1 KiB message (user + system) | limit (two decrypts) µs | node / limit | node waited / preempted |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for figures in per_round:
        print(
            f"| {figures['round']} | {figures['handler']} | {figures['node_cpu_us_per_message']:.2f} "
            f"({figures['node_user_us_per_message']:.2f} + {figures['node_system_us_per_message']:.2f}) "
            f"| {figures['limit_cpu_us_per_message']:.2f} | {figures['ratio']:.0%} "
            f"| {figures['voluntary_switches']} / {figures['involuntary_switches']} |"
        )
    for kind in kinds:
        ratios = [figures["ratio"] for figures in per_round if figures["handler"] == kind]
        print(f"\n{kind}: node / limit: median {statistics.median(ratios):.0%}, lowest {min(ratios):.0%}")


def _handshakes_only(count: int, rounds: int, as_json: bool, with_init: bool = False) -> None:
    """The accepting node's figure alone, ``rounds`` times: each round's CPU µs per accepted
    handshake, the limit's µs measured in slices between the node's connections
    (:class:`~bolt8_handshakes.LimitSlices`), and their ratio; and, for comparison,
    the limit measured just before and after the node's run (as until Dec 7 2026)
    and the ratio to that.

    ``with_init``: each dialer sends an ``init`` with act three, as real peers
    do; the node then also decrypts and handles it (the limit stays the
    handshake's crypto alone)."""
    per_round = []
    for _ in range(rounds):
        before = raw_responder_crypto(max(count // 3, 200))
        slices = LimitSlices()
        rate, per_cpu_second = trio.run(tcp_handshakes_two_processes, count, 16, with_init, slices)
        around = (before + raw_responder_crypto(max(count // 3, 200))) / 2
        per_round.append(
            {
                "node_cpu_us_per_handshake": 1e6 / per_cpu_second,
                "limit_cpu_us_per_handshake": 1e6 / slices.limit,
                "handshakes_per_second": rate,
                "ratio": per_cpu_second / slices.limit,
                "limit_slices": slices.handshakes // slices.size,
                "limit_around_cpu_us_per_handshake": 1e6 / around,
                "ratio_to_limit_around": per_cpu_second / around,
            }
        )
    if as_json:
        print(json.dumps(per_round, indent=2))
        return
    print(
        "| round | node CPU µs per accepted handshake | limit µs (in slices between connections) | node / limit "
        "| limit µs (before and after) | node / that | accepted/s (wall clock) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for index, figures in enumerate(per_round, 1):
        print(
            f"| {index} | {figures['node_cpu_us_per_handshake']:.0f} | {figures['limit_cpu_us_per_handshake']:.0f}"
            f" | {figures['ratio']:.1%} | {figures['limit_around_cpu_us_per_handshake']:.0f}"
            f" | {figures['ratio_to_limit_around']:.1%} | {figures['handshakes_per_second']:,.0f} |"
        )
    ratios = [figures["ratio"] for figures in per_round]
    around = [figures["ratio_to_limit_around"] for figures in per_round]
    print(f"\nnode / limit in slices: median {statistics.median(ratios):.1%}, lowest {min(ratios):.1%}")
    print(f"node / limit before and after: median {statistics.median(around):.1%}, lowest {min(around):.1%}")


def _print_tables(results: dict[str, float], rounds: int) -> None:
    def ratios(label: str) -> str:
        return f"{results[f'ratio_{label}_median_of_rounds']:.0%}, {results[f'ratio_{label}_lowest_round']:.0%}"

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {rounds} interleaved round(s); figures are the best round\n")
    print("| messages/s (loopback TCP, both nodes in one process) | 1 KiB | 64 KiB |")
    print("| --- | ---: | ---: |")
    for name, key in (("raw ChaCha20-Poly1305 (limit)", "raw_aead"), ("lnpmsg", "lnpmsg"), ("pyln-proto", "pyln")):
        print(f"| {name} | {results[key + '_1KiB']:,.0f} | {results[key + '_64KiB']:,.0f} |")
    print(f"| lnpmsg / raw limit (median of rounds, lowest round) | {ratios('1KiB')} | {ratios('64KiB')} |")
    print(f"| lnpmsg / pyln-proto | {results['lnpmsg_1KiB'] / results['pyln_1KiB']:.1f}x | {results['lnpmsg_64KiB'] / results['pyln_64KiB']:.1f}x |")
    print()
    print("Node receiving in a second process, fed by a lean sender (each on its own core):\n")
    print("| messages/s (loopback TCP) | 1 KiB | 64 KiB |")
    print("| --- | ---: | ---: |")
    print(f"| one core's AEAD decrypt of the same frames, per CPU-second (limit) | {results['raw_decrypt_1KiB']:,.0f} | {results['raw_decrypt_64KiB']:,.0f} |")
    print(f"| receiving node, per second of its own CPU time | {results['lnpmsg_2proc_per_cpu_second_1KiB']:,.0f} | {results['lnpmsg_2proc_per_cpu_second_64KiB']:,.0f} |")
    print(f"| receiving node / limit (median of rounds, lowest round) | {ratios('2proc_1KiB')} | {ratios('2proc_64KiB')} |")
    print(f"| receiving node, per second (wall clock, shared machine) | {results['lnpmsg_2proc_1KiB']:,.0f} | {results['lnpmsg_2proc_64KiB']:,.0f} |")
    print()
    print("| handshakes/s | |")
    print("| --- | ---: |")
    print(f"| lnpmsg, sans-IO (both roles, one core) | {results['handshakes_sans_io']:,.0f} |")
    print(f"| lnpmsg, loopback TCP (dial + acts 1-3, 16 dialers, both roles in one process) | {results['handshakes_tcp']:,.0f} |")
    print(f"| lnpmsg node accepting, loopback TCP (load generator in a second process) | {results['handshakes_tcp_server']:,.0f} |")
    print(f"| the same node, per second of its own CPU time (one core's capacity) | {results['handshakes_tcp_server_per_cpu_second']:,.0f} |")
    print(f"| pyln-proto, loopback TCP | {results['handshakes_pyln_tcp']:,.0f} |")
    print(f"| responder cryptography alone, per CPU-second (limit) | {results['handshakes_responder_crypto']:,.0f} |")
    print(f"| node accepting per CPU-second / limit (median of rounds, lowest round) | {ratios('handshakes')} |")


if __name__ == "__main__":
    main()
