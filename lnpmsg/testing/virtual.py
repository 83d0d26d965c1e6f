"""Nodes in virtual time: app and protocol tests with no real waiting.

Whole :class:`~lnpmsg.node.node.Node` objects connect over the in-memory
transport (:mod:`lnpmsg.testing.memory`) and run under trio's
:class:`~trio.testing.MockClock` with ``autojump_threshold=0``: whenever
every task waits, the clock jumps to the next deadline. A keepalive ping
every 60 s, a 30 s timeout or a reconnect back-off then takes no wall time,
and a test never sleeps "long enough" for something to happen: it waits for
the thing itself (:class:`EventLog`, an event, a memory channel).

Under pytest (pytest-trio), ask for the ``autojump_clock`` fixture and the
test runs in virtual time::

    async def test_echo(autojump_clock):
        async with node_pair([EchoApp()], [EchoApp()]) as (a, b):
            ...

Outside pytest, :func:`run_virtual` does the same for ``trio.run``.

Virtual time stands still while any task can run: it jumps only when
every task waits. A loop that polls a condition with ``trio.sleep`` while
other tasks keep busy (a sender streaming messages) never wakes; wait on an
event, a channel or :meth:`EventLog.wait_for` instead.

Everything the node times (handshake and init timeouts, pings, pongs, app
handler timeouts) goes through ``trio.current_time()`` and trio's timeouts,
so it all follows the mock clock. Real transports (TCP, Tor, ...) do not
belong in virtual time: the clock would jump past their real latencies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from lnpmsg.node.events import PeerConnected
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Mountable, Node, NodeConfig
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.testing.nodes import running

__all__ = [
    "EventLog",
    "memory_node",
    "node_pair",
    "record_events",
    "run_virtual",
    "virtual_clock",
]

T = TypeVar("T")
E = TypeVar("E")


def virtual_clock() -> trio.testing.MockClock:
    """A mock clock that jumps to the next deadline whenever every task waits."""
    return trio.testing.MockClock(autojump_threshold=0)


def run_virtual(async_fn: Callable[..., Awaitable[T]], *args: Any, clock: trio.testing.MockClock | None = None) -> T:
    """``trio.run(async_fn, *args)`` in virtual time (a fresh :func:`virtual_clock` unless given one)."""
    return trio.run(async_fn, *args, clock=clock or virtual_clock())


def memory_node(
    network: MemoryNetwork,
    *,
    listen: bool = True,
    apps: Iterable[Mountable] = (),
    key: NodeKey | None = None,
    **config: Any,
) -> Node:
    """A node whose only transport is ``network``'s (``listen=True``: on a fresh name), with ``apps`` mounted.

    ``config`` holds :class:`~lnpmsg.node.node.NodeConfig` settings
    (``ping_interval=...``, ``network="regtest"``...).
    """
    node = Node(
        key or NodeKey.generate(),
        NodeConfig(listen=["mem://"] if listen else [], **config),
        transports={"mem": network.transport()},
    )
    for app in apps:
        node.mount(app)
    return node


@asynccontextmanager
async def node_pair(
    apps_a: Iterable[Mountable] = (),
    apps_b: Iterable[Mountable] = (),
    *,
    network: MemoryNetwork | None = None,
    **config: Any,
) -> AsyncIterator[tuple[Node, Node]]:
    """Two running nodes in memory, ``b`` connected to ``a`` and ready on both sides.

    ``apps_a`` / ``apps_b`` are mounted before the nodes start (each app
    instance on one node only); ``config`` (NodeConfig settings) applies to
    both. The nodes stop when the block ends. Use it under a mock clock
    (:func:`run_virtual`, pytest-trio's ``autojump_clock``) or a real one.
    """
    network = network or MemoryNetwork()
    a = memory_node(network, apps=apps_a, **config)
    b = memory_node(network, listen=False, apps=apps_b, **config)
    async with running(a, b):
        with record_events(a) as a_events:
            await b.connect(a.addresses[0])
            await a_events.wait_for(lambda event: isinstance(event, PeerConnected) and event.node_id == b.node_id)
        yield a, b


class EventLog:
    """A node's events since the log began; :meth:`wait_for` returns a past or future match."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self._changed = trio.Event()

    def _append(self, event: object) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [event for event in self.events if isinstance(event, kind)]

    def _first(self, match: Callable[[object], bool], start: int) -> tuple[int, object | None]:
        for index in range(start, len(self.events)):
            if match(self.events[index]):
                return index, self.events[index]
        return len(self.events), None

    async def wait_for(self, match: type[E] | Callable[[object], bool], *, timeout: float = 600.0) -> Any:
        """The first event (already logged or still to come) that is of type ``match`` or satisfies it.

        Fails with ``trio.TooSlowError`` after ``timeout`` seconds (virtual
        ones under a mock clock: a hang guard, not a speed requirement).
        """
        predicate: Callable[[object], bool] = (lambda event: isinstance(event, match)) if isinstance(match, type) else match
        seen = 0
        with trio.fail_after(timeout):
            while True:
                seen, found = self._first(predicate, seen)
                if found is not None:
                    return found
                self._changed = trio.Event()
                await self._changed.wait()


@contextmanager
def record_events(node: Node) -> Iterator[EventLog]:
    """Log the node's events while the block runs (every event, none dropped)."""
    log = EventLog()
    remove = node.events.add_listener(log._append)
    try:
        yield log
    finally:
        remove()
