"""Run a method's coroutine and say when it first really waits.

A request read alone is served in the peer's reading task
(:meth:`lnpmsg.node.peer.Peer.hold_reading`): a method that ends within its
first checkpoint (``await trio.sleep(0)``, a lock taken at once) is then
answered without a hop to another task (a scheduler pass, a task step, and
the reader's next receive and socket wait, all on the reply's path). But the
peer's reading must not wait long for a method: :func:`run_until_waiting`
runs the coroutine as ``await`` would, and calls ``release`` (which hands
the reading to another task) as soon as the method may wait for longer than
one scheduler pass: when it waits on anything but a bare checkpoint, or
when it reaches a second suspension of any kind.

The coroutine is driven by hand (send, throw and close passed through as
``await`` does), and stays in the task that started it, so trio's cancel
scopes and wake-ups inside it are that task's, as they must be.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

import trio

__all__ = ["run_until_waiting"]

T = TypeVar("T")


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
def run_until_waiting(coro: Coroutine[Any, Any, Any], release: Callable[[T], None], arg: T) -> Generator[Any, Any, Any]:
    """``await run_until_waiting(coro, release, arg)`` is ``await coro``, calling ``release(arg)``
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
                release(arg)
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # passed on as await would
            thrown = exc
