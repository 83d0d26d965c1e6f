"""Helpers for driving Core Lightning's pyln-proto as a foreign peer."""

from __future__ import annotations

import socket

__all__ = ["WholeReads"]


class WholeReads:
    """The socket pyln-proto reads through after its handshake.

    Its reader asks ``recv(n)`` for a frame's 18-byte header and treats fewer
    bytes as an error, but TCP may deliver part of a header when the reader
    catches up with a fast writer. This gives it the whole-read semantics it
    assumes (short only at end of stream), and ``sendall`` for its ``send``.
    Wrap it in: ``connection.connection = WholeReads(connection.connection)``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def send(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.sock, name)
