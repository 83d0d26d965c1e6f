"""TLV streams (BOLT 1 "Type-Length-Value Format"), with every reader rule.

A :class:`TlvSchema` declares the known records of one stream (type number
-> name and field type); decoding gives a :class:`TlvStream`, an immutable
mapping of the known records' names to their values, plus ``unknown``: the
unknown odd records as raw bytes, kept so that re-encoding (and so
signatures over the bytes) stays exact.

Reader rules enforced by :meth:`TlvSchema.decode`:

- types strictly increasing (so no duplicates), type and length minimal BigSize;
- a length beyond the data left fails;
- a known record's value must decode exactly (no bytes short or left over,
  variable-length parts minimal);
- an unknown even type fails with :class:`UnknownEvenTypeError`; an unknown
  odd one is kept and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from lnpmsg.wire.errors import UnknownEvenTypeError, WireError
from lnpmsg.wire.fields import Field
from lnpmsg.wire.primitives import MAX_U64, bigsize_at, encode_bigsize

__all__ = ["EMPTY_TLV_STREAM", "TlvSchema", "TlvStream"]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class TlvStream(Mapping[str, Any]):
    """The decoded records of one TLV stream: ``name -> value`` for known records.

    ``unknown`` maps the type of each unknown (odd) record to its raw value.
    Build one with ``TlvStream(networks=[...])`` or ``TlvStream({"networks": ...})``
    (a value of None means "absent"); a message checks it against its schema
    when the message is built. Immutable: use :meth:`replace` for a changed copy.
    """

    __slots__ = ("_unknown", "_values")

    _values: dict[str, Any]
    _unknown: dict[int, bytes]

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        unknown: Mapping[int, bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        merged = dict(values) if values else {}
        merged.update(kwargs)
        self._values = {k: v for k, v in merged.items() if v is not None}
        self._unknown = dict(unknown) if unknown else {}

    @classmethod
    def _make(cls, values: dict[str, Any], unknown: dict[int, bytes]) -> TlvStream:
        """Wrap already-checked dicts (the decoder's fast path; takes ownership)."""
        self = object.__new__(cls)
        self._values = values
        self._unknown = unknown
        return self

    @property
    def unknown(self) -> Mapping[int, bytes]:
        """Unknown odd records, ``type -> raw value`` (read-only)."""
        return MappingProxyType(self._unknown) if self._unknown else _EMPTY

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __bool__(self) -> bool:
        return bool(self._values) or bool(self._unknown)

    def replace(self, **changes: Any) -> TlvStream:
        """A copy with some records set (a value of None removes the record)."""
        values = dict(self._values)
        values.update(changes)
        return TlvStream(values, unknown=self._unknown)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TlvStream):
            return self._values == other._values and self._unknown == other._unknown
        if isinstance(other, Mapping):
            return not self._unknown and self._values == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((frozenset(self._values.items()), frozenset(self._unknown.items())))

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self._values.items()]
        if self._unknown:
            parts.append(f"unknown={self._unknown!r}")
        return f"TlvStream({', '.join(parts)})"


EMPTY_TLV_STREAM = TlvStream()


class TlvSchema(Field):
    """The known records of one TLV stream.

    ``TlvSchema({1: ("networks", array_of(chain_hash)), 3: ("remote_addr", address)})``.
    A record's field type reads exactly its value (use :func:`~lnpmsg.wire.fields.record`
    for several fields in one value). A schema is itself a field type that reads
    to the end, so it can sit last in a message, or inside another TLV value.
    """

    greedy = True

    def __init__(self, records: Mapping[int, tuple[str, Field]], name: str = "tlv_stream") -> None:
        self.name = name
        self.records: dict[int, tuple[str, Field]] = {}
        self.types: dict[str, int] = {}
        for tlv_type, (record_name, field) in sorted(records.items()):
            if type(tlv_type) is not int or not 0 <= tlv_type <= MAX_U64:
                raise ValueError(f"{name}: TLV type must be an int in 0..2**64-1, got {tlv_type!r}")
            if record_name in self.types:
                raise ValueError(f"{name}: record name {record_name!r} used twice")
            if not isinstance(field, Field):
                raise TypeError(f"{name}: record {record_name!r} needs a field type, got {field!r}")
            self.records[tlv_type] = (record_name, field)
            self.types[record_name] = tlv_type

    def __repr__(self) -> str:
        inner = ", ".join(f"{t}: {n}" for t, (n, _) in self.records.items())
        return f"<TlvSchema {self.name} {{{inner}}}>"

    # ------------------------------------------------------------ decoding

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[TlvStream, int]:
        records = self.records
        values: dict[str, Any] = {}
        unknown: dict[int, bytes] = {}
        last = -1
        while pos < end:
            try:
                tlv_type, pos = bigsize_at(data, pos, end)
            except WireError as exc:
                raise WireError(f"{self.name}: TLV type: {exc}") from None
            if tlv_type <= last:
                raise WireError(
                    f"{self.name}: TLV types must be strictly increasing: {tlv_type} after {last}"
                    + (" (duplicate)" if tlv_type == last else "")
                )
            last = tlv_type
            try:
                length, pos = bigsize_at(data, pos, end)
            except WireError as exc:
                raise WireError(f"{self.name}: TLV length of type {tlv_type}: {exc}") from None
            value_end = pos + length
            if value_end > end:
                raise WireError(f"{self.name}: TLV type {tlv_type}: length {length} exceeds the {end - pos} byte(s) left")
            entry = records.get(tlv_type)
            if entry is None:
                if not tlv_type & 1:
                    raise UnknownEvenTypeError(tlv_type)
                unknown[tlv_type] = data[pos:value_end]
            else:
                record_name, field = entry
                try:
                    value, used = field.unpack(data, pos, value_end)
                except WireError as exc:
                    raise WireError(f"{self.name}: TLV {record_name} (type {tlv_type}): {exc}") from None
                if used != value_end:
                    raise WireError(
                        f"{self.name}: TLV {record_name} (type {tlv_type}): {value_end - used} byte(s) left over in its value"
                    )
                values[record_name] = value
            pos = value_end
        return TlvStream._make(values, unknown), pos

    def decode_stream(self, data: bytes | bytearray | memoryview) -> TlvStream:
        """Decode a whole TLV stream (all of ``data``)."""
        if type(data) is not bytes:
            data = bytes(data)
        return self.unpack(data, 0, len(data))[0]

    # ------------------------------------------------------------ encoding

    def validate(self, value: Any) -> TlvStream:
        """Check names, values and unknown records; return the stream (normalised if needed)."""
        if not isinstance(value, TlvStream):
            if not isinstance(value, Mapping):
                raise WireError(f"{self.name} must be a TlvStream, got {type(value).__name__}")
            value = TlvStream(value)
        changed = False
        values: dict[str, Any] = {}
        types = self.types
        records = self.records
        for record_name, record_value in value._values.items():
            tlv_type = types.get(record_name)
            if tlv_type is None:
                raise WireError(f"{self.name}: no record named {record_name!r} (known: {', '.join(types) or 'none'})")
            checked = records[tlv_type][1].validate(record_value)
            changed = changed or checked is not record_value
            values[record_name] = checked
        for tlv_type, raw in value._unknown.items():
            if type(tlv_type) is not int or not 0 <= tlv_type <= MAX_U64:
                raise WireError(f"{self.name}: unknown record type must be an int in 0..2**64-1, got {tlv_type!r}")
            if tlv_type in records:
                raise WireError(f"{self.name}: unknown record type {tlv_type} is the known record {records[tlv_type][0]!r}")
            if type(raw) is not bytes:
                raise WireError(f"{self.name}: unknown record {tlv_type} must be bytes, got {type(raw).__name__}")
        return TlvStream._make(values, value._unknown) if changed else value

    def encode(self, value: Any) -> bytes:
        """The canonical bytes of a stream: records sorted by type, unknown ones re-emitted as they were."""
        stream = self.validate(value)
        if not stream:
            return b""
        parts: list[tuple[int, bytes]] = []
        records = self.records
        for record_name, record_value in stream._values.items():
            tlv_type = self.types[record_name]
            parts.append((tlv_type, records[tlv_type][1].encode(record_value)))
        parts.extend(stream._unknown.items())
        parts.sort()
        return b"".join(encode_bigsize(t) + encode_bigsize(len(v)) + v for t, v in parts)

    def stream(self, values: Mapping[str, Any] | None = None, /, *, unknown: Mapping[int, bytes] | None = None, **kwargs: Any) -> TlvStream:
        """Build and check a stream of this schema: ``schema.stream(networks=[...])``."""
        return self.validate(TlvStream(values, unknown=unknown, **kwargs))
