"""Gossip ingest on every core: signature checks in worker processes (the I/O shell).

Why processes: coincurve releases the GIL inside each libsecp256k1 call, so
verify threads do run next to the event loop, but every check has to take
the GIL back (to loop, unpack, store its result) while the event loop holds
it for BOLT-8 decryption, decoding, the graph's decisions and the store:
the threads queue for the GIL after each ~30 us call and ingest stays near
one core. A worker process has its own interpreter and GIL.

What crosses the process boundary is compact and copy-once, with no pickle:

- to a worker: one blob per batch, one fixed-size record per check
  (:data:`RECORD_SIZE` bytes: a cache flag, the 32-byte digest, the 64-byte
  signature, the 33-byte key);
- back: one byte per check (1: the signature holds).

Parsing, deduplication and every accept/ignore/reject decision stay in the
sans-IO :class:`~lnpmsg.gossip.graph.Graph` on the event loop: the workers
only answer "does this signature hold", so the graph decides exactly as it
does with in-process checks (``tests/test_gossip_pipeline.py`` compares
both on the same input). Each worker keeps its own cache of parsed node
keys (:class:`~lnpmsg.gossip.verify.SignatureVerifier`).

:class:`VerifyPool` starts its workers lazily (the first batch big enough
to be worth the trip) and, should a worker die, logs it and checks the
batch in this process instead: gossip never stalls on the pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import trio
from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
from coincurve.context import GLOBAL_CONTEXT

from lnpmsg.gossip.verify import SigCheck, SignatureVerifier

__all__ = ["RECORD_SIZE", "Verdicts", "VerifyPool", "pack_checks", "unpack_verdicts", "verify_blob"]

log = logging.getLogger(__name__)

#: cache flag (1) + digest (32) + compact signature (64) + compressed key (33)
RECORD_SIZE = 1 + 32 + 64 + 33
_ZERO_KEY = bytes(33)
#: seconds a worker gets to exit after its pipe closes, before it is terminated
_STOP_GRACE = 2.0


def pack_checks(checks: Sequence[SigCheck]) -> bytes:
    """One record per check. A field of the wrong size becomes zeros: such a check
    fails in the worker (a zero key is not a point), as it does in process."""
    parts = []
    for digest, signature, key, _, cache in checks:
        if len(digest) != 32 or len(signature) != 64 or len(key) != 33:
            digest, signature, key = bytes(32), bytes(64), _ZERO_KEY
        parts.append(b"\x01" if cache else b"\x00")
        parts.append(digest)
        parts.append(signature)
        parts.append(key)
    return b"".join(parts)


def verify_blob(verifier: SignatureVerifier, blob: bytes) -> bytes:
    """The worker's job: the verdicts (one byte each) of a blob of packed checks.

    The same libsecp256k1 calls as :meth:`SignatureVerifier.verify_many`, straight
    from the records (no per-check objects: the worker's share of a core is spent
    in the library)."""
    if len(blob) % RECORD_SIZE:
        raise ValueError(f"a blob of checks is {len(blob)} bytes, not a multiple of {RECORD_SIZE}")
    sig = ffi.new("secp256k1_ecdsa_signature *")
    parse_sig = lib.secp256k1_ecdsa_signature_parse_compact
    verify = lib.secp256k1_ecdsa_verify
    public_key = verifier.public_key
    ctx = GLOBAL_CONTEXT.ctx
    out = bytearray(len(blob) // RECORD_SIZE)
    for n, i in enumerate(range(0, len(blob), RECORD_SIZE)):
        parsed = public_key(blob[i + 97 : i + RECORD_SIZE], blob[i] == 1)
        if parsed is not None and parse_sig(ctx, sig, blob[i + 33 : i + 97]) == 1 and verify(ctx, sig, blob[i + 1 : i + 33], parsed) == 1:
            out[n] = 1
    verifier.checked += len(out)
    return bytes(out)


def unpack_verdicts(data: bytes, expected: int) -> list[bool]:
    """A worker's answer as booleans; a short or long answer is an error, never a guess."""
    if len(data) != expected:
        raise ValueError(f"a verify worker answered {len(data)} verdicts for {expected} checks")
    return [b == 1 for b in data]


def _worker_main(conn: Connection) -> None:
    """A worker process: blobs in, verdicts out, until the pipe closes."""
    # Ctrl-C is the parent's to handle: it closes the pipes when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    verifier = SignatureVerifier()
    try:
        while True:
            try:
                blob = conn.recv_bytes()
            except EOFError:
                return
            conn.send_bytes(verify_blob(verifier, blob))
    except KeyboardInterrupt:
        return


class Verdicts:
    """The signature checks of one prepared batch and, once known, their results.

    The stage that prepares a batch creates it and starts :meth:`fill`; the
    stage that commits batches (in order) waits for it with :meth:`wait`.
    """

    def __init__(self, checks: list[SigCheck]) -> None:
        self.checks = checks
        self._results: list[bool] | None = None
        self._error: BaseException | None = None
        self._done = trio.Event()

    def set(self, results: list[bool]) -> None:
        self._results = results
        self._done.set()

    async def fill(self, verify: Callable[[list[SigCheck]], Awaitable[list[bool]]]) -> None:
        """Run ``verify`` on the checks; its error, if any, goes to the waiter."""
        try:
            self.set(await verify(self.checks))
        except Exception as exc:  # noqa: BLE001 - handed to the committing stage, which raises it
            self._error = exc
            self._done.set()

    async def wait(self) -> list[bool]:
        """The results (one per check, in order), or the error checking them raised."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._results is not None
        return self._results


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        #: one batch at a time per pipe
        self.lock = trio.Lock()

    def roundtrip(self, blob: bytes) -> bytes:
        """Blocking (in a trio worker thread, GIL released while it waits)."""
        self.conn.send_bytes(blob)
        return self.conn.recv_bytes()


class VerifyPool:
    """``processes`` worker processes checking signatures for the event loop.

    ``min_checks``: a batch with fewer checks is checked in this process (a
    trip to a worker costs a thread hop and two pipe writes). ``local``:
    the verifier used then, and when the pool is broken.
    Use inside ``async with`` or call :meth:`close` (workers are daemons
    either way, so they never outlive this process).
    """

    def __init__(self, processes: int, local: SignatureVerifier, *, min_checks: int = 64) -> None:
        if processes < 1:
            raise ValueError("a verify pool needs at least one process")
        self.processes = processes
        self.local = local
        self.min_checks = min_checks
        self._workers: list[_Worker] = []
        self._starting = trio.Lock()
        self._broken: str | None = None
        #: checks answered by the workers
        self.checked_remote = 0

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for CPU accounting)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def __aenter__(self) -> VerifyPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the workers now (else the first large batch does)."""
        async with self._starting:
            if not self._workers and self._broken is None:
                try:
                    self._workers = await trio.to_thread.run_sync(self._spawn)
                except OSError as exc:
                    self._broken = f"starting workers: {exc!r}"
                    log.error("gossip: no signature worker processes (%s): checking signatures in this process", self._broken)
                    return
                log.info("gossip: %d signature worker processes started", len(self._workers))

    def _spawn(self) -> list[_Worker]:
        ctx = multiprocessing.get_context("spawn")
        workers = []
        for i in range(self.processes):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(theirs,), name=f"lnpmsg-gossip-verify-{i}", daemon=True)
            process.start()
            theirs.close()
            workers.append(_Worker(process, ours))
        return workers

    async def verify(self, checks: Sequence[SigCheck]) -> list[bool]:
        """One result per check, in order: split over the workers, or here for a small batch."""
        if len(checks) < self.min_checks or self._broken is not None:
            return self.local.verify_many(checks)
        if not self._workers:
            await self.start()
            if not self._workers:
                return self.local.verify_many(checks)
        workers = self._workers
        size = -(-len(checks) // len(workers))
        parts = [checks[i : i + size] for i in range(0, len(checks), size)]
        results: list[list[bool]] = [[] for _ in parts]

        async def run(i: int) -> None:
            results[i] = await self._on_worker(workers[i], parts[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(run, i)
        return [ok for part in results for ok in part]

    async def _on_worker(self, worker: _Worker, checks: Sequence[SigCheck]) -> list[bool]:
        blob = pack_checks(checks)
        async with worker.lock:
            if self._broken is None:
                try:
                    answer = await trio.to_thread.run_sync(worker.roundtrip, blob)
                    verdicts = unpack_verdicts(answer, len(checks))
                    self.checked_remote += len(checks)
                    self.local.checked += len(checks)
                    return verdicts
                except (OSError, EOFError, ValueError) as exc:
                    self._broken = f"{worker.process.name}: {exc!r}"
                    log.error("gossip: signature worker failed (%s): checking signatures in this process from now on", self._broken)
        return self.local.verify_many(checks)

    async def close(self) -> None:
        """Stop the workers (closing their pipes ends them; stragglers are terminated)."""
        workers, self._workers = self._workers, []
        if not workers:
            return
        for w in workers:
            w.conn.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_join_all, workers)


def _join_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.process.join(_STOP_GRACE)
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(_STOP_GRACE)
