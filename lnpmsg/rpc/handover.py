"""Run a method's coroutine in a worker task and say when it first really waits.

A request handed from a peer's reading task to a worker is answered sooner if
the reading task waits (:meth:`lnpmsg.node.peer.Peer.hold_reading`) until the
worker has replied: otherwise the reader's next receive and socket wait
(about 20 µs) run first, on the reply's path. But the reader must not wait
long. :func:`run_until_waiting` runs the coroutine as ``await`` would, and
calls ``release`` as soon as the method may wait for longer than one
scheduler pass: when it waits on anything but a bare checkpoint (``await
trio.sleep(0)``, a lock taken at once, ...), or when it reaches a second
suspension of any kind. The caller releases after the reply (the method
ended, or raised) and when it was cancelled.

The coroutine is driven by hand (send, throw and close passed through as
``await`` does), so this is used only for the request whose reply the reader
waits for; others are awaited directly.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import trio

__all__ = ["run_until_waiting"]


def _checkpoint_trap() -> object:
    """What trio's scheduler receives from a task at a checkpoint (which reschedules it at once)."""
    probe = trio.lowlevel.cancel_shielded_checkpoint()
    try:
        return probe.send(None)
    except BaseException:  # pragma: no cover - a trio that checkpoints otherwise: every wait releases
        return object()
    finally:
        probe.close()


_CHECKPOINT = _checkpoint_trap()


@types.coroutine
def run_until_waiting(coro: Coroutine[Any, Any, Any], release: Callable[[], None]) -> Generator[Any, Any, Any]:
    """``await run_until_waiting(coro, release)`` is ``await coro``, calling ``release()``
    once ``coro`` waits for more than one checkpoint (see the module docs).

    ``release`` is not called if ``coro`` ends (returns or raises) first.
    """
    released = False
    suspensions = 0
    value: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            trap = coro.send(value) if thrown is None else coro.throw(thrown)
        except StopIteration as done:
            return done.value
        value = thrown = None
        if not released:
            suspensions += 1
            if trap is not _CHECKPOINT or suspensions > 1:
                released = True
                release()
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # passed on as await would
            thrown = exc
