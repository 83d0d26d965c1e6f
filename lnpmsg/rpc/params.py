"""Typed parameters for RPC methods, checked from the method's signature.

A method declared as ``async def put(peer, key: str, value: str, ttl: int | None = None)``
takes JSON params ``{"key": "a", "value": "b"}`` (or positionally,
``["a", "b"]``). :func:`params_checker` reads the annotations once and
returns a function that turns decoded JSON into keyword arguments or raises
:class:`ParamsError` with a message naming the parameter.

Supported annotations: ``str``, ``int``, ``float`` (ints accepted), ``bool``,
``None``, ``bytes`` (sent as a hex string), ``list[T]``, ``dict[str, T]``,
``T | None`` and other unions, ``Literal[...]``, ``Any`` (or none at all).
This module is sans-IO: JSON values in, values out.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Any

from lnpmsg._hex import parse_hex

__all__ = ["ParamsError", "describe_params", "dumps", "hex_param", "node_id_param", "params_checker"]

Check = Callable[[Any, str], Any]


class ParamsError(Exception):
    """The params do not fit the method's signature (the message says how)."""


def hex_param(value: object, name: str, size: int | None = None) -> bytes:
    """A parameter given as hex (of ``size`` bytes, when given), as bytes; :class:`ParamsError`
    naming ``name`` and what is wrong otherwise (:func:`lnpmsg._hex.parse_hex`)."""
    try:
        return parse_hex(value, name, size)
    except ValueError as exc:
        raise ParamsError(str(exc)) from None


def node_id_param(text: str) -> bytes:
    """A node id given as a parameter (66 hex characters), as bytes; :class:`ParamsError` otherwise."""
    return hex_param(text, "node_id", 33)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _compile(annotation: Any, where: str) -> Check:
    """A checker for one annotation: ``check(value, path) -> value`` or ParamsError."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return lambda value, path: value
    if annotation is None or annotation is type(None):

        def check_none(value: Any, path: str) -> None:
            if value is not None:
                raise ParamsError(f"{path} must be null, got {_type_name(value)}")

        return check_none
    simple = {str: "str", bool: "bool"}
    if annotation in simple:
        want = annotation

        def check_simple(value: Any, path: str) -> Any:
            if type(value) is not want:
                raise ParamsError(f"{path} must be {simple[want]}, got {_type_name(value)}")
            return value

        return check_simple
    if annotation is int:

        def check_int(value: Any, path: str) -> int:
            if type(value) is not int:
                raise ParamsError(f"{path} must be int, got {_type_name(value)}")
            return value

        return check_int
    if annotation is float:

        def check_float(value: Any, path: str) -> float:
            if type(value) not in (int, float):
                raise ParamsError(f"{path} must be a number, got {_type_name(value)}")
            return float(value)

        return check_float
    if annotation is bytes:

        def check_bytes(value: Any, path: str) -> bytes:
            if type(value) is not str:
                raise ParamsError(f"{path} must be a hex string, got {_type_name(value)}")
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise ParamsError(f"{path} must be a hex string") from None

        return check_bytes
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is list or origin is list:
        item = _compile(args[0], where) if args else _compile(Any, where)

        def check_list(value: Any, path: str) -> list[Any]:
            if type(value) is not list:
                raise ParamsError(f"{path} must be a list, got {_type_name(value)}")
            return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return check_list
    if annotation is dict or origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"{where}: JSON object keys are strings; use dict[str, ...]")
        item = _compile(args[1], where) if args else _compile(Any, where)

        def check_dict(value: Any, path: str) -> dict[str, Any]:
            if type(value) is not dict:
                raise ParamsError(f"{path} must be an object, got {_type_name(value)}")
            return {k: item(v, f"{path}.{k}") for k, v in value.items()}

        return check_dict
    if origin is typing.Literal:
        allowed = args

        def check_literal(value: Any, path: str) -> Any:
            if not any(type(value) is type(a) and value == a for a in allowed):
                raise ParamsError(f"{path} must be one of {json.dumps(list(allowed))}, got {json.dumps(value)[:60]}")
            return value

        return check_literal
    if origin is typing.Union or origin is types.UnionType:
        options = [_compile(a, where) for a in args]
        names = " | ".join(_annotation_name(a) for a in args)

        def check_union(value: Any, path: str) -> Any:
            for option in options:
                try:
                    return option(value, path)
                except ParamsError:
                    continue
            raise ParamsError(f"{path} must be {names}, got {_type_name(value)}")

        return check_union
    raise TypeError(f"{where}: unsupported parameter annotation {annotation!r} for a JSON RPC method")


def _annotation_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if annotation is type(None) or annotation is None:
        return "null"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - NameError, TypeError...: any unresolvable annotation
        # Annotations naming local types cannot be resolved here; treat them as Any.
        return {}


def params_checker(fn: Callable[..., Any], *, skip: int = 1) -> Callable[[Any], dict[str, Any]]:
    """Build the checker for ``fn``'s parameters after the first ``skip`` (the peer).

    The checker takes the decoded JSON params (an object, a list for
    positional params, or null for none) and returns keyword arguments.
    """
    where = getattr(fn, "__qualname__", repr(fn))
    signature = inspect.signature(fn)
    hints = _hints(fn)
    params = list(signature.parameters.values())[skip:]
    checks: dict[str, Check] = {}
    required: list[str] = []
    order: list[str] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}: RPC methods take named parameters, not *args/**kwargs")
        annotation = hints.get(p.name, p.annotation)
        if isinstance(annotation, str):
            annotation = Any
        checks[p.name] = _compile(annotation, f"{where}({p.name})")
        order.append(p.name)
        if p.default is p.empty:
            required.append(p.name)

    def check(raw: Any) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if type(raw) is list:
            if len(raw) > len(order):
                raise ParamsError(f"takes at most {len(order)} positional param(s), got {len(raw)}")
            raw = dict(zip(order, raw))
        if type(raw) is not dict:
            raise ParamsError(f"params must be an object or a list, got {_type_name(raw)}")
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            checker = checks.get(name)
            if checker is None:
                raise ParamsError(f"unexpected param {name!r} (takes: {', '.join(order) or 'none'})")
            kwargs[name] = checker(value, f"param {name!r}")
        missing = [name for name in required if name not in kwargs]
        if missing:
            raise ParamsError(f"missing param(s): {', '.join(missing)}")
        return kwargs

    return check


def describe_params(fn: Callable[..., Any], *, skip: int = 1) -> dict[str, str]:
    """``{param: type}`` for documentation and ``rpc.methods`` listings."""
    hints = _hints(fn)
    out = {}
    for p in list(inspect.signature(fn).parameters.values())[skip:]:
        name = _annotation_name(hints.get(p.name, p.annotation))
        out[p.name] = name if p.default is p.empty else f"{name} = {p.default!r}"
    return out


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


#: one encoder and decoder for every call: json.dumps/loads build or look one up each time
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False)
_DECODER = json.JSONDecoder()

# The C halves of that encoder and decoder, called directly: JSONEncoder.encode
# and JSONDecoder.decode wrap them in two Python frames and two regular
# expressions each, which cost more than the JSON of a small call's params.
# The output and the errors are the same (anything unusual takes the full path).
_MAKE_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER_ARGS = (_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
_SCAN = _DECODER.scan_once


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8) of a result or params; bytes become hex. TypeError if not JSON-able."""
    try:
        if _MAKE_C_ENCODER is not None:
            # a fresh markers dict per call: it is how the encoder finds circular references
            return "".join(_MAKE_C_ENCODER({}, *_C_ENCODER_ARGS)(value, 0)).encode()
        return _ENCODER.encode(value).encode()
    except ValueError as exc:  # NaN/inf, circular
        raise TypeError(str(exc)) from None


def loads(data: bytes) -> Any:
    """Parse params or a result: UTF-8 JSON. ValueError (UnicodeDecodeError, JSONDecodeError) if not."""
    text = data.decode()
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        end = -1  # leading whitespace or not JSON: the full parser accepts it or says why
    if end != len(text):
        return _DECODER.decode(text)
    return value
