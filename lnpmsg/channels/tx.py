"""A small, exact Bitcoin transaction model: serialization, txids, sighashes, signatures.

Hand-written rather than taken from a library (embit, wallycore): the channel
layer needs only version-2 transactions with segwit v0 and legacy inputs, the
BIP-143 and legacy signature hashes (all sighash types, since anchor HTLC
signatures use ``SIGHASH_SINGLE|SIGHASH_ANYONECANPAY``) and DER signatures;
that is a few hundred lines over ``hashlib`` and coincurve, with frozen
dataclasses the rest of lnpmsg can hash and compare, and no new dependency.
Every byte of it is checked against the BOLT-3 vectors.

Txids are kept in internal byte order (as serialized); ``txid_hex`` and
``OutPoint.from_hex`` convert to and from the reversed hex that explorers and
RPCs print.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import coincurve

from .errors import ChannelError
from .hashes import hash256

__all__ = [
    "MAX_MONEY",
    "SEQUENCE_FINAL",
    "SIGHASH_ALL",
    "SIGHASH_ANYONECANPAY",
    "SIGHASH_NONE",
    "SIGHASH_SINGLE",
    "OutPoint",
    "Tx",
    "TxIn",
    "TxOut",
    "compact_to_der",
    "der_to_compact",
    "legacy_sighash",
    "segwit_v0_sighash",
    "sign_digest",
    "verify_digest",
]

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
#: An input sequence that opts out of locktime and relative locktime.
SEQUENCE_FINAL = 0xFFFFFFFF
#: 21 million BTC in satoshis: no amount may exceed it (consensus rule).
MAX_MONEY = 21_000_000 * 100_000_000
# A block holds at most 4M weight units, so no real transaction has more items than this.
_MAX_ITEMS = 1_000_000
_WITNESS_SCALE = 4


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _varbytes(data: bytes) -> bytes:
    return _varint(len(data)) + data


@dataclass(frozen=True, slots=True)
class OutPoint:
    """A reference to output ``index`` of the transaction ``txid`` (internal byte order)."""

    txid: bytes
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.txid, bytes) or len(self.txid) != 32:
            raise ChannelError("an outpoint's txid is 32 bytes")
        if not 0 <= self.index <= 0xFFFFFFFF:
            raise ChannelError(f"output index {self.index} out of range")

    @classmethod
    def from_hex(cls, txid_hex: str, index: int) -> OutPoint:
        """From a txid as printed (reversed hex) and an output index."""
        try:
            raw = bytes.fromhex(txid_hex)
        except ValueError as exc:
            raise ChannelError("txid is not hex") from exc
        return cls(raw[::-1], index)

    @property
    def txid_hex(self) -> str:
        """The txid as printed (reversed hex)."""
        return self.txid[::-1].hex()

    def serialize(self) -> bytes:
        """36 bytes: txid then index, little-endian."""
        return self.txid + self.index.to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class TxIn:
    """A transaction input; ``witness`` is the segwit stack (empty for legacy inputs)."""

    prevout: OutPoint
    sequence: int = SEQUENCE_FINAL
    script_sig: bytes = b""
    witness: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= 0xFFFFFFFF:
            raise ChannelError(f"sequence {self.sequence} out of range")
        object.__setattr__(self, "witness", tuple(bytes(item) for item in self.witness))


@dataclass(frozen=True, slots=True)
class TxOut:
    """A transaction output."""

    amount_sat: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.amount_sat <= MAX_MONEY:
            raise ChannelError(f"output amount {self.amount_sat} out of range")

    def serialize(self) -> bytes:
        """Amount (8 bytes little-endian) then the length-prefixed script."""
        return self.amount_sat.to_bytes(8, "little") + _varbytes(self.script_pubkey)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ChannelError("transaction is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.take(size), "little")
        if value < (0xFD if size == 2 else 1 << (4 * size)):
            raise ChannelError("non-canonical compact size")
        return value

    def count(self) -> int:
        value = self.varint()
        if value > _MAX_ITEMS or value > len(self.data) - self.pos:
            raise ChannelError(f"item count {value} is larger than the transaction")
        return value

    def varbytes(self) -> bytes:
        return self.take(self.count())


@dataclass(frozen=True, slots=True)
class Tx:
    """A Bitcoin transaction (immutable: the ``with_*`` methods return changed copies)."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not 0 <= self.locktime <= 0xFFFFFFFF:
            raise ChannelError(f"locktime {self.locktime} out of range")
        if not -(1 << 31) <= self.version < (1 << 31):
            raise ChannelError(f"version {self.version} out of range")

    @property
    def has_witness(self) -> bool:
        """Whether any input carries a witness stack."""
        return any(txin.witness for txin in self.inputs)

    def serialize(self, *, witness: bool = True) -> bytes:
        """The transaction bytes (BIP-144 with witness if any and ``witness`` is true)."""
        with_witness = witness and self.has_witness
        out = bytearray(struct.pack("<i", self.version))
        if with_witness:
            out += b"\x00\x01"
        out += _varint(len(self.inputs))
        for txin in self.inputs:
            out += txin.prevout.serialize() + _varbytes(txin.script_sig) + txin.sequence.to_bytes(4, "little")
        out += _varint(len(self.outputs))
        for txout in self.outputs:
            out += txout.serialize()
        if with_witness:
            for txin in self.inputs:
                out += _varint(len(txin.witness))
                for item in txin.witness:
                    out += _varbytes(item)
        out += self.locktime.to_bytes(4, "little")
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes) -> Tx:
        """Parse a serialized transaction (with or without witness); ``ChannelError`` if malformed."""
        reader = _Reader(bytes(data))
        version = struct.unpack("<i", reader.take(4))[0]
        segwit = reader.data[reader.pos : reader.pos + 2] == b"\x00\x01"
        if segwit:
            reader.take(2)
        raw_inputs = []
        for _ in range(reader.count()):
            prevout = OutPoint(reader.take(32), reader.u32())
            script_sig = reader.varbytes()
            raw_inputs.append((prevout, script_sig, reader.u32()))
        outputs = []
        for _ in range(reader.count()):
            amount = int.from_bytes(reader.take(8), "little")
            outputs.append(TxOut(amount, reader.varbytes()))
        witnesses: list[tuple[bytes, ...]] = [()] * len(raw_inputs)
        if segwit:
            witnesses = [tuple(reader.varbytes() for _ in range(reader.count())) for _ in raw_inputs]
            if not any(witnesses):
                raise ChannelError("segwit marker set but every witness is empty")
        locktime = reader.u32()
        if reader.pos != len(reader.data):
            raise ChannelError("trailing bytes after the transaction")
        inputs = [
            TxIn(prevout, sequence, script_sig, witness)
            for (prevout, script_sig, sequence), witness in zip(raw_inputs, witnesses, strict=True)
        ]
        return cls(version, tuple(inputs), tuple(outputs), locktime)

    def txid(self) -> bytes:
        """The txid in internal byte order (hash of the serialization without witness)."""
        return hash256(self.serialize(witness=False))

    @property
    def txid_hex(self) -> str:
        """The txid as printed (reversed hex)."""
        return self.txid()[::-1].hex()

    def wtxid(self) -> bytes:
        """The witness txid in internal byte order."""
        return hash256(self.serialize())

    def outpoint(self, index: int) -> OutPoint:
        """The outpoint of this transaction's output ``index``."""
        if not 0 <= index < len(self.outputs):
            raise ChannelError(f"no output {index}")
        return OutPoint(self.txid(), index)

    @property
    def weight(self) -> int:
        """BIP-141 weight: 3 x base size + total size."""
        base = len(self.serialize(witness=False))
        return base * (_WITNESS_SCALE - 1) + len(self.serialize())

    @property
    def vsize(self) -> int:
        """Virtual size in vbytes (weight / 4, rounded up)."""
        return -(-self.weight // _WITNESS_SCALE)

    def with_witness(self, index: int, stack: Iterable[bytes]) -> Tx:
        """A copy with input ``index``'s witness replaced."""
        inputs = list(self.inputs)
        inputs[index] = replace(inputs[index], witness=tuple(stack))
        return replace(self, inputs=tuple(inputs))

    def with_script_sig(self, index: int, script_sig: bytes) -> Tx:
        """A copy with input ``index``'s scriptSig replaced."""
        inputs = list(self.inputs)
        inputs[index] = replace(inputs[index], script_sig=bytes(script_sig))
        return replace(self, inputs=tuple(inputs))

    def without_witness(self) -> Tx:
        """A copy with every witness stack emptied."""
        return replace(self, inputs=tuple(replace(txin, witness=()) for txin in self.inputs))


def _check_sighash_type(tx: Tx, input_index: int, sighash_type: int) -> int:
    if not 0 <= input_index < len(tx.inputs):
        raise ChannelError(f"no input {input_index}")
    base = sighash_type & 0x1F
    if base not in (SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE) or sighash_type & ~0x9F:
        raise ChannelError(f"unsupported sighash type {sighash_type:#x}")
    return base


def segwit_v0_sighash(tx: Tx, input_index: int, script_code: bytes, amount_sat: int, sighash_type: int) -> bytes:
    """The BIP-143 signature hash of input ``input_index`` spending ``amount_sat`` under ``script_code``."""
    base = _check_sighash_type(tx, input_index, sighash_type)
    anyone_can_pay = bool(sighash_type & SIGHASH_ANYONECANPAY)
    zero = bytes(32)
    hash_prevouts = zero if anyone_can_pay else hash256(b"".join(i.prevout.serialize() for i in tx.inputs))
    if anyone_can_pay or base != SIGHASH_ALL:
        hash_sequence = zero
    else:
        hash_sequence = hash256(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs))
    if base == SIGHASH_ALL:
        hash_outputs = hash256(b"".join(o.serialize() for o in tx.outputs))
    elif base == SIGHASH_SINGLE and input_index < len(tx.outputs):
        hash_outputs = hash256(tx.outputs[input_index].serialize())
    else:
        hash_outputs = zero
    txin = tx.inputs[input_index]
    preimage = b"".join(
        (
            struct.pack("<i", tx.version),
            hash_prevouts,
            hash_sequence,
            txin.prevout.serialize(),
            _varbytes(script_code),
            amount_sat.to_bytes(8, "little"),
            txin.sequence.to_bytes(4, "little"),
            hash_outputs,
            tx.locktime.to_bytes(4, "little"),
            sighash_type.to_bytes(4, "little"),
        )
    )
    return hash256(preimage)


def legacy_sighash(tx: Tx, input_index: int, script_code: bytes, sighash_type: int) -> bytes:
    """The pre-segwit signature hash (for P2PKH and bare-script inputs such as wallet coins)."""
    base = _check_sighash_type(tx, input_index, sighash_type)
    if base == SIGHASH_SINGLE and input_index >= len(tx.outputs):
        # Bitcoin Core signs the number one here (a historical bug kept for consensus).
        return (1).to_bytes(32, "little")
    inputs = []
    for i, txin in enumerate(tx.inputs):
        if i == input_index:
            inputs.append(replace(txin, script_sig=script_code, witness=()))
        elif not sighash_type & SIGHASH_ANYONECANPAY:
            sequence = txin.sequence if base == SIGHASH_ALL else 0
            inputs.append(replace(txin, script_sig=b"", sequence=sequence, witness=()))
    if sighash_type & SIGHASH_ANYONECANPAY:
        inputs = [replace(tx.inputs[input_index], script_sig=script_code, witness=())]
    outputs: Sequence[TxOut | _BlankOutput]
    if base == SIGHASH_NONE:
        outputs = ()
    elif base == SIGHASH_SINGLE:
        outputs = [_BlankOutput()] * input_index + [tx.outputs[input_index]]
    else:
        outputs = tx.outputs
    body = bytearray(struct.pack("<i", tx.version))
    body += _varint(len(inputs))
    for txin in inputs:
        body += txin.prevout.serialize() + _varbytes(txin.script_sig) + txin.sequence.to_bytes(4, "little")
    body += _varint(len(outputs))
    for txout in outputs:
        body += txout.serialize()
    body += tx.locktime.to_bytes(4, "little") + sighash_type.to_bytes(4, "little")
    return hash256(bytes(body))


class _BlankOutput:
    """The ``-1`` amount, empty-script output that SIGHASH_SINGLE puts before the signed one."""

    __slots__ = ()

    def serialize(self) -> bytes:
        return b"\xff" * 8 + b"\x00"


# --- ECDSA signatures (libsecp256k1 through coincurve: RFC 6979 nonces, low-S).


def sign_digest(privkey: bytes, digest: bytes) -> bytes:
    """A DER signature of a 32-byte digest (deterministic RFC 6979 nonce, low S)."""
    if len(digest) != 32:
        raise ChannelError("a signature hash is 32 bytes")
    try:
        return coincurve.PrivateKey(bytes(privkey)).sign(digest, hasher=None)
    except ValueError as exc:
        raise ChannelError("invalid private key") from exc


def verify_digest(pubkey: bytes, der_signature: bytes, digest: bytes) -> bool:
    """Whether ``der_signature`` is a valid low-S signature of ``digest`` by ``pubkey``."""
    try:
        compact = der_to_compact(der_signature)
        key = coincurve.PublicKey(bytes(pubkey))
        return key.verify(compact_to_der(compact), digest, hasher=None)
    except (ChannelError, ValueError, TypeError):
        return False


def _der_int(reader: _Reader) -> int:
    if reader.take(1) != b"\x02":
        raise ChannelError("DER: expected an integer")
    size = reader.take(1)[0]
    if not 1 <= size <= 33:
        raise ChannelError("DER: bad integer length")
    raw = reader.take(size)
    if raw[0] & 0x80:
        raise ChannelError("DER: negative integer")
    if size > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise ChannelError("DER: integer not minimally encoded")
    return int.from_bytes(raw, "big")


def der_to_compact(der_signature: bytes) -> bytes:
    """The 64-byte ``r || s`` form (as in BOLT messages) of a strict-DER signature."""
    reader = _Reader(bytes(der_signature))
    if reader.take(1) != b"\x30" or reader.take(1)[0] != len(der_signature) - 2:
        raise ChannelError("DER: bad sequence header")
    r = _der_int(reader)
    s = _der_int(reader)
    if reader.pos != len(reader.data):
        raise ChannelError("DER: trailing bytes")
    if r >= 1 << 256 or s >= 1 << 256:
        raise ChannelError("DER: integer too large")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _der_encode_int(value: int) -> bytes:
    raw = value.to_bytes(32, "big").lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def compact_to_der(compact: bytes) -> bytes:
    """The strict-DER form of a 64-byte ``r || s`` signature."""
    if len(compact) != 64:
        raise ChannelError("a compact signature is 64 bytes")
    body = _der_encode_int(int.from_bytes(compact[:32], "big")) + _der_encode_int(int.from_bytes(compact[32:], "big"))
    return b"\x30" + bytes([len(body)]) + body
