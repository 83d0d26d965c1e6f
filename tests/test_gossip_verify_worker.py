"""The signature workers' verdicts are exact: every record's answer is known by construction.

Records of every kind a peer could send (valid signatures, flipped bits,
another digest, another key, high S, out-of-range scalars, keys that are no
point of the curve, fields of the wrong size), keys recurring with and
without the cache flag, go through ``verify_blob`` frame by frame with one
verifier (as a worker runs them, its key cache small enough to be trimmed),
through the in-process ``verify_many``, and through a real pool of worker
processes; all three must give the verdict the record was built to have.
"""

from __future__ import annotations

import random

import coincurve
import trio

from lnpmsg.gossip.pipeline import VerifyPool, pack_checks, unpack_verdicts
from lnpmsg.gossip.sign import public_key, sign_digest
from lnpmsg.gossip.verify import SigCheck, SignatureVerifier, double_sha256
from lnpmsg.gossip.verify_worker import RECORD_SIZE, verify_blob

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KINDS = ("valid", "bad signature", "other digest", "other key", "high S", "scalars out of range", "not a point", "bad prefix", "short field")


def not_points(rng: random.Random, n: int) -> list[bytes]:
    """Compressed encodings (02/03 prefix) whose x has no point on the curve."""
    out = []
    while len(out) < n:
        candidate = bytes([rng.choice((2, 3))]) + rng.randbytes(32)
        try:
            coincurve.PublicKey(candidate)
        except ValueError:
            out.append(candidate)
    return out


def records(seed: int, count: int) -> tuple[list[SigCheck], list[bool]]:
    """``count`` checks over a few recurring keys, and the verdict each must get."""
    rng = random.Random(seed)
    secrets = [rng.randbytes(31) + b"\x01" for _ in range(12)]
    keys = [public_key(s) for s in secrets]
    bad_keys = not_points(rng, 3)
    checks: list[SigCheck] = []
    expected: list[bool] = []
    for i in range(count):
        kind = rng.choice(KINDS)
        n = rng.randrange(len(secrets))
        digest = double_sha256(rng.randbytes(40))
        signature = sign_digest(secrets[n], digest)
        key = keys[n]
        if kind == "bad signature":
            bit = rng.randrange(512)
            signature = bytearray(signature)
            signature[bit // 8] ^= 1 << (bit % 8)
            signature = bytes(signature)
        elif kind == "other digest":
            digest = double_sha256(digest)
        elif kind == "other key":
            key = keys[(n + rng.randrange(1, len(keys))) % len(keys)]
        elif kind == "high S":
            signature = signature[:32] + (ORDER - int.from_bytes(signature[32:], "big")).to_bytes(32, "big")
        elif kind == "scalars out of range":
            signature = rng.choice((b"\xff" * 64, signature[:32] + ORDER.to_bytes(32, "big"), bytes(32) + signature[32:]))
        elif kind == "not a point":
            key = rng.choice(bad_keys)
        elif kind == "bad prefix":
            key = bytes([rng.choice((0, 4, 5, 6))]) + key[1:]
        elif kind == "short field":
            digest, signature, key = rng.choice(((digest[:31], signature, key), (digest, signature[:63], key), (digest, signature, key[:32])))
        checks.append(SigCheck(digest, signature, key, f"{i}: {kind}", rng.random() < 0.6))
        expected.append(kind == "valid")
    # Keys recur with and without the cache flag, so hits follow misses, a key not kept is
    # parsed again next time, and the bad keys come back.
    assert {c.key for c in checks if c.cache} & {c.key for c in checks if not c.cache}
    return checks, expected


def in_frames(checks: list[SigCheck], rng: random.Random) -> list[list[SigCheck]]:
    frames, i = [], 0
    while i < len(checks):
        size = rng.randrange(1, 200)
        frames.append(checks[i : i + size])
        i += size
    return frames


def test_worker_verdicts_are_the_ones_each_record_was_built_to_get() -> None:
    for seed in range(4):
        checks, expected = records(seed, 1500)
        assert sum(expected) > 100 and len(expected) - sum(expected) > 1000
        # a worker: one verifier across frames; a cache of 5 keys (12 in use) is trimmed often
        verifier = SignatureVerifier(max_cached_keys=5)
        got: list[bool] = []
        for frame in in_frames(checks, random.Random(seed)):
            blob = pack_checks(frame)
            assert len(blob) == RECORD_SIZE * len(frame)
            got += unpack_verdicts(verify_blob(verifier, blob), len(frame))
            assert len(verifier) <= 5
        assert verifier.checked == len(checks)
        mismatches = [c.label for c, ok, want in zip(checks, got, expected, strict=True) if ok != want]
        assert not mismatches, mismatches[:10]
        # the in-process path, with its own cache
        assert SignatureVerifier(max_cached_keys=5).verify_many(checks) == expected


def test_a_key_is_judged_anew_at_each_record() -> None:
    """A valid key once seen with a bad signature still verifies its good ones; an invalid key
    stays invalid after a valid one was parsed in the same place (kept or not)."""
    secret = b"\x07" * 32
    key, other = public_key(secret), public_key(b"\x08" * 32)
    (not_point,) = not_points(random.Random(1), 1)
    digest = double_sha256(b"update")
    good = sign_digest(secret, digest)
    bad = good[:63] + bytes([good[63] ^ 1])
    for cache in (True, False):
        checks = [
            SigCheck(digest, bad, key, "bad first", cache),
            SigCheck(digest, good, key, "then good", cache),
            SigCheck(digest, good, not_point, "not a point after a parsed key", cache),
            SigCheck(digest, good, key, "good again", cache),
            SigCheck(digest, good, not_point, "not a point, again", cache),
            SigCheck(digest, good, other, "another valid key", cache),
        ]
        verifier = SignatureVerifier()
        verdicts = verify_blob(verifier, pack_checks(checks)) + verify_blob(verifier, pack_checks(checks))
        assert verdicts == bytes([0, 1, 0, 1, 0, 0]) * 2
        assert len(verifier) == (2 if cache else 0)  # only the valid keys, and only when kept


async def test_worker_processes_give_the_same_verdicts() -> None:
    checks, expected = records(99, 2000)
    with trio.fail_after(60):
        async with VerifyPool(2, SignatureVerifier(), min_checks=1) as pool:
            assert await pool.verify(checks) == expected
            assert await pool.verify(checks[::-1]) == expected[::-1]
            assert pool.checked_remote == 2 * len(checks)


def test_a_worker_whose_parent_stopped_reading_ends_quietly(capfd) -> None:
    """A parent that closed its end of the worker's stdout has no use for the answer: the
    worker's write finding no reader is no error to print on the node's stderr (which the
    worker shares: captured here at the descriptor)."""
    (worker,) = VerifyPool(1, SignatureVerifier())._spawn()
    process = worker.process
    assert process.stdin is not None and process.stdout is not None
    process.stdout.close()  # nobody reads the answer
    process.stdin.write((RECORD_SIZE * 3).to_bytes(4, "big") + bytes(RECORD_SIZE * 3))
    process.stdin.close()
    assert process.wait(60) == 0
    assert capfd.readouterr().err == ""
