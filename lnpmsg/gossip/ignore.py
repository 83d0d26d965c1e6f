"""A node without the gossip app still speaks BOLT 7: it drops gossip instead of failing peers.

``channel_announcement``, ``node_announcement`` and ``channel_update`` are
Lightning protocol messages, not optional extensions: a peer may send them
to any node. Above all, BOLT 7 has each side of a *private* channel send its
``channel_update`` straight to the channel's peer (for its invoices' route
hints), and a gossip-less peer is no exception. With no owner those even
types would fail the connection as unknown ones (BOLT 1), and the channel
with them. So ``lnpmsg node --no-gossip`` takes them at the node level and
drops them, undecoded and counted in ``node.ignored_messages``. So does it
with ``announcement_signatures``: a peer that opened a public channel with
us asks us to announce it, which a node without gossip never does (the
channel works, unannounced), and failing the peer would stop the channel.

Called by the composition root after every app is mounted, it takes only
the types nobody owns: an app that handles gossip itself keeps it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lnpmsg.gossip.messages import AnnouncementSignatures, ChannelAnnouncement, ChannelUpdate, NodeAnnouncement

if TYPE_CHECKING:
    from lnpmsg.node.node import Node
    from lnpmsg.node.peer import Peer
    from lnpmsg.wire import Message

__all__ = ["GOSSIP_BROADCASTS", "GOSSIP_IGNORED", "ignore_gossip"]

log = logging.getLogger(__name__)

#: the gossip any peer may send us, asked for or not (queries need gossip_queries, which we do not offer)
GOSSIP_BROADCASTS = (ChannelAnnouncement.TYPE, NodeAnnouncement.TYPE, ChannelUpdate.TYPE)
#: what a node without gossip drops: the broadcasts, and a peer's request to announce a channel
GOSSIP_IGNORED = (*GOSSIP_BROADCASTS, AnnouncementSignatures.TYPE)


def ignore_gossip(node: Node) -> list[int]:
    """Make ``node`` drop the gossip broadcasts no app owns; returns the types it took."""

    def drop(peer: Peer, message: Message) -> None:
        node.ignored_messages += 1
        log.debug("gossip message type %d from %s dropped: this node runs without the gossip app", message.TYPE, peer.node_id.hex())

    taken = [t for t in GOSSIP_IGNORED if node.apphost.owner_of(t) is None and t not in node.apphost.handlers]
    for type_number in taken:
        # a raw declaration, not the gossip classes: nothing here reads the bytes
        node.add_handler(type_number, drop)
    return taken
