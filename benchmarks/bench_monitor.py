"""The channel monitor with the largest commitment there is: 483 HTLCs.

Measured in this one run, in one process (numbers on a loaded machine are
only indicative):

- for each case, the time from the block holding the commitment reaching
  ``ChannelMonitor.block_connected`` to every claim valid in the next block
  built and signed (``transactions_to_broadcast``), and the signed sweeps
  (transaction inputs) per second that makes:
  - ``revoked``: their revoked commitment, one penalty spending every
    revocable output (to_local and 483 HTLCs);
  - ``ours``: our commitment, 483 received HTLCs whose preimages we hold:
    483 HTLC-success transactions (the peer's signatures checked into place,
    ours made);
  - ``theirs``: their commitment, 483 HTLCs they offered, claimed with the
    preimages: 483 claim transactions;
- the floor: raw ECDSA signatures/s of coincurve (libsecp256k1) alone.

Usage: ``python benchmarks/bench_monitor.py [--quick] [--json] [--e2e]`` (``--e2e``: also end to end between two
nodes, from their commitment being mined to every claim broadcast: ``bench_onchain.py``)
"""

from __future__ import annotations

import argparse
import json
import time

import coincurve

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.channels import Htlc
from lnpmsg.channels.monitor import ChannelMonitor, PaymentPreimage
from lnpmsg.testing.channels import secret
from lnpmsg.testing.monitor import ALICE, BOB, ChannelKit, State, secrets_of

MAX_HTLCS = 483
FUNDING_SAT = 100_000_000
HTLC_SAT = 20_000
BASE = 800_000


def preimage(i: int) -> bytes:
    return secret(f"bench preimage {i}")


def channel(count: int, alice_offers: bool) -> tuple[ChannelKit, State, State]:
    kit = ChannelKit(OutPoint(sha256(b"bench funding"), 0), FUNDING_SAT, anchors=False, to_self_delay=144)
    htlcs = tuple(
        Htlc(i, alice_offers, HTLC_SAT * 1000, sha256(preimage(i)), BASE + 100 + i % 50) for i in range(count)
    )
    locked = count * HTLC_SAT * 1000
    alice = (FUNDING_SAT * 1000 - locked) // 2
    bob = FUNDING_SAT * 1000 - locked - alice
    one = State(alice, bob, htlcs)
    two = State(alice + locked, bob)
    return kit, one, two


def run_case(name: str, count: int) -> dict[str, float | int | str]:
    preimages = [PaymentPreimage(preimage(i)) for i in range(count)]
    if name == "revoked":
        kit, one, two = channel(count, alice_offers=True)
        records = [kit.remote_record(BOB, 1, one), kit.remote_record(BOB, 2, two), kit.revocation(BOB, 1)]
        monitor = ChannelMonitor(secrets_of(BOB), kit.updates(BOB, records))
        tx = kit.signed_commitment(ALICE, 1, one)
    elif name == "ours":
        kit, one, _ = channel(count, alice_offers=False)  # Bob offers: Alice received them all
        records = [kit.local_record(ALICE, 1, one), kit.remote_record(ALICE, 1, one), *preimages]
        monitor = ChannelMonitor(secrets_of(ALICE), kit.updates(ALICE, records))
        tx = kit.signed_commitment(ALICE, 1, one)
    else:
        kit, one, _ = channel(count, alice_offers=False)  # Bob offers on his commitment: Alice claims
        records = [kit.local_record(ALICE, 1, one), kit.remote_record(ALICE, 1, one), *preimages]
        monitor = ChannelMonitor(secrets_of(ALICE), kit.updates(ALICE, records))
        tx = kit.signed_commitment(BOB, 1, one)
    monitor.block_connected(BASE, [])
    start = time.perf_counter()
    monitor.block_connected(BASE + 1, [tx])
    txs = monitor.transactions_to_broadcast()
    elapsed = time.perf_counter() - start
    inputs = sum(len(t.inputs) for t in txs)
    assert inputs >= count, (name, inputs)
    return {"case": name, "htlcs": count, "txs": len(txs), "inputs_signed": inputs,
            "seconds": round(elapsed, 4), "sweeps_per_s": round(inputs / elapsed, 1)}  # fmt: skip


def raw_signs_per_second(seconds: float) -> float:
    key = coincurve.PrivateKey(secret("bench key"))
    digest = sha256(b"bench")
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            key.sign(digest, hasher=None)
        count += 100
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 HTLCs instead of 483")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--e2e", action="store_true",
                        help="also end to end between two nodes: the commitment mined -> every claim broadcast "
                             "(benchmarks/bench_onchain.py)")  # fmt: skip
    args = parser.parse_args()
    count = 100 if args.quick else MAX_HTLCS
    rows = [run_case(name, count) for name in ("revoked", "ours", "theirs")]
    floor = raw_signs_per_second(0.3 if args.quick else 1.0)
    e2e = _end_to_end(count) if args.e2e else None
    if args.json:
        print(json.dumps({"cases": rows, "raw_ecdsa_signs_per_s": round(floor, 1), "end_to_end": e2e}, indent=2))
        return
    print(f"{'case':8} {'htlcs':>5} {'txs':>5} {'inputs':>6} {'seconds':>8} {'sweeps/s':>9}")
    for row in rows:
        print(f"{row['case']:8} {row['htlcs']:>5} {row['txs']:>5} {row['inputs_signed']:>6} "
              f"{row['seconds']:>8} {row['sweeps_per_s']:>9}")  # fmt: skip
    print(f"floor: coincurve raw ECDSA signs/s {floor:,.0f}")
    if e2e is not None:
        print(f"end to end, two nodes: {e2e['htlcs']} HTLCs, their commitment mined -> every claim broadcast "
              f"{e2e['commitment_to_every_claim_s']} s ({e2e['claims_per_s']} claims/s)")  # fmt: skip


def _end_to_end(count: int) -> dict[str, object]:
    """bench_onchain.py's run (two nodes, the embedded chain, the channel app's monitors)."""
    import tempfile
    from pathlib import Path

    import trio
    from bench_onchain import run  # benchmarks/ is the script's directory

    with tempfile.TemporaryDirectory() as tmp:
        return trio.run(run, Path(tmp), count)  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
