"""The Electrum server: requests/s, and how long a real Electrum wallet takes
to sync N headers from it.

Measured in this one run, on this machine:

- requests/s over one TCP connection, pipelined (all requests sent, then
  all answers read): ``blockchain.block.header``, ``blockchain.scripthash.
  get_history`` (a script hash with 20 transactions), ``blockchain.block.
  headers`` (chunks of 2016); next to the limit, the sans-IO session core
  alone (the same requests, no sockets);
- mining N regtest blocks (Bitcoin Core's consensus engine validates each),
  and building the server's index over them (what a start costs);
- Electrum 4.3.4 (Debian's, its own process): from daemon start to holding
  all N headers, and the daemon's start alone.

Usage: ``python benchmarks/bench_electrum.py [--quick] [--blocks N] [--json]``
(default N = 10,000; ``--quick``: 1,000 blocks and fewer requests).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from lnpmsg.chain.electrum.index import script_hash, scripthash_to_hex
from lnpmsg.chain.electrum.server import ElectrumServer
from lnpmsg.chain.electrum.session import ElectrumSession
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.testing.electrum import ElectrumWallet, electrum_available

PAYEE = bytes([0x00, 0x14]) + bytes([9]) * 20
#: a fixed clock far in the past: thousands of blocks mined in seconds would
#: otherwise walk block times (median time past + 1) past the two-hour future limit
CLOCK_START = 1_600_000_000


def request_lines(method: str, params: list[list[Any]]) -> bytes:
    return b"".join(
        json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": p}).encode() + b"\n"
        for i, p in enumerate(params)
    )


async def pipelined(port: int, lines: bytes, count: int) -> float:
    """Seconds to send ``lines`` and read ``count`` answers over one connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        start = time.perf_counter()
        received = 0

        async def send() -> None:
            await stream.send_all(lines)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while received < count:
                data = await stream.receive_some(1 << 20)
                if not data:
                    raise RuntimeError("the server hung up")
                received += data.count(b"\n")
        return time.perf_counter() - start


def core_only(server: ElectrumServer, lines: bytes, count: int) -> float:
    """Seconds for the session core alone to answer the same requests, drained
    every 100 requests as the shell drains it (its outbox is bounded)."""
    session = ElectrumSession(server.index, server.info)
    split = lines.splitlines(keepends=True)
    chunks = [b"".join(split[i : i + 100]) for i in range(0, len(split), 100)]
    answered = 0
    start = time.perf_counter()
    for chunk in chunks:
        session.receive_data(chunk)
        answered += session.data_to_send().count(b"\n")
        while session.has_buffered_requests:
            session.receive_data(b"")
            answered += session.data_to_send().count(b"\n")
    elapsed = time.perf_counter() - start
    assert answered == count and session.closed is None, (answered, count, session.closed)
    return elapsed


async def run(blocks: int, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {"blocks": blocks}
    with tempfile.TemporaryDirectory(prefix="lnpmsg-bench-electrum-") as tmp:
        clock = iter(range(CLOCK_START, CLOCK_START + 10 * blocks + 10_000))
        async with EmbeddedChainSource.open(Path(tmp) / "chain", clock=lambda: next(clock)) as chain:
            start = time.perf_counter()
            mined = 0
            while mined < blocks:
                step = min(1000, blocks - mined)
                await chain.mine(step)
                mined += step
            results["mine_s"] = time.perf_counter() - start
            for _ in range(20):  # a payee with some history
                await chain.faucet(PAYEE, 10_000)
                await chain.mine(1)
            server = ElectrumServer(chain)
            async with trio.open_nursery() as nursery:
                start = time.perf_counter()
                port = await nursery.start(server.run)
                results["index_s"] = time.perf_counter() - start
                tip = server.index.height
                sh = scripthash_to_hex(script_hash(PAYEE))
                cases = {
                    "blockchain.block.header": (request_lines("blockchain.block.header", [[i % (tip + 1)] for i in range(requests)]), requests),
                    "blockchain.scripthash.get_history": (request_lines("blockchain.scripthash.get_history", [[sh]] * requests), requests),
                    "blockchain.block.headers (2016)": (request_lines("blockchain.block.headers", [[(i * 2016) % max(tip - 2015, 1), 2016] for i in range(requests // 100)]), requests // 100),
                }
                rows = []
                for name, (lines, count) in cases.items():
                    tcp = await pipelined(port, lines, count)
                    core = core_only(server, lines, count)
                    rows.append({"request": name, "tcp_per_s": count / tcp, "core_per_s": count / core})
                results["requests"] = rows
                if electrum_available():
                    with tempfile.TemporaryDirectory(prefix="lnpmsg-bench-electrum-wallet-") as wdir:
                        wallet = ElectrumWallet(wdir, f"127.0.0.1:{port}")
                        start = time.perf_counter()
                        await trio.to_thread.run_sync(wallet.start)
                        results["electrum_start_s"] = time.perf_counter() - start
                        try:
                            await trio.to_thread.run_sync(lambda: wallet.wait_synced(tip, timeout=600))
                            results["electrum_sync_s"] = time.perf_counter() - start
                        finally:
                            await trio.to_thread.run_sync(wallet.stop)
                nursery.cancel_scope.cancel()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 blocks, fewer requests")
    parser.add_argument("--blocks", type=int, help="blocks to mine and sync (default: 10,000; 1,000 with --quick)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    blocks = args.blocks or (1_000 if args.quick else 10_000)
    requests = 2_000 if args.quick else 20_000
    results = trio.run(run, blocks, requests)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"mined {results['blocks']} regtest blocks in {results['mine_s']:.1f} s; server index built in {results['index_s']:.2f} s")
    print(f"{'request':36} {'TCP, pipelined /s':>18} {'session core /s':>16}")
    for row in results["requests"]:
        print(f"{row['request']:36} {row['tcp_per_s']:18,.0f} {row['core_per_s']:16,.0f}")
    if "electrum_sync_s" in results:
        print(f"Electrum 4.3.4: daemon answers {results['electrum_start_s']:.2f} s after its start; holds all "
              f"{results['blocks'] + 21} headers (genesis included) {results['electrum_sync_s']:.2f} s after its start")
    else:
        print("Electrum is not installed (apt-get install python3-electrum electrum): no sync time", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
