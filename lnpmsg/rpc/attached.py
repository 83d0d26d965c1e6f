"""Attached apps: an app in another process, on the same contract as a mounted one.

A program that talks to a running node over its control socket (and reads
its event socket) calls ``app.attach``; the node then mounts an
:class:`AttachedApp` in its name, a stand-in that owns the message types
the program asked for, adds its feature bits to ``init``, serves peer RPC
methods and holds pub/sub subscriptions for it, and turns every callback of
the contract into an event for the program. The program's side is
:class:`lnpmsg.rpc.attached_client.AttachedAppClient`; examples/attached_app.py
shows both.

Control calls (params in brackets, ``?`` optional):

=========================================================  =======================================
``app.attach`` [name, types?, feature_bits?, protocol?,    mount the stand-in; ``types`` are owned
lease?]                                                    as by a mounted app (conflicts refused)
``app.detach`` [name]                                      unmount it
``app.keepalive`` [name]                                   renew the lease (any ``app.*`` call does)
``app.send`` [name, node_id, type, payload (hex)]          send a message (any type the app owns,
                                                           even ones too)
``app.serve`` [name, method]                               serve a peer RPC method (``rpc`` app)
``app.reply`` [name, request, result? | error?, code?]     answer one request of a served method
``app.subscribe`` [name, node_id, topic]                   subscribe to a peer's pub/sub topic
``app.unsubscribe`` [name, node_id, topic]                 end that subscription
``app.claim_channel`` [name, channel_id]                   route that channel's errors to the app
=========================================================  =======================================

Events, on topics ``app.NAME.KIND`` (JSON members besides topic/seq/time):
``peer_ready`` (node_id, address, transport, features), ``peer_gone``
(node_id, reason), ``message`` (node_id, type, payload hex),
``rpc_request`` (request, node_id, method, params), ``publication``
(node_id, topic, seq, data hex, missed), ``subscription_ended`` (node_id,
topic, reason), ``channel_error``/``channel_warning`` (node_id,
channel_id, text), ``stopping``, ``detached`` (reason).

The lease: a program that stops calling (crashed, killed) is detached after
``lease`` seconds (default :data:`DEFAULT_LEASE`), so its types do not stay
owned by nobody. Events travel over ZeroMQ PUB: a program that reads too
slowly loses some (the ``seq`` of each topic shows the gap); requests it
does not answer in time end as timeouts for their callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.app import DONE, App, AppError
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.params import ParamsError, hex_param, node_id_param
from lnpmsg.node.apphost import raw_message_class
from lnpmsg.wire import Features, Message, UnknownMessage
from lnpmsg.wire.message import MAX_MESSAGE_TYPE

if TYPE_CHECKING:
    from lnpmsg.node.node import Node
    from lnpmsg.rpc.peer import PeerRpc

__all__ = ["DEFAULT_LEASE", "MAX_ATTACHED_APPS", "AttachedApp", "AttachedApps"]

log = logging.getLogger(__name__)

#: seconds an attached app may stay silent before it is detached
DEFAULT_LEASE = 30.0
MIN_LEASE = 1.0
#: attached apps one node holds at once
MAX_ATTACHED_APPS = 64
#: RPC requests waiting for an attached app's reply, per app
MAX_PENDING_REQUESTS = 1024
#: pub/sub subscriptions one attached app may hold
MAX_SUBSCRIPTIONS = 256

Publish = Callable[[str, dict[str, Any]], None]


def _payload(msg: Message) -> tuple[int, bytes]:
    if type(msg) is UnknownMessage:
        return msg.type, msg.payload
    return msg.TYPE, msg.encode()[2:]


@dataclass(slots=True)
class _Request:
    done: trio.Event
    result: Any = None
    error: str | None = None
    code: int = 0


class AttachedApp(App):
    """The node-side stand-in of an app in another process (see the module docs)."""

    def __init__(self, name: str, publish: Publish, *, types: list[int], feature_bits: list[int], protocol: bool, lease: float) -> None:
        # The program answers for itself: no timeout on its forwarding handlers, and no restart
        # (the stand-in has no state worth restarting; its lease decides when it goes).
        super().__init__(name, features=Features.from_bits(feature_bits), protocol=protocol, handler_timeout=None, restart="never")
        self._publish = publish
        self.lease = lease
        self.last_seen = trio.current_time()
        self._requests: dict[int, _Request] = {}
        self._next_request = 0
        self._subscriptions: dict[tuple[bytes, str], trio.CancelScope] = {}
        self.served: list[str] = []
        #: the node's RPC app, once a method is served through it
        self.rpc: PeerRpc | None = None
        #: set once the stand-in runs (it can hold subscriptions)
        self.up = trio.Event()
        for type_number in types:
            self.add_handler(type_number, self._forward, guard=False)

    def attach(self, node: Node) -> None:
        for type_number in self.handlers:
            if node.registry.get(type_number) is None and type_number not in self.messages:
                self.message(raw_message_class(type_number))
        super().attach(node)

    def event(self, kind: str, **fields: Any) -> None:
        self._publish(f"app.{self.name}.{kind}", fields)

    def touch(self) -> None:
        self.last_seen = trio.current_time()

    # ------------------------------------------------------------- contract

    def _forward(self, peer: Peer, msg: Message) -> object:
        type_number, payload = _payload(msg)
        self.event("message", node_id=peer.node_id, type=type_number, payload=payload)
        return DONE

    async def peer_ready(self, peer: Peer) -> None:
        self.event(
            "peer_ready",
            node_id=peer.node_id,
            address=peer.address,
            transport=peer.transport_kind,
            features=(peer.session.remote_features or Features()).to_bytes(),
        )

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        self.event("peer_gone", node_id=peer.node_id, reason=reason)

    async def channel_error(self, peer: Peer, channel_id: bytes, text: str) -> None:
        self.event("channel_error", node_id=peer.node_id, channel_id=channel_id, text=text)

    async def channel_warning(self, peer: Peer, channel_id: bytes, text: str) -> None:
        self.event("channel_warning", node_id=peer.node_id, channel_id=channel_id, text=text)

    async def stopping(self) -> None:
        self.event("stopping")

    async def serve(self) -> None:
        """Detach the app once its lease runs out."""
        self.up.set()
        while True:
            left = self.last_seen + self.lease - trio.current_time()
            if left <= 0:
                log.warning("attached app %s: silent for %.3g s (its lease), detaching it", self.name, self.lease)
                self.detach("lease expired")
                return
            await trio.sleep(left)

    def detach(self, reason: str) -> None:
        """Withdraw the app's RPC methods and unmount it."""
        if self.rpc is not None:
            for method in self.served:
                self.rpc.remove_method(method)
        self.served.clear()
        self.event("detached", reason=reason)
        self.node.unmount(self.name)

    # ----------------------------------------------------------------- RPC

    async def handle_request(self, peer: Peer, method: str, params: Any) -> Any:
        """A served method's body: hand the request to the program and wait for its reply."""
        from lnpmsg.rpc.peer import RpcFault

        if len(self._requests) >= MAX_PENDING_REQUESTS:
            raise RpcFault(f"attached app {self.name} has {len(self._requests)} requests waiting")
        self._next_request += 1
        request_id = self._next_request
        pending = self._requests[request_id] = _Request(trio.Event())
        try:
            self.event("rpc_request", request=request_id, node_id=peer.node_id, method=method, params=params)
            await pending.done.wait()
        finally:
            del self._requests[request_id]
        if pending.error is not None:
            raise RpcFault(pending.error, pending.code or 3)
        return pending.result

    def reply(self, request_id: int, result: Any, error: str | None, code: int) -> bool:
        pending = self._requests.get(request_id)
        if pending is None or pending.done.is_set():
            return False
        pending.result, pending.error, pending.code = result, error, code
        pending.done.set()
        return True

    # ------------------------------------------------------------- pub/sub

    async def subscribe(self, pubsub: Any, node_id: bytes, topic: str) -> None:
        key = (node_id, topic)
        if key in self._subscriptions:
            return
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise AppError(f"attached app {self.name} holds {MAX_SUBSCRIPTIONS} subscriptions already")
        sub = await pubsub.subscribe(node_id, topic)
        scope = trio.CancelScope()
        self._subscriptions[key] = scope
        self.spawn(self._relay, sub, key, scope)

    async def _relay(self, sub: Any, key: tuple[bytes, str], scope: trio.CancelScope) -> None:
        node_id, topic = key
        reason = "unsubscribed"
        try:
            with scope:
                async with sub:
                    async for pub in sub:
                        self.event("publication", node_id=node_id, topic=topic, seq=pub.seq, data=pub.data, missed=pub.missed)
                    reason = sub.end_reason or "ended"
        finally:
            if self._subscriptions.get(key) is scope:
                del self._subscriptions[key]
            self.event("subscription_ended", node_id=node_id, topic=topic, reason=reason)

    def unsubscribe(self, node_id: bytes, topic: str) -> bool:
        scope = self._subscriptions.get((node_id, topic))
        if scope is None:
            return False
        scope.cancel()
        return True


class AttachedApps:
    """The ``app.*`` control calls of a :class:`~lnpmsg.rpc.control.ControlServer`."""

    def __init__(self, node_of: Callable[[], Node], publish: Publish) -> None:
        self._node_of = node_of
        self._publish = publish
        self.attached: dict[str, AttachedApp] = {}

    def methods(self) -> dict[str, Callable[..., Any]]:
        return {
            "app.attach": self.attach,
            "app.detach": self.detach,
            "app.keepalive": self.keepalive,
            "app.send": self.send,
            "app.serve": self.serve,
            "app.reply": self.reply,
            "app.subscribe": self.subscribe,
            "app.unsubscribe": self.unsubscribe,
            "app.claim_channel": self.claim_channel,
        }

    def _app(self, name: str) -> AttachedApp:
        app = self.attached.get(name)
        if app is None or self._node_of().apps.get(name) is not app:
            self.attached.pop(name, None)
            raise ParamsError(f"no attached app named {name!r} (attach first; a silent app is detached after its lease)")
        app.touch()
        return app

    def _app_of_node(self, name: str, kind: type) -> Any:
        app = self._node_of().apps.get(name)
        if not isinstance(app, kind):
            raise AppError(f"the node runs no {name} app")
        return app

    async def attach(
        self, name: str, types: list[int] | None = None, feature_bits: list[int] | None = None, protocol: bool = False, lease: float = DEFAULT_LEASE
    ) -> dict[str, Any]:
        """Mount a stand-in for an app in another process: owned types, feature bits, events on app.NAME.*."""
        node = self._node_of()
        # Forget the ones whose lease ran out (the node unmounted them).
        self.attached = {n: app for n, app in self.attached.items() if node.apps.get(n) is app}
        if len(self.attached) >= MAX_ATTACHED_APPS:
            raise AppError(f"{MAX_ATTACHED_APPS} apps are attached already")
        for t in types or []:
            if not 0 <= t <= MAX_MESSAGE_TYPE:
                raise ParamsError(f"a message type is 0..{MAX_MESSAGE_TYPE}, got {t}")
        for bit in feature_bits or []:
            if not 0 <= bit < 65535 * 8:
                raise ParamsError(f"a feature bit is a bit number, got {bit}")
        if lease < MIN_LEASE:
            raise ParamsError(f"lease is at least {MIN_LEASE:g} s, got {lease}")
        app = AttachedApp(name, self._publish, types=list(types or []), feature_bits=list(feature_bits or []), protocol=protocol, lease=lease)
        node.mount(app)  # MountError on a taken name or type: nothing changes
        self.attached[name] = app
        with trio.fail_after(10):
            await app.up.wait()
        log.info("attached app %s: owns types %s, feature bits %s", name, sorted(app.handlers) or "none", feature_bits or "none")
        return {"name": name, "events": f"app.{name}.", "lease": lease, "features": app.features.to_bytes().hex()}

    async def detach(self, name: str) -> dict[str, Any]:
        """Unmount an attached app (its types and channels are free again)."""
        app = self._app(name)
        app.detach("detached by the app")
        del self.attached[name]
        return {"detached": name}

    async def keepalive(self, name: str) -> dict[str, Any]:
        """Renew the app's lease."""
        app = self._app(name)
        return {"name": name, "lease": app.lease}

    async def send(self, name: str, node_id: str, type: int, payload: str = "") -> dict[str, Any]:
        """Send a message of a type the app owns (payload in hex) to a connected peer."""
        app = self._app(name)
        if type not in app.handlers:
            raise ParamsError(f"app {name} does not own type {type} (attach with it in types)")
        data = hex_param(payload, "payload")
        peer = app.peer(node_id_param(node_id))
        await peer.send(UnknownMessage(type, data))
        return {"sent": True, "type": type, "bytes": len(data) + 2}

    async def serve(self, name: str, method: str) -> dict[str, Any]:
        """Serve a peer RPC method: requests arrive as app.NAME.rpc_request events, answers by app.reply."""
        from lnpmsg.rpc.peer import PeerRpc

        app = self._app(name)
        rpc: PeerRpc = self._app_of_node("rpc", PeerRpc)

        async def forward(peer: Peer, params: Any) -> Any:
            return await app.handle_request(peer, method, params)

        forward.__doc__ = f"served by the attached app {name}"
        rpc.add_method(method, forward, params_check=lambda raw: {"params": raw})
        app.rpc = rpc
        app.served.append(method)
        return {"method": method, "app": name}

    async def reply(self, name: str, request: int, result: Any = None, error: str | None = None, code: int = 0) -> dict[str, Any]:
        """Answer one rpc_request (a result, or an error text with an optional code >= 100)."""
        app = self._app(name)
        return {"answered": app.reply(request, result, error, code)}

    async def subscribe(self, name: str, node_id: str, topic: str) -> dict[str, Any]:
        """Subscribe to a peer's pub/sub topic: publications arrive as app.NAME.publication events."""
        from lnpmsg.pubsub.peer import PeerPubSub

        app = self._app(name)
        pubsub = self._app_of_node("pubsub", PeerPubSub)
        await app.subscribe(pubsub, node_id_param(node_id), topic)
        return {"subscribed": True, "node_id": node_id, "topic": topic}

    async def unsubscribe(self, name: str, node_id: str, topic: str) -> dict[str, Any]:
        """End a subscription (a subscription_ended event follows)."""
        return {"unsubscribed": self._app(name).unsubscribe(node_id_param(node_id), topic)}

    async def claim_channel(self, name: str, channel_id: str) -> dict[str, Any]:
        """Route BOLT-1 errors and warnings about this channel (hex id) to the app."""
        app = self._app(name)
        app.claim_channel(hex_param(channel_id, "channel_id", 32))
        return {"claimed": channel_id}
