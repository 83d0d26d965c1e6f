"""Gossip ingest on every core: signature checks in worker processes (the I/O shell).

Why processes: coincurve releases the GIL inside each libsecp256k1 call, so
verify threads do run next to the event loop, but every check has to take
the GIL back (to loop, unpack, store its result) while the event loop holds
it for BOLT-8 decryption, decoding, the graph's decisions and the store:
the threads queue for the GIL after each ~30 us call and ingest stays near
one core. A worker process has its own interpreter and GIL.

The workers are ``python -m lnpmsg.gossip.verify_worker`` processes (their
own interpreters, so nothing of this process's main module runs again
there), fed through their stdin and stdout in length-prefixed frames. What
crosses is compact, with no pickle:

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
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from lnpmsg.gossip.verify import SigCheck, SignatureVerifier
from lnpmsg.gossip.verify_worker import take_frame, write_frame

__all__ = ["SPLIT_MIN", "Verdicts", "VerifyPool", "pack_checks", "split_checks", "unpack_verdicts"]

log = logging.getLogger(__name__)

_ZERO_KEY = bytes(33)
#: the directory holding the ``lnpmsg`` package this module came from
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: seconds a worker gets to exit after its pipe closes, before it is terminated
_STOP_GRACE = 2.0
#: bytes asked of a worker's stdout per read (an answer to a full batch is ~1 KB)
_READ_SIZE = 64 * 1024
#: a batch is split over several workers only into parts of at least this many checks:
#: each part is a trip of its own (a thread hop for its write, a frame each way, its
#: answer's wake-up: ~0.25 ms of this process's CPU here), which a smaller part's checks
#: do not pay back. A smaller batch goes whole to the least busy worker, and batches in
#: flight together still use every worker.
SPLIT_MIN = 512


def split_checks(checks: Sequence[SigCheck], workers: int) -> list[Sequence[SigCheck]]:
    """A batch's parts for ``workers`` workers: as many as there are workers, but none
    under :data:`SPLIT_MIN` checks (a batch under twice that is one part), in order."""
    count = max(1, min(workers, len(checks) // SPLIT_MIN))
    return [checks[len(checks) * i // count : len(checks) * (i + 1) // count] for i in range(count)]


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


def unpack_verdicts(data: bytes, expected: int) -> list[bool]:
    """A worker's answer as booleans; a short or long answer is an error, never a guess."""
    if len(data) != expected:
        raise ValueError(f"a verify worker answered {len(data)} verdicts for {expected} checks")
    return [b == 1 for b in data]


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
    """One worker process and the order of the batches on its pipes.

    Batches are written while earlier ones are being checked (the next one
    waits in the pipe, so the worker starts it the moment it answers the
    last: it never waits for the event loop to hand it more), and the
    answers are read in the order the batches were written.
    """

    def __init__(self, process: subprocess.Popen[bytes], name: str) -> None:
        self.process = process
        self.name = name
        #: one writer at a time; the holder takes the next ticket
        self.send_lock = trio.Lock()
        #: tickets handed out (batches written or being written)
        self.sent = 0
        #: the ticket whose answer is read next
        self.answered = 0
        self._turn = trio.Event()
        #: parts of batches given to it and not answered yet, and ever given (counted when
        #: the pool picks it, before any of them is written)
        self.queued = 0
        self.given = 0
        #: bytes read from its stdout that do not make a whole answer yet
        self._answers = bytearray()

    def load(self) -> tuple[int, int]:
        """How busy it is: parts not answered yet, then parts ever given (lower: picked less often)."""
        return (self.queued, self.given)

    def take(self) -> None:
        self.queued += 1
        self.given += 1

    def send(self, blob: bytes) -> None:
        """Blocking (in a trio worker thread): waits while the pipe is full."""
        assert self.process.stdin is not None
        write_frame(self.process.stdin, blob)

    async def receive(self) -> bytes:
        """The next answer, read on the event loop from the non-blocking pipe.

        An answer is small (a byte per check), so one read usually takes it
        whole, for less than a trip to a thread and back costs. The writes stay
        in threads: a blocked write refills the pipe the moment the worker reads.
        """
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        buffer = self._answers
        while (answer := take_frame(buffer)) is None:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                raise EOFError(f"worker exited (code {self.process.poll()})")
            buffer += data
        return answer

    async def wait_turn(self, ticket: int) -> None:
        while self.answered != ticket:
            await self._turn.wait()

    def next_turn(self) -> None:
        self.answered += 1
        self._turn.set()
        self._turn = trio.Event()


class VerifyPool:
    """``processes`` worker processes checking signatures for the event loop.

    ``min_checks``: a batch with fewer checks is checked in this process (a
    trip to a worker costs a thread hop and a frame each way). ``local``:
    the verifier used then, and when the pool is broken.
    Use inside ``async with`` or call :meth:`close`; a worker whose parent
    dies sees its stdin end and exits.
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
        self._closing = False
        #: checks answered by the workers
        self.checked_remote = 0

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for CPU accounting)."""
        return [w.process.pid for w in self._workers]

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
        # The workers import the same lnpmsg as this process, however it was found.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        workers = []
        try:
            for i in range(self.processes):
                process = subprocess.Popen(
                    [sys.executable, "-m", "lnpmsg.gossip.verify_worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    close_fds=True,
                    env=env,
                )
                assert process.stdout is not None
                os.set_blocking(process.stdout.fileno(), False)  # read on the event loop
                workers.append(_Worker(process, f"signature worker {i} (pid {process.pid})"))
        except OSError:
            _stop_all(workers)
            for w in workers:
                assert w.process.stdout is not None
                w.process.stdout.close()  # nothing reads them yet
            raise
        return workers

    async def verify(self, checks: Sequence[SigCheck]) -> list[bool]:
        """One result per check, in order: here for a batch under ``min_checks``, on the
        least busy worker for one under :data:`SPLIT_MIN` checks per part, else split
        over the workers."""
        if len(checks) < self.min_checks or self._broken is not None:
            return self.local.verify_many(checks)
        if not self._workers:
            await self.start()
            if not self._workers:
                return self.local.verify_many(checks)
        # The least busy first (fewest parts not answered yet); on a tie, the one picked
        # less often, so small batches take turns. Taken before anything is awaited, so
        # a batch that comes meanwhile sees them busy.
        # Exactly one part per worker taken (each gives its ``queued`` back).
        parts = split_checks(checks, len(self._workers))
        workers = sorted(self._workers, key=_Worker.load)[: len(parts)]
        for worker in workers:
            worker.take()
        if len(parts) == 1:
            return await self._on_worker(workers[0], checks)
        results: list[list[bool]] = [[] for _ in parts]

        async def run(i: int) -> None:
            results[i] = await self._on_worker(workers[i], parts[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(run, i)
        return [ok for part in results for ok in part]

    async def _on_worker(self, worker: _Worker, checks: Sequence[SigCheck]) -> list[bool]:
        """``checks`` on ``worker``, which :meth:`verify` took for them."""
        try:
            blob = pack_checks(checks)
            async with worker.send_lock:
                if self._broken is not None:
                    return self.local.verify_many(checks)
                ticket = worker.sent
                worker.sent += 1
                sent = False
                try:
                    await trio.to_thread.run_sync(worker.send, blob)
                    sent = True
                except (OSError, ValueError) as exc:  # ValueError: its pipe closed by close()
                    self._fail(worker, exc)
                finally:
                    if not sent:
                        worker.sent -= 1  # nothing of it went out: the next batch takes its ticket
            # Written: its answer must be read (in ticket order) whatever happens to this
            # task, or the next batch on this pipe would read it.
            with trio.CancelScope(shield=True):
                try:
                    await worker.wait_turn(ticket)
                    if self._broken is None:
                        answer = await worker.receive()
                        verdicts = unpack_verdicts(answer, len(checks))
                        self.checked_remote += len(checks)
                        self.local.checked += len(checks)
                        return verdicts
                except (OSError, EOFError, ValueError, trio.ClosedResourceError) as exc:
                    self._fail(worker, exc)
                finally:
                    worker.next_turn()
            return self.local.verify_many(checks)
        finally:
            worker.queued -= 1

    def _fail(self, worker: _Worker, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = f"{worker.name}: {exc!r}"
            if self._closing:
                return  # its pipes closed under it: no failure of the worker's
            log.error("gossip: signature worker failed (%s): checking signatures in this process from now on", self._broken)

    async def close(self) -> None:
        """Stop the workers (closing their stdin ends them; stragglers are terminated).
        A batch still on its way gets its worker's answer, or is checked in this process."""
        self._closing = True
        workers, self._workers = self._workers, []
        if not workers:
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_stop_all, workers)
        # Their stdout is read on the event loop: closed here, each with the notice that
        # wakes a batch waiting on it (closed in a thread, the wait would never end).
        for w in workers:
            if w.process.stdout is not None and not w.process.stdout.closed:
                trio.lowlevel.notify_closing(w.process.stdout.fileno())
                w.process.stdout.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Close each worker's stdin (it answers what it read, then exits at the end of its
    input); terminate stragglers. Their stdout stays open: whoever reads it closes it."""
    for w in workers:
        if w.process.stdin is not None:
            try:
                w.process.stdin.close()
            except OSError:
                pass  # a write to a worker that died: it is stopped all the same
    for w in workers:
        try:
            w.process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
