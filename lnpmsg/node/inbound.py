"""The node's inbound side: admission of a new connection, the responder's
handshake (evictable while pending), and the refusal log. A part of
:class:`~lnpmsg.node.node.Node`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from lnpmsg.node.peer import HandshakeFailed, Peer, handshake_as_responder
from lnpmsg.transports.address import split_host_port
from lnpmsg.transports.base import Connection

if TYPE_CHECKING:
    from lnpmsg.node.admission import Admission, RefusalLog
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import NodeConfig

__all__ = ["Inbound"]

log = logging.getLogger("lnpmsg.node")


class Inbound:
    """Inbound connections of the :class:`~lnpmsg.node.node.Node` (mixed into it)."""

    key: NodeKey
    config: NodeConfig
    peers: dict[bytes, Peer]
    stats: Counter[str]
    admission: Admission
    _refusals: RefusalLog
    _handshakes: dict[Connection, tuple[trio.CancelScope, str]]
    is_protected: Callable[[bytes], bool]
    _make_peer: Callable[..., Peer]
    _run_peer: Callable[[Peer], Awaitable[None]]

    @staticmethod
    def _remote_ip(conn: Connection) -> str:
        """The source a connection counts against: its IP, whatever the transport.

        A ZeroMQ session's ``remote_address`` names our endpoint and its routing
        id (new for every connection), so its ``peer_ip`` is used; one whose IP
        libzmq cannot tell (ipc) counts against its endpoint, all such together.
        """
        if conn.peer_ip:
            return conn.peer_ip
        address = conn.remote_address
        if conn.kind == "zmq":
            return address.split("#", 1)[0]
        try:
            return split_host_port(address)[0]
        except ValueError:
            return address

    def _refused(self, ip: str, reason: str, stat: str) -> None:
        """Count a refused or evicted connection; the log gets one summary per interval."""
        self.stats[stat] += 1
        line = self._refusals.record(ip, reason, trio.current_time())
        if line is not None:
            log.warning("%s", line)

    async def _summarise_refusals(self) -> None:
        while True:
            await trio.sleep(self._refusals.interval)
            line = self._refusals.flush(trio.current_time())
            if line is not None:
                log.warning("%s", line)

    async def _accept(self, conn: Connection) -> None:
        """Run an inbound connection: admission, handshake, then the peer."""
        ip = self._remote_ip(conn)
        # Every onion peer arrives from Tor on 127.0.0.1: it has a budget of its own.
        source = None if conn.kind == "tor" else ip
        decision = self.admission.admit(conn, source, trio.current_time())
        if not decision.admitted:
            self._refused(ip, decision.reason, "refused_ip_limit")
            return
        for old in decision.evict:
            pending = self._handshakes.pop(old, None)  # type: ignore[call-overload]
            if pending is not None:
                pending[0].cancel()
                self._refused(pending[1], "evicted: oldest pending handshake of a busy source", "evicted")
        try:
            # The handshake's own cancel scope: eviction cancels it (one scope per connection, not two).
            scope = trio.CancelScope()
            self._handshakes[conn] = (scope, ip)
            try:
                cipher, remote_id, leftover = await handshake_as_responder(
                    conn, self.key, self.config.handshake_timeout, act_one_timeout=self.config.act_one_timeout, scope=scope
                )
            except HandshakeFailed as exc:
                if conn not in self._handshakes:
                    return  # evicted (counted and logged by the eviction)
                self.stats["handshake_failed"] += 1
                log.info("inbound %s from %s: %s", conn.kind, conn.remote_address, exc)
                return
            finally:
                self._handshakes.pop(conn, None)
                self.admission.handshake_done(conn)
            refusal = self.admission.admit_peer(peers=len(self.peers), outbound=False, protected=self.is_protected(remote_id))
            if refusal is not None:
                self._refused(ip, refusal, "refused_peer_limit")
                return
            peer = self._make_peer(conn, cipher, remote_id, outbound=False, leftover=leftover)
            await self._run_peer(peer)
        finally:
            self.admission.closed(conn)
