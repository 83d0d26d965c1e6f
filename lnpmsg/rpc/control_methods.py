"""The control API's built-in methods: ``getinfo``, ``connect``, ``disconnect``, ``listpeers``,
``sendcustommsg``, ``ping``, ``signmessage``, ``checkmessage``, ``stop``, ``help`` and ``eventsync``
(what each returns is in the table of :mod:`lnpmsg.rpc.control`).

A mixin of :class:`lnpmsg.rpc.control.ControlServer`, which holds the state; kept apart
because the methods are a concern of their own, beside the server's sockets and lifecycle
and how a request is served (:mod:`lnpmsg.rpc.control_requests`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg import __version__
from lnpmsg.node.peer import Peer
from lnpmsg.node.signed_message import recover_signer, sign_message
from lnpmsg.rpc.params import ParamsError, describe_params, hex_param, node_id_param
from lnpmsg.wire import UnknownMessage, WireError
from lnpmsg.wire.message import CUSTOM_TYPE_MIN, MAX_MESSAGE_TYPE

if TYPE_CHECKING:
    from lnpmsg.node.node import Node
    from lnpmsg.pubsub.bridge import EventPublisher
    from lnpmsg.rpc.control_requests import MethodEntry

__all__ = ["CUSTOM_TYPE_MAX", "MAX_SIGNED_MESSAGE", "STOP_GRACE", "ControlBuiltins", "PeerNotConnectedError", "PingTimeout", "peer_info"]

#: a ``stop`` reply gets this long to leave before the node shuts down
STOP_GRACE = 0.2
#: custom message types sendcustommsg accepts (BOLT 1's custom range)
CUSTOM_TYPE_MAX = MAX_MESSAGE_TYPE
#: the longest message signmessage signs, in characters (Core Lightning's limit)
MAX_SIGNED_MESSAGE = 65535


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



class ControlBuiltins:
    """The built-in methods of :class:`~lnpmsg.rpc.control.ControlServer` (state lives there)."""

    if TYPE_CHECKING:
        _nursery: trio.Nursery | None
        curve: bool
        endpoint: str | None
        events_endpoint: str | None
        name: str
        publisher: EventPublisher | None

        @property
        def node(self) -> Node: ...

        def _method(self, name: str) -> MethodEntry | None: ...

        def _method_names(self) -> list[str]: ...

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
        return {"disconnected": await self.node.disconnect(node_id_param(node_id), "disconnect requested over the control API")}

    async def listpeers(self, node_id: str | None = None) -> dict[str, Any]:
        """Connected peers: features, transport, traffic, ping round trip, and ``alias``: the alias of
        the peer's ``node_announcement`` in the gossip (None: no gossip app, or none of the peer known)."""
        now = trio.current_time()
        wanted = None if node_id is None else node_id_param(node_id)
        peers = [p for p in self.node.peers.values() if p.is_ready and (wanted is None or p.node_id == wanted)]
        return {"peers": [peer_info(self.node, p, now) | {"alias": await self._announced_alias(p.node_id)} for p in peers]}

    async def _announced_alias(self, node_id: bytes) -> str | None:
        """The alias the gossip app knows the node by (None without a gossip app, or when it cannot tell)."""
        announced_alias = getattr(self.node.apps.get("gossip"), "announced_alias", None)
        if announced_alias is None:
            return None
        try:
            return await announced_alias(node_id) or None  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - the gossip app stopping or its store failing: listpeers answers without
            return None

    async def sendcustommsg(self, node_id: str, type: int, payload: str = "") -> dict[str, Any]:
        """Send a custom message (type 32768-65535, payload in hex) to a connected peer."""
        if not CUSTOM_TYPE_MIN <= type <= CUSTOM_TYPE_MAX:
            raise ParamsError(f"type must be in the custom range {CUSTOM_TYPE_MIN}..{CUSTOM_TYPE_MAX}, got {type}")
        data = hex_param(payload, "payload")
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

    async def signmessage(self, message: str) -> dict[str, Any]:
        """Sign a message with the node key (lnd/Core Lightning compatible): signature, recid, zbase."""
        if len(message) > MAX_SIGNED_MESSAGE:
            raise ParamsError(f"message is at most {MAX_SIGNED_MESSAGE} characters, got {len(message)}")
        return sign_message(self.node.key.secret, message).to_dict()

    async def checkmessage(self, message: str, zbase: str, pubkey: str | None = None) -> dict[str, Any]:
        """Check a zbase signature of a message: by pubkey if given, else by a node we know (us, or in the gossip graph)."""
        expected = None if pubkey is None else hex_param(pubkey, "pubkey", 33)
        try:
            signer = recover_signer(message, zbase)
        except ValueError as exc:
            raise ParamsError(f"zbase is not a signature: {exc}") from None
        if expected is not None:
            return {"pubkey": expected.hex(), "verified": signer == expected}
        return {"pubkey": signer.hex() if signer else None, "verified": signer is not None and self._known_node(signer)}

    def _known_node(self, node_id: bytes) -> bool:
        """Is ``node_id`` this node, or a node in the gossip app's graph (if one is mounted)?"""
        if node_id == self.node.node_id:
            return True
        graph = getattr(self.node.apps.get("gossip"), "graph", None)
        return node_id in getattr(graph, "nodes", ())

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


    def _peer(self, node_id: str) -> Peer:
        peer = self.node.peers.get(node_id_param(node_id))
        if peer is None or not peer.is_ready:
            raise PeerNotConnectedError(f"peer {node_id} is not connected")
        return peer



class PeerNotConnectedError(Exception):
    """The control call names a peer that is not connected."""


class PingTimeout(Exception):
    """The peer did not answer a ping in time."""
