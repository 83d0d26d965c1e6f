"""The node's inbound side: admission of a new connection, the responder's
handshake (evictable while pending), and the refusal log. A part of
:class:`~lnpmsg.node.node.Node`.

Every accepted connection passes here, so it costs as few trio operations
as it can. Its first half runs without a task or a schedule point
(:meth:`Inbound._accept_now`, called from a TCP listener's accept loop, or
first thing in the connection's task by other listeners): admission, act
one when it has already arrived (the initiator sends it right after
connecting), act two with a non-blocking send. Then ONE task takes act
three and lives on as the peer's task. No cancel scope of its own: the
handshake's deadlines (act one's, then the whole handshake's) sit in the
node's keepalive schedule, which stops a handshake that is late (counted
and logged there) by closing its connection, as an eviction does: its
task's next receive or send fails, and it finds its
:class:`PendingHandshake` stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from lnpmsg.node.handshake import HandshakeFailed, receive_exactly
from lnpmsg.node.peer import Peer
from lnpmsg.noise import ACT_ONE_SIZE, ACT_THREE_SIZE, NoiseError, ResponderHandshake, TransportCipher
from lnpmsg.transports.address import split_host_port
from lnpmsg.transports.base import Connection, TransportError

if TYPE_CHECKING:
    from lnpmsg.node.admission import Admission, RefusalLog
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.keepalive import KeepaliveSchedule
    from lnpmsg.node.node import NodeConfig

__all__ = ["Inbound", "PendingHandshake"]

log = logging.getLogger("lnpmsg.node")


class PendingHandshake:
    """One inbound handshake under way: its sans-IO state and whether the node stopped it.

    It sits in the node's keepalive schedule until it ends: when its deadline
    (act one's, then the whole handshake's) passes, the node stops it.
    """

    __slots__ = ("act_one_done", "buffer", "conn", "handshake", "ip", "on_late", "stopped", "unsent")

    def __init__(self, conn: Connection, ip: str, handshake: ResponderHandshake, on_late: Callable[[PendingHandshake], None]) -> None:
        self.conn = conn
        self.ip = ip
        self.handshake = handshake
        #: act one is in, act two made (``unsent``: what the transport has not taken of it yet)
        self.act_one_done = False
        self.unsent = b""
        #: bytes read past what the handshake has used so far
        self.buffer = bytearray()
        #: the node stopped it (a deadline, an eviction) and closed its connection;
        #: its task only forgets it (it was counted and logged then)
        self.stopped = False
        self.on_late = on_late

    def keepalive_due(self, now: float) -> None:
        """Its deadline passed (called by the keepalive schedule)."""
        del now
        self.on_late(self)


class Inbound:
    """Inbound connections of the :class:`~lnpmsg.node.node.Node` (mixed into it)."""

    key: NodeKey
    config: NodeConfig
    peers: dict[bytes, Peer]
    stats: Counter[str]
    admission: Admission
    keepalive: KeepaliveSchedule
    _nursery: trio.Nursery | None
    _refusals: RefusalLog
    _handshakes: dict[Connection, PendingHandshake]
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

    def _stop_handshake(self, pending: PendingHandshake) -> None:
        """Stop a pending handshake from outside its task: close its connection, so that
        the task's next receive or send fails (and the task forgets it)."""
        pending.stopped = True
        self.keepalive.set(pending, None)
        conn = pending.conn
        self.admission.handshake_done(conn)  # its slot is free now, whenever its task runs
        if not conn.close_nowait() and self._nursery is not None:
            self._nursery.start_soon(self._close_quietly, conn)

    @staticmethod
    async def _close_quietly(conn: Connection) -> None:
        """A stopped handshake's close that must wait (a ZeroMQ or QUIC goodbye), in the node's
        nursery: its failure is the connection's, never the node's."""
        try:
            await conn.aclose()
        except Exception as exc:
            log.info("closing a stopped handshake's %s connection from %s failed: %s", conn.kind, conn.remote_address, exc)

    def _handshake_late(self, pending: PendingHandshake) -> None:
        """A pending handshake's deadline passed."""
        if pending.stopped:
            return
        self._stop_handshake(pending)
        cfg = self.config
        if pending.act_one_done or cfg.act_one_timeout >= cfg.handshake_timeout:
            reason = f"handshake timed out after {cfg.handshake_timeout:g} s"
        else:
            reason = f"no act one within {cfg.act_one_timeout:g} s"
        self.stats["handshake_failed"] += 1
        log.info("inbound %s from %s: %s", pending.conn.kind, pending.conn.remote_address, reason)

    def _accept_now(self, conn: Connection) -> bool:
        """The first half of an inbound connection, without waiting: admission, then act one
        if it is there and act two. False: the connection is refused or failed (the caller
        closes it and starts no task); True: :meth:`_accept` continues it in a task."""
        ip = self._remote_ip(conn)
        # Every onion peer arrives from Tor on 127.0.0.1: it has a budget of its own.
        now = trio.current_time()
        decision = self.admission.admit(conn, None if conn.kind == "tor" else ip, now)
        if not decision.admitted:
            self._refused(ip, decision.reason, "refused_ip_limit")
            return False
        for old in decision.evict:
            # Its task (maybe not started yet) finds it stopped and forgets it.
            evicted = self._handshakes.get(old)  # type: ignore[call-overload]
            if evicted is not None and not evicted.stopped:
                self._stop_handshake(evicted)
                self._refused(evicted.ip, "evicted: oldest pending handshake of a busy source", "evicted")
        pending = self._handshakes[conn] = PendingHandshake(conn, ip, ResponderHandshake(self.key.secret), self._handshake_late)
        cfg = self.config
        try:
            # Usually act one is there already (the initiator sends it at once, and a busy
            # node accepts late): then act two leaves at once too.
            act_one = conn.receive_nowait(ACT_ONE_SIZE)
            if act_one is not None and len(act_one) == ACT_ONE_SIZE:
                self._answer_act_one(pending, act_one)
            elif act_one == b"":
                raise HandshakeFailed("connection closed during the handshake (waiting for act one)")
            else:
                if act_one:
                    pending.buffer += act_one
                # A socket that says nothing holds a handshake slot no longer than this.
                self.keepalive.set(pending, now + min(cfg.act_one_timeout, cfg.handshake_timeout))
                return True
        except (HandshakeFailed, NoiseError, TransportError) as exc:
            self._handshake_failed(pending, exc)
            self.admission.closed(conn)
            return False
        self.keepalive.set(pending, now + cfg.handshake_timeout)
        return True

    def _answer_act_one(self, pending: PendingHandshake, act_one: bytes) -> None:
        act_two = pending.handshake.receive_act_one(act_one)
        pending.act_one_done = True
        sent = pending.conn.send_nowait(act_two)
        pending.unsent = act_two[sent:] if sent else act_two

    def _handshake_ended(self, pending: PendingHandshake) -> None:
        """Forget a handshake that ended, either way: its deadline and its slot."""
        del self._handshakes[pending.conn]
        self.keepalive.set(pending, None)
        self.admission.handshake_done(pending.conn)

    def _handshake_failed(self, pending: PendingHandshake, exc: Exception) -> None:
        """The handshake ended without a peer: release its slot, count it and say why."""
        self._handshake_ended(pending)
        if pending.stopped:
            return  # counted and logged when it was stopped
        self.stats["handshake_failed"] += 1
        if isinstance(exc, HandshakeFailed):
            reason = str(exc)
        elif isinstance(exc, TransportError):
            reason = f"connection failed during the handshake: {exc}"
        else:
            reason = f"handshake failed: {exc}"
        log.info("inbound %s from %s: %s", pending.conn.kind, pending.conn.remote_address, reason)

    async def _accept(self, conn: Connection) -> None:
        """Run an inbound connection's task: the rest of the handshake, then the peer.

        A listener that does not call :meth:`_accept_now` in its accept loop
        gets it called here first.
        """
        pending = self._handshakes.get(conn)
        if pending is None:
            if not self._accept_now(conn):
                return
            pending = self._handshakes[conn]
        try:
            try:
                hs = pending.handshake
                if not pending.act_one_done:
                    act_one = await receive_exactly(conn, ACT_ONE_SIZE, pending.buffer, "act one")
                    self._answer_act_one(pending, act_one)
                    self.keepalive.set(pending, trio.current_time() + self.config.handshake_timeout)
                if pending.unsent:
                    await conn.send_frames([pending.unsent])
                    pending.unsent = b""
                act_three = await receive_exactly(conn, ACT_THREE_SIZE, pending.buffer, "act three")
                remote_id = hs.receive_act_three(act_three)
                if pending.stopped:
                    raise HandshakeFailed("stopped")
            except (HandshakeFailed, NoiseError, TransportError) as exc:
                self._handshake_failed(pending, exc)
                return
            except BaseException:
                self._handshake_ended(pending)  # cancelled: the node is stopping
                raise
            self._handshake_ended(pending)
            refusal = self.admission.admit_peer(peers=len(self.peers), outbound=False, protected=self.is_protected(remote_id))
            if refusal is not None:
                self._refused(pending.ip, refusal, "refused_peer_limit")
                return
            peer = self._make_peer(conn, TransportCipher(hs.keys), remote_id, outbound=False, leftover=bytes(pending.buffer))
            # This frame lives as long as the peer: let the handshake's state (its
            # buffer, keys and ciphers) go before the peer runs, not after.
            del hs, pending
            await self._run_peer(peer)
        finally:
            self.admission.closed(conn)
