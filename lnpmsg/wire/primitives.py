"""BigSize, a fast byte reader, and the short channel id.

BigSize (BOLT 1, Appendix A) is Bitcoin's CompactSize made big-endian, and
must be minimally encoded: a reader rejects a value written in more bytes
than it needs, so that every value has exactly one encoding (signatures and
TLV ordering depend on it).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from lnpmsg.wire.errors import WireError

__all__ = [
    "MAX_U64",
    "Reader",
    "ShortChannelId",
    "bigsize_at",
    "bigsize_length",
    "decode_bigsize",
    "encode_bigsize",
]

MAX_U64 = (1 << 64) - 1

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PREFIX_U16 = struct.Struct(">BH")
_PREFIX_U32 = struct.Struct(">BI")
_PREFIX_U64 = struct.Struct(">BQ")
# One-byte encodings are by far the most common (TLV types and short lengths).
_ONE_BYTE = tuple(bytes((i,)) for i in range(0xFD))

# The messages of the BigSize vectors: the reason, not the Go library's wording only.
_EOF = "bigsize: EOF (no bytes left)"
_UNEXPECTED_EOF = "bigsize: unexpected EOF (truncated)"
_NOT_CANONICAL = "bigsize: decoded bigsize is not canonical (not minimally encoded)"


def encode_bigsize(n: int) -> bytes:
    """The minimal BigSize encoding of ``n`` (0 <= n < 2**64)."""
    if type(n) is not int and (not isinstance(n, int) or isinstance(n, bool)):
        raise WireError(f"bigsize must be an int, got {type(n).__name__}")
    if 0 <= n < 0xFD:
        return _ONE_BYTE[n]
    if n < 0:
        raise WireError(f"bigsize cannot be negative: {n}")
    if n <= 0xFFFF:
        return _PREFIX_U16.pack(0xFD, n)
    if n <= 0xFFFFFFFF:
        return _PREFIX_U32.pack(0xFE, n)
    if n <= MAX_U64:
        return _PREFIX_U64.pack(0xFF, n)
    raise WireError(f"bigsize out of range (>= 2**64): {n}")


def bigsize_length(n: int) -> int:
    """How many bytes the BigSize encoding of ``n`` takes (1, 3, 5 or 9)."""
    if n < 0xFD:
        return 1
    if n <= 0xFFFF:
        return 3
    if n <= 0xFFFFFFFF:
        return 5
    return 9


def decode_bigsize(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode one BigSize at ``offset``: ``(value, offset after it)``.

    Raises :class:`WireError` on an empty input ("EOF"), a truncated one
    ("unexpected EOF") or a non-minimal encoding ("not canonical").
    """
    if offset < 0:
        raise WireError(f"bigsize: negative offset {offset}")
    return bigsize_at(data, offset, len(data))


def bigsize_at(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """:func:`decode_bigsize` within ``data[:end]`` (no bounds check of ``pos``)."""
    if pos >= end:
        raise WireError(_EOF)
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    if first == 0xFD:
        if end - pos < 3:
            raise WireError(_UNEXPECTED_EOF)
        value = _U16.unpack_from(data, pos + 1)[0]
        if value < 0xFD:
            raise WireError(_NOT_CANONICAL)
        return value, pos + 3
    if first == 0xFE:
        if end - pos < 5:
            raise WireError(_UNEXPECTED_EOF)
        value = _U32.unpack_from(data, pos + 1)[0]
        if value <= 0xFFFF:
            raise WireError(_NOT_CANONICAL)
        return value, pos + 5
    if end - pos < 9:
        raise WireError(_UNEXPECTED_EOF)
    value = _U64.unpack_from(data, pos + 1)[0]
    if value <= 0xFFFFFFFF:
        raise WireError(_NOT_CANONICAL)
    return value, pos + 9


class Reader:
    """A cursor over bytes: every read either returns what was asked or raises WireError.

    ``Reader(data, offset=0, end=None)`` reads ``data[offset:end]``. Reads
    return ``bytes`` (a memoryview or bytearray input is copied once, so the
    values never alias a buffer that may change).
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        if end is None:
            end = size
        if not 0 <= offset <= end <= size:
            raise WireError(f"reader bounds out of range: offset={offset} end={end} size={size}")
        self._data = data
        self._pos = offset
        self._end = end

    @property
    def data(self) -> bytes:
        """The whole underlying buffer (positions are indexes into it)."""
        return self._data

    @property
    def pos(self) -> int:
        """The index of the next byte to read."""
        return self._pos

    @property
    def end(self) -> int:
        """The index just past the last readable byte."""
        return self._end

    @property
    def remaining(self) -> int:
        """How many bytes are left to read."""
        return self._end - self._pos

    @property
    def at_end(self) -> bool:
        """True when no byte is left."""
        return self._pos >= self._end

    def _short(self, n: int) -> WireError:
        return WireError(f"truncated: need {n} byte(s), {self._end - self._pos} left")

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        pos = self._pos
        new = pos + n
        if n < 0 or new > self._end:
            raise self._short(n)
        self._pos = new
        return self._data[pos:new]

    def read_rest(self) -> bytes:
        """All the bytes left (possibly none)."""
        pos = self._pos
        self._pos = self._end
        return self._data[pos : self._end]

    def skip(self, n: int) -> None:
        """Step over ``n`` bytes."""
        new = self._pos + n
        if n < 0 or new > self._end:
            raise self._short(n)
        self._pos = new

    def read_u8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise self._short(1)
        self._pos = pos + 1
        return self._data[pos]

    def read_u16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise self._short(2)
        self._pos = pos + 2
        return _U16.unpack_from(self._data, pos)[0]

    def read_u32(self) -> int:
        pos = self._pos
        if pos + 4 > self._end:
            raise self._short(4)
        self._pos = pos + 4
        return _U32.unpack_from(self._data, pos)[0]

    def read_u64(self) -> int:
        pos = self._pos
        if pos + 8 > self._end:
            raise self._short(8)
        self._pos = pos + 8
        return _U64.unpack_from(self._data, pos)[0]

    def read_bigsize(self) -> int:
        """One minimally encoded BigSize."""
        value, self._pos = bigsize_at(self._data, self._pos, self._end)
        return value

    def sub(self, n: int) -> Reader:
        """A reader over the next ``n`` bytes; this one moves past them."""
        pos = self._pos
        new = pos + n
        if n < 0 or new > self._end:
            raise self._short(n)
        self._pos = new
        return Reader(self._data, pos, new)

    def __repr__(self) -> str:
        return f"Reader(pos={self._pos}, end={self._end})"


_SCID_TEXT = re.compile(r"([0-9]{1,8})x([0-9]{1,8})x([0-9]{1,5})", re.ASCII)
_MAX_BLOCK = (1 << 24) - 1  # 3 bytes of block height
_MAX_TX = (1 << 24) - 1  # 3 bytes of transaction index
_MAX_OUTPUT = (1 << 16) - 1  # 2 bytes of output index


@dataclass(frozen=True, slots=True, order=True)
class ShortChannelId:
    """A channel's funding output: block height, transaction index, output index (BOLT 7).

    Packed in 8 bytes (3 + 3 + 2); ordering follows the packed integer.
    ``str()`` gives the spec's text form ``539268x845x1``.
    """

    block: int
    tx: int
    output: int

    def __post_init__(self) -> None:
        block, tx, output = self.block, self.tx, self.output
        # The common case in one expression (every decoded gossip message makes one); the loop names the bad field.
        if type(block) is int and type(tx) is int and type(output) is int and 0 <= block <= _MAX_BLOCK and 0 <= tx <= _MAX_TX and 0 <= output <= _MAX_OUTPUT:
            return
        for name, value, limit in (("block", block, _MAX_BLOCK), ("tx", tx, _MAX_TX), ("output", output, _MAX_OUTPUT)):
            if type(value) is not int or not 0 <= value <= limit:
                raise WireError(f"short_channel_id {name} must be an int in 0..{limit}, got {value!r}")

    @classmethod
    def from_int(cls, n: int) -> ShortChannelId:
        """From the 64-bit packed form."""
        if type(n) is not int or not 0 <= n <= MAX_U64:
            raise WireError(f"short_channel_id must be a u64, got {n!r}")
        return cls(n >> 40, (n >> 16) & 0xFFFFFF, n & 0xFFFF)

    def to_int(self) -> int:
        """The 64-bit packed form."""
        return (self.block << 40) | (self.tx << 16) | self.output

    @classmethod
    def from_u64(cls, n: int) -> ShortChannelId:
        """From a packed form the caller read as an unsigned 64-bit integer (a decoder):
        every such value holds fields in range, so nothing is checked, and the slots are
        set directly (a frozen dataclass's ``__init__`` is several times slower, and
        every decoded gossip message makes one)."""
        scid = _new_object(cls)
        _set_block(scid, n >> 40)
        _set_tx(scid, (n >> 16) & 0xFFFFFF)
        _set_output(scid, n & 0xFFFF)
        return scid

    @classmethod
    def from_bytes(cls, data: bytes) -> ShortChannelId:
        """From the 8 wire bytes."""
        if len(data) != 8:
            raise WireError(f"short_channel_id is 8 bytes, got {len(data)}")
        return cls.from_int(_U64.unpack(data)[0])

    def to_bytes(self) -> bytes:
        """The 8 wire bytes."""
        return _U64.pack(self.to_int())

    @classmethod
    def parse(cls, text: str) -> ShortChannelId:
        """From the text form ``BLOCKxTXxOUTPUT`` (decimal), e.g. ``539268x845x1``."""
        match = _SCID_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise WireError(f"not a short_channel_id (BLOCKxTXxOUTPUT): {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.block}x{self.tx}x{self.output}"


_new_object = object.__new__
# the slot descriptors of ShortChannelId's fields: setting through them skips the frozen __setattr__
_set_block = ShortChannelId.__dict__["block"].__set__
_set_tx = ShortChannelId.__dict__["tx"].__set__
_set_output = ShortChannelId.__dict__["output"].__set__
