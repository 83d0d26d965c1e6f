"""The node's outbound side: dialing a peer (one dial per peer at a time), the
initiator's handshake, waiting for its ``init``, and keeping configured
peers connected with back-off. A part of :class:`~lnpmsg.node.node.Node`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING

import trio

from lnpmsg.io.redial import RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, Backoff, redial
from lnpmsg.node.peer import HandshakeFailed, Peer, handshake_as_initiator
from lnpmsg.transports.address import PeerAddress, parse_peer_address
from lnpmsg.transports.base import Transport, TransportError

if TYPE_CHECKING:
    from lnpmsg.node.admission import Admission
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import NodeConfig

__all__ = ["RECONNECT_MAX_DELAY", "RECONNECT_MIN_DELAY", "ConnectError", "Dialing"]

log = logging.getLogger("lnpmsg.node")


class ConnectError(Exception):
    """Connecting to a peer failed (with the reason)."""


class Dialing:
    """Outbound connections of the :class:`~lnpmsg.node.node.Node` (mixed into it)."""

    key: NodeKey
    config: NodeConfig
    transports: MutableMapping[str, Transport]
    peers: dict[bytes, Peer]
    admission: Admission
    _dialing: dict[bytes, trio.Event]
    node_id: bytes
    _require_running: Callable[[], trio.Nursery]
    is_protected: Callable[[bytes], bool]
    _make_peer: Callable[..., Peer]
    _run_peer: Callable[[Peer], Awaitable[None]]

    def _transport_for(self, address: PeerAddress) -> Transport:
        if self.config.onion_only:
            # host:port peers go through Tor too (or are refused by it): never around it
            if address.kind not in ("tor", "tcp"):
                raise ConnectError(f"onion-only mode: refusing to dial {address}: {address.kind} cannot be carried by Tor")
            if "tor" not in self.transports:
                raise ConnectError("onion-only mode: no Tor to dial through (mount a NodeTor, or set tor_socks)")
            return self.transports["tor"]
        try:
            return self.transports[address.kind]
        except KeyError:
            enabled = ", ".join(sorted(self.transports)) or "none"
            raise ConnectError(f"no {address.kind} transport is enabled (enabled: {enabled})") from None

    async def connect(self, address: str | PeerAddress, *, timeout: float | None = None, reconnect: bool = False) -> Peer:
        """Dial a peer, run the handshake and wait for its ``init``; the peer then runs under the node.

        A peer already connected is returned as it is (its calls and
        subscriptions go on); ``reconnect=True`` dials anyway and the new
        connection replaces the old one (logged, and a ``peer.replaced`` event).
        While a dial of the same peer is under way, a second ``connect`` waits
        for it and returns its peer (two dials would only replace each other).
        """
        nursery = self._require_running()
        parsed = parse_peer_address(address) if isinstance(address, str) else address
        if parsed.node_id is None:
            raise ConnectError(f"cannot dial {address}: the node id is needed (NODEID@host:port)")
        if parsed.node_id == self.node_id:
            raise ConnectError("refusing to connect to ourselves")
        transport = self._transport_for(parsed)  # a target we may not dial is refused either way
        existing = self.peers.get(parsed.node_id)
        if existing is not None and existing.is_ready and not reconnect:
            log.debug("connect %s: already connected (%s %s)", parsed, existing.transport_kind, existing.address)
            return existing
        pending = self._dialing.get(parsed.node_id)
        if pending is not None and not reconnect:
            # one dial per peer at a time: a second would only replace the first connection
            await pending.wait()
            existing = self.peers.get(parsed.node_id)
            if existing is not None and existing.is_ready:
                return existing
        if existing is None:
            refusal = self.admission.admit_peer(peers=len(self.peers), outbound=True, protected=self.is_protected(parsed.node_id))
            if refusal is not None:
                raise ConnectError(f"{parsed}: {refusal}")
        mine = None
        if parsed.node_id not in self._dialing:
            mine = self._dialing[parsed.node_id] = trio.Event()
        try:
            return await self._dial(parsed, transport, nursery, timeout)
        finally:
            if mine is not None:
                del self._dialing[parsed.node_id]
                mine.set()

    async def _dial(self, parsed: PeerAddress, transport: Transport, nursery: trio.Nursery, timeout: float | None) -> Peer:
        timeout = timeout if timeout is not None else self.config.handshake_timeout + self.config.init_timeout
        stage = f"dialing {parsed.target} over {transport.kind}"
        try:
            with trio.fail_after(timeout):
                try:
                    conn = await transport.dial(parsed.target)
                except TransportError as exc:
                    raise ConnectError(str(exc)) from exc
                stage = "BOLT-8 handshake"
                try:
                    cipher, leftover = await handshake_as_initiator(conn, self.key, parsed.node_id, self.config.handshake_timeout)
                except HandshakeFailed as exc:
                    await conn.aclose()
                    raise ConnectError(f"{parsed}: {exc}") from exc
                stage = "waiting for the peer's init"
                peer = self._make_peer(conn, cipher, parsed.node_id, outbound=True, leftover=leftover)
                peer.dialed = str(parsed)
                nursery.start_soon(self._run_peer, peer)
                await _first_of(peer.ready.wait, peer.closed.wait)
        except trio.TooSlowError:
            error = ConnectError(f"{parsed}: no answer within {timeout:g} s (stuck at: {stage})")
            log.warning("connect to %s failed: %s", parsed, error)
            raise error from None
        except ConnectError as exc:
            log.warning("connect to %s failed: %s", parsed, exc)
            raise
        if not peer.ready.is_set():
            raise ConnectError(f"{parsed}: peer closed the connection: {peer.close_reason}")
        return peer

    async def disconnect(self, node_id: bytes, reason: str = "disconnect requested") -> bool:
        """Close the connection to a peer; returns whether it was connected."""
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        peer.close(reason)
        await peer.closed.wait()
        return True

    async def _keep_connected(self, address: PeerAddress) -> None:
        """Connect to a configured peer at once, and again with back-off whenever it drops (a
        connection it or someone else made meanwhile is waited on instead)."""
        node_id = address.node_id
        assert node_id is not None
        backoff = Backoff(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
        first = True
        while True:
            peer = self.peers.get(node_id)
            if peer is None:
                peer = await redial(lambda: self.connect(address), backoff, wanted=lambda: node_id not in self.peers,
                                    errors=(ConnectError,), what=f"configured peer {address}", logger=log, wait_first=not first)  # fmt: skip
            first = False
            if peer is not None:
                await peer.closed.wait()
                backoff.reset()


def onion_only_transports(config: NodeConfig) -> dict[str, Transport]:
    """Tor alone, when its SOCKS port is configured (else none: a mounted NodeTor adds its own)."""
    if config.tor_socks is None:
        return {}
    from lnpmsg.transports.tor.transport import TorTransport

    return {"tor": TorTransport(config.tor_socks, allow_clearnet=not config.onion_to_onion)}


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as any of the awaitables finishes."""
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def run(wait: Callable[[], Awaitable[object]] = wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)

