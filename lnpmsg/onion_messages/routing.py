"""Where an onion message goes first: a path through the gossip graph.

:func:`find_path` answers "which nodes carry a message from us to X": X
itself when it is a peer of ours that reads onion messages (``init`` bit
38/39), else the shortest chain of public channels from such a peer to X
whose every node announces the feature in its ``node_announcement`` (as Core
Lightning's and LDK's senders do: a node that does not announce it would drop
the message). The search walks backwards from X (the graph's
:meth:`incoming` view) breadth first, bounded in depth and in nodes looked
at, and reads node features from the gossip store once per node.

It reaches the gossip app by duck typing (``routing_graph`` and
``announced_features``), so this package imports no gossip code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from lnpmsg.wire import Features

__all__ = ["MAX_PATH_NODES", "MAX_VISITED", "NoPath", "find_path"]

#: nodes on a path we build (BOLT 4 allows more; longer paths only fail more often)
MAX_PATH_NODES = 8
#: nodes whose features one search may read from the gossip store
MAX_VISITED = 2000
ONION_MESSAGES_BIT = 38


class NoPath(Exception):
    """No path to the node over nodes that read onion messages."""


async def find_path(
    destination: bytes,
    ready_peers: Collection[bytes],
    gossip: Any | None,
    *,
    our_node_id: bytes,
    max_nodes: int = MAX_PATH_NODES,
    max_visited: int = MAX_VISITED,
) -> list[bytes]:
    """The nodes a message to ``destination`` passes, our peer first and ``destination`` last.

    ``ready_peers`` are the connected peers announcing onion messages in
    ``init``; ``gossip`` the gossip app (None: direct peers only).
    :class:`NoPath` says why there is none.
    """
    if destination in ready_peers:
        return [destination]
    if gossip is None:
        raise NoPath(f"{destination.hex()} is not a connected peer reading onion messages, and without gossip no path can be found")
    graph = gossip.routing_graph
    supports = _feature_reader(gossip.announced_features)
    if not await supports(destination):
        raise NoPath(f"{destination.hex()} does not announce onion messages (feature 38/39) in the gossip we have")
    # next_hop[n]: the node after n on the way to the destination
    next_hop: dict[bytes, bytes | None] = {destination: None}
    queue: deque[tuple[bytes, int]] = deque([(destination, 1)])
    visited = 0
    while queue:
        node, depth = queue.popleft()
        if depth >= max_nodes:
            continue
        for channel in graph.incoming(node):
            source = channel.source
            if source in next_hop or source == our_node_id:
                continue
            visited += 1
            if visited > max_visited:
                raise NoPath(f"no path to {destination.hex()} within {max_visited} nodes looked at")
            if not await supports(source):
                continue
            next_hop[source] = node
            if source in ready_peers:
                path = [source]
                while (after := next_hop[path[-1]]) is not None:
                    path.append(after)
                return path
            queue.append((source, depth + 1))
    raise NoPath(f"no path to {destination.hex()} over nodes announcing onion messages, within {max_nodes} nodes")


def _feature_reader(announced_features: Callable[[bytes], Awaitable[Features | None]]) -> Callable[[bytes], Awaitable[bool]]:
    """Does a node announce onion messages? One store read per node per search."""
    cache: dict[bytes, bool] = {}

    async def supports(node_id: bytes) -> bool:
        known = cache.get(node_id)
        if known is None:
            features = await announced_features(node_id)
            known = cache[node_id] = features is not None and features.supports(ONION_MESSAGES_BIT)
        return known

    return supports
