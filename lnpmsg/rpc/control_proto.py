"""The control API's messages, sans-IO: JSON-RPC 2.0 requests and replies.

Shared by the server (:mod:`lnpmsg.rpc.control`) and the client
(:mod:`lnpmsg.rpc.control_client`). A request is one ZeroMQ message part
holding one UTF-8 JSON object::

    {"jsonrpc": "2.0", "id": 7, "method": "connect", "params": {"address": "02ab..@127.0.0.1:9735"}}

``jsonrpc`` and ``id`` are optional (the id, a number, string or null, is
echoed back; a request without one still gets its reply), ``params`` is an
object (named) or an array (positional), or absent. The reply is one JSON
object with either ``result`` or ``error``::

    {"jsonrpc": "2.0", "id": 7, "result": {...}}
    {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "unknown method 'frobnicate'", "data": {...}}}

Error codes are JSON-RPC's own plus the control API's (:class:`ErrorCode`).
Bad input never raises anything but :class:`ControlRequestError`, which
carries the error reply to send.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTROL_INFO_FILE",
    "CONTROL_LOCK_FILE",
    "CONTROL_SOCKET_FILE",
    "EVENTS_SOCKET_FILE",
    "MAX_REQUEST_BYTES",
    "ControlRequestError",
    "ErrorCode",
    "Request",
    "encode_error",
    "encode_request",
    "encode_result",
    "parse_reply",
    "parse_request",
]

#: a request larger than this gets a ``request too large`` error (the biggest
#: real one, sendcustommsg with a 64 KiB payload in hex, is ~131 KB)
MAX_REQUEST_BYTES = 1024 * 1024

#: file names in the data dir
CONTROL_SOCKET_FILE = "control.sock"
EVENTS_SOCKET_FILE = "events.sock"
CONTROL_INFO_FILE = "control.json"
CONTROL_LOCK_FILE = "control.lock"


class ErrorCode(enum.IntEnum):
    """``error.code`` values of control replies."""

    PARSE_ERROR = -32700  # not UTF-8 JSON
    INVALID_REQUEST = -32600  # JSON, but not a request object
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    CALL_FAILED = -32000  # the call ran and failed (data.error names the failure)
    REQUEST_TOO_LARGE = -32001
    BUSY = -32002  # too many requests of this client in flight
    TIMEOUT = -32003  # the call did not finish in time


class ControlRequestError(Exception):
    """A request that cannot be served; :meth:`reply` is the error reply to send."""

    def __init__(self, code: ErrorCode, message: str, request_id: Any = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data

    def reply(self) -> bytes:
        return encode_error(self.request_id, self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request."""

    id: Any
    method: str
    params: dict[str, Any] | list[Any] | None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_request(data: bytes, max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """Parse one request; raises :class:`ControlRequestError` (with the reply) on bad input."""
    if len(data) > max_bytes:
        raise ControlRequestError(ErrorCode.REQUEST_TOO_LARGE, f"request of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        # json's C parser raises RecursionError on absurd nesting: caught below.
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ControlRequestError(ErrorCode.PARSE_ERROR, "request is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ControlRequestError(ErrorCode.PARSE_ERROR, f"request is not JSON: {str(exc)[:200]}") from None
    if isinstance(obj, list):
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, "batch requests are not supported: send one object per message")
    if not isinstance(obj, dict):
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, f"a request is a JSON object, got {type(obj).__name__}")
    request_id = obj.get("id")
    if request_id is not None and (
        isinstance(request_id, bool)
        or not isinstance(request_id, int | str | float)
        or (isinstance(request_id, float) and not math.isfinite(request_id))
    ):
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, "id must be a number, a string or null")
    if isinstance(request_id, str) and len(request_id) > 200:
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, "id is longer than 200 characters")
    version = obj.get("jsonrpc", "2.0")
    if version != "2.0":
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, f"jsonrpc must be \"2.0\", got {json.dumps(version)[:40]}", request_id)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, "method must be a non-empty string", request_id)
    if len(method) > 100:
        raise ControlRequestError(ErrorCode.METHOD_NOT_FOUND, f"unknown method {method[:100]!r}...", request_id)
    params = obj.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise ControlRequestError(ErrorCode.INVALID_PARAMS, "params must be an object, an array or absent", request_id)
    extra = set(obj) - {"jsonrpc", "id", "method", "params"}
    if extra:
        raise ControlRequestError(ErrorCode.INVALID_REQUEST, f"unknown request member(s): {', '.join(sorted(extra))[:200]}", request_id)
    return Request(request_id, method, params)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_result(request_id: Any, result: Any) -> bytes:
    """A success reply (TypeError/ValueError if ``result`` is not JSON-able)."""
    return _dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def encode_error(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    """An error reply."""
    error: dict[str, Any] = {"code": int(code), "message": message}
    if data:
        error["data"] = data
    return _dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


def encode_request(request_id: Any, method: str, params: dict[str, Any] | list[Any] | None = None) -> bytes:
    """A request (for clients)."""
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        obj["params"] = params
    return _dumps(obj)


def parse_reply(data: bytes) -> tuple[Any, Any, dict[str, Any] | None]:
    """``(id, result, error)`` of a reply; ValueError when it is not one."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or ("result" in obj) == ("error" in obj):
        raise ValueError("not a JSON-RPC reply")
    error = obj.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str)):
        raise ValueError("malformed error in reply")
    return obj.get("id"), obj.get("result"), error
