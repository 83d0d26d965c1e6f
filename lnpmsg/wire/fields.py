"""Field types: how one value of a message, TLV record or subtype is written.

Every field type is an object with:

- ``encode(value) -> bytes`` and ``decode(reader) -> value`` (the public pair);
- ``unpack(data, pos, end) -> (value, new_pos)``: the fast form the message
  and TLV codecs call, reading ``data[pos:end]``;
- ``validate(value) -> value``: checks a value given by the program (when a
  message is built) and returns it, normalised (lists become tuples,
  bytearrays bytes), or raises :class:`WireError`;
- ``size``: the fixed encoded size, or None; ``greedy``: True when it reads
  to the end (only allowed last); ``fmt``/``post``/``pre``: set on fixed-size
  fields that a ``struct`` code can carry, so the message compiler can read a
  run of them with one ``unpack_from`` (``post`` converts or checks a decoded
  value, ``pre`` converts a value before packing).

Decoding never trusts a length: everything is bounded by ``end`` and bad or
truncated input raises WireError.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import Any

from lnpmsg.wire.errors import WireError
from lnpmsg.wire.primitives import (
    MAX_U64,
    Reader,
    ShortChannelId,
    bigsize_at,
    encode_bigsize,
)

__all__ = [
    "ArrayOf",
    "BigSizeField",
    "Field",
    "FixedBytes",
    "IntField",
    "Point",
    "PrefixedBytes",
    "RecordField",
    "RestBytes",
    "ShortChannelIdField",
    "TruncatedInt",
    "array_of",
    "bigsize",
    "bigsize_prefixed_bytes",
    "byte",
    "chain_hash",
    "channel_id",
    "fixed_bytes",
    "point",
    "point_on_curve",
    "prefixed_bytes",
    "record",
    "rest_bytes",
    "s8",
    "s16",
    "s32",
    "s64",
    "sha256",
    "short_channel_id",
    "signature",
    "tu16",
    "tu32",
    "tu64",
    "u8",
    "u8_prefixed_bytes",
    "u16",
    "u16_prefixed_bytes",
    "u32",
    "u64",
]


def _truncated(what: str, need: int, left: int) -> WireError:
    return WireError(f"{what}: truncated (need {need} byte(s), {left} left)")


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as a plain int in ``low..high`` (an int subclass such as an IntEnum is
    converted; bool, though an int, is refused)."""
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(f"{name} must be an int, got {type(value).__name__}")
        value = int(value)
    if not low <= value <= high:
        raise WireError(f"{name} out of range {low}..{high}: {value}")
    return value


class Field:
    """Base of all field types (see the module docstring for the protocol)."""

    name: str = "field"
    size: int | None = None
    greedy: bool = False
    # Only last in a TLV value: its length is implied by the record's length.
    tlv_tail_only: bool = False
    fmt: str | None = None
    post: Callable[[Any], Any] | None = None
    pre: Callable[[Any], Any] | None = None

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[Any, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, value: Any) -> Any:
        return value

    def decode(self, reader: Reader) -> Any:
        """Read one value from ``reader`` (which moves past it)."""
        value, reader._pos = self.unpack(reader._data, reader._pos, reader._end)
        return value

    def decode_exact(self, data: bytes) -> Any:
        """Decode ``data``, which must hold exactly one value."""
        if type(data) is not bytes:
            data = bytes(data)
        value, pos = self.unpack(data, 0, len(data))
        if pos != len(data):
            raise WireError(f"{self.name}: {len(data) - pos} byte(s) left over")
        return value

    def __repr__(self) -> str:
        return f"<field {self.name}>"


class _StructField(Field):
    """A fixed-size field that one ``struct`` code reads (optionally with post/pre hooks)."""

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self.fmt = fmt
        self._struct = struct.Struct(">" + fmt)
        self.size = self._struct.size

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[Any, int]:
        size = self._struct.size
        new = pos + size
        if new > end:
            raise _truncated(self.name, size, end - pos)
        value = self._struct.unpack_from(data, pos)[0]
        if self.post is not None:
            value = self.post(value)
        return value, new

    def encode(self, value: Any) -> bytes:
        value = self.validate(value)
        if self.pre is not None:
            value = self.pre(value)
        return self._struct.pack(value)


class IntField(_StructField):
    """A fixed-size big-endian integer: unsigned ``u8..u64`` or two's complement ``s8..s64``."""

    def __init__(self, name: str, fmt: str) -> None:
        super().__init__(name, fmt)
        bits = 8 * self._struct.size
        if fmt.islower():
            self.min, self.max = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        else:
            self.min, self.max = 0, (1 << bits) - 1

    def validate(self, value: Any) -> int:
        return _check_int(self.name, value, self.min, self.max)


class TruncatedInt(Field):
    """``tu16``/``tu32``/``tu64``: 0..N bytes, big-endian, no leading zero byte.

    Its length is the TLV record's: only valid as the last thing in a TLV value.
    """

    greedy = True
    tlv_tail_only = True

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max = (1 << (8 * max_bytes)) - 1

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[int, int]:
        n = end - pos
        if n > self.max_bytes:
            raise WireError(f"{self.name}: {n} bytes, more than {self.max_bytes}")
        if n and data[pos] == 0:
            raise WireError(f"{self.name}: not minimally encoded (leading zero byte)")
        return int.from_bytes(data[pos:end], "big"), end

    def validate(self, value: Any) -> int:
        return _check_int(self.name, value, 0, self.max)

    def encode(self, value: Any) -> bytes:
        value = self.validate(value)
        return value.to_bytes((value.bit_length() + 7) // 8, "big")


class BigSizeField(Field):
    """A BigSize integer (minimal encoding enforced)."""

    name = "bigsize"

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[int, int]:
        return bigsize_at(data, pos, end)

    def validate(self, value: Any) -> int:
        return _check_int(self.name, value, 0, MAX_U64)

    def encode(self, value: Any) -> bytes:
        return encode_bigsize(self.validate(value))


def _as_bytes(name: str, value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise WireError(f"{name} must be bytes, got {type(value).__name__}")


class FixedBytes(_StructField):
    """Exactly ``n`` bytes (hashes, signatures, ids)."""

    def __init__(self, name: str, n: int) -> None:
        if n <= 0:
            raise ValueError("fixed_bytes needs a positive size")
        super().__init__(name, f"{n}s")

    def validate(self, value: Any) -> bytes:
        value = _as_bytes(self.name, value)
        if len(value) != self.size:
            raise WireError(f"{self.name} must be {self.size} bytes, got {len(value)}")
        return value


class Point(FixedBytes):
    """A 33-byte compressed secp256k1 public key.

    Decoding checks the length and the 02/03 prefix (cheap). With
    ``on_curve=True`` it also checks that the point is on the curve, with
    coincurve (a few microseconds each), for places that must not let an
    invalid key through before using it.
    """

    def __init__(self, name: str = "point", on_curve: bool = False) -> None:
        super().__init__(name, 33)
        self.on_curve = on_curve
        self.post = self._check

    def _check(self, value: bytes) -> bytes:
        if value[0] not in (2, 3):
            raise WireError(f"{self.name}: not a compressed point (prefix {value[0]:02x}, want 02 or 03)")
        if self.on_curve:
            import coincurve  # only where asked for: it costs an import and ~4us a key

            try:
                coincurve.PublicKey(value)
            except Exception as exc:  # noqa: BLE001 - coincurve raises ValueError, TypeError...
                raise WireError(f"{self.name}: not a point on secp256k1: {exc}") from None
        return value

    def validate(self, value: Any) -> bytes:
        return self._check(super().validate(value))


class ShortChannelIdField(_StructField):
    """8 bytes, read as a :class:`ShortChannelId`."""

    def __init__(self) -> None:
        super().__init__("short_channel_id", "Q")
        self.post = ShortChannelId.from_u64  # the unpacked "Q" is a u64
        self.pre = ShortChannelId.to_int

    def validate(self, value: Any) -> ShortChannelId:
        if not isinstance(value, ShortChannelId):
            raise WireError(f"short_channel_id must be a ShortChannelId, got {type(value).__name__}")
        return value


class PrefixedBytes(Field):
    """A byte string after its length (``u8``, ``u16`` or ``bigsize``)."""

    def __init__(self, name: str, prefix: Field) -> None:
        self.name = name
        self.prefix = prefix
        self.max = getattr(prefix, "max", MAX_U64)
        self._u16 = prefix is u16

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[bytes, int]:
        if self._u16:  # the common case, inline
            if pos + 2 > end:
                raise _truncated(f"{self.name} length", 2, end - pos)
            n = (data[pos] << 8) | data[pos + 1]
            pos += 2
        else:
            n, pos = self.prefix.unpack(data, pos, end)
        new = pos + n
        if new > end:
            raise _truncated(self.name, n, end - pos)
        return data[pos:new], new

    def validate(self, value: Any) -> bytes:
        value = _as_bytes(self.name, value)
        if len(value) > self.max:
            raise WireError(f"{self.name}: {len(value)} bytes, more than its length prefix holds ({self.max})")
        return value

    def encode(self, value: Any) -> bytes:
        value = self.validate(value)
        return self.prefix.encode(len(value)) + value


class RestBytes(Field):
    """All the bytes left (possibly none): only valid last."""

    name = "rest_bytes"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[bytes, int]:
        return data[pos:end], end

    def validate(self, value: Any) -> bytes:
        return _as_bytes(self.name, value)

    def encode(self, value: Any) -> bytes:
        return self.validate(value)


class ArrayOf(Field):
    """A sequence of one field type; decoded as a tuple.

    ``count`` is an int (a fixed count), a field (a count prefix: ``u8``,
    ``u16``, ``bigsize``) or ``...`` (elements up to the end, as the spec's
    ``...*type``: only valid last).
    """

    def __init__(self, element: Field, count: int | Field | EllipsisType) -> None:
        if element.greedy:
            raise ValueError(f"array_of: {element.name} reads to the end, so it cannot repeat")
        self.element = element
        self.count = count
        if count is ...:
            self.greedy = True
            self.tlv_tail_only = False
            label = "..."
        elif isinstance(count, int):
            if count < 0:
                raise ValueError("array_of: negative count")
            if element.size is not None:
                self.size = element.size * count
            label = str(count)
        elif isinstance(count, Field):
            label = count.name
        else:
            raise TypeError("array_of count must be an int, a prefix field or ...")
        self.name = f"{label}*{element.name}"
        # Elements a struct code reads in bulk (hashes, integers) decode in one call.
        self._bulk = element.fmt is not None and element.post is None and element.pre is None

    def _unpack_n(self, n: int, data: bytes, pos: int, end: int) -> tuple[tuple[Any, ...], int]:
        element = self.element
        fmt = element.fmt
        if self._bulk and fmt is not None and element.size is not None:
            size = element.size
            new = pos + n * size
            if new > end:
                raise _truncated(self.name, n * size, end - pos)
            if fmt.endswith("s"):
                return tuple([data[p : p + size] for p in range(pos, new, size)]), new
            return struct.unpack_from(f">{n}{fmt}", data, pos), new
        values: list[Any] = []
        append = values.append
        unpack = element.unpack
        for _ in range(n):
            value, pos = unpack(data, pos, end)
            append(value)
        return tuple(values), pos

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[Any, ...], int]:
        count = self.count
        if count is ...:
            element = self.element
            if element.size is not None:
                left = end - pos
                if left % element.size:
                    raise WireError(f"{self.name}: {left} bytes is not a whole number of {element.size}-byte elements")
                return self._unpack_n(left // element.size, data, pos, end)
            values: list[Any] = []
            while pos < end:
                value, pos = element.unpack(data, pos, end)
                values.append(value)
            return tuple(values), pos
        if isinstance(count, int):
            return self._unpack_n(count, data, pos, end)
        n, pos = count.unpack(data, pos, end)
        if self.element.size is not None and n * self.element.size > end - pos:
            # Refuse before allocating anything for a count the data cannot hold.
            raise _truncated(self.name, n * self.element.size, end - pos)
        return self._unpack_n(n, data, pos, end)

    def validate(self, value: Any) -> tuple[Any, ...]:
        if isinstance(value, str | bytes | bytearray | memoryview) or not isinstance(value, Sequence):
            raise WireError(f"{self.name} must be a sequence (list or tuple), got {type(value).__name__}")
        validate = self.element.validate
        values = tuple(validate(v) for v in value)
        count = self.count
        if isinstance(count, int) and len(values) != count:
            raise WireError(f"{self.name}: needs exactly {count} elements, got {len(values)}")
        if isinstance(count, Field) and len(values) > getattr(count, "max", MAX_U64):
            raise WireError(f"{self.name}: {len(values)} elements, more than the count prefix holds")
        return values

    def encode(self, value: Any) -> bytes:
        values = self.validate(value)
        prefix = self.count.encode(len(values)) if isinstance(self.count, Field) else b""
        return prefix + b"".join(map(self.element.encode, values))


class RecordField(Field):
    """Several named fields in a row (a TLV value such as ``node_id, amount_1, amount_2``,
    or a spec "subtype"); values are instances of the namedtuple ``self.type``."""

    def __init__(self, name: str, fields: Sequence[tuple[str, Field]]) -> None:
        names = [n for n, _ in fields]
        for i, (fname, f) in enumerate(fields):
            if f.greedy and i != len(fields) - 1:
                raise ValueError(f"record {name}: {fname} reads to the end, so it must be last")
        self.name = name
        self.fields = tuple(fields)
        self.type: Any = namedtuple(name, names)  # type: ignore[misc]
        self.greedy = bool(fields) and fields[-1][1].greedy
        self.tlv_tail_only = bool(fields) and fields[-1][1].tlv_tail_only
        sizes = [f.size for _, f in fields]
        self.size = sum(sizes) if None not in sizes else None  # type: ignore[arg-type]

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[Any, int]:
        values = []
        for _, f in self.fields:
            value, pos = f.unpack(data, pos, end)
            values.append(value)
        return self.type._make(values), pos

    def validate(self, value: Any) -> Any:
        if isinstance(value, dict):
            try:
                value = self.type(**value)
            except TypeError as exc:
                raise WireError(f"{self.name}: {exc}") from None
        if not isinstance(value, tuple) or len(value) != len(self.fields):
            raise WireError(f"{self.name} must be a {self.name}(...) of {len(self.fields)} values, got {value!r}")
        return self.type._make(f.validate(v) for (_, f), v in zip(self.fields, value, strict=True))

    def encode(self, value: Any) -> bytes:
        value = self.validate(value)
        return b"".join(f.encode(v) for (_, f), v in zip(self.fields, value, strict=True))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Build a value: ``tlv3(node_id=..., amount_msat_1=1, amount_msat_2=2)``."""
        return self.validate(self.type(*args, **kwargs))


# The spec's fundamental types (BOLT 1 "Fundamental Types").
byte = u8 = IntField("u8", "B")
u16 = IntField("u16", "H")
u32 = IntField("u32", "I")
u64 = IntField("u64", "Q")
s8 = IntField("s8", "b")
s16 = IntField("s16", "h")
s32 = IntField("s32", "i")
s64 = IntField("s64", "q")
tu16 = TruncatedInt("tu16", 2)
tu32 = TruncatedInt("tu32", 4)
tu64 = TruncatedInt("tu64", 8)
bigsize = BigSizeField()
point = Point()
point_on_curve = Point("point", on_curve=True)
signature = FixedBytes("signature", 64)
sha256 = FixedBytes("sha256", 32)
chain_hash = FixedBytes("chain_hash", 32)
channel_id = FixedBytes("channel_id", 32)
short_channel_id = ShortChannelIdField()
u8_prefixed_bytes = PrefixedBytes("u8_prefixed_bytes", u8)
u16_prefixed_bytes = PrefixedBytes("u16_prefixed_bytes", u16)
bigsize_prefixed_bytes = PrefixedBytes("bigsize_prefixed_bytes", bigsize)
rest_bytes = RestBytes()


def fixed_bytes(n: int, name: str | None = None) -> FixedBytes:
    """A field of exactly ``n`` bytes (e.g. ``fixed_bytes(3)`` for ``rgb_color``)."""
    return FixedBytes(name or f"{n}*byte", n)


def prefixed_bytes(prefix: Field, name: str | None = None) -> PrefixedBytes:
    """Bytes after a length of type ``prefix`` (``u8``, ``u16`` or ``bigsize``)."""
    return PrefixedBytes(name or f"{prefix.name}_prefixed_bytes", prefix)


def array_of(element: Field, count: int | Field | EllipsisType = ...) -> ArrayOf:
    """A sequence of ``element``: ``count`` fixed (int), prefixed (a field), or to the end (``...``)."""
    return ArrayOf(element, count)


def record(name: str, *fields: tuple[str, Field]) -> RecordField:
    """Several named fields read in a row, e.g. a TLV value or a subtype::

        tlv3 = record("tlv3", ("node_id", point), ("amount_msat_1", u64), ("amount_msat_2", u64))
    """
    return RecordField(name, fields)

