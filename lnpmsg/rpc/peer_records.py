"""What peer RPC keeps per declared method, per call waiting for its response,
and per request to an async method being served (see :mod:`lnpmsg.rpc.peer`)."""

from __future__ import annotations

import dis
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from lnpmsg.node.peer import Peer
from lnpmsg.rpc.deadlines import Timeout
from lnpmsg.rpc.peer_messages import RpcError

__all__ = ["Method", "MethodEntry", "PendingCall", "ServedRequest", "is_async", "never_suspends"]

Method = Callable[..., Any]


@dataclass(slots=True)
class MethodEntry:
    """A declared method: the function, its params check and time limit."""

    fn: Method
    check: Callable[[Any], dict[str, Any]]
    timeout: float
    #: run inline in the read loop (see the module docs): a plain function, or
    #: a coroutine function that never suspends (:func:`never_suspends`)
    inline: bool = False
    #: an ``async def``: calling it gives a coroutine to run
    coroutine: bool = False


class PendingCall:
    """A call of ours waiting for its response."""

    __slots__ = ("done", "error", "method", "peer", "result", "timed_out")

    def __init__(self, peer: Peer, method: str) -> None:
        self.peer = peer
        self.method = method
        self.done = trio.Event()
        self.result: Any = None
        self.error: RpcError | None = None
        self.timed_out = False

    def time_out(self) -> None:
        """The caller's deadline passed before the response came."""
        if not self.done.is_set():
            self.timed_out = True
            self.done.set()


class ServedRequest:
    """One request to an async method, from arrival to reply (queued for a worker as it is, or served where it was read)."""

    __slots__ = ("cancelled", "cancelled_by_peer", "entered", "entry", "kwargs", "limit", "name", "peer", "req_id", "scope", "timer")

    def __init__(self, peer: Peer, req_id: int, name: str, entry: MethodEntry, kwargs: dict[str, Any], limit: float) -> None:
        self.peer = peer
        self.req_id = req_id
        self.name = name
        self.entry = entry
        self.kwargs = kwargs
        #: seconds the method may run (its own limit or the caller's, the shorter)
        self.limit = limit
        #: the cancel scope of the task running the method, while it runs (None while queued and after)
        self.scope: trio.CancelScope | None = None
        #: the method's deadline in the app's deadline heap
        self.timer: Timeout | None = None
        #: timed out or cancelled: a queued request is not started, a running one is cancelled
        self.cancelled = False
        self.cancelled_by_peer = False
        #: served in the peer's reading task and entered in the in-flight table and the
        #: deadline heap, as its method waits (see PeerRpc._serve_held; a worker's request
        #: is entered on arrival)
        self.entered = False

    def cancel(self) -> None:
        """Its time is up, or the caller or the peer is gone: not started if queued, cancelled if running."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, also wrapped, partial or ``__call__``)."""
    target = inspect.unwrap(fn)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))


#: the opcodes through which a coroutine can suspend: ``await`` (also inside
#: ``async with`` and ``async for``) and ``yield`` in all their forms
_SUSPENDING_OPCODES = frozenset(
    {"GET_AWAITABLE", "SEND", "YIELD_VALUE", "YIELD_FROM", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "END_ASYNC_FOR"}
)


def never_suspends(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` whose body has no ``await``, ``async with`` or ``async for``.

    Its coroutine then runs to its end in one step and can never wait, so it
    needs no task of its own. Only functions and bound methods are read (a
    wrapper, partial or object says False: it may await what it wraps).
    """
    target = fn.__func__ if type(fn) is types.MethodType else fn
    if type(target) is not types.FunctionType or not inspect.iscoroutinefunction(target):
        return False
    return not any(instruction.opname in _SUSPENDING_OPCODES for instruction in dis.get_instructions(target.__code__))
