"""The node control API: JSON-RPC over a ZeroMQ ROUTER socket, events on an XPUB.

Mount it on a node and every other program on the host that may read the
data dir can drive and watch the node::

    node.mount(ControlServer(data_dir))              # before node.run()

Sockets (the defaults; ``endpoint=`` / ``events_endpoint=`` change them):

- control: ``ipc://DATA_DIR/control.sock``, a ROUTER socket. Clients use
  DEALER (any number of requests in flight, matched by ``id``) or REQ.
- events: ``ipc://DATA_DIR/events.sock``, an XPUB socket (clients use SUB).
- Both socket files are mode 0600 (created under umask 077) in a data dir
  of mode 0700. With ``endpoint="tcp://127.0.0.1:PORT"`` (loopback only)
  both sockets use CURVE and accept only authorised client keys
  (:mod:`lnpmsg.rpc.curve`); the events socket then defaults to a free
  loopback port.
- ``DATA_DIR/control.json`` (0600) says where the sockets are and whether
  CURVE is on; ``DATA_DIR/control.lock`` is held while the node runs, so
  clients tell a running node from a stale file and a second node cannot
  take over the same data dir (``reserve()`` takes it early; clients test
  it without taking it: :mod:`lnpmsg.rpc.control_files`).

Requests and replies: JSON-RPC 2.0 objects, one per message
(:mod:`lnpmsg.rpc.control_proto`). Methods (params in brackets, ``?`` optional):

==================================================  ==========================================
method                                              result
==================================================  ==========================================
``getinfo``                                         node_id, version, network, listen,
                                                    addresses (as ``connect`` takes them),
                                                    features, feature_names, peers (count),
                                                    apps, control, events, methods
``connect`` [address, timeout?, reconnect?]         the peer (as in listpeers); a connected one
                                                    as it is, unless reconnect replaces it
``disconnect`` [node_id]                            {"disconnected": bool}
``listpeers`` [node_id?]                            {"peers": [{node_id, address, transport,
                                                    outbound, features (hex), feature_names,
                                                    apps, bytes_in, bytes_out, messages_in,
                                                    messages_out, ping_rtt_ms, connected_seconds,
                                                    alias (gossip's, or null)}]}
``sendcustommsg`` [node_id, type, payload (hex)]    {"sent": true, "type": N, "bytes": n}
``ping`` [node_id, timeout?]                        {"rtt_ms": float}
``signmessage`` [message]                           {"signature" (hex), "recid", "zbase"}: signed
                                                    with the node key, as lnd and Core Lightning
``checkmessage`` [message, zbase, pubkey?]          {"pubkey", "verified"}: signed by pubkey, or
                                                    (none given) by us or a node in the gossip
                                                    graph (pubkey: the key the signature recovers)
``stop``                                            {"stopping": true}; the node stops right after
``help``                                            every method with its params and doc
``eventsync`` [token]                               publishes ``control.sync.TOKEN`` (lets a
                                                    subscriber know its subscription is live)
``app.attach``, ``app.send``, ``app.serve``, ...    an app in another process on the app
                                                    contract (:mod:`lnpmsg.rpc.attached`)
``APP.CALL`` [...]                                  calls apps register (``rpc.call``,
                                                    ``pubsub.publish``, ...), listed by ``help``
==================================================  ==========================================

``sendcustommsg`` takes types 32768-65535 (BOLT 1's custom range). Errors
(``error.code``): -32700 not JSON, -32600 not a request, -32601 unknown
method, -32602 bad params, -32000 the call failed (``data.error`` names the
failure, e.g. ``ConnectError``), -32001 request larger than 1 MiB, -32002
busy (more than 64 requests of one client in flight), -32003 the call took
longer than its limit. A request over 4 MiB is not even read: ZeroMQ drops
that client's connection (``ZMQ_MAXMSGSIZE``). None of these affect the
node or other clients.

This module holds the server's sockets and lifecycle (bind, lock, info
file, stop); how a request is served is in :mod:`lnpmsg.rpc.control_requests`
and the built-in methods are in :mod:`lnpmsg.rpc.control_methods` (both
mixins of :class:`ControlServer`; their names are importable from here too).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import zmq

from lnpmsg.app import App
from lnpmsg.io.zmq_trio import TrioSocket
from lnpmsg.node.full_disk import cannot
from lnpmsg.pubsub.bridge import EVENTS_HWM, EventPublisher
from lnpmsg.rpc.attached import AttachedApps
from lnpmsg.rpc.control_files import LockHeld, make_data_dir, take_lock, unlink_quietly, write_info
from lnpmsg.rpc.control_methods import (  # (re-exported: their old import path)
    CUSTOM_TYPE_MAX,
    STOP_GRACE,
    ControlBuiltins,
    PeerNotConnectedError,
    PingTimeout,
    peer_info,
)
from lnpmsg.rpc.control_proto import (
    CONTROL_INFO_FILE,
    CONTROL_LOCK_FILE,
    CONTROL_SOCKET_FILE,
    EVENTS_SOCKET_FILE,
    MAX_REQUEST_BYTES,
)
from lnpmsg.rpc.control_requests import (  # (re-exported: their old import path)
    CALL_TIMEOUT,
    MAX_INFLIGHT,
    MAX_INFLIGHT_PER_CLIENT,
    AppStopped,
    ControlRequests,
    MethodEntry,
)
from lnpmsg.rpc.curve import ZAP_ENDPOINT, apply_server, ensure_server_keys, serve_zap
from lnpmsg.rpc.params import params_checker

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = [
    "CALL_TIMEOUT",
    "CUSTOM_TYPE_MAX",
    "HARD_MAX_MESSAGE",
    "MAX_INFLIGHT",
    "MAX_INFLIGHT_PER_CLIENT",
    "STOP_GRACE",
    "AppStopped",
    "ControlError",
    "ControlServer",
    "PeerNotConnectedError",
    "PingTimeout",
    "peer_info",
]

log = logging.getLogger(__name__)

#: ZMQ_MAXMSGSIZE: libzmq drops a client that sends more (memory bound; below
#: this, an oversized request gets a JSON error)
HARD_MAX_MESSAGE = 4 * MAX_REQUEST_BYTES
#: messages queued per control client before replies to it are dropped
CONTROL_HWM = 1000
#: the longest unix socket path (sockaddr_un.sun_path, minus the NUL)
MAX_IPC_PATH = 107


class ControlError(Exception):
    """The control server cannot start (bad endpoint, socket in use, node already running)."""


def _check_endpoint(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path.startswith("/"):
            raise ControlError(f"{endpoint}: an ipc:// control endpoint needs an absolute path")
        if len(path.encode()) > MAX_IPC_PATH:
            raise ControlError(
                f"{endpoint}: the socket path is longer than {MAX_IPC_PATH} bytes (a unix socket limit); "
                "use a shorter --data-dir or a tcp://127.0.0.1:PORT control endpoint"
            )
        return
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ControlError(f"{endpoint}: control over tcp:// binds loopback addresses only (127.0.0.1, ::1)")
        return
    raise ControlError(f"{endpoint}: the control API speaks ipc:// or tcp:// only")


class ControlServer(ControlBuiltins, ControlRequests, App):
    """Serves the control API and the event stream of the node it is mounted on.

    Args:
        data_dir: where the sockets (ipc), keys (tcp), ``control.json`` and the lock live.
        endpoint: the control socket (default ``ipc://DATA_DIR/control.sock``).
        events_endpoint: the event socket (default ``ipc://DATA_DIR/events.sock``,
            or ``tcp://127.0.0.1:0`` when ``endpoint`` is tcp).
        max_request_bytes / max_inflight_per_client / call_timeout / events_hwm: limits.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        endpoint: str | None = None,
        events_endpoint: str | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_inflight_per_client: int = MAX_INFLIGHT_PER_CLIENT,
        call_timeout: float = CALL_TIMEOUT,
        events_hwm: int = EVENTS_HWM,
    ) -> None:
        # Control calls have their own limit (call_timeout); the server has no handlers.
        super().__init__("control", handler_timeout=None)
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.requested_endpoint = endpoint or f"ipc://{self.data_dir / CONTROL_SOCKET_FILE}"
        _check_endpoint(self.requested_endpoint)
        self.curve = self.requested_endpoint.startswith("tcp://")
        default_events = "tcp://127.0.0.1:0" if self.curve else f"ipc://{self.data_dir / EVENTS_SOCKET_FILE}"
        self.requested_events_endpoint = events_endpoint or default_events
        _check_endpoint(self.requested_events_endpoint)
        if self.curve != self.requested_events_endpoint.startswith("tcp://"):
            raise ControlError("the control and event sockets must both be ipc:// or both be tcp://")
        self.max_request_bytes = max_request_bytes
        self.max_inflight_per_client = max_inflight_per_client
        self.call_timeout = call_timeout
        self.events_hwm = events_hwm
        #: where the sockets are bound (set once running)
        self.endpoint: str | None = None
        self.events_endpoint: str | None = None
        #: requests served, and requests answered with an error before running
        self.requests = 0
        self.rejected = 0
        self.publisher: EventPublisher | None = None
        self._reserved_lock: int | None = None
        self._inflight: Counter[bytes] = Counter()
        self._inflight_total = 0
        self._builtins: dict[str, MethodEntry] = {}
        self.on_stopping(self._announce_stop)
        #: apps in other processes, on the contract (the ``app.*`` calls)
        self.attached_apps = AttachedApps(lambda: self.node, self._publish_app_event)
        self._app_methods: dict[tuple[str, str], tuple[Callable[..., Awaitable[Any]], MethodEntry]] = {}
        for name, fn in (
            ("getinfo", self.getinfo),
            ("connect", self.connect),
            ("disconnect", self.disconnect),
            ("listpeers", self.listpeers),
            ("sendcustommsg", self.sendcustommsg),
            ("ping", self.ping),
            ("signmessage", self.signmessage),
            ("checkmessage", self.checkmessage),
            ("stop", self.stop),
            ("help", self.help),
            ("eventsync", self.eventsync),
            *self.attached_apps.methods().items(),
        ):
            self._builtins[name] = MethodEntry(fn, params_checker(fn, skip=0), (fn.__doc__ or "").strip().splitlines()[0])

    # ------------------------------------------------------------ mounting

    @property
    def node(self) -> Node:
        if self._node is None:
            raise ControlError("the control server is not mounted: node.mount(ControlServer(...))")
        return self._node

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the sockets, then serve until cancelled (the node stops). Raises ControlError on start."""
        self._make_data_dir()
        lock_fd = self._reserved_lock if self._reserved_lock is not None else self._take_lock()
        self._reserved_lock = None
        ctx = zmq.Context()
        sockets: list[TrioSocket] = []
        info_path = self.data_dir / CONTROL_INFO_FILE
        try:
            zap_keys = None
            if self.curve:
                try:
                    zap_keys = ensure_server_keys(self.data_dir)
                except Exception as exc:
                    raise ControlError(str(exc)) from exc
                zap = TrioSocket(ctx.socket(zmq.REP))
                sockets.append(zap)
                zap.socket.setsockopt(zmq.LINGER, 0)
                zap.bind(ZAP_ENDPOINT)
            router = TrioSocket(ctx.socket(zmq.ROUTER))
            sockets.append(router)
            router.socket.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE)
            router.socket.setsockopt(zmq.SNDHWM, CONTROL_HWM)
            router.socket.setsockopt(zmq.RCVHWM, CONTROL_HWM)
            router.socket.setsockopt(zmq.LINGER, 500)
            xpub = TrioSocket(ctx.socket(zmq.XPUB))
            sockets.append(xpub)
            xpub.socket.setsockopt(zmq.XPUB_VERBOSER, 1)
            xpub.socket.setsockopt(zmq.SNDHWM, self.events_hwm)
            xpub.socket.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # subscribers send only subscriptions
            xpub.socket.setsockopt(zmq.LINGER, 0)
            if zap_keys is not None:
                apply_server(router.socket, zap_keys)
                apply_server(xpub.socket, zap_keys)
            self.endpoint = self._bind(router, self.requested_endpoint)
            self.events_endpoint = self._bind(xpub, self.requested_events_endpoint)
            self.publisher = EventPublisher(self.node.events, xpub)
            self._write_info(info_path)
            log.info("control API on %s, events on %s%s", self.endpoint, self.events_endpoint, " (CURVE)" if self.curve else "")
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if zap_keys is not None:
                    nursery.start_soon(serve_zap, sockets[0], zap_keys.authorized)
                nursery.start_soon(self.publisher.run)
                nursery.start_soon(self._serve, router)
                task_status.started()
        finally:
            self._nursery = None
            for sock in reversed(sockets):
                sock.close()
            ctx.term()
            for endpoint in (self.endpoint, self.events_endpoint):
                if endpoint and endpoint.startswith("ipc://"):
                    unlink_quietly(Path(endpoint[len("ipc://") :]))
            unlink_quietly(info_path)
            os.close(lock_fd)  # releases the lock

    async def _announce_stop(self) -> None:
        """Subscribers hear that the node goes (``node.stopping``), not just silence."""
        if self.publisher is not None:
            await self.publisher.announce_stop("node shutting down")

    def reserve(self) -> None:
        """Take the data dir's lock now, before the node starts its apps (idempotent):
        clients see a node *starting* (lock held, no ``control.json``) and wait for it."""
        if self._reserved_lock is None:
            self._make_data_dir()
            self._reserved_lock = self._take_lock()
            unlink_quietly(self.data_dir / CONTROL_INFO_FILE)  # left by a node that was killed: we hold the lock

    def release(self) -> None:
        """Give back the lock :meth:`reserve` took, when the node failed to start before this
        server ran (the data dir is free for the next start; idempotent)."""
        if self._reserved_lock is not None:
            fd, self._reserved_lock = self._reserved_lock, None
            os.close(fd)

    def _make_data_dir(self) -> None:
        try:
            make_data_dir(self.data_dir)
        except OSError as exc:
            raise ControlError(cannot("create the data dir", self.data_dir, exc)) from exc

    def _publish_app_event(self, topic: str, fields: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish(topic, fields)

    def _take_lock(self) -> int:
        try:
            return take_lock(self.data_dir)
        except LockHeld as exc:
            raise ControlError(str(exc)) from None
        except OSError as exc:
            raise ControlError(cannot("lock", self.data_dir / CONTROL_LOCK_FILE, exc)) from exc

    @staticmethod
    def _bind(sock: TrioSocket, endpoint: str) -> str:
        try:
            if not endpoint.startswith("ipc://"):
                return sock.bind(endpoint)
            # Created 0600 from the start: no window in which others could connect.
            old_umask = os.umask(0o177)
            try:
                bound = sock.bind(endpoint)
            finally:
                os.umask(old_umask)
            os.chmod(endpoint[len("ipc://") :], 0o600)
            return bound
        except zmq.ZMQError as exc:
            raise ControlError(f"cannot bind {endpoint}: {exc}") from exc

    def _write_info(self, path: Path) -> None:
        info = {"control": self.endpoint, "events": self.events_endpoint, "curve": self.curve,
                "pid": os.getpid(), "node_id": self.node.node_id.hex()}
        try:
            write_info(path, info)
        except OSError as exc:  # a full disk: clients could not find the node
            raise ControlError(cannot("write", path, exc)) from exc

    # ------------------------------------------------------------- serving
