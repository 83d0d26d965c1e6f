"""Running real nodes in tests: build one, run several, dial one.

These are the few lines every test of an app repeats; they use real
loopback TCP, nothing is faked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig

__all__ = ["address_of", "make_node", "running", "running_tasks"]


def make_node(listen: bool | list[str] = True, **config: Any) -> Node:
    """A node with a fresh key; ``listen=True`` listens on a free loopback TCP port."""
    if listen is True:
        listen = ["127.0.0.1:0"]
    elif listen is False:
        listen = []
    return Node(NodeKey.generate(), NodeConfig(listen=listen, **config))


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[trio.Nursery]:
    """Run the nodes for the duration of the block (stopped on the way out)."""
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        try:
            yield nursery
        finally:
            for node in nodes:
                node.stop()


def address_of(node: Node) -> str:
    """The address to dial a running node's first listener at (``NODEID@host:port`` for TCP)."""
    return node.addresses[0]


def running_tasks(qualname: str) -> int:
    """How many tasks of this trio run execute the coroutine ``qualname`` (e.g. ``"PeerWriting._write_loop"``),
    directly or as a peer's task (named for the function it runs)."""
    count = 0
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        if getattr(task.coro, "__qualname__", "") == qualname or task.name.endswith("." + qualname):
            count += 1
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return count
