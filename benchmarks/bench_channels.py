"""Channels between two nodes: HTLC updates/s, next to their bounds; open time; memory.

Two nodes in one process, linked by the in-memory transport, each with a
wallet and the channel app on one embedded regtest chain, the channel store
on disk with fsync (persistence on). Measured in this one run:

- HTLC round trips/s: add -> commitment_signed <-> revoke_and_ack (both
  ways) -> fulfill -> commitment_signed <-> revoke_and_ack (both ways), one
  HTLC at a time, through the channel app's control calls.
- the signature bound: one round trip signs 4 commitments and 2 HTLC
  transactions and verifies as many; the ECDSA sign and verify rates
  measured here give the most round trips/s signatures alone allow.
- the fsync bound: one round trip makes 8 durable appends (each side sends
  two commitment_signed and two revoke_and_ack); the store's append+fsync
  time measured here gives the most round trips/s the disk allows.
- open: from ``fundchannel`` until both sides hold signed commitments and
  the funding is broadcast (no confirmations).
- memory per idle channel: Python heap (tracemalloc) of N channels
  restored from a log after the HTLC run (the core's state and its log).

Usage: ``python benchmarks/bench_channels.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lnpmsg.bitcoin.ecdsa import sign_digest, verify_digest  # noqa: E402
from lnpmsg.bitcoin.hashes import sha256  # noqa: E402
from lnpmsg.chain.embedded import EmbeddedChainSource  # noqa: E402
from lnpmsg.channels.app import ChannelsApp  # noqa: E402
from lnpmsg.channels.inputs import Record  # noqa: E402
from lnpmsg.channels.keys import pubkey_from_privkey  # noqa: E402
from lnpmsg.channels.manager import channel_secrets  # noqa: E402
from lnpmsg.channels.params import ChannelConfig  # noqa: E402
from lnpmsg.channels.state import Phase  # noqa: E402
from lnpmsg.channels.store import ChannelStore  # noqa: E402
from lnpmsg.node.identity import NodeKey  # noqa: E402
from lnpmsg.node.node import Node, NodeConfig  # noqa: E402
from lnpmsg.testing import MemoryNetwork  # noqa: E402
from lnpmsg.testing.nodes import running  # noqa: E402
from lnpmsg.wallet.app import ChainApp  # noqa: E402

SIGNS_PER_ROUND = 6
FSYNCS_PER_ROUND = 8


def node(network: MemoryNetwork, source: EmbeddedChainSource, directory: Path, listen: bool) -> Node:
    n = Node(NodeKey.generate(), NodeConfig(listen=["mem://"] if listen else [], network="regtest"), transports={"mem": network.transport()})
    n.mount(ChainApp(directory / "wallet", source=source))
    n.mount(ChannelsApp(directory / "channels", config=ChannelConfig(minimum_depth=1)))
    return n


def channel_of(n: Node):  # type: ignore[no-untyped-def]
    manager = n.apps["channels"].manager  # type: ignore[attr-defined]
    (c,) = [c for c in manager.channels.values() if c.phase is not Phase.NEW]
    return c


def quiet(n: Node, htlcs: int) -> bool:
    s = channel_of(n).core.state
    commit = s.local_commit
    return (s.phase is Phase.NORMAL and not s.local_changes.all() and not s.remote_changes.all()
            and s.remote_next_commit is None and commit is not None and len(commit.spec.htlcs) == htlcs)  # fmt: skip


async def until(check) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(120):
        while not check():
            await trio.sleep(0)


async def run_nodes(tmp: Path, rounds: int) -> dict[str, float]:
    network = MemoryNetwork()
    results: dict[str, float] = {}
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        a, b = node(network, source, tmp / "a", True), node(network, source, tmp / "b", False)
        async with running(a, b):
            wallet = a.apps["chain"].wallet  # type: ignore[attr-defined]
            await source.faucet(wallet.new_address(), 5_000_000)
            await source.mine(1)
            await wallet.sync()
            await b.connect(a.addresses[0])
            started = time.perf_counter()
            await a.apps["channels"].fundchannel(b.node_id.hex(), 2_000_000, push_msat=500_000_000)  # type: ignore[attr-defined]
            await until(lambda: channel_of(b).phase is Phase.AWAIT_READY)
            results["open_ms"] = (time.perf_counter() - started) * 1000
            await source.mine(1)
            await until(lambda: quiet(a, 0) and quiet(b, 0))
            cid = channel_of(a).channel_id.hex()
            started = time.perf_counter()
            for i in range(rounds):
                sender, receiver = (a, b) if i % 2 == 0 else (b, a)
                added = await sender.apps["channels"].dev_addhtlc(cid, 1_000_000, cltv_expiry=500)  # type: ignore[attr-defined]
                await until(lambda: quiet(sender, 1) and quiet(receiver, 1))  # noqa: B023
                await receiver.apps["channels"].dev_fulfill(cid, added["htlc_id"], added["preimage"])  # type: ignore[attr-defined]
                await until(lambda: quiet(sender, 0) and quiet(receiver, 0))  # noqa: B023
            results["htlc_rounds_per_s"] = rounds / (time.perf_counter() - started)
            log = channel_of(a).log
            results["memory_per_channel_bytes"] = memory_per_channel(channel_of(a).key, channel_of(a).core, log, a)
    return results


def memory_per_channel(key: str, core, log, n: Node, count: int = 100) -> float:  # type: ignore[no-untyped-def]
    seed = n.apps["channels"].manager.seed  # type: ignore[attr-defined]
    secrets = channel_secrets(seed, key)
    records, snapshot = log.records(), log.snapshot
    from lnpmsg.channels.records import encode_snapshot, restore_snapshot

    snap = snapshot if snapshot is not None else None
    data = encode_snapshot(core) if snap is None else snap
    del records
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cores = [restore_snapshot(secrets, data) for _ in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(cores) == count
    return (after - before) / count


def signature_bound(seconds: float) -> dict[str, float]:
    key = sha256(b"bench key")
    pub = pubkey_from_privkey(key)
    digest = sha256(b"digest")
    sig = sign_digest(key, digest)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sign_digest(key, digest)
        n += 1
    signs = n / (time.perf_counter() - started)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        verify_digest(pub, sig, digest)
        n += 1
    verifies = n / (time.perf_counter() - started)
    per_round = SIGNS_PER_ROUND / signs + SIGNS_PER_ROUND / verifies
    return {"signs_per_s": signs, "verifies_per_s": verifies, "signature_bound_rounds_per_s": 1 / per_round}


def fsync_bound(tmp: Path, count: int) -> float:
    store = ChannelStore(tmp / "fsync")
    with store.open("bench") as log:
        started = time.perf_counter()
        for i in range(count):
            log.append([Record(i, os.urandom(600), True)])
        per_append = (time.perf_counter() - started) / count
    return 1 / (FSYNCS_PER_ROUND * per_append)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = 20 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        results = trio.run(run_nodes, Path(tmp), rounds)
        results.update(signature_bound(0.3 if args.quick else 1.0))
        results["fsync_bound_rounds_per_s"] = fsync_bound(Path(tmp), 50 if args.quick else 300)
    if args.json:
        print(json.dumps(results))
        return
    print(f"HTLC round trips/s (add, sign, revoke, fulfill, sign, revoke): {results['htlc_rounds_per_s']:,.1f}")
    print(f"  bound by signatures ({SIGNS_PER_ROUND} signs + {SIGNS_PER_ROUND} verifies): {results['signature_bound_rounds_per_s']:,.1f}")
    print(f"  bound by fsync ({FSYNCS_PER_ROUND} durable appends): {results['fsync_bound_rounds_per_s']:,.1f}")
    print(f"open (fundchannel until both commitments signed, no confirmations): {results['open_ms']:,.1f} ms")
    print(f"memory per idle channel (core state, Python heap): {results['memory_per_channel_bytes'] / 1024:,.1f} KiB")


if __name__ == "__main__":
    main()
