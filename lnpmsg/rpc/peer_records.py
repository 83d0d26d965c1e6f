"""What peer RPC keeps per declared method, per call waiting for its response,
and per request to an async method being served (see :mod:`lnpmsg.rpc.peer`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from lnpmsg.node.peer import Peer
from lnpmsg.rpc.deadlines import Timeout
from lnpmsg.rpc.peer_messages import RpcError

__all__ = ["Method", "MethodEntry", "PendingCall", "ServedRequest", "is_async"]

Method = Callable[..., Any]


@dataclass(slots=True)
class MethodEntry:
    """A declared method: the function, its params check and time limit."""

    fn: Method
    check: Callable[[Any], dict[str, Any]]
    timeout: float
    #: a plain function: run inline in the read loop (see the module docs)
    inline: bool = False


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
    """One request to an async method, from arrival to reply (queued for a worker as it is)."""

    __slots__ = ("cancelled", "cancelled_by_peer", "entry", "kwargs", "limit", "name", "peer", "req_id", "scope", "timer")

    def __init__(self, peer: Peer, req_id: int, name: str, entry: MethodEntry, kwargs: dict[str, Any], limit: float) -> None:
        self.peer = peer
        self.req_id = req_id
        self.name = name
        self.entry = entry
        self.kwargs = kwargs
        #: seconds the method may run (its own limit or the caller's, the shorter)
        self.limit = limit
        #: the worker's cancel scope while the method runs (None while queued and after)
        self.scope: trio.CancelScope | None = None
        #: the method's deadline in the app's deadline heap
        self.timer: Timeout | None = None
        #: timed out or cancelled: a queued request is not started, a running one is cancelled
        self.cancelled = False
        self.cancelled_by_peer = False

    def cancel(self) -> None:
        """Its time is up, or the caller or the peer is gone: not started if queued, cancelled if running."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, also wrapped, partial or ``__call__``)."""
    target = inspect.unwrap(fn)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))
