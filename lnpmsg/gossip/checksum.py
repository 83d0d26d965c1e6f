"""CRC-32C (Castagnoli), for BOLT 7's channel_update checksums and gossip_store records.

The standard library has only CRC-32 (IEEE); this is the table-driven
form, a few microseconds per channel_update: checksums are computed only
when a peer asks for them.
"""

from __future__ import annotations

__all__ = ["channel_update_checksum", "crc32c"]

_POLY = 0x82F63B78  # CRC-32C, reflected


def _table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``crc`` (0 to start)."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# After the type: signature (64), then chain_hash (32) + short_channel_id (8), timestamp (4), the rest.
_SIG_END = 2 + 64
_TS_START = _SIG_END + 32 + 8
_TS_END = _TS_START + 4


def channel_update_checksum(raw: bytes) -> int:
    """BOLT 7: CRC-32C of a channel_update without its signature and timestamp (``raw`` includes the type)."""
    return crc32c(raw[_SIG_END:_TS_START] + raw[_TS_END:])
