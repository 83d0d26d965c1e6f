"""Bitcoin Core's JSON-RPC methods over the embedded regtest chain (no I/O of
its own: calls block on the chain, so the server runs them in a worker thread).

``ChainRpcMethods.handle(body) -> (status, reply)`` takes one HTTP request
body and gives the HTTP status and reply body as bitcoind does
(``src/httprpc.cpp``, ``src/rpc/request.cpp``):

- a JSON-RPC 1.0 request (no ``"jsonrpc"``, or ``"1.0"``) is answered with
  ``{"result", "error", "id"}``; an error is HTTP 500, except an invalid
  request (400) and an unknown method (404);
- a JSON-RPC 2.0 request is answered with HTTP 200 and ``{"jsonrpc",
  "result" | "error", "id"}``; a 2.0 notification (no ``id``) gets HTTP 204;
- a batch (a JSON array) is answered with HTTP 200 and an array;
- params by position or by name.

Error codes are Core's (``src/rpc/protocol.h``): ``-32700`` parse error,
``-32600`` invalid request, ``-32601`` method not found, ``-1`` misc (too
many params), ``-3`` type error, ``-5`` not found / invalid address, ``-8``
invalid parameter, ``-22`` decode failed, ``-25`` verify error (missing
inputs, a block that fails), ``-26`` rejected by policy, ``-27`` already in
the chain, ``-28`` warming up, ``-6`` insufficient funds.

The methods themselves are in ``lnpmsg.chain.rpc_calls``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.rpc_format import dumps

__all__ = [
    "MAX_BATCH",
    "RPC_DESERIALIZATION_ERROR",
    "RPC_IN_WARMUP",
    "RPC_INVALID_ADDRESS_OR_KEY",
    "RPC_INVALID_PARAMETER",
    "RPC_INVALID_REQUEST",
    "RPC_METHOD_NOT_FOUND",
    "RPC_MISC_ERROR",
    "RPC_PARSE_ERROR",
    "RPC_TYPE_ERROR",
    "RPC_VERIFY_ALREADY_IN_CHAIN",
    "RPC_VERIFY_ERROR",
    "RPC_VERIFY_REJECTED",
    "RpcError",
    "RpcMethod",
    "handle_body",
]

log = logging.getLogger(__name__)

RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_INVALID_PARAMETER = -8
RPC_CLIENT_NOT_CONNECTED = -9
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28
#: requests in one batch: bounded so one HTTP request cannot hold the chain for long
MAX_BATCH = 1_000


class RpcError(Exception):
    """A JSON-RPC error with Core's code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RpcMethod:
    """One method: the function, its parameter names (for named params), and how many are required."""

    __slots__ = ("aliases", "fn", "names", "required")

    def __init__(
        self, fn: Callable[..., Any], names: tuple[str, ...], required: int = 0, aliases: dict[str, str] | None = None
    ) -> None:
        self.fn = fn
        self.names = names
        self.required = required
        #: older names Core still accepts (``verbose`` for ``verbosity``)
        self.aliases = aliases or {}

    def call(self, method: str, params: Any) -> Any:
        if params is None:
            args: list[Any] = []
        elif isinstance(params, list):
            if len(params) > len(self.names):
                raise RpcError(
                    RPC_MISC_ERROR,
                    f"{method} takes at most {len(self.names)} parameters ({', '.join(self.names) or 'none'}), "
                    f"got {len(params)}",
                )
            args = list(params)
        elif isinstance(params, dict):
            params = {self.aliases.get(name, name): value for name, value in params.items()}
            unknown = [name for name in params if name not in self.names]
            if unknown:
                raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {unknown[0]}")
            last = max((self.names.index(name) for name in params), default=-1)
            args = [params.get(name) for name in self.names[: last + 1]]
        else:
            raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")
        # JSON null means "the default", as in Core
        while args and args[-1] is None:
            args.pop()
        if len(args) < self.required or any(a is None for a in args[: self.required]):
            missing = self.names[len(args)] if len(args) < self.required else "a required parameter"
            raise RpcError(RPC_MISC_ERROR, f"{method}: missing parameter {missing} (takes {', '.join(self.names)})")
        return self.fn(*[_Default if a is None else a for a in args])


class _DefaultType:
    """Stands for a JSON null between given params: the method uses its default."""

    def __repr__(self) -> str:
        return "default"


_Default: Any = _DefaultType()


def is_default(value: object) -> bool:
    """Whether a param was left out or given as null (the method's default applies)."""
    return value is _Default or value is None


Table = dict[str, RpcMethod]


def _one(table: Table, request: Any, warming: str | None) -> tuple[dict[str, Any] | None, int]:
    """Answer one request object: (reply or None for a 2.0 notification, HTTP status for 1.0)."""
    if not isinstance(request, dict):
        return _reply(None, None, RpcError(RPC_INVALID_REQUEST, "Invalid Request object"), legacy=True)
    version = request.get("jsonrpc")
    legacy = version != "2.0"
    if version not in (None, "1.0", "2.0"):
        return _reply(None, None, RpcError(RPC_INVALID_REQUEST, "JSON-RPC version not supported"), legacy=True)
    notification = not legacy and "id" not in request
    request_id = request.get("id")
    method = request.get("method")
    try:
        if not isinstance(method, str):
            raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
        entry = table.get(method)
        if entry is None:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        if warming is not None:
            raise RpcError(RPC_IN_WARMUP, warming)
        result = entry.call(method, request.get("params"))
    except RpcError as exc:
        reply, status = _reply(request_id, None, exc, legacy=legacy)
        return (None if notification else reply), status
    except ChainError as exc:
        reply, status = _reply(request_id, None, _from_chain_error(exc), legacy=legacy)
        return (None if notification else reply), status
    except Exception as exc:  # a bug here must not end the connection or the server
        log.exception("RPC %s failed", method)
        reply, status = _reply(request_id, None, RpcError(RPC_MISC_ERROR, f"internal error: {exc}"), legacy=legacy)
        return (None if notification else reply), status
    reply, status = _reply(request_id, result, None, legacy=legacy)
    return (None if notification else reply), status


def _from_chain_error(exc: ChainError) -> RpcError:
    if exc.code == "closed":
        return RpcError(RPC_IN_WARMUP, "the chain is shutting down")
    if exc.code in ("invalid", "malformed"):
        return RpcError(RPC_INVALID_PARAMETER, exc.reason)
    return RpcError(RPC_MISC_ERROR, exc.reason)


def _reply(request_id: Any, result: Any, error: RpcError | None, *, legacy: bool) -> tuple[dict[str, Any], int]:
    if legacy:
        status = 200
        if error is not None:
            status = {RPC_INVALID_REQUEST: 400, RPC_METHOD_NOT_FOUND: 404}.get(error.code, 500)
        body = {
            "result": result,
            "error": None if error is None else {"code": error.code, "message": error.message},
            "id": request_id,
        }
        return body, status
    reply: dict[str, Any] = {"jsonrpc": "2.0"}
    if error is None:
        reply["result"] = result
    else:
        reply["error"] = {"code": error.code, "message": error.message}
    reply["id"] = request_id
    return reply, 200


def handle_body(table: Table, body: bytes, warming: str | None = None) -> tuple[int, bytes]:
    """Answer one HTTP request body: ``(status, reply body)`` (an empty body for 204).

    A reply ends with a newline, as bitcoind's do.

    ``warming``: the chain is not ready; every known method answers ``-28``
    with this message.
    """
    status, reply = _handle(table, body, warming)
    return status, reply + b"\n" if reply else reply


def _handle(table: Table, body: bytes, warming: str | None) -> tuple[int, bytes]:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        reply, status = _reply(None, None, RpcError(RPC_PARSE_ERROR, "Parse error"), legacy=True)
        return status, dumps(reply)
    if isinstance(request, list):
        if not request:
            reply, status = _reply(None, None, RpcError(RPC_INVALID_REQUEST, "Invalid Request object"), legacy=True)
            return status, dumps(reply)
        if len(request) > MAX_BATCH:
            error = RpcError(RPC_INVALID_REQUEST, f"a batch holds at most {MAX_BATCH} requests, got {len(request)}")
            reply, status = _reply(None, None, error, legacy=True)
            return status, dumps(reply)
        replies = [reply for reply, _ in (_one(table, r, warming) for r in request) if reply is not None]
        return (200, dumps(replies)) if replies else (204, b"")
    reply_one, status = _one(table, request, warming)
    if reply_one is None:
        return 204, b""
    return status, dumps(reply_one)
