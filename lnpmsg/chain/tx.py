"""Bitcoin transactions and blocks: parse, serialize, hash (sans-IO).

Hashes (txid, wtxid, block hash, merkle root) are kept as 32 bytes in
*internal* order, the order in which they are hashed and written on the wire
(and in BOLT messages such as ``funding_txid``). The usual display form is the
reverse; ``*_hex`` helpers give it.

Every parser takes untrusted bytes and raises only ``ChainError`` (code
``"malformed"``) on bad input; a parse consumes the whole buffer.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Protocol

from lnpmsg.chain.errors import ChainError

__all__ = [
    "MAX_BLOCK_WEIGHT",
    "MAX_MONEY_SAT",
    "SEQUENCE_FINAL",
    "Block",
    "BlockHeader",
    "OutPoint",
    "SerializedTx",
    "Tx",
    "TxIn",
    "TxOut",
    "as_tx",
    "block_hash_hex",
    "hash_from_hex",
    "merkle_root",
    "sha256d",
]

#: consensus: no block (so no transaction) weighs more than this (BIP141)
MAX_BLOCK_WEIGHT = 4_000_000
#: a block's serialized size can never exceed its weight limit
MAX_BLOCK_BYTES = MAX_BLOCK_WEIGHT
#: consensus: 21 million BTC, the largest amount any output may carry
MAX_MONEY_SAT = 21_000_000 * 100_000_000
#: nSequence value that opts an input out of nLockTime and BIP68
SEQUENCE_FINAL = 0xFFFFFFFF
#: smallest serialized input (36 outpoint + 1 script length + 4 sequence): bounds
#: the count a parser believes before allocating
_MIN_TXIN_BYTES = 41
#: smallest serialized output (8 amount + 1 script length)
_MIN_TXOUT_BYTES = 9
#: smallest transaction (version, 1 input, 1 output, locktime): bounds block tx counts
_MIN_TX_BYTES = 60
_HEADER_BYTES = 80


def sha256d(data: bytes) -> bytes:
    """Double SHA-256, Bitcoin's hash for txids, block hashes and merkle nodes."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_from_hex(text: str) -> bytes:
    """A display-order hex hash (as Bitcoin Core prints it) to internal order."""
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError) as exc:
        raise ChainError(f"not a hex hash: {text!r}", code="malformed") from exc
    if len(raw) != 32:
        raise ChainError(f"a hash has 32 bytes, got {len(raw)}", code="malformed")
    return raw[::-1]


def block_hash_hex(h: bytes) -> str:
    """An internal-order hash in display order (as Bitcoin Core prints it)."""
    return h[::-1].hex()


def merkle_root(hashes: list[bytes]) -> bytes:
    """The merkle root of txids (or wtxids) in internal order, as Bitcoin computes it
    (an odd level repeats its last node)."""
    if not hashes:
        raise ChainError("merkle root of no transactions", code="malformed")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def _untrusted(data: object, what: str) -> bytes:
    """Bytes to parse, refused when not bytes or larger than any block can be."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ChainError(f"a {what} is bytes", code="malformed")
    if len(data) > MAX_BLOCK_BYTES:
        raise ChainError(
            f"{what} larger than the consensus block limit", code="malformed"
        )
    return bytes(data)


class _Reader:
    """A cursor over untrusted bytes that fails with ``ChainError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining():
            raise ChainError("truncated data", code="malformed")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def i32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def varint(self) -> int:
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
            # Core rejects non-canonical CompactSize ("non-canonical ReadCompactSize()")
            raise ChainError("non-canonical compact size", code="malformed")
        return int(n)

    def count(self, min_item_bytes: int) -> int:
        n = self.varint()
        if n * min_item_bytes > self.remaining():
            raise ChainError("item count larger than the data", code="malformed")
        return n

    def var_bytes(self) -> bytes:
        n = self.varint()
        return self.take(n)


@dataclass(frozen=True, slots=True, order=True)
class OutPoint:
    """A transaction output's address: ``txid`` (internal order) and index."""

    txid: bytes
    vout: int

    def __post_init__(self) -> None:
        if not isinstance(self.txid, bytes) or len(self.txid) != 32:
            raise ChainError("an outpoint's txid has 32 bytes", code="malformed")
        if not 0 <= self.vout <= 0xFFFFFFFF:
            raise ChainError(
                f"output index out of range: {self.vout}", code="malformed"
            )

    def __str__(self) -> str:
        return f"{block_hash_hex(self.txid)}:{self.vout}"

    @classmethod
    def from_str(cls, text: str) -> OutPoint:
        """Parse ``<txid hex, display order>:<vout>``."""
        txid_hex, sep, vout = text.rpartition(":")
        if not sep or not vout.isdigit():
            raise ChainError(f"not an outpoint: {text!r}", code="malformed")
        return cls(hash_from_hex(txid_hex), int(vout))

    def serialize(self) -> bytes:
        return self.txid + struct.pack("<I", self.vout)


@dataclass(frozen=True, slots=True)
class TxIn:
    """One input: the outpoint it spends, scriptSig, nSequence and witness stack."""

    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TxOut:
    """One output: an amount in satoshis and the script that locks it."""

    amount_sat: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        # the wire field is a signed 64-bit integer; consensus bounds are checked by the kernel
        if not -(2**63) <= self.amount_sat < 2**63:
            raise ChainError(
                f"amount out of range: {self.amount_sat}", code="malformed"
            )

    def serialize(self) -> bytes:
        return (
            struct.pack("<q", self.amount_sat)
            + _varint(len(self.script_pubkey))
            + self.script_pubkey
        )


@dataclass(frozen=True, slots=True)
class Tx:
    """A transaction. ``txid``, ``wtxid``, ``raw`` and ``weight`` are computed once."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0
    raw: bytes = field(init=False, repr=False, compare=False)
    txid: bytes = field(init=False, repr=False, compare=False)
    wtxid: bytes = field(init=False, repr=False, compare=False)
    weight: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        stripped = self._serialize(False)
        full = self._serialize(True) if self.has_witness else stripped
        object.__setattr__(self, "raw", full)
        object.__setattr__(self, "txid", sha256d(stripped))
        object.__setattr__(self, "wtxid", sha256d(full))
        object.__setattr__(self, "weight", len(stripped) * 3 + len(full))

    @property
    def has_witness(self) -> bool:
        return any(txin.witness for txin in self.inputs)

    @property
    def vsize(self) -> int:
        """Virtual size in vbytes (weight / 4, rounded up)."""
        return (self.weight + 3) // 4

    @property
    def txid_hex(self) -> str:
        return block_hash_hex(self.txid)

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].prevout == _NULL_OUTPOINT

    def outpoint(self, vout: int) -> OutPoint:
        """The outpoint of this transaction's output ``vout``."""
        return OutPoint(self.txid, vout)

    def serialize(self, with_witness: bool = True) -> bytes:
        return self.raw if with_witness else self._serialize(False)

    def _serialize(self, with_witness: bool) -> bytes:
        parts = [struct.pack("<i", self.version)]
        if with_witness:
            parts.append(b"\x00\x01")
        parts.append(_varint(len(self.inputs)))
        for txin in self.inputs:
            parts += [
                txin.prevout.serialize(),
                _varint(len(txin.script_sig)),
                txin.script_sig,
                struct.pack("<I", txin.sequence),
            ]
        parts.append(_varint(len(self.outputs)))
        parts += [out.serialize() for out in self.outputs]
        if with_witness:
            for txin in self.inputs:
                parts.append(_varint(len(txin.witness)))
                for item in txin.witness:
                    parts += [_varint(len(item)), item]
        parts.append(struct.pack("<I", self.locktime))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> Tx:
        """Parse one serialized transaction (with or without witness)."""
        reader = _Reader(_untrusted(data, "transaction"))
        tx = cls._read(reader)
        if reader.remaining():
            raise ChainError("trailing bytes after the transaction", code="malformed")
        return tx

    @classmethod
    def _read(cls, r: _Reader) -> Tx:
        version = r.i32()
        n_in = r.count(_MIN_TXIN_BYTES)
        segwit = False
        if n_in == 0:
            # BIP144: marker 0x00 then flag 0x01; a true zero-input tx is invalid anyway
            if r.u8() != 1:
                raise ChainError(
                    "unknown transaction serialization flag", code="malformed"
                )
            segwit = True
            n_in = r.count(_MIN_TXIN_BYTES)
        if n_in == 0:
            raise ChainError("transaction without inputs", code="malformed")
        prevouts = []
        for _ in range(n_in):
            prevout = OutPoint(r.take(32), r.u32())
            prevouts.append((prevout, r.var_bytes(), r.u32()))
        n_out = r.count(_MIN_TXOUT_BYTES)
        outputs = []
        for _ in range(n_out):
            amount = struct.unpack("<q", r.take(8))[0]
            outputs.append(TxOut(int(amount), r.var_bytes()))
        witnesses: list[tuple[bytes, ...]] = [() for _ in range(n_in)]
        if segwit:
            for i in range(n_in):
                n_items = r.count(1)
                witnesses[i] = tuple(r.var_bytes() for _ in range(n_items))
            if not any(witnesses):
                raise ChainError("superfluous witness record", code="malformed")
        locktime = r.u32()
        inputs = tuple(TxIn(p, s, q, w) for (p, s, q), w in zip(prevouts, witnesses))
        return cls(version, inputs, tuple(outputs), locktime)


_NULL_OUTPOINT = OutPoint(b"\x00" * 32, 0xFFFFFFFF)


class SerializedTx(Protocol):
    """Any transaction object that serializes itself (as ``lnpmsg.channels.tx.Tx`` does)."""

    def serialize(self) -> bytes: ...


def as_tx(value: bytes | bytearray | Tx | SerializedTx) -> Tx:
    """A transaction given as bytes, as a ``Tx``, or as any object with
    ``serialize()`` (another layer's model), parsed into this module's ``Tx``."""
    if isinstance(value, Tx):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Tx.parse(bytes(value))
    serialize = getattr(value, "serialize", None)
    if not callable(serialize):
        raise ChainError(f"not a transaction: {type(value).__name__}", code="malformed")
    raw = serialize()
    if not isinstance(raw, (bytes, bytearray)):
        raise ChainError("serialize() did not return bytes", code="malformed")
    return Tx.parse(bytes(raw))


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
        if len(data) != _HEADER_BYTES:
            raise ChainError(
                f"a block header has 80 bytes, got {len(data)}", code="malformed"
            )
        return cls._read(_Reader(bytes(data)))

    @classmethod
    def _read(cls, r: _Reader) -> BlockHeader:
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
        return (
            self.header.serialize()
            + _varint(len(self.txs))
            + b"".join(tx.raw for tx in self.txs)
        )

    @classmethod
    def parse(cls, data: bytes) -> Block:
        """Parse a serialized block. Structure only: consensus is the kernel's job."""
        r = _Reader(_untrusted(data, "block"))
        header = BlockHeader._read(r)
        n_tx = r.count(_MIN_TX_BYTES)
        if n_tx == 0:
            raise ChainError("block without transactions", code="malformed")
        txs = tuple(Tx._read(r) for _ in range(n_tx))
        if r.remaining():
            raise ChainError("trailing bytes after the block", code="malformed")
        return cls(header, txs)
