"""Lazy re-exports for package ``__init__`` files.

A package whose cores are sans-IO but which also holds trio shells (gossip's
app and SQLite store, the chain's sources, the wallet) still offers every
public name at the package level, without importing the shells when only a
core is wanted: ``import lnpmsg.gossip.graph`` must not load trio or sqlite3.
The shell's names resolve on first access through the module's
``__getattr__`` (PEP 562)::

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"GossipApp": "lnpmsg.gossip.app"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package that imports ``exports``
    (name -> defining module) on first use; a resolved name is cached in
    ``namespace`` (the package's ``globals()``) so later lookups cost nothing.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
