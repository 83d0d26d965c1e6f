"""BOLT-4 onion benchmark: constructions/s and peels/s, next to their floor.

The floor is measured in the same run with the same libraries: per hop, one
ECDH (coincurve), the ChaCha20 stream of 1300 bytes (``cryptography``) and
one HMAC-SHA256 over 1300 bytes plus the associated data: the work Sphinx
cannot avoid. A construction of N hops is compared with N times that, a
peel with one. Rows (each the best of ``--rounds`` interleaved rounds):

- construct 20 hops / 1 hop: ``construct_onion`` with 20 / 1 payloads of
  the size a forwarding hop's payload has (about 20 bytes);
- peel (forward) / peel (final): ``peel_onion`` by the first hop of a
  20-hop onion, and by the only hop of a 1-hop onion;
- process (final): ``process_onion`` (peel + parse + reader checks).

Sphinx itself needs a second elliptic-curve operation per hop that the floor
leaves out: the sender derives each hop's blinded ephemeral key, a
forwarding hop blinds the key for the next one. So about half the floor is
the expected figure for construction and forwarding peels; a final peel
(no next key) should come close to the floor.

The ratio to the floor is each round's own (the floor is measured right
before each case); the table gives its median and lowest round. Figures on
a shared, loaded machine move a lot between runs: compare ratios, not rates.

Usage: ``python benchmarks/bench_onion.py [--quick] [--rounds N] [--json]``
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import time
from collections.abc import Callable

import coincurve
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from lnpmsg.payments.onion import HopPayload, construct_onion, peel_onion, process_onion
from lnpmsg.wire.primitives import ShortChannelId

_ZERO_NONCE = bytes(16)


def _floor_hop(key: coincurve.PrivateKey, pubkey: bytes, data: bytes, assoc: bytes) -> None:
    secret = key.ecdh(pubkey)
    Cipher(algorithms.ChaCha20(secret, _ZERO_NONCE), mode=None).encryptor().update(data)
    hmac.digest(secret, data + assoc, "sha256")


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short slices (a smoke run)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best counts (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    seconds = 0.1 if args.quick else 0.5

    payment_hash = hashlib.sha256(b"bench").digest()
    keys = [coincurve.PrivateKey(hashlib.sha256(b"node %d" % i).digest()) for i in range(20)]
    pubkeys = [k.public_key.format() for k in keys]
    session = os.urandom(32)
    forward = [HopPayload.forward(1_000_000, 800_000, ShortChannelId(700_000, i, 0)).encode() for i in range(19)]
    final = HopPayload.final(1_000_000, 800_000, payment_secret=os.urandom(32)).encode()
    payloads_20 = [*forward, final]
    onion_20 = construct_onion(session, pubkeys, payloads_20, payment_hash).packet
    onion_1 = construct_onion(session, pubkeys[:1], [final], payment_hash).packet
    data = os.urandom(1300)
    ephemeral = coincurve.PrivateKey(session)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "construct 20 hops": (lambda: construct_onion(session, pubkeys, payloads_20, payment_hash), 20),
        "construct 1 hop": (lambda: construct_onion(session, pubkeys[:1], [final], payment_hash), 1),
        "peel (forward)": (lambda: peel_onion(keys[0], onion_20, payment_hash), 1),
        "peel (final)": (lambda: peel_onion(keys[0], onion_1, payment_hash), 1),
        "process (final)": (lambda: process_onion(keys[0], onion_1, payment_hash), 1),
    }
    # the floor is measured right before each case, every round, so each ratio
    # compares two figures from the same few seconds of a shared machine
    floor = lambda: _floor_hop(ephemeral, pubkeys[1], data, payment_hash)  # noqa: E731
    floor_best = 0.0
    best = dict.fromkeys(cases, 0.0)
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fn, hops) in cases.items():
            limit = _rate(floor, seconds)
            rate = _rate(fn, seconds)
            floor_best = max(floor_best, limit)
            best[name] = max(best[name], rate)
            ratios[name].append(rate / (limit / hops))

    rows = []
    for name, (_fn, hops) in cases.items():
        rows.append(
            {
                "case": name,
                "per_s": round(best[name], 1),
                "floor_per_s": round(floor_best / hops, 1),
                "of_floor_median": round(statistics.median(ratios[name]), 3),
                "of_floor_lowest": round(min(ratios[name]), 3),
            }
        )
    if args.json:
        print(json.dumps({"floor_hops_per_s": round(floor_best, 1), "rows": rows}, indent=2))
        return
    print(f"floor: {floor_best:,.0f} hops/s (ECDH + ChaCha20 1300 B + HMAC, per hop)")
    print(f"{'case':<20} {'best/s':>10} {'floor/s':>10} {'of floor (median, lowest round)':>32}")
    for row in rows:
        ratio = f"{row['of_floor_median']:.0%}, {row['of_floor_lowest']:.0%}"
        print(f"{row['case']:<20} {row['per_s']:>10,.0f} {row['floor_per_s']:>10,.0f} {ratio:>32}")


if __name__ == "__main__":
    main()
