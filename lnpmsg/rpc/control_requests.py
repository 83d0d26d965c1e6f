"""Serving control requests: each message on the control socket is one JSON-RPC request,
parsed, looked up, checked and held to the limits before it runs in a task of its own under
a deadline; whatever happens, one reply goes back to that client.

A mixin of :class:`lnpmsg.rpc.control.ControlServer`, which holds the state (its sockets, its
built-in methods, the limits it was given); kept apart because what a request goes through is
a concern of its own, beside the server's sockets and lifecycle and the methods themselves.
An app's calls (``APP.CALL``) are looked up on the app at each request, so an app that
stopped meanwhile answers that it is stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
import zmq

from lnpmsg.app import AppState
from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket
from lnpmsg.rpc.control_proto import ControlRequestError, ErrorCode, encode_error, encode_result, parse_request
from lnpmsg.rpc.params import ParamsError, params_checker

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = ["CALL_TIMEOUT", "MAX_INFLIGHT", "MAX_INFLIGHT_PER_CLIENT", "AppStopped", "ControlRequests", "MethodEntry"]

#: the control server's logger (one name for all its lines, whichever module logs them)
log = logging.getLogger("lnpmsg.rpc.control")

#: seconds a control call may take (connect waits for handshake and init)
CALL_TIMEOUT = 60.0
#: requests one client may have running; more get ``busy``
MAX_INFLIGHT_PER_CLIENT = 64
#: requests running over all clients
MAX_INFLIGHT = 1024


@dataclass(slots=True)
class MethodEntry:
    """A method the control server can call: the function, its params check, the first line of its doc."""

    fn: Callable[..., Awaitable[Any]]
    check: Callable[[Any], dict[str, Any]]
    doc: str


class ControlRequests:
    """The request side of :class:`~lnpmsg.rpc.control.ControlServer` (state lives there)."""

    if TYPE_CHECKING:
        _app_methods: dict[tuple[str, str], tuple[Callable[..., Awaitable[Any]], MethodEntry]]
        _builtins: dict[str, MethodEntry]
        _inflight: Counter[bytes]
        _inflight_total: int
        _nursery: trio.Nursery | None
        call_timeout: float
        max_inflight_per_client: int
        max_request_bytes: int
        rejected: int
        requests: int

        @property
        def node(self) -> Node: ...

    async def _serve(self, router: TrioSocket) -> None:
        while True:
            try:
                parts = await router.recv_multipart()
            except SocketClosedError:
                return
            if len(parts) < 2:
                continue
            envelope, body = parts[:-1], parts[-1]
            client = envelope[0]
            self.requests += 1
            try:
                request = parse_request(body, self.max_request_bytes)
                method = self._method(request.method)
                if method is None:
                    raise ControlRequestError(
                        ErrorCode.METHOD_NOT_FOUND, f"unknown method {request.method!r} (call 'help' for the list)", request.id
                    )
                try:
                    kwargs = method.check(request.params)
                except ParamsError as exc:
                    raise ControlRequestError(ErrorCode.INVALID_PARAMS, f"{request.method}: {exc}", request.id) from None
                if self._inflight[client] >= self.max_inflight_per_client or self._inflight_total >= MAX_INFLIGHT:
                    raise ControlRequestError(
                        ErrorCode.BUSY, f"busy: {self._inflight[client]} of your requests are running (limit {self.max_inflight_per_client})", request.id
                    )
            except ControlRequestError as exc:
                self.rejected += 1
                await self._send(router, envelope, exc.reply())
                continue
            self._inflight[client] += 1
            self._inflight_total += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._call, router, envelope, request.id, request.method, method, kwargs)

    async def _call(self, router: TrioSocket, envelope: list[bytes], request_id: Any, name: str, method: MethodEntry, kwargs: dict[str, Any]) -> None:
        try:
            with trio.fail_after(self.call_timeout):
                result = await method.fn(**kwargs)
        except trio.TooSlowError:
            reply = encode_error(request_id, ErrorCode.TIMEOUT, f"{name} did not finish within {self.call_timeout:g} s")
        except ParamsError as exc:
            reply = encode_error(request_id, ErrorCode.INVALID_PARAMS, f"{name}: {exc}")
        except Exception as exc:
            log.debug("control call %s failed", name, exc_info=True)
            reply = self._failure(request_id, name, exc)
        else:
            try:
                reply = encode_result(request_id, result)
            except (TypeError, ValueError) as exc:
                reply = encode_error(request_id, ErrorCode.INTERNAL_ERROR, f"{name} returned a result that is not JSON: {exc}")
        finally:
            client = envelope[0]
            self._inflight[client] -= 1
            if self._inflight[client] <= 0:
                del self._inflight[client]
            self._inflight_total -= 1
        await self._send(router, envelope, reply)

    @staticmethod
    def _failure(request_id: Any, name: str, exc: Exception) -> bytes:
        data: dict[str, Any] = {"error": type(exc).__name__}
        details = getattr(exc, "details", None)
        if isinstance(details, dict):
            data.update(details)
        text = str(exc) or type(exc).__name__
        return encode_error(request_id, ErrorCode.CALL_FAILED, f"{name}: {text}"[:2000], data)

    @staticmethod
    async def _send(router: TrioSocket, envelope: list[bytes], reply: bytes) -> None:
        try:
            # ROUTER drops (never waits) when the client is gone or not reading.
            await router.send_multipart([*envelope, reply])
        except (SocketClosedError, zmq.ZMQError) as exc:
            log.debug("control reply not sent: %s", exc)

    def _method(self, name: str) -> MethodEntry | None:
        method = self._builtins.get(name)
        if method is not None or "." not in name:
            return method
        app_name, call = name.split(".", 1)
        app = self.node.apps.get(app_name)
        fn = getattr(app, "control_methods", {}).get(call) if app is not None else None
        if fn is None:
            return None
        if app is not None and app.state is AppState.STOPPED:
            return MethodEntry(_stopped_app(app_name, app.stop_reason), lambda params: {}, "the app is stopped")
        cached = self._app_methods.get((app_name, call))
        if cached is None or cached[0] is not fn:
            entry = MethodEntry(fn, params_checker(fn, skip=0), (fn.__doc__ or "").strip().split("\n")[0])
            cached = self._app_methods[(app_name, call)] = (fn, entry)
        return cached[1]

    def _method_names(self) -> list[str]:
        names = list(self._builtins)
        for app_name, app in self.node.apps.items():
            for call in getattr(app, "control_methods", {}):
                names.append(f"{app_name}.{call}")
        return names



def _stopped_app(name: str, reason: str | None) -> Callable[..., Awaitable[Any]]:
    async def stopped(**params: Any) -> Any:
        raise AppStopped(f"app {name} is stopped: {reason or 'stopped'}")

    return stopped


class AppStopped(Exception):
    """The control call belongs to an app that is stopped."""
