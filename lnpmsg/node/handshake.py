"""The trio shell of the BOLT-8 handshake: acts 1-3 over a connection, either role.

The protocol is the sans-IO :mod:`lnpmsg.noise.handshake`; this module only
reads and writes the acts and bounds the time they may take: one cancel
scope per handshake (whose deadline moves once act one is in), acts read
with exact-size receives (:func:`receive_exactly`), an act taken without a
schedule point when it has already arrived. The node's own inbound
handshakes take a cheaper path (:mod:`lnpmsg.node.inbound`: the first half
in the listener's accept loop, deadlines in the keepalive schedule);
:func:`handshake_as_responder` serves a responder on its own.
"""

from __future__ import annotations

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.noise import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    InitiatorHandshake,
    NoiseError,
    ResponderHandshake,
    TransportCipher,
)
from lnpmsg.transports.base import Connection, TransportError

__all__ = ["HANDSHAKE_TIMEOUT", "HandshakeFailed", "handshake_as_initiator", "handshake_as_responder", "receive_exactly"]

#: the whole BOLT-8 handshake must finish within this (a silent peer costs us no more)
HANDSHAKE_TIMEOUT = 15.0


class HandshakeFailed(Exception):
    """The BOLT-8 handshake did not complete (timeout, wrong key, bad act, closed)."""



async def receive_exactly(conn: Connection, size: int, buffer: bytearray, what: str) -> bytes:
    """The next ``size`` bytes; any bytes read past them stay in ``buffer``.

    Asks for exactly what is missing, so on a byte stream an act usually
    comes in one read and nothing is read past it (what the peer sends
    next stays in the transport for the reader).
    """
    if not buffer:
        # Usually the act is there already (a busy node accepts late): take it
        # without a schedule point; the handshake's next wait is one anyway.
        chunk = conn.receive_nowait(size)
        if chunk is None:
            chunk = await conn.receive_after_nothing(size)
        if len(chunk) == size:
            return chunk
        if not chunk:
            raise HandshakeFailed(f"connection closed during the handshake (waiting for {what})")
        buffer += chunk
    while len(buffer) < size:
        chunk = await conn.receive_some(size - len(buffer))
        if not chunk:
            raise HandshakeFailed(f"connection closed during the handshake (waiting for {what})")
        buffer += chunk
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


async def handshake_as_initiator(
    conn: Connection, key: NodeKey, remote_node_id: bytes, timeout: float = HANDSHAKE_TIMEOUT
) -> tuple[TransportCipher, bytes]:
    """Run acts 1-3 as initiator. Returns the cipher and any bytes read past act two."""
    buffer = bytearray()
    try:
        with trio.fail_after(timeout):
            hs = InitiatorHandshake(key.secret, remote_node_id)
            await conn.send_frames([hs.act_one()])
            try:
                act_two = await receive_exactly(conn, ACT_TWO_SIZE, buffer, "act two")
            except HandshakeFailed as exc:
                # A responder whose key differs cannot read act one and hangs up: say so.
                raise HandshakeFailed(f"{exc}; is {remote_node_id.hex()} the right node id?") from None
            act_three = hs.receive_act_two(act_two)
            await conn.send_frames([act_three])
    except trio.TooSlowError:
        raise HandshakeFailed(f"handshake timed out after {timeout:g} s") from None
    except NoiseError as exc:
        raise HandshakeFailed(f"handshake failed: {exc} (is {remote_node_id.hex()} the right node id?)") from exc
    except TransportError as exc:
        raise HandshakeFailed(f"connection failed during the handshake: {exc}") from exc
    return TransportCipher(hs.keys), bytes(buffer)


async def handshake_as_responder(
    conn: Connection,
    key: NodeKey,
    timeout: float = HANDSHAKE_TIMEOUT,
    *,
    act_one_timeout: float | None = None,
    scope: trio.CancelScope | None = None,
) -> tuple[TransportCipher, bytes, bytes]:
    """Run acts 1-3 as responder. Returns the cipher, the initiator's node id and leftover bytes.

    ``act_one_timeout`` (shorter than ``timeout``) bounds the wait for act
    one: a socket that says nothing holds a handshake slot no longer.
    ``scope`` (a new, not yet entered cancel scope) lets the caller abort the
    handshake by cancelling it: then ``HandshakeFailed`` says it was cancelled.
    """
    buffer = bytearray()
    now = trio.current_time()
    deadline = now + timeout
    act_one_deadline = deadline if act_one_timeout is None else min(deadline, now + act_one_timeout)
    got_act_one = False
    if scope is None:
        scope = trio.CancelScope()
    scope.deadline = act_one_deadline
    try:
        # One cancel scope whose deadline moves once act one is in: every accepted
        # connection passes here, and a scope costs as much as a dozen hashes.
        with scope:
            hs = ResponderHandshake(key.secret)
            act_one = await receive_exactly(conn, ACT_ONE_SIZE, buffer, "act one")
            got_act_one = True
            scope.deadline = deadline
            # A schedule point after act two (not send_nowait): by the time this
            # task runs again, act three has usually arrived and is read at once
            # (measured: reading straight away found it missing and cost a wait).
            await conn.send_frames([hs.receive_act_one(act_one)])
            act_three = await receive_exactly(conn, ACT_THREE_SIZE, buffer, "act three")
            remote_node_id = hs.receive_act_three(act_three)
    except NoiseError as exc:
        raise HandshakeFailed(f"handshake failed: {exc}") from exc
    except TransportError as exc:
        raise HandshakeFailed(f"connection failed during the handshake: {exc}") from exc
    if scope.cancelled_caught:
        if trio.current_time() < scope.deadline:
            raise HandshakeFailed("handshake cancelled")
        if not got_act_one and act_one_deadline < deadline:
            raise HandshakeFailed(f"no act one within {act_one_timeout:g} s")
        raise HandshakeFailed(f"handshake timed out after {timeout:g} s")
    return TransportCipher(hs.keys), remote_node_id, bytes(buffer)
