"""The node's side of the app contract: ownership, features, hooks, supervision.

:class:`AppHost` keeps, for one node, which app owns each message type (the
dispatch table the node reads per message), which app claimed each channel
id, the features the apps add to ``init``, and runs every app under a
supervisor. :mod:`lnpmsg.app` is the app's side; docs/apps.md the guide.
The node never imports an app class: an app is anything with the methods of
:class:`Mountable` (:class:`lnpmsg.app.App` has them all).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from lnpmsg.node.events import AppStateChanged, ErrorReported
from lnpmsg.node.peer import Peer
from lnpmsg.wire import Features, Message, message
from lnpmsg.wire.fields import rest_bytes
from lnpmsg.wire.features import describe
from lnpmsg.wire.message import CUSTOM_TYPE_MIN

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = [
    "HANDLER_TIMEOUT",
    "MAX_RESTARTS",
    "RESTART_POLICIES",
    "RESTART_WINDOW",
    "AppError",
    "AppHost",
    "AppState",
    "BatchHandler",
    "MountError",
    "Mountable",
]

log = logging.getLogger("lnpmsg.node.apps")

#: default seconds a handler or hook may run: it holds up every later message of its peer
HANDLER_TIMEOUT = 10.0
#: failures of an app's tasks within ``RESTART_WINDOW`` seconds before it is stopped for good
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: back-off before an app's tasks start again (doubled per failure in a row, up to the max)
RESTART_MIN_DELAY = 0.5
RESTART_MAX_DELAY = 30.0
RESTART_POLICIES = ("always", "never")
#: a shielded hook (peer_gone, stopping) of an app without a timeout still ends after this
SHIELDED_HOOK_LIMIT = 10.0
#: unknown feature bits named one by one in logs and listpeers; more are counted
MAX_NAMED_UNKNOWN_BITS = 16

#: a message handler: ``handler(peer, message)``, a plain or an async function
Handler = Callable[[Peer, Any], Awaitable[None] | None]
#: a batch handler: ``handler(peer, messages)``, a run of one type's messages as their wire bytes
BatchHandler = Callable[[Peer, list[bytes]], Awaitable[None] | None]


class AppError(Exception):
    """The app API was used wrongly (bad declaration, not mounted, unknown peer)."""


class MountError(AppError, ValueError):
    """An app cannot be mounted or declare this: a name, type or channel id another app has."""


class AppState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


_ACTIVE = (AppState.RUNNING, AppState.RESTARTING)
#: what apps add to an ``init`` when none adds anything (features are immutable: one for all)
_NO_FEATURES = Features()


class Mountable(Protocol):
    """What the node needs of an app (every method has a default in :class:`lnpmsg.app.App`)."""

    name: str
    state: AppState
    stop_reason: str | None
    failures: int
    handlers: dict[int, Handler]
    batch_handlers: dict[int, BatchHandler]
    protocol: bool
    handler_timeout: float | None
    restart: str
    max_restarts: int
    restart_window: float

    def attach(self, node: Node) -> None: ...
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...
    @property
    def features(self) -> Features: ...
    def init_features(self, node_id: bytes) -> Features: ...
    async def starting(self) -> None: ...
    async def stopping(self) -> None: ...
    async def peer_ready(self, peer: Peer) -> None: ...
    async def peer_gone(self, peer: Peer, reason: str) -> None: ...
    async def channel_error(self, peer: Peer, channel_id: bytes, text: str) -> None: ...
    async def channel_warning(self, peer: Peer, channel_id: bytes, text: str) -> None: ...


def raw_message_class(type_number: int) -> type[Message]:
    """A message class for ``type_number`` whose one field, ``payload``, is the whole payload:
    lets an owner take an even type nobody declared (the session fails unknown even types)."""
    namespace = {"__annotations__": {"payload": "bytes"}, "FIELDS": (("payload", rest_bytes),)}
    cls = type(f"Raw{type_number}", (Message,), namespace)
    return message(type=type_number)(dataclass(frozen=True, slots=True)(cls))


def _lowest_free_bit(taken: Iterable[int]) -> int:
    """The lowest bit none of ``taken`` has (mask values stay small ints: cached, no object per peer)."""
    used = 0
    for bit in taken:
        used |= bit
    return (used + 1) & ~used


def describe_exception(exc: BaseException) -> str:
    """One line for an exception, looking through single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class AppHost:
    """Apps of one node (see the module docs). The node owns one; apps reach it as ``node.apphost``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: mounted apps by name, in mount order
        self.apps: dict[str, Mountable] = {}
        #: the dispatch table: type -> the owner's handler (running owners only)
        self.handlers: dict[int, Handler] = {}
        #: the dispatch table of runs: type -> the owner's batch handler (running owners only)
        self.batch_handlers: dict[int, BatchHandler] = {}
        #: the types mounted apps take in runs, undecoded (every session reads this one set)
        self.batch_types: set[int] = set()
        #: type -> its owner (None: a handler added with ``node.add_handler``)
        self.owners: dict[int, Mountable | None] = {}
        #: channel id -> the app that claimed it
        self.channels: dict[bytes, Mountable] = {}
        #: the apps each peer was told about with peer_ready (and not yet peer_gone), as a
        #: mask of their bits: one entry per peer, not one set entry per app and peer
        self._told: dict[Peer, int] = {}
        #: each mounted app's bit in those masks
        self._bits: dict[str, int] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        #: apps telling the peers already connected before taking messages (a late mount)
        self.activating: set[str] = set()

    # ------------------------------------------------------------ ownership

    def _owner_name(self, type_number: int) -> str:
        owner = self.owners[type_number]
        return "the node (add_handler)" if owner is None else f"app {owner.name!r}"

    def check_owns(self, app: Mountable | None, types: Iterable[int]) -> None:
        """Raise :class:`MountError` if ``app`` may not own every one of ``types``."""
        for type_number in types:
            if type_number in self.owners and self.owners[type_number] is not app:
                who = "the node" if app is None else f"app {app.name!r}"
                raise MountError(f"{who} cannot own message type {type_number}: {self._owner_name(type_number)} owns it")
            if app is not None and type_number < CUSTOM_TYPE_MIN and not app.protocol:
                raise MountError(f"app {app.name!r} cannot own BOLT type {type_number} (a protocol app says protocol=True)")

    def own(self, app: Mountable, type_number: int, handler: Handler) -> None:
        """``app`` (mounted) takes ``type_number`` after its mount."""
        self.check_owns(app, [type_number])
        self.owners[type_number] = app
        if app.state in _ACTIVE:
            self.handlers[type_number] = handler

    def own_batch(self, app: Mountable, type_number: int, handler: BatchHandler) -> None:
        """``app`` (mounted) takes ``type_number`` in runs after its mount (see :meth:`check_batch_type`)."""
        self.check_owns(app, [type_number])
        self.check_batch_type(type_number)
        self.owners[type_number] = app
        self.batch_types.add(type_number)
        if app.state in _ACTIVE:
            self.batch_handlers[type_number] = handler

    def check_batch_type(self, type_number: int) -> None:
        """Raise :class:`MountError` if the node decodes ``type_number``: a batch type stays undecoded."""
        declared = self.node.registry.get(type_number)
        if declared is not None:
            raise MountError(
                f"message type {type_number} is declared as {declared.__name__} on this node: "
                "a batch handler takes a type nobody decodes (its messages' bytes)"
            )

    def add_raw_handler(self, type_number: int, handler: Handler) -> None:
        """The node's own ``add_handler``: the node owns the type (one owner per type still).

        An even type the registry cannot decode gets a raw declaration (its
        ``payload``): the session would otherwise fail it as unknown.
        """
        self.check_owns(None, [type_number])
        registry = self.node.registry
        if not type_number & 1 and registry.get(type_number) is None:
            registry.register(raw_message_class(type_number))
        self.owners[type_number] = None
        self.handlers[type_number] = handler

    def owner_of(self, type_number: int) -> Mountable | None:
        """The app owning a type (None: none, or a node-level handler)."""
        return self.owners.get(type_number)

    def claim_channel(self, channel_id: bytes, app: Mountable) -> None:
        owner = self.channels.get(channel_id)
        if owner is not None and owner is not app:
            raise MountError(f"channel {channel_id.hex()} belongs to app {owner.name!r}")
        self.channels[channel_id] = app

    def release_channel(self, channel_id: bytes, app: Mountable) -> None:
        if self.channels.get(channel_id) is app:
            del self.channels[channel_id]

    # ------------------------------------------------------------- mounting

    def mount(self, app: Mountable) -> None:
        if app.name in self.apps:
            raise MountError(f"an app named {app.name!r} is already mounted")
        app.attach(self.node)  # checks the declarations; raises before anything changes here
        self.apps[app.name] = app
        self._bits[app.name] = _lowest_free_bit(self._bits.values())
        for type_number in app.handlers:
            self.owners[type_number] = app
        for type_number in app.batch_handlers:
            self.owners[type_number] = app
            self.batch_types.add(type_number)
        self.node._features_changed()

    def unmount(self, name: str) -> Mountable | None:
        """Stop an app's tasks and forget it: its types and channel ids are free again."""
        app = self.apps.pop(name, None)
        if app is None:
            return None
        self._deactivate(app, "unmounted")
        for type_number in [t for t, owner in self.owners.items() if owner is app]:
            del self.owners[type_number]
            self.batch_types.discard(type_number)
        for channel_id in [c for c, owner in self.channels.items() if owner is app]:
            del self.channels[channel_id]
        bit = self._bits.pop(name, 0)
        for peer, mask in list(self._told.items()):  # the bit is free for the next app mounted
            if mask & bit:
                self._set_told(peer, mask & ~bit)
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        return app

    def _activate(self, app: Mountable) -> None:
        for type_number, handler in app.handlers.items():
            if self.owners.get(type_number) is app:
                self.handlers[type_number] = handler
        for type_number, batch_handler in app.batch_handlers.items():
            if self.owners.get(type_number) is app:
                self.batch_handlers[type_number] = batch_handler

    def _deactivate(self, app: Mountable, reason: str) -> None:
        for type_number, owner in self.owners.items():
            if owner is app:
                self.handlers.pop(type_number, None)
                self.batch_handlers.pop(type_number, None)
        if app.state is not AppState.STOPPED:
            app.state = AppState.STOPPED
            app.stop_reason = reason
            self.node._features_changed()
            self.node.events.publish(AppStateChanged(app.name, AppState.STOPPED.value, reason))

    # ------------------------------------------------------------- features

    def init_features(self, node_id: bytes) -> Features:
        """What the apps add to the ``init`` sent to ``node_id`` (stopped apps add nothing)."""
        features = _NO_FEATURES
        for app in self.apps.values():
            if app.state is not AppState.STOPPED:
                features = features | app.init_features(node_id)
        return features

    def describe_features(self, features: Features | None) -> list[str]:
        """Names of a feature vector's bits; bits of mounted apps are named after the app.

        Bounded whatever the peer sent: known bits by name, the first
        :data:`MAX_NAMED_UNKNOWN_BITS` unknown ones by number, the rest counted.
        """
        if features is None:
            return []
        by_bit: dict[int, str] = {}
        for app in self.apps.values():
            for bit in app.features.bits():
                by_bit[bit & ~1] = by_bit[bit | 1] = app.name
        out = []
        unknown = 0
        for bit in features.bits():
            name = describe(Features.from_bits([bit]))[0]
            if "unknown" in name:
                if bit in by_bit:
                    name = f"{by_bit[bit]} ({'optional' if bit & 1 else 'required'}, bit {bit})"
                else:
                    unknown += 1
                    if unknown > MAX_NAMED_UNKNOWN_BITS:
                        continue
            out.append(name)
        if unknown > MAX_NAMED_UNKNOWN_BITS:
            out.append(f"{unknown - MAX_NAMED_UNKNOWN_BITS} more unknown bit(s)")
        return out

    # ---------------------------------------------------------------- hooks

    async def call(self, app: Mountable, what: str, fn: Callable[..., Any], *args: Any, peer: Peer | None = None, shield: bool = False) -> None:
        """Run one hook of ``app`` under its policy: bounded by its timeout, failures contained."""
        timeout = app.handler_timeout
        if shield and timeout is None:
            timeout = SHIELDED_HOOK_LIMIT
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.CancelScope(deadline=deadline, shield=shield) as scope:
            try:
                pending = fn(*args)
                if pending is not None:
                    await pending
            except Exception as exc:
                log.debug("hook %s of %s failed", what, app.name, exc_info=True)
                self.report(app, f"{what} raised {exc!r}", peer)
        if scope.cancelled_caught:
            self.report(app, f"{what} ran longer than {timeout:g} s and was cancelled", peer)

    def report(self, app: Mountable | None, text: str, peer: Peer | None = None) -> None:
        name = "node" if app is None else f"app.{app.name}"
        log.warning("%s: %s", name, text)
        self.node.events.publish(ErrorReported(name, text, None if peer is None else peer.node_id))

    async def peer_ready(self, peer: Peer) -> None:
        """Tell every running app, in mount order, that ``peer`` is ready (once per app and peer)."""
        for app in list(self.apps.values()):
            await self._tell_ready(app, peer)

    async def _tell_ready(self, app: Mountable, peer: Peer) -> None:
        bit = self._bits.get(app.name, 0)
        told = self._told.get(peer, 0)
        if not bit or told & bit or app.state not in _ACTIVE or not peer.is_ready:
            return
        self._told[peer] = told | bit
        await self.call(app, "peer_ready", app.peer_ready, peer, peer=peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        """Tell every app that was told ``peer`` was ready that it is gone (reverse mount order)."""
        for app in reversed(list(self.apps.values())):
            bit = self._bits.get(app.name, 0)
            told = self._told.get(peer, 0)
            if told & bit:
                self._set_told(peer, told & ~bit)
                await self.call(app, "peer_gone", app.peer_gone, peer, reason, peer=peer, shield=True)

    def was_told(self, peer: Peer) -> bool:
        """Was any app told ``peer`` was ready and not yet that it is gone? (else :meth:`peer_gone` has nothing to do)"""
        return peer in self._told

    def told(self, app_name: str) -> list[Peer]:
        """The peers the app was told about with ``peer_ready`` and not yet with ``peer_gone``."""
        bit = self._bits.get(app_name, 0)
        return [peer for peer, mask in self._told.items() if mask & bit]

    def _set_told(self, peer: Peer, mask: int) -> None:
        if mask:
            self._told[peer] = mask
        else:
            del self._told[peer]  # a peer no app knows of is not kept

    async def channel_message(self, peer: Peer, channel_id: bytes, text: str, *, error: bool) -> bool:
        """Route a channel's ``error``/``warning`` to the app that claimed the channel; False if none."""
        app = self.channels.get(channel_id)
        if app is None or app.state not in _ACTIVE:
            return False
        hook = app.channel_error if error else app.channel_warning
        await self.call(app, "channel_error" if error else "channel_warning", hook, peer, channel_id, text, peer=peer)
        return True

    async def stopping(self) -> None:
        """The node stops: each running app's ``stopping`` hook, in reverse mount order."""
        for app in reversed(list(self.apps.values())):
            if app.state in _ACTIVE:
                await self.call(app, "stopping", app.stopping, shield=True)

    # ---------------------------------------------------------- supervision

    def _set_state(self, app: Mountable, state: AppState, reason: str = "") -> None:
        if app.state is not state:
            app.state = state
            self.node.events.publish(AppStateChanged(app.name, state.value, reason))

    async def run_app(self, app: Mountable, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start ``app``, then supervise it until the node stops (see :mod:`lnpmsg.app`).

        Started once the app's first :meth:`run` reported started; a failure
        before that is raised. Then the peers already connected (a late
        mount) go through its ``peer_ready`` and its handlers enter the
        dispatch table: messages of its types that come in between are ignored.
        """
        with trio.CancelScope() as scope:
            self._scopes[app.name] = scope
            try:
                await self._supervise(app, task_status)
            finally:
                if self._scopes.get(app.name) is scope:
                    del self._scopes[app.name]

    async def _supervise(self, app: Mountable, task_status: trio.TaskStatus[None]) -> None:
        app.state = AppState.STARTING
        await self.call(app, "starting", app.starting)
        failures: deque[float] = deque()
        delay = RESTART_MIN_DELAY
        first = True
        while True:
            began = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(app.run)
                    if first:
                        first = False
                        self._set_state(app, AppState.RUNNING)
                        # No checkpoint since start(): whatever the app does next, the node goes on.
                        task_status.started()
                        # A late app hears of the peers already there before its handlers
                        # take their messages (before the node runs, there are none).
                        self.activating.add(app.name)
                        try:
                            for peer in list(self.node.peers.values()):
                                await self._tell_ready(app, peer)
                        finally:
                            self.activating.discard(app.name)
                        self._activate(app)
                    else:
                        self._activate(app)
                        self._set_state(app, AppState.RUNNING, "restarted")
            except Exception as exc:
                if first:
                    app.state = AppState.STOPPED
                    app.stop_reason = describe_exception(exc)
                    raise
                reason = describe_exception(exc)
                error: BaseException = exc
            else:
                if first:
                    task_status.started()
                log.info("app %s: its tasks finished", app.name)
                return
            app.failures += 1
            log.error("app %s failed: %s", app.name, reason, exc_info=error)
            self.report(app, f"task failed: {reason}")
            now = trio.current_time()
            if now - began > app.restart_window:
                delay = RESTART_MIN_DELAY
            failures.append(now)
            while failures and failures[0] < now - app.restart_window:
                failures.popleft()
            if app.restart != "always" or len(failures) > app.max_restarts:
                why = "restart='never'" if app.restart != "always" else f"{len(failures)} failures within {app.restart_window:g} s"
                log.error("app %s stopped (%s): its even message types now fail peers, its features leave new inits", app.name, why)
                self._deactivate(app, f"{reason} ({why})")
                return
            self._set_state(app, AppState.RESTARTING, reason)
            log.warning("app %s: restarting in %.3g s", app.name, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_DELAY)
