"""How an app's handler runs under the app's execution policy (see :mod:`lnpmsg.app`).

A guarded handler is logged and reported when it raises, bounded by the
app's ``handler_timeout``, and, when shielded, never cut in the middle
(persist, then send): the peer and the app carry on either way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.node.peer import Peer

if TYPE_CHECKING:
    from lnpmsg.app import App

__all__ = ["DONE", "MessageHandler", "guard_handler", "handler_name"]

log = logging.getLogger("lnpmsg.app")

MessageHandler = Callable[[Peer, Any], Awaitable[None] | None]


def guard_handler(app: App, type_number: int, handler: MessageHandler, shield: bool) -> MessageHandler:
    """``handler`` for ``type_number`` wrapped in ``app``'s supervision and timeout."""
    timeout = app.handler_timeout
    what = f"handler {handler_name(handler)} for type {type_number}"

    async def guarded(peer: Peer, message: Any) -> None:
        if shield:
            # Never cut in the middle: neither the timeout nor a cancelled peer stops it.
            started = trio.current_time()
            with trio.CancelScope(shield=True):
                await _call(handler, peer, message, app, what)
            took = trio.current_time() - started
            if timeout is not None and took > timeout:
                app.report_error(f"{what} ran {took:.3g} s, over its {timeout:g} s (shielded: not cancelled)", peer.node_id)
            return
        if timeout is None:
            await _call(handler, peer, message, app, what)
            return
        with trio.move_on_after(timeout) as scope:
            await _call(handler, peer, message, app, what)
        if scope.cancelled_caught:
            app.report_error(f"{what} ran longer than {timeout:g} s and was cancelled", peer.node_id)

    guarded.__qualname__ = f"{app.name}:{handler_name(handler)}"
    return guarded


async def _call(handler: MessageHandler, peer: Peer, message: Any, app: App, what: str) -> None:
    try:
        pending = handler(peer, message)
        if pending is not None:
            await pending
    except Exception as exc:
        log.debug("handler failure", exc_info=True)
        app.report_error(f"{what} raised {exc!r}", peer.node_id)


class _Done:
    """An awaitable that is already finished.

    Handlers that never block (dict lookups, ``send_nowait``) can be plain
    functions returning :data:`DONE`: the node awaits what a handler returns,
    and this skips building a coroutine per message on hot paths.
    """

    __slots__ = ()

    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


DONE = _Done()


def handler_name(fn: object) -> str:
    """A handler's name for logs: its qualified name, else its repr."""
    return getattr(fn, "__qualname__", None) or repr(fn)
