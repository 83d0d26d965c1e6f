"""Peer RPC's serving side: requests in, methods run, replies out (see :mod:`lnpmsg.rpc.peer`).

A mixin of :class:`lnpmsg.rpc.peer.PeerRpc`, which holds the state; kept apart
because calling peers and serving them are concerns of their own. A request
to an inline method is answered where it is read; one to an async method read
alone is served in the peer's reading task (handed to another task only if
its method waits: :meth:`PeerRpcServing._serve_held`); others go to reused
worker tasks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.rpc.handover import run_until_waiting
from lnpmsg.rpc.params import ParamsError, dumps, loads
from lnpmsg.rpc.peer_messages import ErrorCode, RpcCancel, RpcFault, RpcRequest, response_bytes
from lnpmsg.rpc.peer_records import MethodEntry, ServedRequest
from lnpmsg.wire import MAX_MESSAGE_SIZE, Message, WireError

if TYPE_CHECKING:
    from lnpmsg.rpc.deadlines import Deadlines

__all__ = ["MAX_ERROR_TEXT", "MAX_IDLE_WORKERS", "MAX_PAYLOAD", "PeerRpcServing"]

log = logging.getLogger("lnpmsg.rpc.peer")

#: the JSON params or result of one message: a message minus type, id, code/timeout and prefixes
MAX_PAYLOAD = MAX_MESSAGE_SIZE - 2 - 8 - 4 - 1 - 255 - 2
#: error texts are cut here: they are for people, and must fit a message
MAX_ERROR_TEXT = 1000
#: worker tasks kept waiting for requests to async methods: a burst starts
#: more (up to the in-flight bounds), and those beyond this end when idle
MAX_IDLE_WORKERS = 16



def _cut(text: str) -> bytes:
    data = text.encode("utf-8", errors="replace")
    return data if len(data) <= MAX_ERROR_TEXT else data[: MAX_ERROR_TEXT - 3] + b"..."


class PeerRpcServing:
    """The serving half of :class:`~lnpmsg.rpc.peer.PeerRpc` (state lives there)."""

    if TYPE_CHECKING:
        methods: dict[str, MethodEntry]
        max_inflight_per_peer: int
        max_inflight: int
        busy_replies: int
        _serving: dict[Peer, dict[int, ServedRequest]]
        _serving_total: int
        _jobs: deque[ServedRequest]
        _idle_workers: list[trio.lowlevel.Task]
        _deadlines: Deadlines
        _nursery: trio.Nursery | None

        def _timeouts(self) -> Deadlines | None: ...
        def report_error(self, text: str, node_id: bytes | None = None) -> None: ...

    def _on_request(self, peer: Peer, msg: RpcRequest) -> Awaitable[None] | None:
        # A plain handler (returns None): the node then awaits nothing per request,
        # but a request it may serve in the reading task (see _serve_held).
        try:
            name = msg.method.decode()
        except UnicodeDecodeError:
            self._reply_now(peer, msg.id, ErrorCode.BAD_REQUEST, "method name is not UTF-8")
            return
        entry = self.methods.get(name)
        serving = self._serving.get(peer)
        if entry is not None and entry.inline:
            # Answered before the next message is read: never in flight, so the
            # in-flight bounds do not apply (its id must not clash with one that is).
            if serving and msg.id in serving:
                self._reply_now(peer, msg.id, ErrorCode.BAD_REQUEST, f"request id {msg.id} is already in flight")
                return
            kwargs = self._checked_params(peer, msg, entry)
            if kwargs is not None:
                self._serve_inline(peer, msg.id, name, entry, kwargs)
            return
        if serving is None:
            serving = self._serving[peer] = {}
        if len(serving) >= self.max_inflight_per_peer or self._serving_total >= self.max_inflight:
            self.busy_replies += 1
            self._reply_now(peer, msg.id, ErrorCode.BUSY, f"busy: {len(serving)} requests from you are running (limit {self.max_inflight_per_peer})")
            return
        if msg.id in serving:
            self._reply_now(peer, msg.id, ErrorCode.BAD_REQUEST, f"request id {msg.id} is already in flight")
            return
        if entry is None:
            self._reply_now(peer, msg.id, ErrorCode.METHOD_NOT_FOUND, f"no method {name[:100]!r}")
            return
        kwargs = self._checked_params(peer, msg, entry)
        if kwargs is None:
            return
        limit = min(entry.timeout, msg.timeout_ms / 1000)
        if self._nursery is None:
            self._reply_now(peer, msg.id, ErrorCode.SHUTTING_DOWN, "the RPC app is not running")
            return
        scope = peer.hold_reading()
        if scope is not None:
            # A request read alone (a call at a time): served here, in the reading task,
            # which hands the reading on only if the method waits (see rpc.handover).
            return self._serve_held(ServedRequest(peer, msg.id, name, entry, kwargs, limit), scope)
        deadlines = self._timeouts()
        assert deadlines is not None  # the app runs
        state = serving[msg.id] = ServedRequest(peer, msg.id, name, entry, kwargs, limit)
        state.timer = deadlines.add(trio.current_time() + limit, state.cancel)
        self._serving_total += 1
        self._jobs.append(state)
        if self._idle_workers:
            # taken off the idle list here, so a burst wakes one worker per request
            trio.lowlevel.reschedule(self._idle_workers.pop())
        else:
            self._nursery.start_soon(self._worker)

    def _checked_params(self, peer: Peer, msg: RpcRequest, entry: MethodEntry) -> dict[str, Any] | None:
        """The request's params as keyword arguments, or None once it was answered with an error."""
        try:
            return entry.check(loads(msg.params) if msg.params else None)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._reply_now(peer, msg.id, ErrorCode.INVALID_PARAMS, f"params are not JSON: {exc}")
        except ParamsError as exc:
            self._reply_now(peer, msg.id, ErrorCode.INVALID_PARAMS, str(exc))
        return None

    def _serve_inline(self, peer: Peer, req_id: int, name: str, entry: MethodEntry, kwargs: dict[str, Any]) -> None:
        code, payload = self._run_inline(peer, name, entry, kwargs)
        self._send_quietly(peer, response_bytes(req_id, code, payload))

    def _run_inline(self, peer: Peer, name: str, entry: MethodEntry, kwargs: dict[str, Any]) -> tuple[int, bytes]:
        try:
            result = entry.fn(peer, **kwargs)
            if entry.coroutine:
                # an async def that never suspends: its coroutine ends in this one step
                try:
                    result.send(None)
                except StopIteration as done:
                    result = done.value
                else:  # not reached: it has no await to stop at
                    result.close()
                    return ErrorCode.FAILED, _cut(f"method {name} suspended, which it cannot")
        except Exception as exc:
            return self._method_failed(peer, name, exc)
        if not entry.coroutine and hasattr(result, "__await__"):
            # declared plain but returned a coroutine: a mistake, answered clearly
            close = getattr(result, "close", None)
            if close is not None:
                close()
            self.report_error(f"method {name} is not async but returned an awaitable", peer.node_id)
            return ErrorCode.FAILED, _cut(f"method {name} returned an awaitable from a plain function")
        return self._encode_result(name, result)

    @staticmethod
    def _encode_result(name: str, result: Any) -> tuple[int, bytes]:
        try:
            payload = dumps(result)
        except TypeError as exc:
            return ErrorCode.FAILED, _cut(f"method {name} returned a result that is not JSON: {exc}")
        if len(payload) > MAX_PAYLOAD:
            return ErrorCode.RESULT_TOO_LARGE, _cut(f"result of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        return ErrorCode.OK, payload

    async def _worker(self) -> None:
        """Serve queued requests to async methods; wait for more, or end if enough workers wait.

        The worker runs methods, and waits between them, under one cancel scope.
        Cancelling a request (its time limit, the caller's ``rpc_cancel``, the
        peer leaving) cancels that scope while its method runs; the scope is
        then left, the request answered, and the worker goes on under a new
        one. A scope per request would cost as much as the rest of it.
        """
        jobs = self._jobs
        while True:
            job: ServedRequest | None = None
            with trio.CancelScope() as scope:
                while not scope.cancel_called:  # a method that swallowed its cancellation: a new scope
                    if not jobs:
                        if len(self._idle_workers) >= MAX_IDLE_WORKERS:
                            return
                        await self._wait_for_job()
                        continue
                    job = jobs.popleft()
                    if job.cancelled:
                        break  # expired or cancelled while queued: answered below, never started
                    job.scope = scope
                    try:
                        result = await job.entry.fn(job.peer, **job.kwargs)
                    except Exception as exc:
                        code, payload = self._method_failed(job.peer, job.name, exc)
                    else:
                        code, payload = self._encode_result(job.name, result)
                    job.scope = None
                    self._done_serving(job)
                    peer, req_id, job = job.peer, job.req_id, None
                    if not self._reply_nowait(peer, req_id, code, payload):
                        await self._send_response(peer, req_id, code, payload)
            if job is not None:
                await self._answer_cancelled(job)

    async def _serve_held(self, job: ServedRequest, scope: trio.CancelScope) -> None:
        """Serve a request read alone, in the peer's reading task (:meth:`Peer.hold_reading`).

        A method that ends within its first checkpoint (the usual short one:
        ``await trio.sleep(0)``, a lock taken at once) is answered with no task
        hop, no entry in the in-flight table or the deadline heap, and no wait
        for the reading task's next receive: while it runs, nothing more is
        read from its peer, so nothing can cancel it or count it. One that
        waits longer is entered there, with its time limit, as it starts to
        wait (:meth:`_held_request_waits`), and goes on here while another task
        reads on. Its time limit, the caller's cancel and the app's end cancel
        it through the reading task's scope (a scope of its own would cost more
        than the rest); the peer's end cancels that task anyway.
        """
        peer = job.peer
        job.scope = scope
        try:
            result = await run_until_waiting(job.entry.fn(peer, **job.kwargs), self._held_request_waits, job)
        except Exception as exc:
            job.scope = None
            code, payload = self._method_failed(peer, job.name, exc)
        except BaseException:
            # Cancelled: by the request's own cancel (its time limit, the caller, the
            # app's end: job.cancelled), or with the peer's tasks. The reading task
            # takes the Cancelled (see Peer.hold_reading).
            job.scope = None
            if job.entered:
                job.entered = False
                self._done_serving(job)
                if job.cancelled and not job.cancelled_by_peer:
                    self._send_quietly(peer, response_bytes(job.req_id, ErrorCode.TIMEOUT, self._timed_out(job)))
            raise
        else:
            job.scope = None
            code, payload = self._encode_result(job.name, result)
        entered = job.entered  # by _held_request_waits: it waited, and another task reads on
        if entered:
            job.entered = False
            self._done_serving(job)
        if not self._reply_nowait(peer, job.req_id, code, payload):
            if not entered:
                peer.resume_reading()  # the reply waits for room: the reading goes on meanwhile
            await self._send_response(peer, job.req_id, code, payload)

    def _held_request_waits(self, job: ServedRequest) -> None:
        """A request served in the reading task starts to wait: it is entered in the
        in-flight table with its time limit, and another task reads on."""
        serving = self._serving.get(job.peer)
        deadlines = self._timeouts()
        if serving is not None and deadlines is not None and job.req_id not in serving:
            serving[job.req_id] = job
            self._serving_total += 1
            job.timer = deadlines.add(trio.current_time() + job.limit, job.cancel)
            job.entered = True
        # else: the peer or the app is gone, and its tasks with it
        job.peer.resume_reading()

    async def _wait_for_job(self) -> None:
        """Wait on the idle list until :meth:`_on_request` wakes this worker (it takes it off the list)."""
        task = trio.lowlevel.current_task()
        idle = self._idle_workers
        idle.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            idle.remove(task)  # cancelled while waiting (the app stops)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _answer_cancelled(self, job: ServedRequest) -> None:
        """A request whose method was cancelled, or that was cancelled before it started."""
        self._done_serving(job)
        if job.cancelled_by_peer:
            return
        await self._send_response(job.peer, job.req_id, ErrorCode.TIMEOUT, self._timed_out(job))

    def _timed_out(self, job: ServedRequest) -> bytes:
        """Report a method cancelled at its time limit; the payload of its ``TIMEOUT`` reply."""
        self.report_error(f"method {job.name} ran longer than {job.limit:g} s and was cancelled", job.peer.node_id)
        return _cut(f"method {job.name} did not finish within {job.limit:g} s")

    def _method_failed(self, peer: Peer, name: str, exc: Exception) -> tuple[int, bytes]:
        """The reply to a method that raised: its own fault, or ``FAILED`` (reported as an error of the app)."""
        if isinstance(exc, RpcFault):
            return exc.code, _cut(exc.message)
        log.debug("method %s failed", name, exc_info=(type(exc), exc, exc.__traceback__))
        self.report_error(f"method {name} raised {exc!r}", peer.node_id)
        return ErrorCode.FAILED, _cut(f"{type(exc).__name__}: {exc}")

    def _done_serving(self, state: ServedRequest) -> None:
        if state.timer is not None:
            self._deadlines.cancel(state.timer)
        serving = self._serving.get(state.peer)
        if serving is not None:
            serving.pop(state.req_id, None)
        self._serving_total -= 1

    @staticmethod
    def _reply_nowait(peer: Peer, req_id: int, code: int, payload: bytes) -> bool:
        """Send a method's reply without waiting (the usual case); False: the peer's queue is
        full, and the caller awaits :meth:`_send_response` instead."""
        try:
            peer.send_nowait(response_bytes(req_id, code, payload))
        except PeerQueueFull:
            return False
        except (PeerClosedError, WireError) as exc:
            log.debug("response %d to %s not sent: %s", req_id, peer.node_id.hex(), exc)
        return True

    @staticmethod
    async def _send_response(peer: Peer, req_id: int, code: int, payload: bytes) -> None:
        try:
            await peer.send(response_bytes(req_id, code, payload))
        except (PeerClosedError, WireError) as exc:
            log.debug("response %d to %s not sent: %s", req_id, peer.node_id.hex(), exc)

    def _on_cancel(self, peer: Peer, msg: RpcCancel) -> None:
        state = self._serving.get(peer, {}).get(msg.id)
        if state is not None:
            state.cancelled_by_peer = True
            state.cancel()

    def _reply_now(self, peer: Peer, req_id: int, code: int, text: str) -> None:
        self._send_quietly(peer, response_bytes(req_id, code, _cut(text)))

    @staticmethod
    def _send_quietly(peer: Peer, message: Message | bytes) -> None:
        # Replies from the read loop never wait: a peer that floods us and
        # does not read loses them rather than stalling its own read loop.
        try:
            peer.send_nowait(message)
        except (PeerQueueFull, PeerClosedError) as exc:
            kind = type(message).__name__ if isinstance(message, Message) else f"message type {int.from_bytes(message[:2], 'big')}"
            log.debug("dropped %s to %s: %s", kind, peer.node_id.hex(), exc)

