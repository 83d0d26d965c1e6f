"""Peer RPC: request/response between nodes over their encrypted connection.

Declare methods on a :class:`PeerRpc` app, mount it on both nodes, call::

    rpc = PeerRpc()

    @rpc.method()
    async def add(peer: Peer, a: int, b: int) -> int:
        return a + b

    node.mount(rpc)
    total = await rpc.call(peer, "add", {"a": 1, "b": 2})      # -> 3

Wire format (odd custom types, so a peer without RPC ignores them; the app
advertises optional feature bit 327 and :meth:`PeerRpc.call` refuses peers
that do not set it):

=============  =====  ==========================================================
message        type   fields
=============  =====  ==========================================================
rpc_request    32801  id u64, timeout_ms u32, method u8-prefixed UTF-8,
                      params u16-prefixed JSON (empty: no params)
rpc_response   32803  id u64, code u16 (0 = ok), result u16-prefixed:
                      the JSON result when code is 0, else a UTF-8 error text
rpc_cancel     32805  id u64 (the caller gave up: stop the handler, no reply)
=============  =====  ==========================================================

Params and results are JSON: methods are declared with Python type hints,
checked on arrival (:mod:`lnpmsg.rpc.params`), and any language can speak
it. ``bytes`` travel as hex. A request or result must fit one message
(65,535 bytes): larger data is split by the app or sent as its own messages.

Error codes (:class:`ErrorCode`): 1 method not found, 2 invalid params, 3
the handler raised, 4 the handler timed out on the server, 5 busy (too many
requests from this peer in flight), 6 bad request, 7 result too large, 8
shutting down; 100 and up are the app's own (``raise RpcFault(text, code)``).

Inline methods: a plain ``def`` method (not ``async def``) runs right where
the request is read, with no task, cancel scope or deadline of its own: the
fastest path, for methods that compute an answer at once (a lookup, an
echo). It must not block; its reply is queued without waiting, and is lost
(the caller times out) only if that peer's outbound queue is full, i.e. the
peer does not read. An ``async def`` method with no ``await``, ``async
with`` or ``async for`` in its body is served the same way: it can never
wait, so a task would only cost time (and no deadline could stop it
earlier). Any other ``async def`` method runs with its own deadline, and
is cancelled alone when it passes, bounded as below: a request read alone
(one call at a time) in the peer's reading task, which hands the reading on
to another task as soon as the method waits for more than a checkpoint
(:meth:`Peer.hold_reading`, :mod:`lnpmsg.rpc.handover`), so a short method
costs no task hop; requests read together (pipelined calls) in worker tasks,
reused between requests.

Guarantees: many calls may be in flight to one peer (ids match responses);
a handler that raises or hangs costs its caller an error, never the
connection; every peer may have at most ``max_inflight_per_peer`` requests
to async methods running (inline ones are over before the next is read),
so a flooding peer gets ``busy`` errors while the others are served; a
caller gets :class:`CallTimeout` after its timeout (the server is told to
stop) and :class:`PeerGone` as soon as the connection drops. Timeouts on
both sides are entries in one deadline heap per app
(:mod:`lnpmsg.rpc.deadlines`), not a cancel scope per call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from lnpmsg.app import App, PeerNotConnected
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.node.session import printable
from lnpmsg.rpc.deadlines import Deadlines
from lnpmsg.rpc.params import describe_params, dumps, loads, params_checker
from lnpmsg.rpc.peer_messages import (
    CallTimeout,
    ErrorCode,
    PeerGone,
    RemoteError,
    RpcCancel,
    RpcError,
    RpcFault,
    RpcRequest,
    RpcResponse,
    RpcUnsupported,
    request_bytes,
    response_bytes,
)
from lnpmsg.rpc.peer_records import Method, MethodEntry, PendingCall, ServedRequest, is_async, never_suspends
from lnpmsg.rpc.peer_serving import MAX_ERROR_TEXT, MAX_IDLE_WORKERS, MAX_PAYLOAD, PeerRpcServing

__all__ = [
    "CALL_TIMEOUT",
    "MAX_IDLE_WORKERS",
    "MAX_INFLIGHT_PER_PEER",
    "MAX_INFLIGHT_TOTAL",
    "MAX_PAYLOAD",
    "METHOD_TIMEOUT",
    "RPC_FEATURE_BIT",
    "CallTimeout",
    "ErrorCode",
    "PeerGone",
    "PeerRpc",
    "RemoteError",
    "RpcCancel",
    "RpcError",
    "RpcFault",
    "RpcRequest",
    "RpcResponse",
    "RpcUnsupported",
    "request_bytes",
    "response_bytes",
]

#: optional feature bit of peer RPC (its pair 326/327; above the BOLT-9 table)
RPC_FEATURE_BIT = 327
#: requests one peer may have running here at once; more get ``busy``
MAX_INFLIGHT_PER_PEER = 64
#: requests running here over all peers: bounds tasks and memory under many peers
MAX_INFLIGHT_TOTAL = 4096
#: default seconds a caller waits for a response
CALL_TIMEOUT = 30.0
#: default seconds a method may run on the server (a caller's shorter timeout wins)
METHOD_TIMEOUT = 30.0


# ------------------------------------------------------------------- the app

class PeerRpc(PeerRpcServing, App):
    """The peer RPC app: declare methods, call methods of peers.

    Args:
        name: the app name (control calls are ``<name>.call`` and ``<name>.methods``).
        feature_bit: advertised bit (None: do not advertise and do not check peers).
        max_inflight_per_peer: requests a peer may have running here; more get ``busy``.
        max_inflight: the same bound over all peers.
        method_timeout: default server-side limit per method.
        call_timeout: default caller-side timeout.
    """

    def __init__(
        self,
        name: str = "rpc",
        *,
        feature_bit: int | None = RPC_FEATURE_BIT,
        max_inflight_per_peer: int = MAX_INFLIGHT_PER_PEER,
        max_inflight: int = MAX_INFLIGHT_TOTAL,
        method_timeout: float = METHOD_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        super().__init__(name, feature_bit=feature_bit)
        self.max_inflight_per_peer = max_inflight_per_peer
        self.max_inflight = max_inflight
        self.method_timeout = method_timeout
        self.call_timeout = call_timeout
        self.methods: dict[str, MethodEntry] = {}
        self._pending: dict[int, PendingCall] = {}
        self._serving: dict[Peer, dict[int, ServedRequest]] = {}
        self._serving_total = 0
        # requests to async methods wait here for a worker task; reusing
        # workers saves starting a task per request
        self._jobs: deque[ServedRequest] = deque()
        #: worker tasks waiting for a request (the last one to wait is woken first)
        self._idle_workers: list[trio.lowlevel.Task] = []
        self._next_id = 0
        #: the callers' timeouts (served by the app's task while the node runs)
        self._deadlines = Deadlines()
        self._deadlines_task = False
        #: requests answered ``busy`` (flood protection at work)
        self.busy_replies = 0
        for cls in (RpcRequest, RpcResponse, RpcCancel):
            self.message(cls)
        # These only look up dicts and queue replies: no timeout guard needed.
        self.add_handler(RpcRequest, self._on_request, guard=False)
        self.add_handler(RpcResponse, self._on_response, guard=False)
        self.add_handler(RpcCancel, self._on_cancel, guard=False)
        self.add_control_method("call", self._control_call)
        self.add_control_method("methods", self._control_methods)

    # ------------------------------------------------------------ methods

    def method(self, name: str | None = None, *, timeout: float | None = None) -> Callable[[Method], Method]:
        """Decorator: serve ``async def fn(peer, **params)`` as ``name`` (default: its name).

        A plain ``def fn(peer, **params)`` is served inline: it must return at once.
        So is an ``async def`` that has no ``await`` (nor ``async with``/``for``).
        """

        def register(fn: Method) -> Method:
            self.add_method(name or fn.__name__, fn, timeout=timeout)
            return fn

        return register

    def add_method(
        self, name: str, fn: Method, *, timeout: float | None = None, params_check: Callable[[Any], dict[str, Any]] | None = None
    ) -> None:
        """Serve ``fn(peer, **params)`` as ``name``; params are checked against its annotations
        (or by ``params_check``, which turns the raw JSON params into keyword arguments).

        ``fn`` is an ``async def`` (run by a worker task, with ``timeout``) or a plain
        function (run inline, no task: for answers computed at once); an ``async def``
        that never awaits is run inline too, as it can never wait."""
        encoded = name.encode()
        if not name or len(encoded) > 255:
            raise ValueError(f"a method name is 1..255 bytes of UTF-8, got {name!r}")
        if name in self.methods:
            raise ValueError(f"method {name!r} is already declared")
        check = params_check if params_check is not None else params_checker(fn, skip=1)
        coroutine = is_async(fn)
        inline = not coroutine or never_suspends(fn)
        self.methods[name] = MethodEntry(fn, check, timeout or self.method_timeout, inline, coroutine)

    def remove_method(self, name: str) -> bool:
        """Stop serving ``name`` (requests already running finish); returns whether it was served."""
        return self.methods.pop(name, None) is not None

    def describe(self) -> list[dict[str, Any]]:
        """The declared methods with their params and docs (JSON-able)."""
        return [
            {"method": name, "params": describe_params(entry.fn), "timeout": entry.timeout, "doc": (entry.fn.__doc__ or "").strip()}
            for name, entry in sorted(self.methods.items())
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The app's task (see :meth:`App.run`); when it ends, requests still served in
        peers' reading tasks (outside the app's nursery) are cancelled, as its workers are."""
        try:
            await super().run(task_status=task_status)
        finally:
            for serving in self._serving.values():
                for state in serving.values():
                    state.cancelled_by_peer = True  # nobody answers: the app is gone
                    state.cancel()

    def _timeouts(self) -> Deadlines | None:
        """The deadline heap, its task started on first use; None while the app is not running."""
        if not self._deadlines_task:
            if self._nursery is None:
                return None
            self._deadlines_task = True
            self._nursery.start_soon(self._serve_deadlines)
        return self._deadlines

    async def _serve_deadlines(self) -> None:
        try:
            await self._deadlines.run()
        finally:
            self._deadlines_task = False

    # ------------------------------------------------------------- calling

    async def call(self, peer: Peer | bytes | str, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` on ``peer`` (a Peer or node id) and return its JSON result.

        ``params`` is a dict (named) or list (positional) of JSON-able values.
        Raises :class:`RemoteError`, :class:`CallTimeout`, :class:`PeerGone`,
        :class:`RpcUnsupported`, or :class:`RpcError` for a request that cannot be sent.
        """
        if not isinstance(peer, Peer):
            try:
                peer = self.peer(peer)
            except PeerNotConnected as exc:
                raise PeerGone(str(exc)) from None
        if not peer.is_ready:
            raise PeerGone(f"peer {peer.node_id.hex()} is not connected: {peer.close_reason or 'not ready'}")
        if not self.supports(peer):
            raise RpcUnsupported(f"peer {peer.node_id.hex()} does not advertise peer RPC (feature bit {self.feature_bit})")
        timeout = self.call_timeout if timeout is None else timeout
        method_bytes = method.encode()
        if not method_bytes or len(method_bytes) > 255:
            raise RpcError(f"a method name is 1..255 bytes of UTF-8, got {method!r}")
        try:
            body = b"" if params is None else dumps(params)
        except TypeError as exc:
            raise RpcError(f"params are not JSON-able: {exc}") from None
        if len(body) > MAX_PAYLOAD:
            raise RpcError(f"params of {len(body)} bytes exceed {MAX_PAYLOAD}")
        self._next_id += 1
        req_id = self._next_id
        timeout_ms = min(max(math.ceil(timeout * 1000), 1), 0xFFFFFFFF)
        request = request_bytes(req_id, timeout_ms, method_bytes, body)
        call = PendingCall(peer, method)
        self._pending[req_id] = call
        answered = False
        try:
            queued = False
            deadlines = self._timeouts()
            if deadlines is not None:
                # The usual case: the request fits the peer's queue, so nothing waits
                # but the response, and its timeout is an entry in the app's deadline
                # heap rather than a cancel scope per call (see lnpmsg.rpc.deadlines).
                try:
                    peer.send_nowait(request)
                    queued = True
                except PeerQueueFull:
                    pass  # wait for room below, under the timeout
                except PeerClosedError as exc:
                    raise PeerGone(str(exc)) from None
            if queued:
                assert deadlines is not None
                timer = deadlines.add(trio.current_time() + timeout, call.time_out)
                try:
                    await call.done.wait()
                finally:
                    deadlines.cancel(timer)
            else:
                with trio.move_on_after(timeout):
                    try:
                        await peer.send(request)
                    except PeerClosedError as exc:
                        raise PeerGone(str(exc)) from None
                    await call.done.wait()
            answered = call.done.is_set() and not call.timed_out
        finally:
            del self._pending[req_id]
            if not answered and peer.is_ready:
                self._send_quietly(peer, RpcCancel(id=req_id))
        if not answered:
            raise CallTimeout(f"{method} on {peer.node_id.hex()}: no response within {timeout:g} s")
        if call.error is not None:
            raise call.error
        return call.result

    def _on_response(self, peer: Peer, msg: RpcResponse) -> None:
        call = self._pending.get(msg.id)
        if call is not None and call.peer is peer and not call.done.is_set():
            if msg.code == ErrorCode.OK:
                try:
                    call.result = loads(msg.result) if msg.result else None
                except ValueError as exc:
                    call.error = RpcError(f"malformed result from {peer.node_id.hex()}: {exc}")
            else:
                call.error = RemoteError(msg.code, printable(msg.result, MAX_ERROR_TEXT), call.method)
            call.done.set()

    # ---------------------------------------------------- connection ends

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """The node's hook: calls to the peer fail with :class:`PeerGone`, its requests stop."""
        for call in self._pending.values():
            if call.peer is peer and not call.done.is_set():
                call.error = PeerGone(f"peer {peer.node_id.hex()} disconnected: {reason}")
                call.done.set()
        for state in self._serving.pop(peer, {}).values():
            state.cancelled_by_peer = True  # nobody to answer
            state.cancel()
        await super().peer_gone(peer, reason)

    # ---------------------------------------------------- control API

    async def _control_call(self, node_id: str, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Call ``method`` on the connected peer ``node_id`` and return its result."""
        return await self.call(node_id, method, params, timeout=timeout)

    async def _control_methods(self) -> list[dict[str, Any]]:
        """The methods this node serves to peers."""
        return self.describe()

