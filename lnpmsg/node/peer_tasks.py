"""A peer's task group: the tasks of a peer besides the one that runs it (a writer, a
timer's handler, the reading handed on), started in the node's nursery under cancel
scopes of the peer's, and joined as a nursery of the peer's own would join them.

A mixin of :class:`lnpmsg.node.peer.Peer`, which holds the state (a node holds
thousands of peers: no object of its own per peer). Kept apart because it is the
peer's structured concurrency, not its protocol: every accepted connection runs a
peer, and a nursery per peer costs as much as the rest of a peer's setup (most
peers of an accepting node never need a second task), so :meth:`Peer.run
<lnpmsg.node.peer.Peer.run>` gives the same guarantees by hand:

- every task of the peer's runs under a cancel scope the peer holds, so
  :meth:`PeerTasks._cancel_tasks` stops them all, with the reading in ``run``;
- ``run`` returns only after they have all ended (:meth:`PeerTasks._join_tasks`);
- the first exception one of them raised stops the others and ``run`` raises it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

__all__ = ["PeerTasks"]


class PeerTasks:
    """The task group half of :class:`~lnpmsg.node.peer.Peer` (state lives there)."""

    __slots__ = ()

    if TYPE_CHECKING:
        #: where the peer's tasks start (the node's nursery; None: ``run`` opens one)
        _tasks: trio.Nursery | None
        #: the nursery tasks start in while the peer runs; None before and after
        _nursery: trio.Nursery | None
        #: ``run``'s cancel scope (the reading), the scope of each other task under way
        _scope: trio.CancelScope | None
        _children: set[trio.CancelScope] | None
        _tasks_cancelled: bool
        #: ``run``'s own body is over: the last task to end closes the group
        _body_done: bool
        _children_done: trio.Event | None
        #: the first exception a task of the peer's raised: ``run`` raises it
        _child_error: Exception | None

    def _open_tasks(self, nursery: trio.Nursery, scope: trio.CancelScope) -> None:
        """``run`` entered ``scope``: from now on tasks may start in ``nursery``."""
        self._scope = scope
        self._nursery = nursery
        if self._tasks_cancelled:
            scope.cancel()

    async def _join_tasks(self) -> None:
        """``run``'s body is over: wait for the other tasks, as a nursery's end does, then
        close the group; raise what a task raised."""
        if self._children:
            self._body_done = True
            self._children_done = trio.Event()
            await self._children_done.wait()
        self._end_tasks()

    def _end_tasks(self) -> None:
        """``run``'s body is over and no other task of the peer's is under way: close the
        group; raise what a task raised."""
        self._body_done = True
        self._nursery = None  # closed: nothing may start any more
        if self._child_error is not None:
            raise self._child_error

    def _close_tasks(self) -> None:
        """``run`` is leaving, whichever way: nothing may start, and if ``run`` itself was
        cancelled, its tasks end with it."""
        self._nursery = None
        if self._children:
            self._cancel_tasks()

    def _start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool:
        """Start a task of the peer's; False when no task may start any more (its tasks
        ended, ``run`` not resumed yet to close it)."""
        nursery = self._nursery
        if nursery is None:
            return False
        scope = trio.CancelScope()
        if self._tasks_cancelled:
            scope.cancel()
        children = self._children
        if children is None:
            children = self._children = set()
        children.add(scope)
        try:
            nursery.start_soon(self._child_task, scope, fn, args, name=fn)  # named for what it runs
        except RuntimeError:  # "Nursery is closed to new arrivals"
            self._child_ended(scope)
            return False
        return True

    async def _child_task(self, scope: trio.CancelScope, fn: Callable[..., Awaitable[None]], args: tuple[object, ...]) -> None:
        try:
            with scope:
                await fn(*args)
        except Exception as exc:
            # As in a nursery of the peer's own: the peer stops, and run raises it.
            if self._child_error is None:
                self._child_error = exc
            self._cancel_tasks()
        finally:
            self._child_ended(scope)

    def _child_ended(self, scope: trio.CancelScope) -> None:
        children = self._children
        assert children is not None
        children.discard(scope)
        if not children:
            self._children = None  # an idle peer keeps no empty set
            if self._body_done:
                self._nursery = None  # the last task ended: none may start any more
                if self._children_done is not None:
                    self._children_done.set()

    def _cancel_tasks(self) -> None:
        """Cancel every task of the peer's: the reading in ``run``, and the others."""
        self._tasks_cancelled = True
        if self._scope is not None:
            self._scope.cancel()
        if self._children:
            for scope in self._children:
                scope.cancel()
