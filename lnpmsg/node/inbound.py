"""The node's inbound side: admission of a new connection, the responder's
handshake (evictable while pending), and the refusal log. A part of
:class:`~lnpmsg.node.node.Node`.

Every accepted connection passes here, so it costs as few trio operations
as it can. A TCP listener's accept loop runs it without a task for as long
as nothing has to wait: :meth:`Inbound._accept_now` right after the accept
(admission, act one when it has already arrived: the initiator sends it
right after connecting; act two with a non-blocking send), then
:meth:`Inbound._continue_now` after the loop's next schedule point (act
three, which has nearly always arrived by then, and the peer's start: our
``init`` sent, what the peer sent read, and handled if nothing in it has to
wait: a peer's ``init`` on a node without apps). A busy accept loop looks
again for an act three not there yet at its next two bursts' ends (None
from ``_continue_now``). A connection gets a task (:meth:`Inbound._accept`)
only when it must wait: for an act, for the transport, for the peer's next
message, or for the node to handle what the peer said, and then lives on
in it as the peer. Other listeners run it all in the connection's task:
:meth:`Inbound._accept_now` first thing, then the rest of the handshake,
waiting where it must.

No cancel scope of its own: a handshake's deadlines (act one's, then the
whole handshake's) go into the node's keepalive schedule when it starts to
wait (a handshake finished in the accept loop never needs them). The
schedule stops a handshake that is late (counted and logged there) by
closing its connection, as an eviction does: its task's next receive or
send fails, and it finds its :class:`PendingHandshake` stopped.
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

#: bytes past act three taken with it in the accept loop: a peer's ``init`` (real
#: ones are ~50-200 bytes encrypted) usually comes in the same segment or right after
AFTER_ACT_THREE = 1024


class PendingHandshake:
    """One inbound handshake under way: its sans-IO state and whether the node stopped it.

    It sits in the node's keepalive schedule until it ends: when its deadline
    (act one's, then the whole handshake's) passes, the node stops it.
    """

    __slots__ = ("act_one_done", "buffer", "conn", "deadline", "handshake", "ip", "on_late", "stopped", "unsent")

    def __init__(
        self, conn: Connection, ip: str, handshake: ResponderHandshake, deadline: float, on_late: Callable[[PendingHandshake], None]
    ) -> None:
        self.conn = conn
        self.ip = ip
        self.handshake = handshake
        #: when the whole handshake must be over: it goes into the keepalive schedule
        #: only once the handshake waits for something
        self.deadline = deadline
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
    #: peers started by ``_continue_now`` whose connection's task is about to run them
    _started: dict[Connection, Peer]
    is_protected: Callable[[bytes], bool]
    _make_peer: Callable[..., Peer]
    _run_peer: Callable[[Peer], Awaitable[None]]
    _peer_ended_now: Callable[[Peer], None]

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
        cfg = self.config
        pending = self._handshakes[conn] = PendingHandshake(
            conn, ip, ResponderHandshake(self.key.secret), now + cfg.handshake_timeout, self._handshake_late
        )
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
        # No deadline yet: act three is taken without waiting (``_continue_now``, after
        # one schedule point) or by the connection's task, which sets it before it waits.
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

    def _continue_now(self, conn: Connection) -> bool | None:
        """The second half of an inbound connection, without waiting, for a connection
        :meth:`_accept_now` kept: act three if it has arrived, then the peer's start
        (:meth:`Peer.start_now <lnpmsg.node.peer.Peer.start_now>`).

        A listener calls this after a schedule point of its accept loop (by then the
        initiator has usually answered act two). False: the connection is over (the
        caller closes it and starts no task): its handshake failed or was stopped,
        the peer was refused, or it hung up right after the handshake. True:
        :meth:`_accept` continues it in a task (it waits for an act, for the
        transport, or has something for the node to handle). None: act three is
        not there yet; the listener may call this once more later, else
        :meth:`_accept` waits for it in a task.
        """
        pending = self._handshakes[conn]
        if pending.stopped:
            self._handshake_ended(pending)  # counted and logged when it was stopped
            self.admission.closed(conn)
            return False
        if not pending.act_one_done or pending.unsent or pending.buffer:
            return True  # it waits for the peer or the transport: in its task
        try:
            # Act three and what came with it (a peer's init usually does): one receive
            # for both, and the peer's start needs none of its own.
            received = conn.receive_nowait(ACT_THREE_SIZE + AFTER_ACT_THREE)
        except TransportError:
            return True  # its task's receive fails the same way, and says why
        if received is None:
            return None  # not there yet: the listener may look once more before a task waits for it
        if len(received) < ACT_THREE_SIZE:
            pending.buffer += received
            return True
        # The buffer is empty here (checked above): what came after act three is the
        # peer's first bytes as they are, one copy, not through the buffer.
        if len(received) == ACT_THREE_SIZE:
            peer = self._peer_after_act_three(pending, received)
        else:
            peer = self._peer_after_act_three(pending, received[:ACT_THREE_SIZE], received[ACT_THREE_SIZE:])
        del pending  # its handshake's state may go now
        if peer is not None:
            if peer.start_now():
                self._started[conn] = peer  # its task runs it
                return True
            # It ended before it needed a task: before it said anything (no app and no
            # subscriber heard of it), or after an init the node took at once.
            self._peer_ended_now(peer)
        self.admission.closed(conn)
        return False

    def _peer_after_act_three(self, pending: PendingHandshake, act_three: bytes, after: bytes = b"") -> Peer | None:
        """Finish the handshake with act three and make its peer; None if the handshake
        failed or the peer is refused (counted and logged; the connection's admission
        is the caller's to release). ``after``: bytes received after act three, when
        the handshake's buffer holds none."""
        hs = pending.handshake
        try:
            remote_id = hs.receive_act_three(act_three)
            if pending.stopped:
                raise HandshakeFailed("stopped")
        except (HandshakeFailed, NoiseError) as exc:
            self._handshake_failed(pending, exc)
            return None
        self._handshake_ended(pending)
        refusal = self.admission.admit_peer(peers=len(self.peers), outbound=False, protected=self.is_protected(remote_id))
        if refusal is not None:
            self._refused(pending.ip, refusal, "refused_peer_limit")
            return None
        leftover = bytes(pending.buffer) if pending.buffer else after
        return self._make_peer(pending.conn, TransportCipher(hs.keys), remote_id, outbound=False, leftover=leftover)

    async def _handshake_in_task(self, pending: PendingHandshake) -> Peer | None:
        """The rest of the handshake, waiting where it must, and its peer (None: failed or refused)."""
        conn = pending.conn
        try:
            if not pending.act_one_done:
                act_one = await receive_exactly(conn, ACT_ONE_SIZE, pending.buffer, "act one")
                self._answer_act_one(pending, act_one)
                pending.deadline = trio.current_time() + self.config.handshake_timeout
            self.keepalive.set(pending, pending.deadline)  # from here it may wait
            if pending.unsent:
                await conn.send_frames([pending.unsent])
                pending.unsent = b""
            act_three = await receive_exactly(conn, ACT_THREE_SIZE, pending.buffer, "act three")
        except (HandshakeFailed, NoiseError, TransportError) as exc:
            self._handshake_failed(pending, exc)
            return None
        except BaseException:
            self._handshake_ended(pending)  # cancelled: the node is stopping
            raise
        return self._peer_after_act_three(pending, act_three)

    async def _accept(self, conn: Connection) -> None:
        """Run an inbound connection's task: the rest of the handshake, then the peer.

        A listener that does not call :meth:`_accept_now` in its accept loop
        gets it called here first.
        """
        try:
            peer = self._started.pop(conn, None)
            if peer is None:
                pending = self._handshakes.get(conn)
                if pending is None:
                    if not self._accept_now(conn):
                        return  # its admission is released already
                    pending = self._handshakes[conn]
                peer = await self._handshake_in_task(pending)
                # This frame lives as long as the peer: let the handshake's state (its
                # buffer, keys and ciphers) go before the peer runs, not after.
                del pending
                # As in _continue_now: a peer that hung up right after the handshake, or
                # right after an init the node took at once (or whose connection failed),
                # ends in start_now, before it ever runs (no cancel scope, no read loop).
                if peer is None or not peer.start_now(run_follows=True):
                    if peer is not None:
                        self._peer_ended_now(peer)
                    self.admission.closed(conn)
                    return
        except BaseException:
            self.admission.closed(conn)
            raise
        try:
            await self._run_peer(peer)
        finally:
            self.admission.closed(conn)
