"""Channel transactions and the embedded chain: how fast, next to their limit.

Everything is measured in this one run, on this machine, in one process:

- commitments/s with N HTLCs (0, 10, 100, 483): ``build_commitment`` (the
  extensions, fee and trimming, BIP69 order, every HTLC-success/timeout
  plan) plus the signatures one ``commitment_signed`` carries: one for the
  commitment and one per HTLC transaction. Also the build alone.
- signatures: ECDSA verifies/s of coincurve (libsecp256k1) alone, the limit
  of any signature checking in Python; lnpmsg's ``verify_digest`` (strict
  DER parse on top) and ``sign_digest``. ``limit`` in the first table is the
  signing rate divided by the signatures a commitment needs.
- blocks/s of the embedded chain (Bitcoin Core's consensus engine through
  py-bitcoinkernel): empty blocks (``mine``), and blocks of 100 signed
  P2WPKH spends (``submit_transactions_in_block``: build, proof of work,
  full validation with 100 signature checks, lnpmsg's index and block log).

Usage: ``python benchmarks/bench_chain.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

import coincurve

from lnpmsg.bitcoin.ecdsa import sign_digest, verify_digest
from lnpmsg.bitcoin.hashes import hash160, sha256
from lnpmsg.bitcoin.script import p2pkh_script, p2wpkh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT, RegtestChain
from lnpmsg.channels import (
    ChannelBasepoints,
    CommitmentContext,
    CommitmentKeys,
    Htlc,
    bolt3_extensions,
    build_commitment,
)
from lnpmsg.channels.keys import (
    commitment_obscuring_factor,
    derive_privkey,
    per_commitment_point,
    pubkey_from_privkey,
)

#: BOLT 2's ceiling on HTLCs one side may offer: the largest commitment there is
MAX_ACCEPTED_HTLCS = 483
HTLC_COUNTS = (0, 10, 100, MAX_ACCEPTED_HTLCS)
FUNDING_SAT = 10 * 100_000_000
HTLC_SAT = 100_000
TXS_PER_BLOCK = 100


def secret(label: str) -> bytes:
    return sha256(label.encode())


def basepoints(name: str) -> ChannelBasepoints:
    return ChannelBasepoints(
        *(pubkey_from_privkey(secret(f"{name}/{role}")) for role in ("funding", "revocation", "payment", "delayed", "htlc"))
    )


def commitment_context(n_htlcs: int) -> tuple[CommitmentContext, list[Htlc]]:
    """Alice's commitment with ``n_htlcs`` HTLCs, half offered, half received, none trimmed."""
    alice, bob = basepoints("alice"), basepoints("bob")
    point = per_commitment_point(secret("alice/commitment 42"))
    htlcs = [Htlc(i, i % 2 == 0, HTLC_SAT * 1000, sha256(i.to_bytes(4, "big")), 800_000 + i) for i in range(n_htlcs)]
    locked = n_htlcs * HTLC_SAT * 1000
    ctx = CommitmentContext(
        funding_outpoint=OutPoint(sha256(b"funding"), 0),
        funding_sat=FUNDING_SAT,
        keys=CommitmentKeys.derive(point, alice, bob),
        commitment_number=42,
        obscuring_factor=commitment_obscuring_factor(alice.payment_basepoint, bob.payment_basepoint),
        owner_is_funder=True,
        to_local_msat=(FUNDING_SAT * 1000 - locked) // 2,
        to_remote_msat=(FUNDING_SAT * 1000 - locked) - (FUNDING_SAT * 1000 - locked) // 2,
        feerate_per_kw=2_500,
        dust_limit_sat=546,
        to_self_delay=144,
    )
    return ctx, htlcs


def rate(fn: Callable[[], object], min_seconds: float, min_rounds: int = 3) -> float:
    """Calls of ``fn`` per second, over at least ``min_seconds`` and ``min_rounds`` calls."""
    fn()  # warm up
    rounds = 0
    start = time.perf_counter()
    while True:
        fn()
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and rounds >= min_rounds:
            return rounds / elapsed


def bench_commitments(n_htlcs: int, anchors: bool, seconds: float) -> dict[str, float]:
    """Bob's side of ``commitment_signed`` for Alice's commitment: build it, sign it and every HTLC transaction."""
    ctx, htlcs = commitment_context(n_htlcs)
    extensions = bolt3_extensions(htlcs, anchors=anchors)
    bob_funding = secret("bob/funding")
    bob_htlc = derive_privkey(secret("bob/htlc"), ctx.keys.per_commitment_point)

    def build() -> object:
        return build_commitment(ctx, extensions)

    def build_and_sign() -> int:
        commitment = build_commitment(ctx, extensions)
        signatures = [commitment.plan.sign(0, "remote_funding", bob_funding)]
        signatures += [plan.sign(0, "remote_htlc", bob_htlc) for plan in commitment.second_stage]
        return len(signatures)

    signatures = build_and_sign()
    assert signatures == n_htlcs + 1
    return {"built_per_s": rate(build, seconds), "signed_per_s": rate(build_and_sign, seconds), "signatures": signatures}


def bench_signatures(count: int) -> dict[str, float]:
    key = coincurve.PrivateKey(secret("bench key"))
    pubkey = key.public_key.format()
    digests = [sha256(i.to_bytes(4, "big")) for i in range(count)]
    signatures = [key.sign(d, hasher=None) for d in digests]
    parsed = coincurve.PublicKey(pubkey)

    start = time.perf_counter()
    for d, s in zip(digests, signatures, strict=True):
        parsed.verify(s, d, hasher=None)
    raw = count / (time.perf_counter() - start)

    start = time.perf_counter()
    for d, s in zip(digests, signatures, strict=True):
        verify_digest(pubkey, s, d)
    ours = count / (time.perf_counter() - start)

    secret_bytes = secret("bench key")
    start = time.perf_counter()
    for d in digests:
        sign_digest(secret_bytes, d)
    signing = count / (time.perf_counter() - start)
    return {"coincurve_verify_per_s": raw, "lnpmsg_verify_per_s": ours, "lnpmsg_sign_per_s": signing}


def bench_chain(empty_blocks: int, full_blocks: int) -> dict[str, float]:
    key = secret("bench wallet")
    pubkey = pubkey_from_privkey(key)
    script_pubkey = p2wpkh(pubkey)
    script_code = p2pkh_script(hash160(pubkey))
    with tempfile.TemporaryDirectory(prefix="lnpmsg-bench-") as tmp, RegtestChain(tmp) as chain:
        chain.mine(101)
        start = time.perf_counter()
        chain.mine(empty_blocks)
        empty = empty_blocks / (time.perf_counter() - start)

        # one fan-out transaction makes the coins every later block spends, one each per transaction
        coins_needed = TXS_PER_BLOCK * full_blocks
        coin_sat = 10_000
        funding = chain.faucet(FAUCET_SCRIPT, coins_needed * coin_sat + 100_000)
        chain.mine(1)
        fan_out = Tx(
            2,
            (TxIn(funding, sequence=SEQUENCE_RBF, witness=(FAUCET_WITNESS_SCRIPT,)),),
            tuple(TxOut(coin_sat, script_pubkey) for _ in range(coins_needed)),
        )
        assert chain.submit_transactions_in_block([fan_out]).accepted

        def spend(vout: int) -> Tx:
            unsigned = Tx(2, (TxIn(fan_out.outpoint(vout), sequence=SEQUENCE_RBF),), (TxOut(coin_sat - 500, FAUCET_SCRIPT),))
            digest = segwit_v0_sighash(unsigned, 0, script_code, coin_sat, SIGHASH_ALL)
            return unsigned.with_witness(0, (sign_digest(key, digest, low_r=True) + bytes([SIGHASH_ALL]), pubkey))

        blocks = [[spend(b * TXS_PER_BLOCK + i) for i in range(TXS_PER_BLOCK)] for b in range(full_blocks)]
        start = time.perf_counter()
        for txs in blocks:
            result = chain.submit_transactions_in_block(txs)
            assert result.accepted, result.reason
        full = full_blocks / (time.perf_counter() - start)
    return {"empty_blocks_per_s": empty, "blocks_100tx_per_s": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.5

    results: dict[str, object] = {}
    commitments: dict[str, dict[str, float]] = {}
    for anchors in (False, True):
        for n in HTLC_COUNTS:
            commitments[f"{'anchors' if anchors else 'static_remotekey'}/{n}"] = bench_commitments(n, anchors, seconds)
    results["commitments"] = commitments
    signatures = bench_signatures(2_000 if args.quick else 10_000)
    results["signatures"] = signatures
    results["chain"] = bench_chain(200 if args.quick else 1_000, 5 if args.quick else 20)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, one process\n")
    print("| commitments/s | HTLCs | signatures | built | built + signed | limit (sign rate / signatures) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in commitments.items():
        kind, n = name.split("/")
        limit = signatures["lnpmsg_sign_per_s"] / row["signatures"]
        print(
            f"| {kind} | {n} | {row['signatures']:.0f} | {row['built_per_s']:,.1f} | {row['signed_per_s']:,.1f} |"
            f" {limit:,.1f} |"
        )
    print()
    print("| signatures/s | |")
    print("| --- | ---: |")
    print(f"| coincurve verify (libsecp256k1, the limit) | {signatures['coincurve_verify_per_s']:,.0f} |")
    print(f"| lnpmsg verify_digest (strict DER + verify) | {signatures['lnpmsg_verify_per_s']:,.0f} |")
    print(f"| lnpmsg sign_digest (RFC 6979, low S) | {signatures['lnpmsg_sign_per_s']:,.0f} |")
    print()
    chain = results["chain"]
    assert isinstance(chain, dict)
    print("| embedded chain (kernel validation) | blocks/s |")
    print("| --- | ---: |")
    print(f"| empty blocks (mine) | {chain['empty_blocks_per_s']:,.0f} |")
    print(f"| blocks of {TXS_PER_BLOCK} signed P2WPKH spends | {chain['blocks_100tx_per_s']:,.1f} |")


if __name__ == "__main__":
    main()
