"""The Node: identity, listeners, peers, message handlers and events.

A node owns one trio nursery (:meth:`Node.run`) under which every listener
and every peer runs. Peers reach it over any transport; the node only sees
:class:`~lnpmsg.transports.base.Connection` objects, and apps only see
:class:`~lnpmsg.node.peer.Peer` objects and decoded messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

import trio

from lnpmsg.node.admission import (
    ACT_ONE_TIMEOUT,
    MAX_CONNECTIONS_PER_IP,
    MAX_PEERS,
    MAX_PENDING_HANDSHAKES,
    MAX_PENDING_PER_IP,
    MAX_PENDING_PER_SUBNET,
    MAX_PENDING_TOR,
    RESERVED_PEER_SLOTS,
    Admission,
    AdmissionLimits,
    RefusalLog,
)
from lnpmsg.node.apphost import AppHost, AppState, Mountable, MountError
from lnpmsg.node.events import (
    CustomMessageReceived,
    EventBus,
    PeerConnected,
    PeerDisconnected,
    PeerErrorReceived,
    PeerReplaced,
    PeerWarningReceived,
)
from lnpmsg.node.dialing import RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, ConnectError, Dialing, onion_only_transports
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.inbound import Inbound, PendingHandshake
from lnpmsg.node.keepalive import KeepaliveSchedule, tick_for
from lnpmsg.node.peer import HANDSHAKE_TIMEOUT, MAX_QUEUED_BYTES, Peer
from lnpmsg.node.session import (
    INIT_TIMEOUT,
    PING_INTERVAL,
    PONG_TIMEOUT,
    MessagesReceived,
    PeerReady,
    RemoteError,
    RemoteWarning,
    RunReceived,
    SessionClosed,
    SessionEvent,
)
from lnpmsg.node.session_setup import SessionSetup, SetupForFeatures
from lnpmsg.transports.address import (
    PeerAddress,
    format_peer_address,
    parse_listen_address,
    parse_peer_address,
)
from lnpmsg.transports.base import Connection, Listener, Transport, TransportError
from lnpmsg.transports.registry import default_transports
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    ZERO_CHANNEL_ID,
    Features,
    Message,
    MessageRegistry,
    UnknownMessage,
    unknown_messages,
)
from lnpmsg.wire.bolt1 import CHAIN_HASHES
from lnpmsg.wire.message import CUSTOM_TYPE_MIN

__all__ = [
    "MAX_CONNECTIONS_PER_IP",
    "MAX_PENDING_HANDSHAKES",
    "RECONNECT_MAX_DELAY",
    "RECONNECT_MIN_DELAY",
    "ConnectError",
    "MountError",
    "Mountable",
    "Node",
    "NodeConfig",
]

log = logging.getLogger("lnpmsg.node")

#: a message handler: ``handler(peer, message)``, a plain or an async function
Handler = Callable[[Peer, Message], Awaitable[None] | None]


AppT = TypeVar("AppT", bound=Mountable)


@dataclass
class NodeConfig:
    """Settings of a node (the CLI fills this; tests and apps build it directly)."""

    listen: list[str] = field(default_factory=list)
    connect: list[str] = field(default_factory=list)
    network: str = "bitcoin"
    features: Features = field(default_factory=Features)
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    init_timeout: float = INIT_TIMEOUT
    ping_interval: float = PING_INTERVAL
    pong_timeout: float = PONG_TIMEOUT
    max_queued_bytes: int = MAX_QUEUED_BYTES
    #: inbound admission (see :mod:`lnpmsg.node.admission`)
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    max_pending_handshakes: int = MAX_PENDING_HANDSHAKES
    max_pending_per_ip: int = MAX_PENDING_PER_IP
    max_pending_per_subnet: int = MAX_PENDING_PER_SUBNET
    max_pending_tor: int = MAX_PENDING_TOR
    act_one_timeout: float = ACT_ONE_TIMEOUT
    max_peers: int = MAX_PEERS
    reserved_peer_slots: int = RESERVED_PEER_SLOTS
    #: Tor's SOCKS port (host, port): enables the ``tor`` transport for onion peers
    tor_socks: tuple[str, int] | None = None
    #: Tor only: no transport but ``tor`` (so nothing can reach a peer around
    #: Tor), no clearnet listener (:meth:`Node.listen` refuses; the onion
    #: service's loopback listener comes through :meth:`Node.add_listener`),
    #: every dial through Tor (clearnet ``host:port`` peers through Tor exits)
    onion_only: bool = False
    #: with ``onion_only``: clearnet targets are refused
    #: (:class:`~lnpmsg.transports.tor.errors.ClearnetRefused`) instead of
    #: leaving through Tor exits
    onion_to_onion: bool = False


class Node(Dialing, Inbound, SessionSetup):
    """An lnpmsg node.

    Example::

        node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            peer = await node.connect("02...@127.0.0.1:9735")
    """

    def __init__(
        self,
        key: NodeKey,
        config: NodeConfig | None = None,
        *,
        transports: Mapping[str, Transport] | None = None,
        registry: MessageRegistry | None = None,
    ) -> None:
        self.key = key
        self.config = config or NodeConfig()
        if self.config.onion_to_onion and not self.config.onion_only:
            raise ValueError("onion_to_onion needs onion_only")
        if self.config.onion_only:
            self.transports: MutableMapping[str, Transport] = dict(transports if transports is not None else onion_only_transports(self.config))
            bypass = sorted(set(self.transports) - {"tor"})
            if bypass:
                raise TransportError(f"onion-only mode: only the tor transport may be enabled, not {', '.join(bypass)}")
        else:
            # the default kinds are made (their modules imported) when first listened or dialed on
            self.transports = dict(transports) if transports else default_transports(tor_socks=self.config.tor_socks)
        self.registry = registry if registry is not None else DEFAULT_REGISTRY.copy()
        self.events = EventBus()
        self.peers: dict[bytes, Peer] = {}
        #: dials under way, by node id (a second ``connect`` waits for the first)
        self._dialing: dict[bytes, trio.Event] = {}
        self.listeners: list[Listener] = []
        #: where each listener is reachable, in the address syntax without the node id
        #: (``127.0.0.1:9735``, ``udp://127.0.0.1:9735``, ``zmq+tcp://127.0.0.1:9736``)
        self.listen_addresses: list[str] = []
        #: inbound connections dropped before becoming peers, by reason
        #: (``handshake_failed``, ``refused_ip_limit``, ``evicted``, ``refused_peer_limit``)
        self.stats: Counter[str] = Counter()
        #: the apps: ownership, features, hooks, supervision (see :mod:`lnpmsg.node.apphost`)
        self.apphost = AppHost(self)
        #: the dispatch table, type -> its owner's handler (one owner per type)
        self._handlers = self.apphost.handlers
        #: the dispatch table of runs, type -> its owner's batch handler
        self._batch_handlers = self.apphost.batch_handlers
        #: mounted apps by name, in mount order (see :meth:`mount`)
        self.apps = self.apphost.apps
        #: messages that reached no handler and no subscriber (unknown odd types)
        self.ignored_messages = 0
        cfg = self.config
        self.admission = Admission(
            AdmissionLimits(
                max_pending=cfg.max_pending_handshakes,
                max_pending_per_ip=cfg.max_pending_per_ip,
                max_pending_per_subnet=cfg.max_pending_per_subnet,
                max_pending_tor=cfg.max_pending_tor,
                max_connections_per_ip=cfg.max_connections_per_ip,
                max_peers=cfg.max_peers,
                reserved_peer_slots=cfg.reserved_peer_slots,
            )
        )
        self._refusals = RefusalLog()
        #: each pending inbound handshake (its deadline and an eviction close its connection)
        self._handshakes: dict[Connection, PendingHandshake] = {}
        self._started: dict[Connection, Peer] = {}
        #: peers kept above the inbound limit (an app has channels with them: :meth:`protect_peer`)
        self._protected: Counter[bytes] = Counter()
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self.started = trio.Event()
        self._chain_hash = CHAIN_HASHES[self.config.network]
        #: shared by every session (one set, not one per peer)
        self._chains = frozenset((self._chain_hash,))
        self._init_cache: dict[Features, SetupForFeatures] = {}
        #: every peer's pings and deadlines, run by one task (not one wake-up per peer)
        #: and the pending inbound handshakes' deadlines
        self.keepalive = KeepaliveSchedule(
            tick_for(cfg.ping_interval, cfg.pong_timeout, cfg.init_timeout, cfg.act_one_timeout, cfg.handshake_timeout)
        )

    @property
    def node_id(self) -> bytes:
        return self.key.node_id

    # ----------------------------------------------------------- app API

    def add_handler(self, message_type: int | type[Message], handler: Handler) -> None:
        """Own a type at the node level: ``handler(peer, message)`` for every message of it, in
        arrival order per peer. One owner per type (:class:`MountError` otherwise); apps use
        :meth:`lnpmsg.app.App.on`, which adds the app's policy and hooks."""
        type_number = message_type if isinstance(message_type, int) else message_type.TYPE
        self.apphost.add_raw_handler(type_number, handler)

    def on(self, message_type: int | type[Message]) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_handler`."""

        def register(handler: Handler) -> Handler:
            self.add_handler(message_type, handler)
            return handler

        return register

    def mount(self, app: AppT) -> AppT:
        """Add an app: its messages, owned types, features, hooks and background tasks.

        Conflicts (a name, or a type another owner has) raise
        :class:`MountError` and change nothing. Mount before :meth:`run` so
        every connection advertises the app's features (peers connected
        earlier saw the old ``init``). Apps mounted while the node runs start
        at once: their handlers take messages once their ``peer_ready`` ran
        for the peers already connected.
        """
        self.apphost.mount(app)
        if self._nursery is not None:
            self._nursery.start_soon(self._start_app_late, app)
        return app

    async def _start_app_late(self, app: Mountable) -> None:
        try:
            await self.apphost.run_app(app)
        except Exception as exc:
            # Its start failed: a late app cannot take the running node down.
            self.apphost._deactivate(app, f"failed to start: {exc!r}")
            self.apphost.report(app, f"failed to start: {exc!r}")

    def unmount(self, name: str) -> Mountable | None:
        """Stop an app and forget it (its types and channel ids are free again); None if not mounted."""
        return self.apphost.unmount(name)

    def claim_channel(self, channel_id: bytes, app: Mountable) -> None:
        """Route BOLT-1 ``error``/``warning`` about ``channel_id`` to ``app`` (see :meth:`lnpmsg.app.App.claim_channel`)."""
        self.apphost.claim_channel(channel_id, app)

    def describe_features(self, features: Features | None) -> list[str]:
        """Names of feature bits for logs and JSON; mounted apps' bits carry the app's name."""
        return self.apphost.describe_features(features)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped.is_set()

    # --------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node: start listeners, connect to configured peers, serve until :meth:`stop`."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.keepalive.run)
                # Apps first: a peer may connect and speak to them as soon as we listen.
                for app in list(self.apps.values()):
                    await nursery.start(self.apphost.run_app, app)
                for address in self.config.listen:
                    await self.listen(address)
                for address in self.config.connect:
                    nursery.start_soon(self._keep_connected, parse_peer_address(address))
                nursery.start_soon(self._summarise_refusals)
                self.started.set()
                task_status.started()
                await self._stopped.wait()
                log.info("stopping: telling %d app(s), then closing %d peer(s)", len(self.apps), len(self.peers))
                await self.apphost.stopping()
                for peer in list(self.peers.values()):
                    peer.close("node shutting down")
                for listener in self.listeners:
                    await listener.aclose()
                with trio.move_on_after(3):
                    for peer in list(self.peers.values()):
                        await peer.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            # Also when run was cancelled or a listen failed: never leak a bound endpoint.
            with trio.CancelScope(shield=True):
                for listener in self.listeners:
                    await listener.aclose()

    def stop(self) -> None:
        """Ask :meth:`run` to close every peer and listener and return."""
        self._stopped.set()

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the node is not running: start Node.run() in a nursery first")
        return self._nursery

    async def listen(self, address: str) -> str:
        """Start a listener (``127.0.0.1:9735``, ``udp://...``); returns where it is reachable.

        The result is in the address syntax without the node id (a chosen
        port 0 filled in): ``udp://127.0.0.1:41234``; :attr:`addresses`
        gives the full form peers dial.
        """
        nursery = self._require_running()
        if self.config.onion_only:
            raise TransportError(f"onion-only mode: refusing to listen on {address}; the node is reachable at its onion service only")
        parsed = parse_listen_address(address)
        transport = self._transport_for(parsed)
        listener = await transport.listen(parsed.target)
        reachable = format_peer_address(PeerAddress(parsed.kind, listener.local_address))
        self.listeners.append(listener)
        self.listen_addresses.append(reachable)
        nursery.start_soon(partial(listener.serve_accepting, self._accept_now, self._accept, continue_now=self._continue_now))
        log.info("listening on %s", reachable)
        return reachable

    def add_listener(self, listener: Listener, *, reachable: str | None = None) -> None:
        """Serve a listener bound elsewhere, e.g. the loopback one behind the node's onion service.

        ``reachable`` (the address syntax without the node id, e.g.
        ``xyz.onion:9735``) joins :attr:`listen_addresses`; ``None`` keeps
        the listener out of them. It is closed with the node's other listeners.
        """
        nursery = self._require_running()
        self.listeners.append(listener)
        if reachable is not None:
            self.listen_addresses.append(reachable)
        nursery.start_soon(partial(listener.serve_accepting, self._accept_now, self._accept, continue_now=self._continue_now))

    @property
    def pending_handshakes(self) -> int:
        """Inbound BOLT-8 handshakes in progress now (bounded, see :mod:`lnpmsg.node.admission`)."""
        return self.admission.pending

    def protect_peer(self, node_id: bytes) -> None:
        """Keep room for ``node_id`` (e.g. a channel peer): it may connect past the inbound
        peer limit, into the reserved slots. Calls nest: each needs one :meth:`unprotect_peer`."""
        self._protected[node_id] += 1

    def unprotect_peer(self, node_id: bytes) -> None:
        """Undo one :meth:`protect_peer`."""
        self._protected[node_id] -= 1
        if self._protected[node_id] <= 0:
            del self._protected[node_id]

    def is_protected(self, node_id: bytes) -> bool:
        return node_id in self._protected

    @property
    def addresses(self) -> list[str]:
        """Where peers reach this node, one per listener, ready for ``connect``
        (``NODEID@127.0.0.1:9735``, ``udp://NODEID@127.0.0.1:9735``, ...)."""
        return [format_peer_address(replace(parse_listen_address(a), node_id=self.node_id)) for a in self.listen_addresses]

    # --------------------------------------------------------- connections

    async def _run_peer(self, peer: Peer) -> None:
        try:
            await peer.run()
        finally:
            if self._forget_peer(peer):
                # Shielded inside: runs even while the node is being cancelled.
                await self.apphost.peer_gone(peer, peer.close_reason or "closed")

    def _forget_peer(self, peer: Peer) -> bool:
        """A peer ended: it leaves :attr:`peers` (logged, and an event) if it was there.
        True: apps were told it was ready, and must hear that it is gone."""
        if self.peers.get(peer.node_id) is peer:
            del self.peers[peer.node_id]
            reason = peer.close_reason or "closed"
            # The log's and the event's arguments are made only for a log or subscriber that takes them.
            if log.isEnabledFor(logging.INFO):
                log.info("peer %s disconnected: %s", peer.node_id.hex(), reason)
            if self.events.has_subscribers:
                self.events.publish(PeerDisconnected(peer.node_id, peer.address, reason))
        return self.apphost.was_told(peer)

    def _peer_ended_now(self, peer: Peer) -> None:
        """A peer :meth:`Peer.start_now` ended (it never ran): forgotten as :meth:`_run_peer` forgets one."""
        if self._forget_peer(peer):
            # Only if an app was told of it: never without a wait in between, but the hooks run all the same.
            self._require_running().start_soon(self.apphost.peer_gone, peer, peer.close_reason or "closed")

    # ------------------------------------------------------------- events

    async def _on_peer_events(self, peer: Peer, events: list[SessionEvent]) -> None:
        for event in events:
            if type(event) is RunReceived:
                await self._dispatch_run(peer, event.type, event.messages)
            elif type(event) is MessagesReceived:
                await self._dispatch(peer, event.messages)
            elif isinstance(event, PeerReady):
                await self._on_ready(peer)
            elif isinstance(event, RemoteWarning):
                log.warning("peer %s sent a warning: %s", peer.node_id.hex(), event.text)
                self.events.publish(PeerWarningReceived(peer.node_id, event.channel_id, event.text))
                if event.channel_id != ZERO_CHANNEL_ID:
                    await self.apphost.channel_message(peer, event.channel_id, event.text, error=False)
            elif isinstance(event, RemoteError):
                log.warning("peer %s sent an error for channel %s: %s", peer.node_id.hex(), event.channel_id.hex(), event.text)
                self.events.publish(PeerErrorReceived(peer.node_id, event.channel_id, event.text))
                await self.apphost.channel_message(peer, event.channel_id, event.text, error=True)
            elif isinstance(event, SessionClosed):
                log.info("peer %s: %s%s", peer.node_id.hex(), "peer error: " if event.by_peer else "", event.reason)

    def _on_peer_events_now(self, peer: Peer, events: list[SessionEvent]) -> bool:
        """The events of a read :meth:`Peer.start_now` took, handled at once if nothing in them
        has to wait (a peer's ``init`` on a node without apps, replacing no live peer):
        True. False: the peer's task hands them all to :meth:`_on_peer_events`."""
        if not events:
            return True
        if len(events) > 1 or not isinstance(events[0], PeerReady) or self.apps:
            return False
        old = self.peers.get(peer.node_id)
        if old is not None and old is not peer:
            return False  # the old one's end is awaited
        self.peers[peer.node_id] = peer
        if peer.is_ready:
            self._announce_ready(peer)
        return True

    async def _on_ready(self, peer: Peer) -> None:
        old = self.peers.get(peer.node_id)
        if old is not None and old is not peer:
            # The newest connection wins (the old one is usually dead and not yet noticed).
            log.warning(
                "peer %s: a new %s connection (%s) replaces the live one (%s %s)",
                peer.node_id.hex(), peer.transport_kind, peer.address, old.transport_kind, old.address,
            )
            old.close("replaced by a new connection from the same node")
            self.events.publish(PeerReplaced(peer.node_id, old.address, peer.address))
            # Apps hear of the old one's end before the new one's start.
            await self.apphost.peer_gone(old, "replaced by a new connection from the same node")
        self.peers[peer.node_id] = peer
        if self.apps:
            # Before any message of the peer is dispatched: the rest of this read waits for it.
            await self.apphost.peer_ready(peer)
        if peer.is_ready:
            self._announce_ready(peer)

    def _announce_ready(self, peer: Peer) -> None:
        """Log a ready peer and publish :class:`PeerConnected` (only for a log or subscriber that takes them)."""
        logging_it = log.isEnabledFor(logging.INFO)
        publishing = self.events.has_subscribers
        if not (logging_it or publishing):
            return  # nobody takes the names of its features, its address or the event
        features = tuple(self.describe_features(peer.session.remote_features))
        address = peer.address
        if logging_it:
            log.info(
                "peer %s connected (%s, %s %s), features: %s",
                peer.node_id.hex(),
                "outbound" if peer.outbound else "inbound",
                peer.transport_kind,
                address,
                ", ".join(features) or "none",
            )
        if publishing:
            self.events.publish(PeerConnected(peer.node_id, address, peer.transport_kind, peer.outbound, features))

    async def _dispatch(self, peer: Peer, messages: Iterable[Message]) -> None:
        """Hand each message to its owner's handler, in order; one call per read, so the loop is inlined."""
        handler_for = self._handlers.get
        has_subscribers = self.events.has_subscribers
        for message in messages:
            type_number = message.type if type(message) is UnknownMessage else message.TYPE
            handler = handler_for(type_number)
            # Custom messages (the custom range, or types nobody here decodes) are
            # events for other programs; protocol messages an app consumes
            # (gossip, channels) publish events of their own instead.
            subscribed = has_subscribers and (type_number >= CUSTOM_TYPE_MIN or type(message) is UnknownMessage)
            if handler is None:
                if not type_number & 1 and not self._unowned_even(peer, type_number):
                    return
                if not subscribed:
                    self.ignored_messages += 1
                    continue
            else:
                try:
                    # Handlers may be plain functions (nothing to await) or coroutine functions.
                    pending = handler(peer, message)
                    if pending is not None:
                        await pending
                except Exception as exc:
                    owner = self.apphost.owner_of(type_number)
                    log.exception("handler %r failed on message type %d from %s", handler, type_number, peer.node_id.hex())
                    self.apphost.report(owner, f"handler for type {type_number} raised {exc!r}", peer)
            if subscribed:
                payload = message.payload if type(message) is UnknownMessage else message.encode()[2:]
                self.events.publish(CustomMessageReceived(peer.node_id, type_number, payload))

    async def _dispatch_run(self, peer: Peer, type_number: int, messages: list[bytes]) -> None:
        """Hand a run of one batch type to its owner's batch handler in one call.

        With no batch handler now (its app stopped, or not yet taking
        messages) the run goes message by message through :meth:`_dispatch`,
        as messages nobody handles do: odd ones are ignored, even ones fail
        the peer.
        """
        handler = self._batch_handlers.get(type_number)
        if handler is None:
            await self._dispatch(peer, unknown_messages(type_number, messages))
            return
        try:
            pending = handler(peer, messages)
            if pending is not None:
                await pending
        except Exception as exc:
            log.exception("batch handler %r failed on message type %d from %s", handler, type_number, peer.node_id.hex())
            self.apphost.report(self.apphost.owner_of(type_number), f"batch handler for type {type_number} raised {exc!r}", peer)
        if self.events.has_subscribers:
            publish = self.events.publish
            node_id = peer.node_id
            for data in messages:
                publish(CustomMessageReceived(node_id, type_number, data[2:]))

    def _unowned_even(self, peer: Peer, type_number: int) -> bool:
        """An even message nobody handles: BOLT 1 fails the connection, as for an unknown type.

        Returns True when the message may pass anyway (its app is still starting: ignored).
        """
        owner = self.apphost.owner_of(type_number)
        if owner is not None and (owner.state is AppState.STARTING or owner.name in self.apphost.activating):
            return True
        why = "" if owner is None else f" (its app {owner.name!r} is {owner.state.value})"
        log.info("peer %s sent even message type %d that nothing here handles%s", peer.node_id.hex(), type_number, why)
        peer.close(f"unknown even message type {type_number}", send_error=True)
        return False

    # ------------------------------------------------------------ helpers

    def broadcast(self, message: Message | bytes, peers: Iterable[Peer] | None = None) -> int:
        """Queue a message to every ready peer (skipping those whose queue is full). Returns how many got it."""
        sent = 0
        for peer in list(peers if peers is not None else self.peers.values()):
            if not peer.is_ready:
                continue
            try:
                peer.send_nowait(message)
                sent += 1
            except Exception as exc:
                log.warning("broadcast to %s skipped: %s", peer.node_id.hex(), exc)
        return sent
