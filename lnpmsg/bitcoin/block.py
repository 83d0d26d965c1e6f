"""Blocks and block headers: parse, serialize, hash, merkle roots.

Structure only: whether a block is valid is the consensus engine's call
(``lnpmsg.chain.kernel``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lnpmsg.bitcoin.encoding import Reader, compact_size
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import sha256d
from lnpmsg.bitcoin.tx import Tx

__all__ = ["HEADER_BYTES", "Block", "BlockHeader", "merkle_root"]

HEADER_BYTES = 80
#: smallest transaction (version, 1 input, 1 output, locktime): bounds a block's tx count
_MIN_TX_BYTES = 60


def merkle_root(hashes: list[bytes]) -> bytes:
    """The merkle root of txids (or wtxids) in internal order, as Bitcoin computes it
    (an odd level repeats its last node)."""
    if not hashes:
        raise BitcoinError("merkle root of no transactions")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """An 80-byte block header; ``hash`` is its block hash (internal order)."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (
            struct.pack("<i", self.version)
            + self.prev_hash
            + self.merkle_root
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())

    @classmethod
    def parse(cls, data: bytes) -> BlockHeader:
        """Parse exactly 80 bytes."""
        reader = Reader(data, "block header")
        header = cls.read(reader)
        reader.end("block header")
        return header

    @classmethod
    def read(cls, r: Reader) -> BlockHeader:
        """Read a header at the reader's position."""
        version = r.i32()
        prev, root = r.take(32), r.take(32)
        time, bits, nonce = r.u32(), r.u32(), r.u32()
        return cls(version, prev, root, time, bits, nonce)


@dataclass(frozen=True, slots=True)
class Block:
    """A block: header and transactions (the first one is the coinbase)."""

    header: BlockHeader
    txs: tuple[Tx, ...]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def serialize(self) -> bytes:
        return self.header.serialize() + compact_size(len(self.txs)) + b"".join(tx.raw for tx in self.txs)

    @classmethod
    def parse(cls, data: bytes) -> Block:
        """Parse a serialized block (structure only)."""
        r = Reader(data, "block")
        header = BlockHeader.read(r)
        n_tx = r.count(_MIN_TX_BYTES)
        if n_tx == 0:
            raise BitcoinError("block without transactions")
        txs = tuple(Tx.read(r) for _ in range(n_tx))
        r.end("block")
        return cls(header, txs)
