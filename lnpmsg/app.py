"""Apps: custom messages, handlers with the peer in context, sends and broadcasts.

An app is a named set of message types in the custom range (>= 32768),
handlers for them, and optionally a feature bit it advertises in ``init``.
Mounted on a :class:`~lnpmsg.node.node.Node`, its messages are registered in
the node's own registry and its handlers receive every message of those
types, decoded, with the :class:`~lnpmsg.node.peer.Peer` it came from::

    chat = App("chat", feature_bit=331)

    @chat.message
    @message(type=32769)
    @dataclass(frozen=True, slots=True)
    class Chat(Message):
        FIELDS = (("text", u16_prefixed_bytes),)
        text: bytes

    @chat.on(Chat)
    async def on_chat(peer: Peer, msg: Chat) -> None:
        print(peer.node_id.hex(), peer.address, peer.transport_kind, msg.text)

    node.mount(chat)
    chat.broadcast(Chat(text=b"hello"))      # every ready peer advertising bit 330/331

BOLT 1's "it's OK to be odd" decides what a peer *without* the app does:
it ignores an odd type and fails the connection on an even one. Apps choose
per message. The feature bit works the same way: an odd bit is "optional"
(peers that do not know it connect anyway), an even bit "required" (they
refuse the connection). Pick bits well above the BOLT-9 table (>= 256).

Handlers run in the peer's read loop, one at a time per peer, so each peer's
messages are handled in order. A handler that raises is logged and reported
(an :class:`~lnpmsg.node.events.ErrorReported` event); one that runs longer
than ``handler_timeout`` is cancelled and reported the same way. Neither
touches the connection. Work that takes long belongs in :meth:`App.spawn`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from lnpmsg.node.events import ErrorReported
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
    "ControlMethod",
    "MessageHandler",
    "PeerNotConnected",
]

log = logging.getLogger(__name__)

#: BOLT 1 leaves types 32768-65535 to custom (experimental, app) messages
#: a handler running longer is cancelled: it holds up every later message of its peer
HANDLER_TIMEOUT = 10.0

M = TypeVar("M", bound=Message)
MessageHandler = Callable[[Peer, Any], Awaitable[None]]
#: an app's control-API call: typed keyword params in, a JSON-able result out
ControlMethod = Callable[..., Awaitable[Any]]


class AppError(Exception):
    """The app API was used wrongly (bad declaration, not mounted, unknown peer)."""


class PeerNotConnected(AppError):
    """No ready peer with that node id."""


class App:
    """A P2P app: message types, their handlers, a feature bit, control calls.

    Use it as it is (decorators on an instance) or subclass it and override
    :meth:`setup` (called on mount) and :meth:`serve` (background work while
    the node runs).

    Args:
        name: unique per node; names the app's control calls (``name.call``).
        feature_bit: the bit advertised in ``init`` (odd: optional, even:
            required), or None to advertise nothing.
        handler_timeout: seconds a handler may run before it is cancelled.
    """

    def __init__(self, name: str, *, feature_bit: int | None = None, handler_timeout: float = HANDLER_TIMEOUT) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise AppError(f"an app name is letters, digits, '-' and '_', got {name!r}")
        if feature_bit is not None and (type(feature_bit) is not int or not 0 <= feature_bit < 65535 * 8):
            raise AppError(f"feature_bit must be an int bit number, got {feature_bit!r}")
        self.name = name
        self.feature_bit = feature_bit
        self.handler_timeout = handler_timeout
        self.messages: dict[int, type[Message]] = {}
        self.control_methods: dict[str, ControlMethod] = {}
        self._handlers: list[tuple[int, MessageHandler]] = []
        self._node: Node | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ declaring

    def message(self, cls: type[M]) -> type[M]:
        """Declare one of the app's message types (decorator over ``@message``)."""
        type_number = getattr(cls, "TYPE", None)
        if not (isinstance(cls, type) and issubclass(cls, Message)) or type_number is None:
            raise AppError(f"{cls!r} is not a declared message (use @message(type=...))")
        if type_number < CUSTOM_TYPE_MIN:
            raise AppError(f"{cls.__name__}: app message types are in the custom range >= {CUSTOM_TYPE_MIN}, got {type_number}")
        existing = self.messages.get(type_number)
        if existing is not None and existing is not cls:
            raise AppError(f"{cls.__name__}: type {type_number} is already {existing.__name__} in app {self.name!r}")
        self.messages[type_number] = cls
        if self._node is not None:
            self._register(cls)
        return cls

    def on(self, message_type: type[M] | int) -> Callable[[Callable[[Peer, M], Awaitable[None]]], Callable[[Peer, M], Awaitable[None]]]:
        """Decorator: ``handler(peer, message)`` for every message of this type."""

        def register(handler: Callable[[Peer, M], Awaitable[None]]) -> Callable[[Peer, M], Awaitable[None]]:
            self.add_handler(message_type, handler)
            return handler

        return register

    def add_handler(self, message_type: type[Message] | int, handler: MessageHandler, *, guard: bool = True) -> None:
        """Call ``handler(peer, message)`` for every message of this type (in order per peer).

        ``guard=False`` skips the timeout and error guard: only for handlers
        that never block and never raise (it saves a cancel scope per message).
        """
        type_number = message_type if isinstance(message_type, int) else message_type.TYPE
        if type_number < CUSTOM_TYPE_MIN:
            raise AppError(f"apps handle custom types (>= {CUSTOM_TYPE_MIN}), not {type_number}")
        wrapped = self._guarded(type_number, handler) if guard else handler
        self._handlers.append((type_number, wrapped))
        if self._node is not None:
            self._node.add_handler(type_number, wrapped)

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

    # ------------------------------------------------------------ mounting

    @property
    def node(self) -> Node:
        """The node the app is mounted on (AppError before ``node.mount(app)``)."""
        if self._node is None:
            raise AppError(f"app {self.name!r} is not mounted: call node.mount(app) first")
        return self._node

    @property
    def features(self) -> Features:
        """The bits this app adds to the node's ``init``."""
        return Features() if self.feature_bit is None else Features.from_bits([self.feature_bit])

    def attach(self, node: Node) -> None:
        """Called by :meth:`Node.mount`: register messages, handlers and the feature bit."""
        if self._node is not None:
            raise AppError(f"app {self.name!r} is already mounted")
        self.setup()
        self._node = node
        for cls in self.messages.values():
            self._register(cls)
        for type_number, handler in self._handlers:
            node.add_handler(type_number, handler)
        if self.feature_bit is not None:
            node.config.features = node.config.features | self.features

    def _register(self, cls: type[Message]) -> None:
        try:
            self.node.registry.register(cls)
        except ValueError as exc:
            raise AppError(f"app {self.name!r}: {exc}") from None

    def setup(self) -> None:
        """Override to declare messages and handlers when the app is mounted."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Called by the node: hold the app's nursery and run :meth:`serve` until cancelled."""
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
        """Run ``fn(*args)`` as a task of the app (cancelled when the node stops)."""
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

    def _guarded(self, type_number: int, handler: MessageHandler) -> MessageHandler:
        async def guarded(peer: Peer, message: Message) -> None:
            with trio.move_on_after(self.handler_timeout) as scope:
                try:
                    await handler(peer, message)
                except Exception as exc:
                    log.debug("handler failure", exc_info=True)
                    self.report_error(f"handler {_name(handler)} for type {type_number} raised {exc!r}", peer.node_id)
                    return
            if scope.cancelled_caught:
                self.report_error(
                    f"handler {_name(handler)} for type {type_number} ran longer than {self.handler_timeout:g} s and was cancelled",
                    peer.node_id,
                )

        guarded.__qualname__ = f"{self.name}:{_name(handler)}"
        return guarded

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
        return f"<App {self.name} types={sorted(self.messages)} feature_bit={self.feature_bit}>"


class _Done:
    """An awaitable that is already finished.

    Handlers that never block (dict lookups, ``send_nowait``) can be plain
    functions returning :data:`DONE`: the node awaits what a handler returns,
    and this skips building a coroutine per message on hot paths.
    """

    __slots__ = ()

    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


DONE = _Done()


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
