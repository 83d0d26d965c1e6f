"""What every connection's session starts from: our ``init`` (built and encoded once per
feature set), the features we understand, the verdicts on peers' ``init``s, and the
session and peer made from them. A part of :class:`~lnpmsg.node.node.Node`.

Every connection needs these, and building them costs more than the rest of a
session's setup: an accepting node would spend it on every handshake, so they
are kept per feature set (apps may offer per-peer features, so there can be
more than one, at most :data:`MAX_CACHED_INITS`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

import trio

from lnpmsg.node.init_check import InitVerdicts
from lnpmsg.node.peer import Peer
from lnpmsg.node.session import PeerSession
from lnpmsg.wire import Features, Init
from lnpmsg.wire.bolt1 import INIT_TLVS
from lnpmsg.wire.features import known_features

if TYPE_CHECKING:
    from lnpmsg.node.apphost import AppHost
    from lnpmsg.node.keepalive import KeepaliveSchedule
    from lnpmsg.node.node import NodeConfig
    from lnpmsg.node.session import SessionEvent
    from lnpmsg.transports.base import Connection
    from lnpmsg.wire import MessageRegistry

__all__ = ["MAX_CACHED_INITS", "SessionSetup", "SetupForFeatures"]

#: distinct ``init`` feature sets kept encoded (apps with per-peer features make more than one)
MAX_CACHED_INITS = 64


class SetupForFeatures(NamedTuple):
    """What the sessions of one local feature set share."""

    #: the ``init`` we send, and encoded
    init: Init
    init_bytes: bytes
    #: the feature bits we understand (ours and every known one)
    understood: Features
    #: those our ``init`` offers
    offered: Features
    #: verdicts on peers' ``init`` payloads, against ``understood`` and the node's chains
    verdicts: InitVerdicts


class SessionSetup:
    """The sessions' setup of the :class:`~lnpmsg.node.node.Node` (mixed into it)."""

    config: NodeConfig
    apphost: AppHost
    registry: MessageRegistry
    keepalive: KeepaliveSchedule
    _nursery: trio.Nursery | None
    _chain_hash: bytes
    _chains: frozenset[bytes]
    _init_cache: dict[Features, SetupForFeatures]
    _on_peer_events: Callable[[Peer, list[SessionEvent]], Awaitable[None]]
    _on_peer_events_now: Callable[[Peer, list[SessionEvent]], bool]

    def local_features(self, node_id: bytes = b"") -> Features:
        """The features in the ``init`` sent to ``node_id``: the config's, or'ed with every
        mounted (not stopped) app's (:meth:`lnpmsg.app.App.init_features`)."""
        if not self.apphost.apps:
            return self.config.features  # every accepted connection asks: no apps, nothing to add
        extra = self.apphost.init_features(node_id)
        # No app adds any (the usual case): the config's own object, not a new one per connection.
        return self.config.features | extra if extra.value else self.config.features

    def local_init(self, node_id: bytes = b"") -> Init:
        """The ``init`` this node sends (to ``node_id``: apps may offer per-peer features)."""
        return self._session_setup(node_id).init

    def _features_changed(self) -> None:
        """An app came, went or stopped: the next connections build their ``init`` again."""
        self._init_cache.clear()

    def _session_setup(self, node_id: bytes) -> SetupForFeatures:
        """What a session with ``node_id`` starts from, cached per feature set."""
        features = self.local_features(node_id)
        cached = self._init_cache.get(features)
        if cached is None:
            init = Init(
                globalfeatures=b"",
                features=features.to_bytes(),
                tlvs=INIT_TLVS.stream(networks=[self._chain_hash]),
            )
            if len(self._init_cache) >= MAX_CACHED_INITS:
                self._init_cache.clear()
            understood = features | known_features()
            cached = self._init_cache[features] = SetupForFeatures(
                init, init.encode(), understood, init.all_features, InitVerdicts(understood, self._chains)
            )
        return cached

    def _make_peer(self, conn: Connection, cipher, remote_id: bytes, *, outbound: bool, leftover: bytes) -> Peer:  # type: ignore[no-untyped-def]
        cfg = self.config
        local_init, local_init_bytes, understood, offered, verdicts = self._session_setup(remote_id)
        now = trio.current_time()
        session = PeerSession(
            local_init,
            now,
            known_features=understood,
            registry=self.registry,
            chains=self._chains,
            ping_interval=cfg.ping_interval,
            pong_timeout=cfg.pong_timeout,
            init_timeout=cfg.init_timeout,
            local_init_bytes=local_init_bytes,
            local_features=offered,
            batch_types=self.apphost.batch_types,
            init_verdicts=verdicts,
        )
        return Peer(
            conn,
            cipher,
            session,
            remote_id,
            outbound=outbound,
            on_events=self._on_peer_events,
            on_events_now=self._on_peer_events_now,
            keepalive=self.keepalive,
            leftover=leftover,
            max_queued_bytes=cfg.max_queued_bytes,
            tasks=self._nursery,
            now=now,
        )
