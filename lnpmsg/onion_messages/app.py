"""The onion-messages app: relays BOLT 4 onion messages and delivers ours.

Mount :class:`OnionMessagesApp` (``lnpmsg node`` does) and the node
announces ``option_onion_messages`` (bit 39, optional) in ``init`` and in its
``node_announcement``, and owns ``onion_message`` (type 513):

- **Relaying.** A message for another node goes to the peer its
  ``encrypted_data_tlv`` names (by node id, or by the short channel id of one
  of our channels, which the channels app answers), if that peer is
  connected and reads onion messages. Each peer may send us ``rate``
  messages a second (bursts of ``burst``) and we send each peer at most as
  many; a message over the limit, or for a peer whose outbound queue is
  full, is dropped: never buffered. Drops are counted by reason and logged
  as counts once a minute (the first of each reason at debug level).
- **Delivery.** A message for us reaches every handler of its application
  record's type (``@app.on_tlv(64)``, types 64 and up) through a bounded
  queue, and is published as an ``onion_message.received`` event; the last
  :data:`RECENT` stay for ``onion_messages.received``. A message whose
  ``path_id`` we did not make, or with an even record nobody handles, is
  dropped (BOLT 4).
- **Sending.** :meth:`OnionMessagesApp.send` to a node id (a direct peer, or
  the shortest path over nodes announcing the feature: :mod:`.routing`) or
  to a blinded path; with ``reply_path=True`` the message carries a blinded
  path back to us whose ``path_id`` authenticates the reply (stateless: a MAC
  of a random id under a key derived from the node's secret, :func:`reply_path_key`,
  so a reply along a path given out before a restart is still ours, and only
  this node can make one). :meth:`OnionMessagesApp.reply`
  answers a received message along its reply path.

Control calls: ``onion_messages.send``, ``onion_messages.reply``,
``onion_messages.received``, ``onion_messages.stats``; the CLI's
``sendonionmessage``, ``replyonionmessage``, ``listonionmessages``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import coincurve
import trio

from lnpmsg.app import App, AppError
from lnpmsg.node.peer import Peer, PeerClosedError, PeerQueueFull
from lnpmsg.onion_messages.limits import DropCounts, RateLimiter
from lnpmsg.onion_messages.packet import (
    FINAL_TLV_MIN,
    ONION_MESSAGE_TYPE,
    BlindedPath,
    Delivery,
    OnionMessageError,
    OnionMessageIgnored,
    OutgoingOnionMessage,
    blinded_path_to,
    build_onion_message,
    peel_onion_message,
)
from lnpmsg.onion_messages.routing import NoPath, find_path
from lnpmsg.payments.onion.blinding import DEFAULT_PATH_LENGTH, MAX_DUMMY_HOPS, BlindingError, decrypt_recipient_data, dummy_hop_count
from lnpmsg.rpc.params import ParamsError, hex_param, node_id_param
from lnpmsg.wire import Features, Message, message
from lnpmsg.wire.fields import point, rest_bytes, u16_prefixed_bytes

__all__ = ["BURST", "DELIVERY_QUEUE", "RATE", "RECENT", "OnionMessage", "OnionMessageReceived", "OnionMessagesApp", "ReceivedOnionMessage",
           "reply_path_key"]

log = logging.getLogger(__name__)

#: ``option_onion_messages``, optional
FEATURE_BIT = 39
#: onion messages a second each peer may send us, and we send each peer (on average), and the
#: bursts allowed: ample for BOLT 12 invoice requests, far below what would load the node
RATE = 10.0
BURST = 50.0
#: received messages kept for ``onion_messages.received`` (and to reply to by id)
RECENT = 100
#: messages for our handlers waiting to be handled; more are dropped
DELIVERY_QUEUE = 64
#: seconds between the logged summaries of dropped messages
SUMMARY_INTERVAL = 60.0
#: times a message may come back to us inside one path (our own hops of a blinded path: introducing it, and its dummy hops)
_MAX_SELF_HOPS = MAX_DUMMY_HOPS + 1
_PATH_ID_NONCE = 8
#: the domain label of :func:`reply_path_key` (a key of its own, apart from every other use of the node secret)
_REPLY_PATH_KEY_LABEL = b"lnpmsg onion message reply path_id key v1"

TlvHandler = Callable[["ReceivedOnionMessage"], Awaitable[None] | None]


@message(type=ONION_MESSAGE_TYPE)
@dataclass(frozen=True, slots=True)
class OnionMessage(Message):
    """BOLT 4 ``onion_message``: the ``path_key`` and the ``onion_message_packet`` (what we send)."""

    FIELDS = (("path_key", point), ("onion_message_packet", u16_prefixed_bytes))
    path_key: bytes
    onion_message_packet: bytes


@message(type=ONION_MESSAGE_TYPE)
@dataclass(frozen=True, slots=True)
class _IncomingOnionMessage(Message):
    """What the node decodes an ``onion_message`` into: its bytes, parsed by the handler. A bad point
    or a short packet is then a message to ignore (BOLT 4), not a malformed message that would
    fail the connection as the session fails those."""

    FIELDS = (("payload", rest_bytes),)
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReceivedOnionMessage:
    """A message for us, as handlers see it.

    ``records`` are its application records (type -> value; at most one, of
    type 64 and up); ``reply_to`` the id :meth:`OnionMessagesApp.send`
    returned when this answers a message we sent with a reply path (its
    ``path_id`` is ours), else None: a handler that expects a reply checks it.
    ``reply_path`` is where an answer goes (None: no answer is wanted).
    """

    id: int
    records: dict[int, bytes]
    reply_to: str | None
    reply_path: BlindedPath | None
    from_peer: bytes


@dataclass(frozen=True, slots=True)
class OnionMessageReceived:
    """The ``onion_message.received`` event (record values hex in JSON)."""

    id: int
    records: dict[str, bytes]
    reply_to: str | None
    has_reply_path: bool
    topic: str = field(default="onion_message.received")


class OnionMessagesApp(App):
    """Relay, deliver and send onion messages (see the module docs).

    Args:
        rate / burst: messages a second each peer may send us (and we it), and the bursts allowed.
        gossip_app / channels_app: the apps to ask for paths and for our channels' peers.
        random: the source of session keys and path ids (32 bytes at a time).
    """

    def __init__(self, *, rate: float = RATE, burst: float = BURST, gossip_app: str = "gossip", channels_app: str = "channels",
                 random: Callable[[int], bytes] = os.urandom, blinded_path_length: int = DEFAULT_PATH_LENGTH) -> None:  # fmt: skip
        super().__init__("onion_messages", feature_bit=FEATURE_BIT, protocol=True)
        #: the hops our blinded paths (reply paths, :meth:`blinded_path_to_us`) have at least: dummy hops of ours pad them
        self.blinded_path_length = blinded_path_length
        self.node_announcement_features = Features.from_bits([FEATURE_BIT])
        self.gossip_app_name = gossip_app
        self.channels_app_name = channels_app
        self.incoming = RateLimiter(rate, burst)
        self.outgoing = RateLimiter(rate, burst)
        self.drops = DropCounts()
        self.counts = {"relayed": 0, "delivered": 0, "sent": 0}
        self.recent: deque[ReceivedOnionMessage] = deque(maxlen=RECENT)
        self._random = random
        self._key: coincurve.PrivateKey | None = None
        self._path_key: bytes | None = None  # reply_path_key(node secret), once mounted
        self._handlers: dict[int, list[TlvHandler]] = {}
        self._next_id = 0
        self._deliver_in, self._deliver_out = trio.open_memory_channel[tuple[TlvHandler, ReceivedOnionMessage]](DELIVERY_QUEUE)
        for name, fn in (("send", self.control_send), ("reply", self.control_reply), ("received", self.control_received),
                         ("stats", self.control_stats)):  # fmt: skip
            self.add_control_method(name, fn)

    def setup(self) -> None:
        self.message(_IncomingOnionMessage)
        self.add_handler(_IncomingOnionMessage, self._on_message)
        self.on_peer_gone(self._forget)

    # ------------------------------------------------------------ the public API

    def on_tlv(self, record_type: int) -> Callable[[TlvHandler], TlvHandler]:
        """Decorator: ``handler(received)`` gets every message for us with a record of this type
        (64 and up; an even one is only accepted from now on: BOLT 4 ignores unknown even ones)."""
        if record_type < FINAL_TLV_MIN:
            raise AppError(f"onion message handlers take record types {FINAL_TLV_MIN} and up, not {record_type}")

        def register(handler: TlvHandler) -> TlvHandler:
            self._handlers.setdefault(record_type, []).append(handler)
            return handler

        return register

    async def send(self, destination: bytes | BlindedPath, records: dict[int, bytes], *, reply_path: bool = False,
                   via: Sequence[bytes] = ()) -> dict[str, Any]:  # fmt: skip
        """Send ``records`` to a node id or along a blinded path; with ``reply_path``, ask for a reply
        (its :attr:`ReceivedOnionMessage.reply_to` will be the returned ``id``). ``via``: the nodes
        to pass first, our peer first (Core Lightning's ``sendonionmessage`` hops); without it, a
        direct peer or the shortest path over the gossip graph.
        Raises :class:`AppError` when no path is found or the message cannot be built."""
        destination = await self._usable(destination)
        target = destination.first_node_id if isinstance(destination, BlindedPath) else destination
        if via:
            if via[0] not in self._ready_peers():
                raise AppError(f"the first hop {via[0].hex()} is not a connected peer reading onion messages")
            path = [*via, target]
        else:
            try:
                path = await find_path(target, self._ready_peers(), self.node.apps.get(self.gossip_app_name), our_node_id=self.node.node_id)
            except NoPath as exc:
                raise AppError(str(exc)) from None
        message_id = self._random(_PATH_ID_NONCE).hex()
        reply = None
        if reply_path:
            # back the way we came, then us: from the node before the destination, or from the
            # introduction node of the destination's blinded path (the replier can reach that one)
            back = self._padded([*reversed(path[:-1] if isinstance(destination, bytes) else path), self.node.node_id])
            reply = blinded_path_to(self._random(32), back, path_id=self._path_id(bytes.fromhex(message_id)))
        try:
            out = build_onion_message(self._random(32), self._random(32), path[:-1], destination, records, reply_path=reply)
        except OnionMessageError as exc:
            raise AppError(str(exc)) from None
        self._send_out(out)
        self.counts["sent"] += 1
        blinded_hops = len(destination.hops) - 1 if isinstance(destination, BlindedPath) else 0
        return {"id": message_id, "first_hop": out.first_node_id.hex(), "hops": len(path) + blinded_hops, "reply_path": reply_path,
                "size": len(out.packet)}  # fmt: skip

    def blinded_path_to_us(self, via: Sequence[bytes] = (), *, blinding_key: bytes | None = None,
                           nonce: bytes | None = None) -> tuple[BlindedPath, str]:  # fmt: skip
        """A blinded path through ``via`` (the introduction node first; none: we introduce it) to us, whose
        ``path_id`` is ours (as a reply path's): a message along it arrives with
        :attr:`ReceivedOnionMessage.reply_to` set to the returned id, so a handler can tell which
        path it came by (a BOLT 12 offer's, say), and only we can make one. ``blinding_key``: the
        path's session key (default: fresh random), for a caller that derives its blinded id's key;
        ``nonce``: the id's 8 bytes (default: fresh random), for a caller that derives it from what the path is for."""
        if nonce is not None and len(nonce) != _PATH_ID_NONCE:
            raise ValueError(f"a path id nonce is {_PATH_ID_NONCE} bytes")
        path_id = nonce if nonce is not None else self._random(_PATH_ID_NONCE)
        path = blinded_path_to(blinding_key or self._random(32), self._padded([*via, self.node.node_id]), path_id=self._path_id(path_id))
        return path, path_id.hex()

    def _padded(self, node_ids: list[bytes]) -> list[bytes]:
        """A path's nodes (ours last) with dummy hops of ours after them up to :attr:`blinded_path_length`
        (BOLT 4: a sender cannot tell how far the introduction node is from us; we peel them on receipt)."""
        return node_ids + [self.node.node_id] * dummy_hop_count(len(node_ids), self.blinded_path_length)

    async def reply(self, received: ReceivedOnionMessage, records: dict[int, bytes]) -> dict[str, Any]:
        """Answer ``received`` along its reply path."""
        if received.reply_path is None:
            raise AppError(f"message {received.id} came without a reply path")
        return await self.send(received.reply_path, records)

    # ------------------------------------------------------------ control calls

    async def control_send(self, node_id: str, tlvs: dict[str, str] | None = None, reply_path: bool = False,
                           via: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Send an onion message to ``node_id`` with records ``{"TYPE": "HEX"}`` (types 64 and up),
        through the nodes ``via`` (our peer first) or a path found for it."""
        hops = [node_id_param(n) for n in via or ()]
        return await self.send(node_id_param(node_id), _records(tlvs), reply_path=reply_path, via=hops)

    async def control_reply(self, id: int, tlvs: dict[str, str] | None = None) -> dict[str, Any]:  # noqa: A002
        """Reply to received message ``id`` (see ``onion_messages.received``) along its reply path."""
        received = next((r for r in self.recent if r.id == id), None)
        if received is None:
            raise ParamsError(f"no received message {id} (the last {RECENT} are kept)")
        return await self.reply(received, _records(tlvs))

    async def control_received(self) -> dict[str, Any]:
        """The last messages for us, oldest first."""
        return {"messages": [{"id": r.id, "records": {str(k): v.hex() for k, v in r.records.items()}, "reply_to": r.reply_to,
                              "has_reply_path": r.reply_path is not None, "from_peer": r.from_peer.hex()} for r in self.recent]}  # fmt: skip

    async def control_stats(self) -> dict[str, Any]:
        """Messages relayed, delivered and sent, and those dropped by reason (since start)."""
        return {**self.counts, "dropped": dict(self.drops.total)}

    # ------------------------------------------------------------ incoming

    def _on_message(self, peer: Peer, msg: _IncomingOnionMessage) -> None:
        # Cheap checks first: a flood costs a dict lookup per message, not an ECDH.
        if not self.incoming.allow(peer.node_id, trio.current_time()):
            return self._drop("rate limited (from the peer)", peer.node_id)
        data = msg.payload
        length = int.from_bytes(data[33:35], "big")
        if len(data) < 35 + length or data[0] not in (2, 3):
            # bytes after the packet are allowed (BOLT 1: a later version may add fields)
            return self._drop("malformed", peer.node_id, f"an onion_message of {len(data)} bytes: no path key and {length}-byte packet")
        self._peel(peer.node_id, data[:33], data[35 : 35 + length], 0)

    def _peel(self, from_peer: bytes, path_key: bytes, packet: bytes, self_hops: int) -> None:
        try:
            result = peel_onion_message(self._node_key(), path_key, packet)
        except OnionMessageIgnored as exc:
            return self._drop("malformed", from_peer, str(exc))
        if isinstance(result, Delivery):
            return self._deliver(from_peer, result)
        next_node = result.next_node_id
        if next_node is None and result.next_short_channel_id is not None:
            next_node = self._channel_peer(result.next_short_channel_id.to_int())
            if next_node is None:
                return self._drop("unknown short_channel_id", from_peer, str(result.next_short_channel_id))
        assert next_node is not None
        if next_node == self.node.node_id:
            # a hop of a blinded path that is ours again (a dummy hop, or our own introduction)
            if self_hops >= _MAX_SELF_HOPS:
                return self._drop("malformed", from_peer, "too many hops through ourselves")
            return self._peel(from_peer, result.path_key, result.packet, self_hops + 1)
        if self._forward(OutgoingOnionMessage(next_node, result.path_key, result.packet), from_peer):
            self.counts["relayed"] += 1

    def _forward(self, out: OutgoingOnionMessage, from_peer: bytes) -> bool:
        peer = self.node.peers.get(out.first_node_id)
        if peer is None or not peer.is_ready or not self.supports(peer):
            self._drop("next peer not connected", from_peer, out.first_node_id.hex())
            return False
        if not self.outgoing.allow(out.first_node_id, trio.current_time()):
            self._drop("rate limited (to the next peer)", from_peer, out.first_node_id.hex())
            return False
        try:
            peer.send_nowait(OnionMessage(path_key=out.path_key, onion_message_packet=out.packet))
        except (PeerQueueFull, PeerClosedError) as exc:
            self._drop("next peer's queue full", from_peer, str(exc))
            return False
        return True

    def _deliver(self, from_peer: bytes, delivery: Delivery) -> None:
        reply_to = None
        if delivery.path_id is not None:
            reply_to = self._check_path_id(delivery.path_id)
            if reply_to is None:
                return self._drop("path_id not ours", from_peer)
        for kind in delivery.records:
            if not kind & 1 and kind not in self._handlers:
                return self._drop("unknown even record", from_peer, str(kind))
        self._next_id += 1
        received = ReceivedOnionMessage(self._next_id, dict(delivery.records), reply_to, delivery.reply_path, from_peer)
        self.recent.append(received)
        self.counts["delivered"] += 1
        self.node.events.publish(OnionMessageReceived(received.id, {str(k): v for k, v in received.records.items()}, reply_to,
                                                      delivery.reply_path is not None))  # fmt: skip
        for kind in delivery.records:
            for handler in self._handlers.get(kind, ()):
                try:
                    self._deliver_in.send_nowait((handler, received))
                except trio.WouldBlock:
                    self._drop("handlers' queue full", from_peer)

    def _drop(self, reason: str, from_peer: bytes, detail: str = "") -> None:
        if self.drops.add(reason):
            log.debug("onion message from %s dropped: %s%s (more such drops are counted)", from_peer.hex(), reason, f": {detail}" if detail else "")

    def _forget(self, peer: Peer, reason: str) -> None:
        del reason
        self.incoming.forget(peer.node_id)
        self.outgoing.forget(peer.node_id)

    # ------------------------------------------------------------ tasks

    async def serve(self) -> None:
        self.spawn(self._run_handlers)
        while True:
            await trio.sleep(SUMMARY_INTERVAL)
            dropped = self.drops.take()
            if dropped:
                log.info("onion messages dropped in the last %g s: %s", SUMMARY_INTERVAL, ", ".join(f"{n} {r}" for r, n in sorted(dropped.items())))

    async def _run_handlers(self) -> None:
        async for handler, received in self._deliver_out:
            try:
                pending = handler(received)
                if pending is not None:
                    await pending
            except Exception as exc:  # a handler's bug is reported, the app carries on
                self.report_error(f"onion message handler {getattr(handler, '__qualname__', handler)!r} raised {exc!r}", received.from_peer)

    # ------------------------------------------------------------ helpers

    def _node_key(self) -> coincurve.PrivateKey:
        # parsed once: every message peels with it
        if self._key is None:
            self._key = coincurve.PrivateKey(self.node.key.secret)
        return self._key

    def _ready_peers(self) -> set[bytes]:
        return {p.node_id for p in self.peers()}

    def _send_out(self, out: OutgoingOnionMessage) -> None:
        peer = self.node.peers.get(out.first_node_id)
        if peer is None or not peer.is_ready:
            raise AppError(f"peer {out.first_node_id.hex()} is not connected")
        try:
            peer.send_nowait(OnionMessage(path_key=out.path_key, onion_message_packet=out.packet))
        except (PeerQueueFull, PeerClosedError) as exc:
            raise AppError(f"cannot send to {out.first_node_id.hex()}: {exc}") from None

    def _channel_peer(self, short_channel_id: int) -> bytes | None:
        """The peer of our channel ``short_channel_id``, from the channels app (if mounted)."""
        hook = getattr(self.node.apps.get(self.channels_app_name), "htlcs", None)
        info = hook.by_scid(short_channel_id) if hook is not None else None
        return None if info is None else info.peer_id

    async def _usable(self, destination: bytes | BlindedPath) -> bytes | BlindedPath:
        """A blinded path with a node id for introduction, not ourselves: a sciddir resolved through
        gossip; our own hops at its start peeled off (we are the introduction of a reply path)."""
        for _ in range(_MAX_SELF_HOPS + 1):
            if not isinstance(destination, BlindedPath):
                return destination
            if not destination.introduction_is_node_id:
                destination = await self._resolve_sciddir(destination)
            if destination.first_node_id != self.node.node_id:
                return destination
            if len(destination.hops) < 2:
                raise AppError("the blinded path ends at this node")
            try:
                data = decrypt_recipient_data(self._node_key(), destination.first_path_key, destination.hops[0].encrypted_recipient_data)
            except BlindingError as exc:
                raise AppError(f"the blinded path's first hop is ours but unreadable: {exc}") from None
            next_node = data.data.get("next_node_id")
            if next_node is None and data.data.get("short_channel_id") is not None:
                next_node = self._channel_peer(data.data["short_channel_id"].to_int())
            if next_node is None:
                raise AppError("the blinded path's first hop is ours but names no next node")
            destination = BlindedPath(next_node, data.next_path_key, destination.hops[1:])
        raise AppError("the blinded path goes through this node too many times")

    async def _resolve_sciddir(self, path: BlindedPath) -> BlindedPath:
        gossip = self.node.apps.get(self.gossip_app_name)
        scid = int.from_bytes(path.first_node_id[1:], "big")
        channel = await gossip.get_channel(scid) if gossip is not None else None
        if channel is None:
            raise AppError(f"the blinded path starts at channel {scid} (sciddir), which our gossip does not know")
        node = channel["node_id_1" if path.first_node_id[0] == 0 else "node_id_2"]
        return BlindedPath(bytes.fromhex(node), path.first_path_key, path.hops)

    def _path_id(self, nonce: bytes) -> bytes:
        if self._path_key is None:
            self._path_key = reply_path_key(self.node.key.secret)
        return nonce + hmac.digest(self._path_key, b"onion message reply" + nonce, hashlib.sha256)[:16]

    def _check_path_id(self, path_id: bytes) -> str | None:
        """The id of the message a ``path_id`` of ours was made for, or None if we did not make it."""
        nonce = path_id[:_PATH_ID_NONCE]
        if len(path_id) != _PATH_ID_NONCE + 16 or not hmac.compare_digest(self._path_id(nonce), path_id):
            return None
        return nonce.hex()


def reply_path_key(node_secret: bytes) -> bytes:
    """The key our reply paths' ``path_id`` MACs are made under: HMAC-SHA256 keyed by the node's secret
    over :data:`_REPLY_PATH_KEY_LABEL` (HKDF-Extract's shape, with a label no other key of ours uses), so it
    is the same in every run of this node (a reply after a restart is ours) and no one without the secret
    can make a ``path_id`` we take; nor does it reveal the secret, or any other key made from it."""
    return hmac.digest(node_secret, _REPLY_PATH_KEY_LABEL, hashlib.sha256)


def _records(tlvs: dict[str, str] | None) -> dict[int, bytes]:
    """Control-call records ``{"TYPE": "HEX"}`` as ``{type: bytes}`` (types 64 and up)."""
    out: dict[int, bytes] = {}
    for key, value in (tlvs or {}).items():
        try:
            kind = int(key)
        except ValueError:
            raise ParamsError(f"a record type is a number, got {key!r}") from None
        if kind < FINAL_TLV_MIN:
            raise ParamsError(f"record types are {FINAL_TLV_MIN} and up, got {kind}")
        out[kind] = hex_param(value, f"record {kind}")
    if not out:
        raise ParamsError("an onion message carries at least one record (--tlv TYPE=HEX)")
    if len(out) > 1:
        raise ParamsError("BOLT 4 readers ignore a message with more than one record: give one")
    return out
