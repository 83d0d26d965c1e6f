"""A hand-driven BOLT-8 peer for tests: it does exactly what the test says.

Unlike a :class:`~lnpmsg.node.node.Node`, a ``RawPeer`` answers nothing by
itself (no init, no pong) and can send bytes no well-behaved peer would:
corrupt frames, unknown even messages, truncated data. Apps use it to test
how their handlers and the node react to misbehaving peers.
"""

from __future__ import annotations

import socket
from collections import deque

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.peer import handshake_as_initiator
from lnpmsg.noise import ACT_TWO_SIZE, InitiatorHandshake, NoiseError, TransportCipher
from lnpmsg.transports.base import Transport
from lnpmsg.transports.tcp import TcpTransport
from lnpmsg.wire import Init, Message

__all__ = ["RawPeer", "dial_blocking"]


def dial_blocking(address: str, node_id: bytes, key: NodeKey | None = None) -> tuple[socket.socket, TransportCipher]:
    """Connect a plain blocking socket to ``host:port`` and run the BOLT-8 handshake as initiator.

    For a client in a thread or another process that writes a stream its own
    way (a load generator, a test's sender); it sends no ``init``. The socket
    is the caller's to close.
    """
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    try:
        handshake = InitiatorHandshake((key or NodeKey.generate()).secret, node_id)
        sock.sendall(handshake.act_one())
        act_two = b""
        while len(act_two) < ACT_TWO_SIZE:
            chunk = sock.recv(ACT_TWO_SIZE - len(act_two))
            if not chunk:
                raise NoiseError("the responder closed the connection before act two")
            act_two += chunk
        sock.sendall(handshake.receive_act_two(act_two))
        return sock, TransportCipher(handshake.keys)
    except BaseException:
        sock.close()
        raise


class RawPeer:
    """An initiator connection whose every byte the test controls."""

    def __init__(self, stream_conn, cipher: TransportCipher, key: NodeKey, leftover: bytes) -> None:  # type: ignore[no-untyped-def]
        self.conn = stream_conn
        self.key = key
        self._cipher = cipher
        self._pending: deque[bytes] = deque()
        self._leftover = leftover

    @classmethod
    async def connect(cls, target: str, node_id: bytes, key: NodeKey | None = None, *, transport: Transport | None = None) -> RawPeer:
        """Dial ``target`` (the transport's own address text: ``host:port`` for
        TCP, the default; a listener name for a memory transport) and run the
        BOLT-8 handshake."""
        key = key or NodeKey.generate()
        conn = await (transport or TcpTransport()).dial(target)
        try:
            cipher, leftover = await handshake_as_initiator(conn, key, node_id)
        except BaseException:
            await conn.aclose()
            raise
        return cls(conn, cipher, key, leftover)

    async def send(self, message: Message | bytes) -> None:
        """Encrypt and send one message."""
        data = message if isinstance(message, bytes) else message.encode()
        await self.conn.send_frames([self._cipher.encryptor.encrypt(data)])

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (not encrypted)."""
        await self.conn.send_frames([data])

    def encrypt(self, message: bytes) -> bytes:
        """Encrypt a message without sending it (to corrupt or truncate it first)."""
        return self._cipher.encryptor.encrypt(message)

    async def receive(self) -> bytes:
        """The next decrypted message; raises EOFError when the node closed the connection."""
        while not self._pending:
            data = self._leftover or await self.conn.receive_some(65536)
            self._leftover = b""
            if not data:
                raise EOFError("connection closed by the node")
            try:
                self._pending.extend(self._cipher.decryptor.feed(data))
            except NoiseError as exc:
                raise EOFError(f"undecipherable data from the node: {exc}") from exc
        return self._pending.popleft()

    async def receive_until_closed(self, timeout: float = 5.0) -> list[bytes]:
        """Every message until the node closes the connection (fails after ``timeout``)."""
        messages = []
        with trio.fail_after(timeout):
            while True:
                try:
                    messages.append(await self.receive())
                except EOFError:
                    return messages

    async def exchange_init(self, init: Init | None = None) -> bytes:
        """Send our init and return the node's (raw)."""
        await self.send(init or Init())
        return await self.receive()

    async def aclose(self) -> None:
        await self.conn.aclose()

    async def __aenter__(self) -> RawPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
