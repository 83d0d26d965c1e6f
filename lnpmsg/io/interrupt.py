"""Ctrl-C as a quiet exit for programs built on trio.

Under trio, Ctrl-C raises ``KeyboardInterrupt`` inside the task that was
running, and the nurseries it unwinds through wrap it in exception groups:
a plain ``except KeyboardInterrupt`` around ``trio.run`` misses it and the
user gets a long traceback. :func:`run_interruptible` catches it in any
wrapping::

    sys.exit(run_interruptible(main, args))     # 130 after Ctrl-C, else main's result
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

__all__ = ["EXIT_INTERRUPTED", "is_interrupt", "run_interruptible"]

#: the exit status after Ctrl-C: 128 + SIGINT, as shells report it
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def is_interrupt(exc: BaseException) -> bool:
    """Is ``exc`` a Ctrl-C: a ``KeyboardInterrupt``, alone or in groups (with the cancellations it caused)?"""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if not isinstance(exc, BaseExceptionGroup):
        return False
    interrupts, rest = exc.split(KeyboardInterrupt)
    if interrupts is None:
        return False
    return rest is None or rest.split(trio.Cancelled)[1] is None


def run_interruptible(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T | int:
    """``trio.run(async_fn, *args)``; after Ctrl-C returns :data:`EXIT_INTERRUPTED` (130) instead of a traceback."""
    try:
        return trio.run(async_fn, *args)
    except BaseException as exc:
        if is_interrupt(exc):
            return EXIT_INTERRUPTED
        raise
