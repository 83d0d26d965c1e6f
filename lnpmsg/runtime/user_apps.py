"""Loading user apps: ``lnpmsg node --app MODULE:ATTR`` (or ``--app path/to/file.py:ATTR``).

``ATTR`` names an app object (an :class:`~lnpmsg.app.App`, or anything
:meth:`Node.mount <lnpmsg.node.node.Node.mount>` takes) or a callable
returning one. The callable is called with no arguments, or with the
node's :class:`~lnpmsg.runtime.settings.NodeSettings` when it takes one
(an app that keeps state in the data dir reads ``settings.data_dir``).

``MODULE`` is imported like ``python -m`` would: the current directory
comes first on the import path, so ``--app examples.greeter_app:app`` works
from the root of a checkout. A path ending in ``.py`` is loaded from that
file instead (its directory goes on the import path too, for its own
imports). Every failure is a :class:`~lnpmsg.runtime.settings.SettingsError`
that names the spec and says what is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from lnpmsg.runtime.settings import AppSpec, NodeSettings, SettingsError

__all__ = ["load_app", "resolve_app"]


def load_app(spec: str, settings: NodeSettings | None = None) -> Any:
    """The app ``spec`` (``MODULE:ATTR`` or ``FILE.py:ATTR``) names, built; raises :class:`SettingsError`."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise SettingsError(f"--app {spec!r}: expected MODULE:ATTR (e.g. examples.greeter_app:app) or path/to/file.py:ATTR")
    module = _load_file(spec, Path(target)) if target.endswith(".py") else _import_module(spec, target)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            apps = [name for name, value in vars(module).items() if _is_app(value)]
            hint = f" (apps it defines: {', '.join(apps)})" if apps else ""
            raise SettingsError(f"--app {spec!r}: {target} has no attribute {attr!r}{hint}") from None
    return resolve_app(obj, settings, where=f"--app {spec!r}")


def resolve_app(obj: AppSpec, settings: NodeSettings | None = None, *, where: str | None = None) -> Any:
    """An app from an :data:`~lnpmsg.runtime.settings.AppSpec`: the object itself, a factory's result, or what a string names."""
    if isinstance(obj, str):
        return load_app(obj, settings)
    where = where or repr(obj)
    if _is_app(obj):
        return obj
    if not callable(obj):
        raise SettingsError(f"{where}: {type(obj).__name__} {obj!r} is not an app (an App, or a callable returning one)")
    if isinstance(obj, type) and not (callable(getattr(obj, "attach", None)) and callable(getattr(obj, "run", None))):
        raise SettingsError(f"{where}: {obj.__name__} is a class but not an app class (an App, or a callable returning one)")
    args = (settings,) if _takes_one_argument(obj) else ()
    try:
        made = obj(*args)
    except Exception as exc:
        raise SettingsError(f"{where}: calling {_name(obj)} raised {_describe(exc)}") from exc
    if not _is_app(made):
        raise SettingsError(f"{where}: {_name(obj)}() returned {type(made).__name__}, not an app (an App)")
    return made


def _is_app(obj: object) -> bool:
    """Can ``node.mount`` take it: a name, ``attach`` and ``run`` (see :class:`~lnpmsg.node.node.Mountable`)."""
    return (
        not isinstance(obj, type)
        and isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "attach", None))
        and callable(getattr(obj, "run", None))
    )


def _takes_one_argument(fn: Any) -> bool:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [
        p for p in parameters
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def _import_module(spec: str, name: str) -> ModuleType:
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise SettingsError(
                f"--app {spec!r}: no module named {exc.name!r} (looked in the current directory {cwd} and the "
                "Python path; give a file as path/to/file.py:ATTR, or run from the directory above the module)"
            ) from None
        raise SettingsError(f"--app {spec!r}: importing {name} failed: {_describe(exc)}") from exc
    except Exception as exc:
        raise SettingsError(f"--app {spec!r}: importing {name} raised {_describe(exc)}") from exc


def _load_file(spec: str, path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise SettingsError(f"--app {spec!r}: no such file: {path}")
    name = f"lnpmsg_app_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise SettingsError(f"--app {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    # Registered before running it: dataclasses and pickling look their module up by name.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise SettingsError(f"--app {spec!r}: running {path} raised {_describe(exc)}") from exc
    return module


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line being the innermost frame of the failure."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" (at {exc.filename}:{exc.lineno})"
        return f"SyntaxError: {exc.msg}{where}"
    return f"{type(exc).__name__}: {exc}{where}"


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
