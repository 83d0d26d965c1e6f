"""Bitcoin's serialization primitives: CompactSize integers, length-prefixed
bytes, and a reader over untrusted bytes that fails only with ``BitcoinError``."""

from __future__ import annotations

import struct

from lnpmsg.bitcoin.errors import BitcoinError

__all__ = ["MAX_BLOCK_BYTES", "MAX_BLOCK_WEIGHT", "Reader", "compact_size", "var_bytes"]

#: consensus: no block (so no transaction) weighs more than this (BIP141)
MAX_BLOCK_WEIGHT = 4_000_000
#: a block's serialized size can never exceed its weight limit: bounds what a parser reads
MAX_BLOCK_BYTES = MAX_BLOCK_WEIGHT


def compact_size(n: int) -> bytes:
    """``n`` as a CompactSize (Bitcoin's variable-length integer)."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def var_bytes(data: bytes) -> bytes:
    """``data`` prefixed with its CompactSize length."""
    return compact_size(len(data)) + data


class Reader:
    """A cursor over untrusted bytes; every failure is a ``BitcoinError``.

    Construction refuses anything but bytes, and anything larger than a block
    can be, so no count read later can make a parser allocate without bound.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: object, what: str = "data") -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitcoinError(f"a {what} is bytes, got {type(data).__name__}")
        if len(data) > MAX_BLOCK_BYTES:
            raise BitcoinError(f"{what} larger than the consensus block limit")
        self.data = bytes(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining():
            raise BitcoinError("truncated data")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def i32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])

    def compact_size(self) -> int:
        first = self.u8()
        if first < 0xFD:
            return first
        if first == 0xFD:
            n, minimum = struct.unpack("<H", self.take(2))[0], 0xFD
        elif first == 0xFE:
            n, minimum = struct.unpack("<I", self.take(4))[0], 0x10000
        else:
            n, minimum = struct.unpack("<Q", self.take(8))[0], 0x100000000
        if n < minimum:
            # Core rejects these too ("non-canonical ReadCompactSize()")
            raise BitcoinError("non-canonical compact size")
        return int(n)

    def count(self, min_item_bytes: int) -> int:
        """A count of items, each at least ``min_item_bytes`` long: refused if the data cannot hold them."""
        n = self.compact_size()
        if n * min_item_bytes > self.remaining():
            raise BitcoinError(f"item count {n} larger than the data")
        return n

    def var_bytes(self) -> bytes:
        return self.take(self.compact_size())

    def end(self, what: str) -> None:
        """Refuse trailing bytes: a parse consumes its whole buffer."""
        if self.remaining():
            raise BitcoinError(f"trailing bytes after the {what}")
