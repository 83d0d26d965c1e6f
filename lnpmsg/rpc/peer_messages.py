"""Peer RPC's wire messages, their hot-path encoders and the errors a call raises.

See :mod:`lnpmsg.rpc.peer` for the protocol; this module holds what both
sides of it share, so the app module stays about serving and calling.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

from lnpmsg.wire import Message, message
from lnpmsg.wire.fields import u8_prefixed_bytes, u16, u16_prefixed_bytes, u32, u64

__all__ = [
    "CallTimeout",
    "ErrorCode",
    "PeerGone",
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


class ErrorCode(enum.IntEnum):
    """``rpc_response.code`` values; 100 and up belong to apps."""

    OK = 0
    METHOD_NOT_FOUND = 1
    INVALID_PARAMS = 2
    FAILED = 3
    TIMEOUT = 4
    BUSY = 5
    BAD_REQUEST = 6
    RESULT_TOO_LARGE = 7
    SHUTTING_DOWN = 8
    APP = 100


# ------------------------------------------------------------------ messages


@message(type=32801)
@dataclass(frozen=True, slots=True)
class RpcRequest(Message):
    FIELDS = (("id", u64), ("timeout_ms", u32), ("method", u8_prefixed_bytes), ("params", u16_prefixed_bytes))
    id: int
    timeout_ms: int
    method: bytes
    params: bytes = b""


@message(type=32803)
@dataclass(frozen=True, slots=True)
class RpcResponse(Message):
    FIELDS = (("id", u64), ("code", u16), ("result", u16_prefixed_bytes))
    id: int
    code: int
    result: bytes = b""


@message(type=32805)
@dataclass(frozen=True, slots=True)
class RpcCancel(Message):
    FIELDS = (("id", u64),)
    id: int


# The hot path builds the two messages of every call straight into bytes
# (the same bytes as RpcRequest(...).encode() and RpcResponse(...).encode(),
# which tests check), skipping the per-field validation of values this
# module has already bounded.
_REQUEST_HEAD = struct.Struct(">HQIB")
_RESPONSE_HEAD = struct.Struct(">HQHH")
_U16 = struct.Struct(">H")


def request_bytes(req_id: int, timeout_ms: int, method: bytes, params: bytes) -> bytes:
    """The wire bytes of ``RpcRequest(req_id, timeout_ms, method, params)`` (all within bounds)."""
    return b"".join((_REQUEST_HEAD.pack(RpcRequest.TYPE, req_id, timeout_ms, len(method)), method, _U16.pack(len(params)), params))


def response_bytes(req_id: int, code: int, result: bytes) -> bytes:
    """The wire bytes of ``RpcResponse(req_id, code, result)`` (all within bounds)."""
    return _RESPONSE_HEAD.pack(RpcResponse.TYPE, req_id, code, len(result)) + result


# -------------------------------------------------------------------- errors


class RpcError(Exception):
    """Base of every error :meth:`PeerRpc.call` raises."""


class RemoteError(RpcError):
    """The peer answered with an error: ``code`` (:class:`ErrorCode` or the app's) and its text."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        try:
            label = ErrorCode(code).name.lower()
        except ValueError:
            label = f"app error {code}"
        super().__init__(f"{method}: {label}: {message}" if method else f"{label}: {message}")

    @property
    def busy(self) -> bool:
        return self.code == ErrorCode.BUSY

    @property
    def details(self) -> dict[str, Any]:
        """For JSON error replies (the control API)."""
        return {"remote_code": self.code}


class CallTimeout(RpcError):
    """No response came within the caller's timeout (the peer was told to stop)."""


class PeerGone(RpcError):
    """The peer is not connected, or disconnected before it answered."""


class RpcUnsupported(RpcError):
    """The peer does not advertise peer RPC (its feature bit)."""


class RpcFault(Exception):
    """Raise in a method to answer with a chosen error code (>= 100 for app codes) and text."""

    def __init__(self, message: str, code: int = ErrorCode.FAILED) -> None:
        if not 0 < code <= 0xFFFF:
            raise ValueError(f"an error code is 1..65535, got {code}")
        self.code = code
        self.message = message
        super().__init__(message)
