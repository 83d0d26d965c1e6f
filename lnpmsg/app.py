"""Apps: the one contract between the node and everything that runs on it.

Gossip, peer RPC, pub/sub, the chain and wallet, Tor, the control API and
your own programs are all :class:`App` objects mounted on a
:class:`~lnpmsg.node.node.Node`. An app declares what it **owns** and the
node calls it back (the shape of LDK's message handler traits)::

    chat = App("chat", feature_bit=331)

    @chat.message
    @message(type=32769)
    @dataclass(frozen=True, slots=True)
    class Chat(Message):
        FIELDS = (("text", u16_prefixed_bytes),)
        text: bytes

    @chat.on(Chat)                 # chat owns type 32769: no other app may take it
    async def on_chat(peer: Peer, msg: Chat) -> None:
        print(peer.node_id.hex(), msg.text)

    @chat.on_peer_ready            # before any message of that peer reaches a handler
    async def hello(peer: Peer) -> None:
        await chat.send(peer, Chat(text=b"hi"))

    node.mount(chat)
    chat.broadcast(Chat(text=b"hello"))      # every ready peer advertising bit 330/331

What the contract says (docs/apps.md is the guide):

- **Ownership.** Handling a type owns it: one owner per type over the whole
  node, a second one is refused at mount (:class:`MountError`). User apps
  own custom types (>= 32768); protocol apps (gossip, channels) say
  ``App(..., protocol=True)`` to own BOLT types too. A message whose type
  nobody owns fails the peer when it is even (BOLT 1, as if unknown) and is
  ignored when odd. A type nobody declares may be taken in runs
  (:meth:`App.on_batch`): one call per run of its messages, as bytes.
- **Features** come from the app (``feature_bit``/``features``, or
  :meth:`App.init_features` per peer); the node's ``init`` is its config's
  features or'ed with its running apps', and logs and ``listpeers`` name
  the apps' bits (``chat (optional, bit 331)``).
- **Hooks**, plain or async functions, each under the app's execution
  policy: :meth:`App.starting` and :meth:`App.stopping` (the node starts or
  stops), :meth:`App.peer_ready` (every app in mount order, before any
  message of that peer reaches any handler; it runs in the peer's reading
  task, so it must not wait for that peer's answers), :meth:`App.peer_gone`
  (with the reason; shielded), :meth:`App.channel_error` and
  :meth:`App.channel_warning` (a BOLT-1 ``error``/``warning`` for a channel
  the app claimed with :meth:`App.claim_channel`). :meth:`App.disconnect_peer`
  drops a peer (then ``peer_gone`` runs).
- **Execution policy.** Handlers of one peer run one at a time, in order,
  in its read loop (long work belongs in :meth:`App.spawn`).
  ``handler_timeout`` (seconds, None for none) bounds each handler and
  hook; ``shield=True`` marks a handler that must never be cut in the middle
  (persist, then send): it is neither cancelled by the timeout nor by the
  node stopping.
- **Supervision.** A handler or hook that raises is logged and reported (an
  :class:`~lnpmsg.node.events.ErrorReported` event); the peer and the app
  carry on. A task of the app (:meth:`App.serve`, :meth:`App.spawn`) that
  raises stops the app's tasks; with ``restart="always"`` they start again
  after a back-off, at most ``max_restarts`` times in ``restart_window``
  seconds; then (or at once with ``restart="never"``) the app is stopped: its
  handlers are removed (its even types now fail peers as unknown ones do),
  its features leave the ``init`` of new connections, its control calls
  answer an error. Every change is an ``app.state`` event. The node, its
  other apps and its peers carry on. A failure while the app first starts
  (before :meth:`App.run` reports started) is the node's: ``node.run``
  raises it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from lnpmsg.node.apphost import (
    HANDLER_TIMEOUT,
    MAX_RESTARTS,
    RESTART_POLICIES,
    RESTART_WINDOW,
    AppError,
    AppState,
    BatchHandler,
    MountError,
    raw_message_class,
)
from lnpmsg.node.events import ErrorReported
from lnpmsg.node.handler_guard import DONE, MessageHandler, guard_handler, handler_name
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.wire import Features, Message
from lnpmsg.wire.message import CUSTOM_TYPE_MIN

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = [
    "CUSTOM_TYPE_MIN",
    "DONE",
    "HANDLER_TIMEOUT",
    "App",
    "AppError",
    "AppState",
    "BatchHandler",
    "ControlMethod",
    "MessageHandler",
    "MountError",
    "PeerNotConnected",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
#: an app's control-API call: typed keyword params in, a JSON-able result out
ControlMethod = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


class PeerNotConnected(AppError):
    """No ready peer with that node id."""


class App:
    """A P2P app: owned message types and their handlers, features, hooks, control calls.

    Use it as it is (decorators on an instance) or subclass it and override
    :meth:`setup` (called on mount), :meth:`serve` (background work while
    the node runs) and the hooks.

    Args:
        name: unique per node; names the app's control calls (``name.call``).
        feature_bit: a bit advertised in ``init`` (odd: optional, even:
            required), or None.
        features: more bits to advertise (with ``feature_bit`` or instead).
        protocol: may own BOLT message types (below 32768); for protocol
            apps like gossip and channels.
        handler_timeout: seconds a handler or hook may run before it is
            cancelled (None: no limit).
        restart: ``"always"`` (restart the app's tasks after a failure,
            with back-off) or ``"never"`` (stop the app at the first one).
        max_restarts / restart_window: more failures than this within the
            window stop the app for good.
    """

    #: bits for the node's node_announcement only (BOLT 9 context N, e.g. bLIP 3's keysend), never in ``init``
    node_announcement_features: Features = Features()

    def __init__(
        self,
        name: str,
        *,
        feature_bit: int | None = None,
        features: Features | None = None,
        protocol: bool = False,
        handler_timeout: float | None = HANDLER_TIMEOUT,
        restart: str = "always",
        max_restarts: int = MAX_RESTARTS,
        restart_window: float = RESTART_WINDOW,
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise AppError(f"an app name is letters, digits, '-' and '_', got {name!r}")
        if feature_bit is not None and (type(feature_bit) is not int or not 0 <= feature_bit < 65535 * 8):
            raise AppError(f"feature_bit must be an int bit number, got {feature_bit!r}")
        if restart not in RESTART_POLICIES:
            raise AppError(f"restart is one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
        if handler_timeout is not None and handler_timeout <= 0:
            raise AppError(f"handler_timeout is a positive number of seconds or None, got {handler_timeout!r}")
        self.name = name
        self.feature_bit = feature_bit
        self.extra_features = features or Features()
        self.protocol = protocol
        self.handler_timeout = handler_timeout
        self.restart = restart
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.messages: dict[int, type[Message]] = {}
        self.control_methods: dict[str, ControlMethod] = {}
        #: the types this app owns and their (policy-wrapped) handlers
        self.handlers: dict[int, MessageHandler] = {}
        #: the types this app owns and takes in runs, and their (policy-wrapped) batch handlers
        self.batch_handlers: dict[int, BatchHandler] = {}
        #: where the app is in its life (the node sets it; see :class:`AppState`)
        self.state = AppState.NEW
        #: why the app stopped, when it did
        self.stop_reason: str | None = None
        #: task failures the supervisor saw (restarts included)
        self.failures = 0
        self._hooks: dict[str, list[Callable[..., Any]]] = {}
        self._setup_done = False
        self._init_features: Features | None = None
        self._node: Node | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ declaring

    def message(self, cls: type[M]) -> type[M]:
        """Declare one of the app's message types, so the node decodes it (decorator over ``@message``).

        Declaring is not owning: :meth:`on` / :meth:`add_handler` take the type.
        """
        type_number = getattr(cls, "TYPE", None)
        if not (isinstance(cls, type) and issubclass(cls, Message)) or type_number is None:
            raise AppError(f"{cls!r} is not a declared message (use @message(type=...))")
        self._check_range(type_number, cls.__name__)
        if type_number in self.batch_handlers:
            raise AppError(f"{cls.__name__}: type {type_number} has a batch handler in app {self.name!r}, which takes it undecoded")
        existing = self.messages.get(type_number)
        if existing is not None and existing is not cls:
            raise AppError(f"{cls.__name__}: type {type_number} is already {existing.__name__} in app {self.name!r}")
        self.messages[type_number] = cls
        if self._node is not None:
            self._register(cls)
        return cls

    def _check_range(self, type_number: int, what: str) -> None:
        if type_number < CUSTOM_TYPE_MIN and not self.protocol:
            raise AppError(
                f"{what}: app message types are in the custom range >= {CUSTOM_TYPE_MIN}, got {type_number} "
                "(a protocol app says App(..., protocol=True))"
            )

    def on(
        self, message_type: type[M] | int, *, shield: bool = False
    ) -> Callable[[Callable[[Peer, M], Awaitable[None] | None]], Callable[[Peer, M], Awaitable[None] | None]]:
        """Decorator: own this type; ``handler(peer, message)`` gets every message of it."""

        def register(handler: Callable[[Peer, M], Awaitable[None] | None]) -> Callable[[Peer, M], Awaitable[None] | None]:
            self.add_handler(message_type, handler, shield=shield)
            return handler

        return register

    def add_handler(self, message_type: type[Message] | int, handler: MessageHandler, *, guard: bool = True, shield: bool = False) -> None:
        """Own ``message_type``: call ``handler(peer, message)`` for each message of it (in order per peer).

        ``shield=True``: the handler is never cancelled (not by the timeout,
        not by the node stopping); a run over the timeout is reported.
        ``guard=False`` skips the timeout: only for handlers that never block
        (it saves a cancel scope per message); exceptions are still contained.
        """
        type_number = message_type if isinstance(message_type, int) else message_type.TYPE
        self._check_range(type_number, f"handler {handler_name(handler)}")
        if type_number in self.handlers or type_number in self.batch_handlers:
            raise MountError(f"app {self.name!r} already handles type {type_number}")
        wrapped = guard_handler(self, type_number, handler, shield) if (guard or shield) else handler
        if self._node is not None:
            self._node.apphost.own(self, type_number, wrapped)
        self.handlers[type_number] = wrapped

    def on_batch(self, type_number: int, *, shield: bool = False) -> Callable[[BatchHandler], BatchHandler]:
        """Decorator: own this type and take its messages in runs (see :meth:`add_batch_handler`)."""

        def register(handler: BatchHandler) -> BatchHandler:
            self.add_batch_handler(type_number, handler, shield=shield)
            return handler

        return register

    def add_batch_handler(self, type_number: int, handler: BatchHandler, *, guard: bool = True, shield: bool = False) -> None:
        """Own ``type_number`` and take its messages in runs: ``handler(peer, messages)``.

        For a stream of many small messages of one type, where a call and a
        message object per message would cost more than the app's own work.
        ``messages`` is a list (the handler's to keep) of consecutive
        messages of this type from ``peer``, in arrival order, each as its
        wire bytes: the two type bytes, then the payload (``m[2:]``). A run
        holds what one read of the connection brought, up to the first
        message of another type; every message comes exactly once, in
        order with the peer's other messages. The type is never decoded:
        it must not be declared (by this app or on the node), an even one
        too. Timeout, ``shield`` and ``guard`` apply per call, as for
        :meth:`add_handler`.
        """
        if type(type_number) is not int:
            raise AppError(f"a batch handler takes a type number (its messages stay undecoded), got {type_number!r}")
        self._check_range(type_number, f"batch handler {handler_name(handler)}")
        if type_number in self.handlers or type_number in self.batch_handlers:
            raise MountError(f"app {self.name!r} already handles type {type_number}")
        if type_number in self.messages:
            raise AppError(f"app {self.name!r} declares type {type_number} as {self.messages[type_number].__name__}: a batch handler takes it undecoded")
        wrapped = guard_handler(self, type_number, handler, shield) if (guard or shield) else handler
        if self._node is not None:
            self._node.apphost.own_batch(self, type_number, wrapped)
        self.batch_handlers[type_number] = wrapped

    def control(self, name: str | None = None) -> Callable[[ControlMethod], ControlMethod]:
        """Decorator: expose ``async def fn(**params) -> result`` on the node's
        control API as ``<app name>.<name>`` (default: the function's name).

        Params are checked against ``fn``'s annotations (see
        :mod:`lnpmsg.rpc.params`); the result must be JSON-able.
        """

        def register(fn: ControlMethod) -> ControlMethod:
            self.add_control_method(name or fn.__name__, fn)
            return fn

        return register

    def add_control_method(self, name: str, fn: ControlMethod) -> None:
        """Expose ``fn`` on the control API as ``<app name>.<name>``."""
        if not name or "." in name:
            raise AppError(f"a control call name is one word without '.', got {name!r}")
        self.control_methods[name] = fn

    # ---------------------------------------------------------------- hooks

    def _hook(self, what: str, fn: F) -> F:
        self._hooks.setdefault(what, []).append(fn)
        return fn

    def on_starting(self, fn: F) -> F:
        """Decorator: ``fn()`` runs when the node starts the app (see :meth:`starting`)."""
        return self._hook("starting", fn)

    def on_stopping(self, fn: F) -> F:
        """Decorator: ``fn()`` runs when the node stops (see :meth:`stopping`)."""
        return self._hook("stopping", fn)

    def on_peer_ready(self, fn: F) -> F:
        """Decorator: ``fn(peer)`` runs for each peer that becomes ready (see :meth:`peer_ready`)."""
        return self._hook("peer_ready", fn)

    def on_peer_gone(self, fn: F) -> F:
        """Decorator: ``fn(peer, reason)`` runs for each peer that leaves (see :meth:`peer_gone`)."""
        return self._hook("peer_gone", fn)

    def on_channel_error(self, fn: F) -> F:
        """Decorator: ``fn(peer, channel_id, text)`` for errors about the app's channels."""
        return self._hook("channel_error", fn)

    def on_channel_warning(self, fn: F) -> F:
        """Decorator: ``fn(peer, channel_id, text)`` for warnings about the app's channels."""
        return self._hook("channel_warning", fn)

    async def _run_hooks(self, what: str, *args: Any) -> None:
        for fn in self._hooks.get(what, ()):
            pending = fn(*args)
            if pending is not None:
                await pending

    async def starting(self) -> None:
        """The node starts the app (once per node run, before its tasks and before peers reach it).

        Override (or use :meth:`on_starting`) to open what the app needs.
        """
        await self._run_hooks("starting")

    async def stopping(self) -> None:
        """The node is stopping; peers are still connected (apps in reverse mount order).

        The last chance to say goodbye to peers or to flush state.
        """
        await self._run_hooks("stopping")

    async def peer_ready(self, peer: Peer) -> None:
        """``peer``'s ``init`` was accepted. Runs for every app in mount order
        before any message of that peer reaches any handler (reestablish here)."""
        await self._run_hooks("peer_ready", peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """``peer`` (which had been ready) disconnected, or was replaced by a
        newer connection of the same node. Runs shielded from cancellation."""
        await self._run_hooks("peer_gone", peer, reason)

    async def channel_error(self, peer: Peer, channel_id: bytes, text: str) -> None:
        """The peer sent a BOLT-1 ``error`` for a channel this app claimed."""
        await self._run_hooks("channel_error", peer, channel_id, text)

    async def channel_warning(self, peer: Peer, channel_id: bytes, text: str) -> None:
        """The peer sent a BOLT-1 ``warning`` for a channel this app claimed."""
        await self._run_hooks("channel_warning", peer, channel_id, text)

    def claim_channel(self, channel_id: bytes) -> None:
        """Route ``error``/``warning`` for ``channel_id`` to this app (MountError if another app has it)."""
        self.node.apphost.claim_channel(channel_id, self)

    def protect_peer(self, node_id: bytes) -> None:
        """Keep room for ``node_id`` (a peer we have channels with): it may connect when
        unprotected inbound peers are refused (the node's peer limit). Undo with
        :meth:`unprotect_peer`; calls nest."""
        self.node.protect_peer(node_id)

    def unprotect_peer(self, node_id: bytes) -> None:
        """Undo one :meth:`protect_peer`."""
        self.node.unprotect_peer(node_id)

    def release_channel(self, channel_id: bytes) -> None:
        """Stop routing ``channel_id`` to this app."""
        self.node.apphost.release_channel(channel_id, self)

    # ------------------------------------------------------------ mounting

    @property
    def node(self) -> Node:
        """The node the app is mounted on (AppError before ``node.mount(app)``)."""
        if self._node is None:
            raise AppError(f"app {self.name!r} is not mounted: call node.mount(app) first")
        return self._node

    @property
    def features(self) -> Features:
        """The bits this app adds to the node's ``init`` (per peer: :meth:`init_features`)."""
        own = Features() if self.feature_bit is None else Features.from_bits([self.feature_bit])
        return own | self.extra_features

    def init_features(self, node_id: bytes) -> Features:
        """The bits this app adds to the ``init`` sent to ``node_id``.

        Override for per-peer features (like LDK's ``provided_init_features``);
        the default is :attr:`features` for everyone, and the node then
        builds one ``init`` for all connections.
        """
        del node_id
        # Called on every handshake: the bits are built once (declare them before mounting).
        cached = self._init_features
        if cached is None:
            cached = self._init_features = self.features
        return cached

    def attach(self, node: Node) -> None:
        """Called by :meth:`Node.mount`: run :meth:`setup` and check the app's
        declarations against the node (conflicts raise, changing nothing)."""
        if self._node is not None:
            raise AppError(f"app {self.name!r} is already mounted")
        if not self._setup_done:
            self._setup_done = True
            self.setup()
        for type_number in self.handlers:
            # An even type handled but never declared: the session must decode it, or it
            # would fail the peer as unknown before the handler could see it.
            if not type_number & 1 and type_number not in self.messages and node.registry.get(type_number) is None:
                self.messages[type_number] = raw_message_class(type_number)
        for type_number, cls in self.messages.items():
            existing = node.registry.get(type_number)
            if existing is not None and existing is not cls:
                raise MountError(f"app {self.name!r}: type {type_number} is already {existing.__name__} on this node")
            if type_number in node.apphost.batch_types:
                raise MountError(f"app {self.name!r}: type {type_number} is taken undecoded by a batch handler on this node")
        for type_number in self.batch_handlers:
            node.apphost.check_batch_type(type_number)
        node.apphost.check_owns(self, [*self.handlers, *self.batch_handlers])
        for cls in self.messages.values():
            node.registry.register(cls)
        self._node = node

    def _register(self, cls: type[Message]) -> None:
        if cls.TYPE in self.node.apphost.batch_types:
            raise MountError(f"app {self.name!r}: type {cls.TYPE} is taken undecoded by a batch handler on this node")
        try:
            self.node.registry.register(cls)
        except ValueError as exc:
            raise MountError(f"app {self.name!r}: {exc}") from None

    def setup(self) -> None:
        """Override to declare messages and handlers when the app is mounted."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Called by the node: hold the app's nursery and run :meth:`serve` until cancelled.

        A subclass that overrides it calls ``task_status.started()`` once it is up.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await self.serve()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def serve(self) -> None:
        """Override for background work while the node runs (returns or runs forever)."""

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the app (cancelled when the node stops;
        an exception in it is the app's failure, see the supervision rules)."""
        if self._nursery is None:
            raise AppError(f"app {self.name!r} is not running (mount it on a running node)")
        self._nursery.start_soon(fn, *args)

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def report_error(self, text: str, node_id: bytes | None = None) -> None:
        """Log an error and publish it as an ``error`` event (control API subscribers see it)."""
        log.warning("app %s: %s", self.name, text)
        if self._node is not None:
            self._node.events.publish(ErrorReported(f"app.{self.name}", text, node_id))

    # ---------------------------------------------------------------- peers

    def supports(self, peer: Peer) -> bool:
        """Does the peer advertise this app's feature (always True without a feature bit)?"""
        if self.feature_bit is None:
            return True
        remote = peer.session.remote_features
        return remote is not None and remote.supports(self.feature_bit)

    def peers(self) -> list[Peer]:
        """Ready peers that support the app."""
        return [p for p in self.node.peers.values() if p.is_ready and self.supports(p)]

    def peer(self, node_id: bytes | str) -> Peer:
        """The ready peer with this node id (bytes or hex); :class:`PeerNotConnected` if none."""
        if isinstance(node_id, str):
            try:
                node_id = bytes.fromhex(node_id)
            except ValueError:
                raise PeerNotConnected(f"not a node id: {node_id!r}") from None
        peer = self.node.peers.get(node_id)
        if peer is None or not peer.is_ready:
            raise PeerNotConnected(f"peer {node_id.hex()} is not connected")
        return peer

    def disconnect_peer(self, node_id: bytes, reason: str) -> None:
        """Close the connection to a peer (if it has one), without waiting for it to end."""
        if (peer := self.node.peers.get(node_id)) is not None:
            peer.close(reason)

    async def send(self, to: Peer | bytes | str, message: Message) -> None:
        """Send to one peer (a Peer or its node id), waiting while its queue is full."""
        peer = to if isinstance(to, Peer) else self.peer(to)
        await peer.send(message)

    def broadcast(self, message: Message, peers: Iterable[Peer] | None = None) -> int:
        """Queue ``message`` to every ready peer supporting the app (never waits).

        A peer whose outbound queue is full is skipped. Returns how many peers got it.
        """
        data = message.encode()
        sent = 0
        for peer in list(peers) if peers is not None else self.peers():
            try:
                peer.send_nowait(data)
                sent += 1
            except (PeerQueueFull, PeerClosedError) as exc:
                log.info("app %s: broadcast to %s skipped: %s", self.name, peer.node_id.hex(), exc)
        return sent

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} owns={sorted(self.handlers)} state={self.state.value}>"
