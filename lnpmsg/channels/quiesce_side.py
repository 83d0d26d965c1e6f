"""The channel app's side of channel quiescence (``option_quiesce``, bits 34/35; :mod:`.quiesce`).

The app offers the optional bit 35. ``channels.dev_quiesce`` [channel] asks a
channel to quiesce (the core sends ``stfu`` once our updates are settled);
the core's :class:`~.quiesce.Quiescent` event is published as
``channel.quiescent``. The first of them on a connection starts a timer (one
per channel and connection: a quiescence we asked for is timed from the ask):
a channel still quiescing (or quiescent) on the same connection after
:data:`~.quiesce.QUIESCENCE_TIMEOUT` seconds has its peer disconnected.

BOLT 2 says "MUST disconnect after 60 seconds of quiescence if the HTLCs are
pending", and defines no message that ends quiescence: only the protocol
run under it ends it (a splice, :mod:`.splice_side`, well before), or a
disconnection. A quiescence that lasts that long (``dev_quiesce`` runs no
protocol under it) is ended by disconnection whatever the HTLCs (the rule's
case, and more: without HTLCs nothing forbids it, and a channel left
quiescent could never carry an update again on this connection); so is a
request the peer leaves unanswered.
A mixin of :class:`~lnpmsg.channels.app.ChannelsApp`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from lnpmsg.wallet.app import ChainAppError

from .errors import LocalMisuse, StoreWriteFailed
from .inputs import Event
from .manager import ManagedChannel
from .quiesce import QUIESCENCE_TIMEOUT, Quiesce, Quiescent, is_quiescent

__all__ = ["QUIESCE_BITS", "QuiesceSide"]

log = logging.getLogger("lnpmsg.channels.app")

#: option_quiesce: we offer the optional bit
QUIESCE_BITS = (34, 35)


class QuiesceSide:
    """``dev_quiesce`` and the quiescence timer; the app supplies ``node``, ``_channel``,
    ``_manager``, ``_publish``, ``spawn``, ``disconnect_peer`` and ``_quiescence_timed``
    (channel key -> the Peer whose connection its running timer watches)."""

    node: Any
    _channel: Any
    _manager: Any
    _publish: Any
    spawn: Any
    disconnect_peer: Any
    _quiescence_timed: dict[str, Any]
    #: seconds a channel may stay quiescent before its peer is disconnected (tests shorten it)
    quiescence_timeout: float = QUIESCENCE_TIMEOUT

    async def dev_quiesce(self, channel: str) -> dict[str, Any]:
        """DEVELOPER: quiesce CHANNEL (BOLT 2 stfu): no new updates; stfu goes once ours are settled.
        Returns whether our stfu has left and whether the channel is quiescent already."""
        target = self._channel(channel)
        peer = self.node.peers.get(target.peer_id)
        remote = peer.session.remote_features if peer is not None else None
        supports = remote is not None and any(remote.has(bit) for bit in QUIESCE_BITS)
        try:
            out = await self._manager().submit(target, Quiesce(peer_supports=supports))
        except (LocalMisuse, StoreWriteFailed) as exc:
            raise ChainAppError(f"cannot quiesce: {exc}", {"error": type(exc).__name__}) from exc
        sent = any(type(m).__name__ == "Stfu" for m in out.messages)
        self._time_quiescence(target, peer)
        return {"channel_id": target.channel_id.hex(), "stfu_sent": sent, "quiescent": is_quiescent(target.core.state)}

    def _quiesce_event(self, channel: ManagedChannel, event: Event | Quiescent) -> bool:
        """The quiescence events; True when handled."""
        if not isinstance(event, Quiescent):
            return False
        log.info("channels: %s is quiescent (%s initiator)", channel.channel_id.hex(), "we are" if event.initiator else "the peer is")
        self._publish("channel.quiescent", channel, reason="initiator: local" if event.initiator else "initiator: remote")
        self._time_quiescence(channel, self.node.peers.get(channel.peer_id))
        return True

    def _time_quiescence(self, channel: ManagedChannel, peer: Any) -> None:
        """Start the quiescence timer of ``channel`` on ``peer``'s connection, unless one runs already."""
        if peer is None or self._quiescence_timed.get(channel.key) is peer:
            return  # (no connection: nothing to end)
        self._quiescence_timed[channel.key] = peer
        self.spawn(self._end_quiescence_later, channel, peer)

    async def _end_quiescence_later(self, channel: ManagedChannel, peer: Any) -> None:
        """Disconnect the peer if the channel still quiesces on the same connection (the same Peer)."""
        try:
            await trio.sleep(self.quiescence_timeout)
        finally:
            if self._quiescence_timed.get(channel.key) is peer:
                del self._quiescence_timed[channel.key]
        if peer is not None and self.node.peers.get(channel.peer_id) is peer and channel.core.state.quiesce is not None:
            log.warning("channels: %s still quiescing after %.0f s: disconnecting %s", channel.channel_id.hex(),
                        self.quiescence_timeout, channel.peer_id.hex())  # fmt: skip
            self.disconnect_peer(channel.peer_id, f"channel {channel.channel_id.hex()[:16]}: quiescent too long")
