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
                                                    messages_out, ping_rtt_ms, connected_seconds}]}
``sendcustommsg`` [node_id, type, payload (hex)]    {"sent": true, "type": N, "bytes": n}
``ping`` [node_id, timeout?]                        {"rtt_ms": float}
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
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import zmq

from lnpmsg import __version__
from lnpmsg.app import App, AppState
from lnpmsg.node.peer import Peer
from lnpmsg.pubsub.bridge import EVENTS_HWM, EventPublisher
from lnpmsg.rpc.attached import AttachedApps
from lnpmsg.rpc.control_files import LockHeld, make_data_dir, take_lock, unlink_quietly, write_info
from lnpmsg.rpc.control_proto import (
    CONTROL_INFO_FILE,
    CONTROL_LOCK_FILE,
    CONTROL_SOCKET_FILE,
    EVENTS_SOCKET_FILE,
    MAX_REQUEST_BYTES,
    ControlRequestError,
    ErrorCode,
    encode_error,
    encode_result,
    parse_request,
)
from lnpmsg.rpc.curve import ZAP_ENDPOINT, apply_server, ensure_server_keys, serve_zap
from lnpmsg.rpc.params import ParamsError, describe_params, params_checker
from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket
from lnpmsg.wire import UnknownMessage, WireError
from lnpmsg.wire.message import CUSTOM_TYPE_MIN, MAX_MESSAGE_TYPE

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = [
    "CALL_TIMEOUT",
    "HARD_MAX_MESSAGE",
    "MAX_INFLIGHT",
    "MAX_INFLIGHT_PER_CLIENT",
    "ControlError",
    "ControlServer",
    "peer_info",
]

log = logging.getLogger(__name__)

#: seconds a control call may take (connect waits for handshake and init)
CALL_TIMEOUT = 60.0
#: requests one client may have running; more get ``busy``
MAX_INFLIGHT_PER_CLIENT = 64
#: requests running over all clients
MAX_INFLIGHT = 1024
#: ZMQ_MAXMSGSIZE: libzmq drops a client that sends more (memory bound; below
#: this, an oversized request gets a JSON error)
HARD_MAX_MESSAGE = 4 * MAX_REQUEST_BYTES
#: messages queued per control client before replies to it are dropped
CONTROL_HWM = 1000
#: a ``stop`` reply gets this long to leave before the node shuts down
STOP_GRACE = 0.2
#: the longest unix socket path (sockaddr_un.sun_path, minus the NUL)
MAX_IPC_PATH = 107
#: custom message types sendcustommsg accepts (BOLT 1's custom range)
CUSTOM_TYPE_MAX = MAX_MESSAGE_TYPE


class ControlError(Exception):
    """The control server cannot start (bad endpoint, socket in use, node already running)."""


@dataclass(slots=True)
class _Method:
    fn: Callable[..., Awaitable[Any]]
    check: Callable[[Any], dict[str, Any]]
    doc: str


def _node_id(text: str) -> bytes:
    try:
        node_id = bytes.fromhex(text)
    except ValueError:
        raise ParamsError(f"node_id is not hex: {text[:80]!r}") from None
    if len(node_id) != 33:
        raise ParamsError(f"node_id is 33 bytes (66 hex characters), got {len(node_id)}")
    return node_id


def peer_info(node: Node, peer: Peer, now: float) -> dict[str, Any]:
    """One peer as listpeers shows it."""
    remote = peer.session.remote_features
    supports = [
        name
        for name, app in node.apps.items()
        if remote is not None and any(remote.supports(bit) for bit in app.features.bits())
    ]
    counters = peer.counters
    return {
        "node_id": peer.node_id.hex(),
        "address": peer.address,
        "transport": peer.transport_kind,
        "outbound": peer.outbound,
        "features": remote.to_bytes().hex() if remote is not None else "",
        "feature_names": node.describe_features(remote),
        "apps": supports,
        "bytes_in": counters.bytes_in,
        "bytes_out": counters.bytes_out,
        "messages_in": counters.messages_in,
        "messages_out": counters.messages_out,
        "ping_rtt_ms": None if peer.ping_rtt is None else round(peer.ping_rtt * 1000, 3),
        "connected_seconds": round(now - peer.connected_at, 3),
    }


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


class ControlServer(App):
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
        self._builtins: dict[str, _Method] = {}
        self.on_stopping(self._announce_stop)
        #: apps in other processes, on the contract (the ``app.*`` calls)
        self.attached_apps = AttachedApps(lambda: self.node, self._publish_app_event)
        self._app_methods: dict[tuple[str, str], tuple[Callable[..., Awaitable[Any]], _Method]] = {}
        for name, fn in (
            ("getinfo", self.getinfo),
            ("connect", self.connect),
            ("disconnect", self.disconnect),
            ("listpeers", self.listpeers),
            ("sendcustommsg", self.sendcustommsg),
            ("ping", self.ping),
            ("stop", self.stop),
            ("help", self.help),
            ("eventsync", self.eventsync),
            *self.attached_apps.methods().items(),
        ):
            self._builtins[name] = _Method(fn, params_checker(fn, skip=0), (fn.__doc__ or "").strip().splitlines()[0])

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

    def _make_data_dir(self) -> None:
        try:
            make_data_dir(self.data_dir)
        except OSError as exc:
            raise ControlError(f"cannot create the data dir {self.data_dir}: {exc.strerror or exc}") from exc

    def _publish_app_event(self, topic: str, fields: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish(topic, fields)

    def _take_lock(self) -> int:
        try:
            return take_lock(self.data_dir)
        except LockHeld as exc:
            raise ControlError(str(exc)) from None
        except OSError as exc:
            raise ControlError(f"cannot lock {self.data_dir / CONTROL_LOCK_FILE}: {exc.strerror or exc}") from exc

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
        write_info(path, info)

    # ------------------------------------------------------------- serving

    async def _serve(self, router: TrioSocket) -> None:
        while True:
            try:
                parts = await router.recv_multipart()
            except SocketClosedError:
                return
            if len(parts) < 2:
                continue
            envelope, body = parts[:-1], parts[-1]
            client = envelope[0]
            self.requests += 1
            try:
                request = parse_request(body, self.max_request_bytes)
                method = self._method(request.method)
                if method is None:
                    raise ControlRequestError(
                        ErrorCode.METHOD_NOT_FOUND, f"unknown method {request.method!r} (call 'help' for the list)", request.id
                    )
                try:
                    kwargs = method.check(request.params)
                except ParamsError as exc:
                    raise ControlRequestError(ErrorCode.INVALID_PARAMS, f"{request.method}: {exc}", request.id) from None
                if self._inflight[client] >= self.max_inflight_per_client or self._inflight_total >= MAX_INFLIGHT:
                    raise ControlRequestError(
                        ErrorCode.BUSY, f"busy: {self._inflight[client]} of your requests are running (limit {self.max_inflight_per_client})", request.id
                    )
            except ControlRequestError as exc:
                self.rejected += 1
                await self._send(router, envelope, exc.reply())
                continue
            self._inflight[client] += 1
            self._inflight_total += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._call, router, envelope, request.id, request.method, method, kwargs)

    async def _call(self, router: TrioSocket, envelope: list[bytes], request_id: Any, name: str, method: _Method, kwargs: dict[str, Any]) -> None:
        try:
            with trio.fail_after(self.call_timeout):
                result = await method.fn(**kwargs)
        except trio.TooSlowError:
            reply = encode_error(request_id, ErrorCode.TIMEOUT, f"{name} did not finish within {self.call_timeout:g} s")
        except ParamsError as exc:
            reply = encode_error(request_id, ErrorCode.INVALID_PARAMS, f"{name}: {exc}")
        except Exception as exc:
            log.debug("control call %s failed", name, exc_info=True)
            reply = self._failure(request_id, name, exc)
        else:
            try:
                reply = encode_result(request_id, result)
            except (TypeError, ValueError) as exc:
                reply = encode_error(request_id, ErrorCode.INTERNAL_ERROR, f"{name} returned a result that is not JSON: {exc}")
        finally:
            client = envelope[0]
            self._inflight[client] -= 1
            if self._inflight[client] <= 0:
                del self._inflight[client]
            self._inflight_total -= 1
        await self._send(router, envelope, reply)

    @staticmethod
    def _failure(request_id: Any, name: str, exc: Exception) -> bytes:
        data: dict[str, Any] = {"error": type(exc).__name__}
        details = getattr(exc, "details", None)
        if isinstance(details, dict):
            data.update(details)
        text = str(exc) or type(exc).__name__
        return encode_error(request_id, ErrorCode.CALL_FAILED, f"{name}: {text}"[:2000], data)

    @staticmethod
    async def _send(router: TrioSocket, envelope: list[bytes], reply: bytes) -> None:
        try:
            # ROUTER drops (never waits) when the client is gone or not reading.
            await router.send_multipart([*envelope, reply])
        except (SocketClosedError, zmq.ZMQError) as exc:
            log.debug("control reply not sent: %s", exc)

    def _method(self, name: str) -> _Method | None:
        method = self._builtins.get(name)
        if method is not None or "." not in name:
            return method
        app_name, call = name.split(".", 1)
        app = self.node.apps.get(app_name)
        fn = getattr(app, "control_methods", {}).get(call) if app is not None else None
        if fn is None:
            return None
        if app is not None and app.state is AppState.STOPPED:
            return _Method(_stopped_app(app_name, app.stop_reason), lambda params: {}, "the app is stopped")
        cached = self._app_methods.get((app_name, call))
        if cached is None or cached[0] is not fn:
            entry = _Method(fn, params_checker(fn, skip=0), (fn.__doc__ or "").strip().split("\n")[0])
            cached = self._app_methods[(app_name, call)] = (fn, entry)
        return cached[1]

    # ------------------------------------------------------------- methods

    async def getinfo(self) -> dict[str, Any]:
        """The node: id, addresses, features, peers, apps, sockets."""
        node = self.node
        return {
            "node_id": node.node_id.hex(),
            "version": __version__,
            "network": node.config.network,
            "listen": list(node.listen_addresses),
            "addresses": node.addresses,  # the dialable forms: NODEID@host:port, udp://NODEID@host:port...
            "features": node.local_features().to_bytes().hex(),
            "feature_names": node.describe_features(node.local_features()),
            "peers": sum(1 for p in node.peers.values() if p.is_ready),
            "apps": sorted(name for name in node.apps if name != self.name),
            "control": self.endpoint,
            "events": self.events_endpoint,
            "curve": self.curve,
            "methods": sorted(self._method_names()),
        }

    async def connect(self, address: str, timeout: float | None = None, reconnect: bool = False) -> dict[str, Any]:
        """Connect to a peer (NODEID@host:port, or any peer address form) and wait for its init;
        a connected peer is returned as it is unless reconnect is true."""
        peer = await self.node.connect(address, timeout=timeout, reconnect=reconnect)
        return peer_info(self.node, peer, trio.current_time())

    async def disconnect(self, node_id: str) -> dict[str, Any]:
        """Close the connection to a peer."""
        return {"disconnected": await self.node.disconnect(_node_id(node_id), "disconnect requested over the control API")}

    async def listpeers(self, node_id: str | None = None) -> dict[str, Any]:
        """Connected peers: features, transport, traffic, ping round trip."""
        now = trio.current_time()
        wanted = None if node_id is None else _node_id(node_id)
        peers = [p for p in self.node.peers.values() if p.is_ready and (wanted is None or p.node_id == wanted)]
        return {"peers": [peer_info(self.node, p, now) for p in peers]}

    async def sendcustommsg(self, node_id: str, type: int, payload: str = "") -> dict[str, Any]:
        """Send a custom message (type 32768-65535, payload in hex) to a connected peer."""
        if not CUSTOM_TYPE_MIN <= type <= CUSTOM_TYPE_MAX:
            raise ParamsError(f"type must be in the custom range {CUSTOM_TYPE_MIN}..{CUSTOM_TYPE_MAX}, got {type}")
        try:
            data = bytes.fromhex(payload)
        except ValueError:
            raise ParamsError("payload is not hex") from None
        try:
            message = UnknownMessage(type, data)
        except WireError as exc:
            raise ParamsError(str(exc)) from None
        peer = self._peer(node_id)
        await peer.send(message)
        return {"sent": True, "type": type, "bytes": len(data) + 2}

    async def ping(self, node_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Ping a connected peer; the round trip in milliseconds."""
        peer = self._peer(node_id)
        try:
            rtt = await peer.ping(timeout=timeout)
        except trio.TooSlowError:
            raise PingTimeout(f"no pong from {node_id} within {timeout:g} s") from None
        return {"rtt_ms": round(rtt * 1000, 3)}

    async def stop(self) -> dict[str, Any]:
        """Stop the node (after this reply has left)."""
        assert self._nursery is not None
        self._nursery.start_soon(self._stop_soon)
        return {"stopping": True}

    async def _stop_soon(self) -> None:
        await trio.sleep(STOP_GRACE)
        self.node.stop()

    async def help(self) -> dict[str, Any]:
        """Every method with its params and what it does."""
        out = {}
        for name in sorted(self._method_names()):
            method = self._method(name)
            assert method is not None
            out[name] = {"params": describe_params(method.fn, skip=0), "doc": method.doc}
        return {"methods": out}

    async def eventsync(self, token: str | None = None) -> dict[str, Any]:
        """Publish ``control.sync.TOKEN`` on the event socket (subscribers wait for it to know they are live)."""
        token = token or secrets.token_hex(8)
        if len(token) > 64 or not token.replace("-", "").replace("_", "").isalnum():
            raise ParamsError("token is 1..64 letters, digits, '-' or '_'")
        assert self.publisher is not None
        self.publisher.publish(f"control.sync.{token}", {"token": token})
        return {"token": token, "subscriptions": self.publisher.subscriptions}

    def _method_names(self) -> list[str]:
        names = list(self._builtins)
        for app_name, app in self.node.apps.items():
            for call in getattr(app, "control_methods", {}):
                names.append(f"{app_name}.{call}")
        return names

    def _peer(self, node_id: str) -> Peer:
        peer = self.node.peers.get(_node_id(node_id))
        if peer is None or not peer.is_ready:
            raise PeerNotConnectedError(f"peer {node_id} is not connected")
        return peer


def _stopped_app(name: str, reason: str | None) -> Callable[..., Awaitable[Any]]:
    async def stopped(**params: Any) -> Any:
        raise AppStopped(f"app {name} is stopped: {reason or 'stopped'}")

    return stopped


class AppStopped(Exception):
    """The control call belongs to an app that is stopped."""


class PeerNotConnectedError(Exception):
    """The control call names a peer that is not connected."""


class PingTimeout(Exception):
    """The peer did not answer a ping in time."""
