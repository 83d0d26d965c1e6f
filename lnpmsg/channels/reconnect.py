"""Keep channel peers connected: dial them again after a drop and after a restart.

A channel is only useful while its peer is connected: HTLCs cannot be added
or settled, and an HTLC left unsettled ends on chain. So, as every mature
node does, the channel app dials each peer it has an open channel with
whenever that peer is gone: at start, and after each disconnection, with
the back-off the node uses for its configured peers (:mod:`lnpmsg.io.redial`:
:data:`~lnpmsg.io.redial.RECONNECT_MIN_DELAY` doubled up to
:data:`~lnpmsg.io.redial.RECONNECT_MAX_DELAY`, with jitter so two nodes that
both dial do not collide forever), through the node's public ``connect``.

It dials the address this node last reached the peer at (a peer that only
ever dialed us is waited for: we do not know where it listens). Those
addresses live in ``<channel dir>/peers.json``, replaced atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.io.redial import Backoff, redial

from .state import Phase

if TYPE_CHECKING:
    from .app import ChannelsApp

__all__ = ["PeerAddressBook", "Reconnector"]

log = logging.getLogger(__name__)

#: the most peer addresses kept (one per channel peer; more means a bug or an attack)
MAX_ADDRESSES = 10_000
#: channel phases worth a connection (the funding exists, or the channel is still being closed)
_LIVE = frozenset({Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING})


class PeerAddressBook:
    """Where this node last reached each channel peer (node id hex -> peer address), on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.addresses: dict[str, str] = {}
        try:
            data = json.loads(path.read_bytes())
            self.addresses = {str(k): str(v) for k, v in dict(data).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.warning("channels: %s is unreadable (%s): peers will be waited for until we reach them again", path, exc)

    def get(self, node_id: bytes) -> str | None:
        return self.addresses.get(node_id.hex())

    def remember(self, node_id: bytes, address: str) -> bool:
        """Note ``address`` for the peer; True when that changed the book (the caller saves it)."""
        if self.addresses.get(node_id.hex()) == address:
            return False
        self.addresses.pop(node_id.hex(), None)
        self.addresses[node_id.hex()] = address
        while len(self.addresses) > MAX_ADDRESSES:
            self.addresses.pop(next(iter(self.addresses)))
        return True

    def save(self) -> None:
        """Write the book atomically and durably."""
        write_atomic(self.path, json.dumps(self.addresses, indent=1).encode())


class Reconnector:
    """One dialing task per channel peer that is away; it ends when the peer is back or has no live channel."""

    def __init__(self, app: ChannelsApp, book: PeerAddressBook, *, jitter: Callable[[], float] | None = None) -> None:
        self._app = app
        self.book = book
        #: scales each wait (default: the back-off's own jitter)
        self._jitter = jitter
        self._away: set[bytes] = set()

    def wants(self, node_id: bytes) -> bool:
        """Whether we have a channel with the peer worth a connection."""
        manager = self._app.manager
        # (a channel restored from a backup: until the peer's commitment is on chain)
        return manager is not None and any(c.phase in _LIVE or self._app.awaiting_close(c) for c in manager.of_peer(node_id))

    async def peer_ready(self, node_id: bytes, dialed: str | None) -> None:
        """A peer is connected: remember the address we dialed it at (for channel peers)."""
        if dialed is not None and self.wants(node_id) and self.book.remember(node_id, dialed):
            await trio.to_thread.run_sync(self.book.save)

    async def channel_opened(self, node_id: bytes) -> None:
        """A channel now exists with a connected peer we dialed: from now on it is kept connected."""
        peer = self._app.node.peers.get(node_id)
        if peer is not None:
            await self.peer_ready(node_id, peer.dialed)

    def peer_gone(self, node_id: bytes) -> None:
        """A connection ended: dial the peer again if it is a channel peer we know how to reach."""
        if node_id in self._away or node_id in self._app.node.peers or not self.wants(node_id):
            return
        address = self.book.get(node_id)
        if address is None:
            return
        self._away.add(node_id)
        self._app.spawn(self._redial, node_id, address)

    def start(self) -> None:
        """At start: every channel peer we can reach is dialed."""
        manager = self._app.manager
        for node_id in {c.peer_id for c in manager.channels.values()} if manager is not None else ():
            self.peer_gone(node_id)

    async def _redial(self, node_id: bytes, address: str) -> None:
        node = self._app.node
        try:
            # any failed dial is retried: it must not restart the channel app
            peer = await redial(lambda: node.connect(address), Backoff(jitter=self._jitter),
                                wanted=lambda: node_id not in node.peers and self.wants(node_id), errors=(Exception,),
                                what=f"channels: channel peer {node_id.hex()} at {address}", logger=log)  # fmt: skip
            if peer is not None:
                log.info("channels: reconnected to channel peer %s at %s", node_id.hex(), address)
        finally:
            self._away.discard(node_id)
