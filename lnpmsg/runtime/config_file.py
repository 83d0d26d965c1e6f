"""``lnpmsg node``'s config file: ``DATA_DIR/lnpmsg.toml``, or the file ``--config`` names.

The keys are the command's long options without ``--``, taken from its
argparse definition, so every option has a key and a new option gets one
for free::

    # DATA_DIR/lnpmsg.toml
    listen = ["127.0.0.1:9735", "udp://127.0.0.1:9735"]   # repeatable option: a list
    connect = "02ab...@10.0.0.5:9735"                     # (one value is a list of one)
    no-gossip = true                                      # a switch: true or false
    log-level = "debug"
    app = ["examples.greeter_app:app"]

Values are TOML strings, numbers (for numeric options) and booleans (for
switches), checked like the flags are. Options given on the command line
win over the file (a repeatable flag replaces the file's whole list; a flag
replaces the file's choice in a group of exclusive options). An unknown key,
a value of the wrong kind or a file that is not TOML is a
:class:`ConfigError` naming the file and the key. ``~`` in a path is
expanded; relative paths are relative to the directory the command runs in,
as on the command line. ``data-dir`` may only appear in a file given with
``--config`` (the default file is found through the data dir).
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lnpmsg.runtime.settings import SettingsError

__all__ = ["CONFIG_FILE_NAME", "ConfigError", "apply_config", "config_keys", "read_config"]

#: the config file looked for in the data dir
CONFIG_FILE_NAME = "lnpmsg.toml"
#: options that make no sense in a config file
_NOT_KEYS = frozenset({"help", "version", "config"})


class ConfigError(SettingsError):
    """The config file cannot be read, is not TOML, or has a bad key or value."""


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The config keys of a command: its long option names without ``--``, with their actions."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option[2:] not in _NOT_KEYS:
                keys[option[2:]] = action
                break
    return keys


def read_config(path: Path, parser: argparse.ArgumentParser, *, may_set_data_dir: bool) -> dict[str, Any]:
    """The file's settings as ``{dest: value}``, converted and checked like the flags; raises :class:`ConfigError`."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    keys = config_keys(parser)
    values: dict[str, Any] = {}
    for key, value in document.items():
        action = keys.get(key)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(key, keys)}")
        if key == "data-dir" and not may_set_data_dir:
            raise ConfigError(f"{path}: 'data-dir' cannot be set in the data dir's own config file (use --data-dir, or --config FILE)")
        values[action.dest] = _convert(path, key, action, value)
    _check_exclusive(path, parser, set(values))
    return values


def apply_config(
    parser: argparse.ArgumentParser,
    command: argparse.ArgumentParser,
    argv: Sequence[str],
    args: argparse.Namespace,
    values: dict[str, Any],
) -> None:
    """Set the config file's ``values`` on ``args`` where the command line (``argv``) did not give the option.

    ``parser`` parsed ``argv`` into ``args``; ``command`` is the subcommand's
    parser whose options the file sets.
    """
    given = _given_on_command_line(parser, command, argv)
    dropped = set()
    for group in command._mutually_exclusive_groups:
        dests = {a.dest for a in group._group_actions}
        if dests & given:
            dropped |= dests  # a flag replaces the file's choice in its group
    for dest, value in values.items():
        if dest not in given and dest not in dropped:
            setattr(args, dest, value)


# ------------------------------------------------------------------ parts


def _given_on_command_line(parser: argparse.ArgumentParser, command: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of ``command``'s options that ``argv`` sets (parsed again with every default suppressed)."""
    saved = [(action, action.default) for action in command._actions]
    saved_defaults = dict(command._defaults)
    try:
        for action in command._actions:
            action.default = argparse.SUPPRESS
        command._defaults.clear()
        namespace = parser.parse_args(list(argv))
    finally:
        for action, default in saved:
            action.default = default
        command._defaults.update(saved_defaults)
    return {dest for dest in vars(namespace) if dest in {a.dest for a in command._actions}}


def _convert(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(value, dict):
        raise ConfigError(f"{path}: key {key!r} takes {_kind(action)}, not a table")
    if action.nargs == 0:  # a switch: store_true, store_false, store_const
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: key {key!r} is a switch: write {key} = true (or false), not {value!r}")
        if isinstance(action, argparse._StoreFalseAction):
            return not value
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_scalar(path, key, action, item) for item in items]
    if isinstance(value, list):
        raise ConfigError(f"{path}: key {key!r} takes one value ({_kind(action)}), not a list")
    return _scalar(path, key, action, value)


def _scalar(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    kind = action.type if action.type in (int, float) else str
    if isinstance(value, bool) or isinstance(value, (list, dict)) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{path}: key {key!r} takes {_kind(action)}, not {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{path}: key {key!r} takes {_kind(action)} in quotes, e.g. {key} = \"{value}\"")
    if kind is int and isinstance(value, float):
        raise ConfigError(f"{path}: key {key!r} takes a whole number, not {value!r}")
    try:
        converted = action.type(value) if callable(action.type) else value
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: key {key!r}: invalid value {value!r}: {exc}") from None
    if isinstance(converted, Path):
        converted = converted.expanduser()
    elif action.metavar == "FILE" and isinstance(converted, str):
        converted = str(Path(converted).expanduser())
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise ConfigError(f"{path}: key {key!r} is one of {choices}, not {value!r}")
    return converted


def _kind(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "true or false"
    if action.type is int:
        return "a whole number"
    if action.type is float:
        return "a number"
    return "a string"


def _check_exclusive(path: Path, parser: argparse.ArgumentParser, dests: set[str]) -> None:
    for group in parser._mutually_exclusive_groups:
        names = [_key_of(a) for a in group._group_actions if a.dest in dests]
        if len(names) > 1:
            raise ConfigError(f"{path}: keys {' and '.join(repr(n) for n in names)} exclude each other: keep one")


def _key_of(action: argparse.Action) -> str:
    return next(o[2:] for o in action.option_strings if o.startswith("--"))


def _suggest(key: str, keys: dict[str, argparse.Action]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(keys), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; the keys are the long options of 'lnpmsg node --help' without '--'"
