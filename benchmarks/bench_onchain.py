"""Channels on chain end to end: a commitment with many HTLCs appears on chain -> every claim broadcast.

Two nodes in one process (in-memory transport, one embedded regtest chain,
each with a wallet and the channel app with its monitors). Alice offers N
HTLCs to Bob (committed), Bob's monitor gets every preimage
(``dev_preimage``), Alice force-closes. Measured in this one run (numbers
on a loaded machine are only indicative):

- the time from the block holding Alice's commitment being mined to Bob's
  node having broadcast a claim for every HTLC (its monitor fed the full
  block from the chain subscription, built and signed N preimage claims,
  the chain accepted each into its mempool);
- claims broadcast per second that makes (signing, consensus checks and
  mempool admission in the embedded chain included);
- for scale, the setup: N HTLCs committed through the control calls.

Usage: ``python benchmarks/bench_onchain.py [--htlcs N] [--json]`` (N up to 483, the default)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp

FUNDING_SAT = 10_000_000
HTLC_MSAT = 10_000_000
WAIT = 600.0


def _node(tmp: Path, name: str, network: MemoryNetwork, source: EmbeddedChainSource, listen: bool) -> Node:
    node = Node(NodeKey.generate(), NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
                transports={"mem": network.transport()})  # fmt: skip
    node.mount(ChainApp(tmp / name / "wallet", source=source))
    config = ChannelConfig(minimum_depth=1, to_self_delay=6, max_accepted_htlcs=483)
    node.mount(ChannelsApp(tmp / name / "channels", config=config))
    return node


def _channel(node: Node) -> Any:
    (channel,) = [c for c in node.apps["channels"].manager.channels.values() if c.phase is not Phase.NEW]  # type: ignore[attr-defined]
    return channel


async def _until(condition: Any) -> None:
    with trio.fail_after(WAIT):
        while not condition():
            await trio.sleep(0.01)


async def run(tmp: Path, count: int) -> dict[str, Any]:
    network = MemoryNetwork()
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        alice, bob = _node(tmp, "alice", network, source, True), _node(tmp, "bob", network, source, False)
        async with running(alice, bob):
            a_chan, b_chan = alice.apps["channels"], bob.apps["channels"]
            await source.faucet(alice.apps["chain"].wallet.new_address(), 20_000_000)  # type: ignore[attr-defined]
            await source.mine(1)
            await alice.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            await bob.connect(alice.addresses[0])
            opened = await a_chan.fundchannel(bob.node_id.hex(), FUNDING_SAT, channel_type="static_remotekey")  # type: ignore[attr-defined]
            await source.mine(1)
            await _until(lambda: _channel(alice).phase is Phase.NORMAL and _channel(bob).phase is Phase.NORMAL)
            cid = opened["channel_id"]
            expiry = (await source.tip()).height + 500
            started = time.perf_counter()
            preimages = []
            for _ in range(count):
                added = await a_chan.dev_addhtlc(cid, HTLC_MSAT, cltv_expiry=expiry)  # type: ignore[attr-defined]
                preimages.append(added["preimage"])

            def committed() -> bool:
                s = _channel(bob).core.state
                return len(s.local_commit.spec.htlcs) == count and not s.remote_changes.all() and s.remote_next_commit is None

            await _until(committed)
            setup = time.perf_counter() - started
            for preimage in preimages:
                await b_chan.dev_preimage(cid, preimage)  # type: ignore[attr-defined]
            await a_chan.closechannel(cid, force=True)  # type: ignore[attr-defined]
            onchain = b_chan.onchain  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            await source.mine(1)
            tip = (await source.tip()).height

            def claimed() -> bool:
                status = onchain.status(_channel(bob))
                if onchain.done_height != tip or status is None:
                    return False
                return sum(1 for o in status["outputs"] if o["what"].startswith("htlc") and o["state"] == "broadcast") == count

            await _until(claimed)
            elapsed = time.perf_counter() - t0
            await source.mine(1)  # every claim is accepted by the consensus engine
            return {"htlcs": count, "setup_s": round(setup, 2), "commitment_to_every_claim_s": round(elapsed, 3),
                    "claims_per_s": round(count / elapsed, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--htlcs", type=int, default=483, help="HTLCs in the commitment (default and most: 483)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = trio.run(run, Path(tmp), min(args.htlcs, 483))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['htlcs']} HTLCs committed in {result['setup_s']} s; their commitment mined -> every preimage "
              f"claim broadcast: {result['commitment_to_every_claim_s']} s ({result['claims_per_s']} claims/s)")


if __name__ == "__main__":
    main()
