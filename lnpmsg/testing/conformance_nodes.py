"""Nodes over a :class:`~lnpmsg.testing.media.Medium` for the conformance checks.

Making and connecting nodes, dialing one by hand (a raw BOLT-8 peer),
waiting for a condition under a deadline and recording a node's events:
what :mod:`.conformance_exchange` and :mod:`.conformance_faults` build on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import Peer, handshake_as_initiator
from lnpmsg.testing.media import Medium
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.testing.traffic import ConformanceFailure, _require
from lnpmsg.transports.address import PeerAddress, parse_peer_address
from lnpmsg.transports.base import Transport

__all__ = ["make_node", "recording", "wait_until"]


def make_node(medium: Medium, *, listen: bool | list[str] = True, key: NodeKey | None = None, **config: Any) -> Node:
    """A node with the medium's transports and the given NodeConfig settings.

    ``listen``: True for one fresh address of the medium, False for none, or the addresses.
    """
    settings = medium.node_config() | config
    if isinstance(listen, list):
        settings["listen"] = listen
    else:
        settings["listen"] = [medium.listen_address()] if listen else []
    return Node(key or NodeKey.generate(), NodeConfig(**settings), transports=medium.transports())


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise ConformanceFailure(f"gave up after {timeout:g} s waiting for {what}")


async def _address(medium: Medium, node: Node) -> str:
    return await medium.reachable(node.listen_addresses[0], node.node_id)


async def _connect(medium: Medium, dialer: Node, listener: Node) -> tuple[Peer, Peer]:
    """Connect ``dialer`` to ``listener``; returns (dialer's peer, listener's peer), both ready."""
    outbound = await dialer.connect(await _address(medium, listener))
    _require(outbound.is_ready, "connect returned a peer that is not ready")
    await wait_until(lambda: dialer.node_id in listener.peers, "the listener to accept the dialer")
    return outbound, listener.peers[dialer.node_id]


async def _wait_unpaired(a: Node, b: Node) -> None:
    await wait_until(lambda: b.node_id not in a.peers and a.node_id not in b.peers, "both sides to drop the peer")


def _stat_above(node: Node, key: str, value: int) -> Callable[[], bool]:
    return lambda: node.stats[key] > value


def _forgot(node: Node, other: Node) -> Callable[[], bool]:
    return lambda: other.node_id not in node.peers


def _transport_for(medium: Medium, address: PeerAddress) -> Transport:
    return medium.transports()[address.kind]


async def _raw_dial(medium: Medium, node: Node, key: NodeKey | None = None) -> RawPeer:
    """A hand-driven BOLT-8 initiator to ``node`` over the medium, handshake done, nothing else sent."""
    key = key or NodeKey.generate()
    address = parse_peer_address(await _address(medium, node))
    conn = await _transport_for(medium, address).dial(address.target)
    try:
        cipher, leftover = await handshake_as_initiator(conn, key, node.node_id)
    except BaseException:
        await conn.aclose()
        raise
    return RawPeer(conn, cipher, key, leftover)


def _events_of(events: list[object], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@asynccontextmanager
async def recording(node: Node) -> AsyncIterator[list[object]]:
    """Collect the node's events into a list while the block runs."""
    events: list[object] = []
    remove = node.events.add_listener(events.append)
    try:
        yield events
    finally:
        remove()
