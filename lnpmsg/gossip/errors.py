"""The exception of the gossip layer.

Gossip a peer sends is never an exception: each message gets a
:class:`~lnpmsg.gossip.graph.Decision` (accepted, ignored or rejected, with
the reason). :class:`GossipError` is for what a caller gives us: an
unreadable ``gossip_store`` file, a store that cannot be opened, a bad
argument to a query.
"""

from __future__ import annotations

__all__ = ["GossipError"]


class GossipError(Exception):
    """A gossip store, import or query failed (with the reason)."""
