"""The little HTTP/1.1 a JSON-RPC server needs, sans-IO: parse requests out of
bytes, build responses as bytes.

``RequestParser.feed(data)`` then ``next_request()`` gives whole requests
(method, target, headers, body) as they complete; a request that breaks a
rule raises ``HttpError`` with the status to answer before closing. Every
limit is a named constant: a client can make the server hold at most
``MAX_HEADER_BYTES + max_body`` bytes per connection. Bodies need a
``Content-Length`` (what every JSON-RPC client sends); ``Expect:
100-continue`` is honoured (curl sends it for bodies over 1 KiB).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "HttpError",
    "Request",
    "RequestParser",
    "response",
]

#: request line and headers together: a JSON-RPC client sends a few hundred bytes
MAX_HEADER_BYTES = 16 * 1024
#: header lines per request
MAX_HEADERS = 64
_REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """The request cannot be served: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request; header names are lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class RequestParser:
    """Requests from one connection's bytes, one after another (keep-alive)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str], bool, int] | None = None
        self._continue_sent = False

    @property
    def started(self) -> bool:
        """Whether part of a request has arrived (the connection is not idle)."""
        return bool(self._buffer) or self._head is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self._head is None and len(self._buffer) > MAX_HEADER_BYTES and b"\r\n\r\n" not in self._buffer[:MAX_HEADER_BYTES + 4]:
            raise HttpError(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")

    def wants_continue(self) -> bool:
        """True once per request whose headers asked for ``100 Continue`` before the body."""
        if self._head is None and not self._parse_head():
            return False
        assert self._head is not None
        if self._head[2].get("expect", "").lower() == "100-continue" and not self._continue_sent:
            self._continue_sent = True
            return len(self._buffer) < self._head[4]
        return False

    def next_request(self) -> Request | None:
        """The next whole request, or None until more bytes arrive."""
        if self._head is None and not self._parse_head():
            return None
        assert self._head is not None
        method, target, headers, keep_alive, length = self._head
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._head = None
        self._continue_sent = False
        return Request(method, target, headers, body, keep_alive)

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        if end > MAX_HEADER_BYTES:
            raise HttpError(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if len(lines) - 1 > MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} header lines")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(400, "malformed header line")
            key = name.lower()
            if key in headers and key in ("content-length", "authorization", "transfer-encoding"):
                raise HttpError(400, f"repeated {name} header")
            headers[key] = value.strip()
        if "transfer-encoding" in headers:
            raise HttpError(501, "chunked request bodies are not supported: send Content-Length")
        text = headers.get("content-length", "0")
        if not text.isdigit() or len(text) > 12:
            raise HttpError(400 if method == "POST" or text else 411, "bad Content-Length")
        length = int(text)
        if length > self.max_body:
            raise HttpError(413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        self._head = (method, target, headers, keep_alive, length)
        return True


def response(
    status: int,
    body: bytes = b"",
    *,
    keep_alive: bool = True,
    content_type: str = "application/json",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A complete HTTP/1.1 response."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    if status != 204:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
