"""Encoding of channel inputs and states for the store (sans-IO): JSON with tags.

Values are ints, bools, strings, bytes (``{"#": hex}``), tuples (lists),
None, enums (``{"e": name}``), wire messages (``{"m": hex}``, decoded by
the channel registry) and dataclasses of a known set (``{"@": class name,
field: value, ...}``). Decoding only ever builds those classes: a record
cannot name any other type. A value that does not decode raises
:class:`CodecError`.
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any

from lnpmsg.wire import DEFAULT_REGISTRY, Message, UnknownMessage, WireError

from .errors import ChannelError
from .messages import register_channel_messages
from .messages_splice import register_splice_messages
from .messages_v2 import register_dual_fund_messages

__all__ = ["Codec", "CodecError"]

# v2 and splicing messages too: an interactive session's records hold them.
_REGISTRY = register_splice_messages(register_dual_fund_messages(register_channel_messages(DEFAULT_REGISTRY.copy())))


class CodecError(ChannelError):
    """A stored record or snapshot does not decode."""


class Codec:
    """Encode/decode values built from ``classes`` (dataclasses and enums)."""

    def __init__(self, classes: list[type]) -> None:
        self._classes = {cls.__name__: cls for cls in classes}

    def _to_json(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, bytes):
            return {"#": value.hex()}
        if isinstance(value, Enum):
            return {"e": type(value).__name__, "v": value.name}
        if isinstance(value, Message):
            return {"m": value.encode().hex()}
        if isinstance(value, tuple | list):
            return [self._to_json(v) for v in value]
        if dataclasses.is_dataclass(value) and type(value).__name__ in self._classes:
            out: dict[str, Any] = {"@": type(value).__name__}
            for f in dataclasses.fields(value):
                out[f.name] = self._to_json(getattr(value, f.name))
            return out
        raise CodecError(f"cannot encode a {type(value).__name__}")

    def _from_json(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return tuple(self._from_json(v) for v in value)
        if not isinstance(value, dict):
            raise CodecError(f"unexpected JSON value {value!r}")
        if "#" in value:
            return bytes.fromhex(value["#"])
        if "m" in value:
            try:
                msg = _REGISTRY.decode(bytes.fromhex(value["m"]))
            except WireError as exc:
                raise CodecError(f"stored message: {exc}") from None
            if isinstance(msg, UnknownMessage):
                raise CodecError(f"stored message of unknown type {msg.type}")
            return msg
        if "e" in value:
            cls = self._classes.get(value["e"])
            if cls is None or not issubclass(cls, Enum):
                raise CodecError(f"unknown enum {value['e']!r}")
            return cls[value["v"]]
        cls = self._classes.get(value.get("@", ""))
        if cls is None:
            raise CodecError(f"unknown record class {value.get('@')!r}")
        kwargs = {k: self._from_json(v) for k, v in value.items() if k != "@"}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, ChannelError) as exc:
            raise CodecError(f"{cls.__name__}: {exc}") from None

    def encode(self, value: Any) -> bytes:
        """``value`` as compact JSON bytes."""
        return json.dumps(self._to_json(value), separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        """The value :meth:`encode` wrote."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(f"not a stored value: {exc}") from None
        return self._from_json(raw)
