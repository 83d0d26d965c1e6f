"""The chain RPC server: Bitcoin Core JSON-RPC calls/s, next to their floor.

Everything is measured in this one run, on this machine:

- floor: the same request bodies answered in-process by the method table
  (``rpc_methods.handle_body``: JSON parse, the call on the chain, JSON
  out), no HTTP, no threads. What the server could do at best.
- server: ``lnpmsg``'s ``ChainRpcServer`` on 127.0.0.1, driven by clients in
  other processes (Python's ``http.client``, keep-alive, basic auth, one
  request at a time each), with 1 and with 4 clients.

Calls: ``getblockcount`` (the smallest call: the HTTP and thread hop
dominate), ``getblock`` verbosity 0 and 1 of a block with 100 transactions.

Usage: ``python benchmarks/bench_chain_rpc.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.regtest import FAUCET_SCRIPT
from lnpmsg.chain.rpc_calls import ChainRpcCalls
from lnpmsg.chain.rpc_methods import handle_body
from lnpmsg.chain.rpc_server import ChainRpcServer

TXS_IN_BLOCK = 100
USER, PASSWORD = "bench", "bench"


def bodies(block_hex: str) -> dict[str, bytes]:
    return {
        "getblockcount": json.dumps({"method": "getblockcount", "params": [], "id": 1}).encode(),
        "getblock/0": json.dumps({"method": "getblock", "params": [block_hex, 0], "id": 1}).encode(),
        "getblock/1": json.dumps({"method": "getblock", "params": [block_hex, 1], "id": 1}).encode(),
    }


def client(port: int, body: bytes, seconds: float) -> None:
    """Run in a child process: POST ``body`` for ``seconds``; print the count."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Content-Type": "application/json",
    }
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        connection.request("POST", "/", body, headers)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise SystemExit(f"HTTP {reply.status}: {data[:200]!r}")
        count += 1
    print(count)


async def measure(quick: bool) -> list[dict[str, object]]:
    seconds = 1.0 if quick else 3.0
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="lnpmsg-bench-rpc-") as tmp:
        async with EmbeddedChainSource.open(Path(tmp) / "chain") as source:
            await source.mine(101)
            for _ in range(TXS_IN_BLOCK):
                await source.faucet(FAUCET_SCRIPT, 10_000)
            block_hash = hash_to_hex((await source.mine(1))[0])
            calls = ChainRpcCalls(source.core)
            table = calls.table()
            requests = bodies(block_hash)
            for name, body in requests.items():
                n = 0
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    status, _ = handle_body(table, body)
                    assert status == 200
                    n += 1
                rows.append({"call": name, "path": "floor: in-process, no HTTP", "calls_per_s": n / (time.perf_counter() - started)})
            server = ChainRpcServer(source, "127.0.0.1:0", user=USER, password=PASSWORD)
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                for name, body in requests.items():
                    for clients in (1, 4):
                        counts = await _run_clients(server.port, body, clients, seconds)
                        rows.append({"call": name, "path": f"HTTP server, {clients} client process(es)", "calls_per_s": sum(counts) / seconds})
                nursery.cancel_scope.cancel()
    return rows


async def _run_clients(port: int, body: bytes, clients: int, seconds: float) -> list[int]:
    argv = [sys.executable, __file__, "--client", str(port), body.decode(), str(seconds)]
    results: list[int] = []

    async def one() -> None:
        done = await trio.run_process(argv, capture_stdout=True)
        results.append(int(done.stdout))

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--client", nargs=3, metavar=("PORT", "BODY", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, body, seconds = args.client
        client(int(port), body.encode(), float(seconds))
        return
    rows = trio.run(measure, args.quick)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'call':<16} {'path':<34} {'calls/s':>10}")
    for row in rows:
        print(f"{row['call']:<16} {row['path']:<34} {row['calls_per_s']:>10.0f}")


if __name__ == "__main__":
    main()
