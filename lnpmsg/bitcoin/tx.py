"""Bitcoin transactions: build, serialize (BIP144), parse, txid, wtxid, weight.

The one transaction model of lnpmsg: the chain layer validates and mines
these, the wallet signs them, the channel layer builds BOLT-3 transactions
with them. Hand-written rather than taken from a library: a few hundred lines
over ``hashlib``, frozen dataclasses the rest of lnpmsg can hash and compare,
every byte checked against the BOLT-3 vectors and Bitcoin Core's consensus
engine (``tests/test_onchain_channel.py``).

Objects are immutable; ``txid``, ``wtxid``, ``raw`` and ``weight`` are
computed on first use and cached, and the ``with_*`` methods return changed
copies. Hashes are in internal byte order (see ``lnpmsg.bitcoin.hashes``).

``Tx.parse`` takes untrusted bytes, consumes the whole buffer, accepts only
what it would serialize back to the same bytes, and raises nothing but
``BitcoinError``. Amounts are checked against the wire field's range only:
consensus limits (``MAX_MONEY``, no spending more than the inputs) are the
kernel's to enforce, so a chain can parse an invalid block and report why.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from lnpmsg.bitcoin.encoding import Reader, compact_size, var_bytes
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex, sha256d

__all__ = [
    "LOCKTIME_THRESHOLD",
    "MAX_MONEY",
    "SEQUENCE_FINAL",
    "SEQUENCE_RBF",
    "WITNESS_SCALE_FACTOR",
    "OutPoint",
    "Tx",
    "TxIn",
    "TxOut",
]

#: consensus: 21 million BTC in satoshis, the most any output (or their sum) may carry
MAX_MONEY = 21_000_000 * 100_000_000
#: nSequence that opts an input out of nLockTime and BIP68 relative locktimes
SEQUENCE_FINAL = 0xFFFFFFFF
#: the highest nSequence that signals replaceability (BIP125) and keeps nLockTime in force
SEQUENCE_RBF = 0xFFFFFFFD
#: nLockTime (and OP_CHECKLOCKTIMEVERIFY) values below this are block heights, from it UNIX times
LOCKTIME_THRESHOLD = 500_000_000
#: BIP141: a non-witness byte weighs 4, a witness byte 1
WITNESS_SCALE_FACTOR = 4
#: smallest serialized input (36 outpoint + 1 script length + 4 sequence): bounds counts
_MIN_TXIN_BYTES = 41
#: smallest serialized output (8 amount + 1 script length)
_MIN_TXOUT_BYTES = 9
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, order=True)
class OutPoint:
    """A transaction output's address: ``txid`` (internal order) and output index ``vout``."""

    txid: bytes
    vout: int

    def __post_init__(self) -> None:
        if not isinstance(self.txid, bytes) or len(self.txid) != 32:
            raise BitcoinError("an outpoint's txid has 32 bytes")
        if not isinstance(self.vout, int) or not 0 <= self.vout <= _U32_MAX:
            raise BitcoinError(f"output index out of range: {self.vout!r}")

    def __str__(self) -> str:
        return f"{self.txid_hex}:{self.vout}"

    @classmethod
    def from_str(cls, text: str) -> OutPoint:
        """Parse ``<txid, display hex>:<vout>`` (what ``str()`` gives)."""
        txid_hex, sep, vout = text.rpartition(":")
        if not sep or not vout.isdigit():
            raise BitcoinError(f"not an outpoint: {text!r}")
        return cls(hash_from_hex(txid_hex), int(vout))

    @classmethod
    def from_hex(cls, txid_hex: str, vout: int) -> OutPoint:
        """From a txid as printed (display hex) and an output index."""
        return cls(hash_from_hex(txid_hex), vout)

    @property
    def txid_hex(self) -> str:
        """The txid as printed (display hex)."""
        return hash_to_hex(self.txid)

    def serialize(self) -> bytes:
        """36 bytes: txid then index, little-endian."""
        return self.txid + struct.pack("<I", self.vout)


@dataclass(frozen=True, slots=True)
class TxIn:
    """One input: the outpoint it spends, scriptSig, nSequence and witness stack (empty if none)."""

    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.sequence, int) or not 0 <= self.sequence <= _U32_MAX:
            raise BitcoinError(f"sequence out of range: {self.sequence!r}")
        object.__setattr__(self, "script_sig", bytes(self.script_sig))
        object.__setattr__(self, "witness", tuple(bytes(item) for item in self.witness))


@dataclass(frozen=True, slots=True)
class TxOut:
    """One output: an amount in satoshis and the script that locks it."""

    amount_sat: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        # the wire field is a signed 64-bit integer; consensus bounds are the kernel's
        if not isinstance(self.amount_sat, int) or not -(2**63) <= self.amount_sat < 2**63:
            raise BitcoinError(f"amount out of range: {self.amount_sat!r}")
        object.__setattr__(self, "script_pubkey", bytes(self.script_pubkey))

    def serialize(self) -> bytes:
        """Amount (8 bytes little-endian) then the length-prefixed script."""
        return struct.pack("<q", self.amount_sat) + var_bytes(self.script_pubkey)


@dataclass(frozen=True, slots=True)
class Tx:
    """A transaction (immutable: the ``with_*`` methods return changed copies)."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0
    # (without witness, with witness) serializations, computed on first use
    _encoded: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False, compare=False)
    _ids: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.version, int) or not -(2**31) <= self.version < 2**31:
            raise BitcoinError(f"version out of range: {self.version!r}")
        if not isinstance(self.locktime, int) or not 0 <= self.locktime <= _U32_MAX:
            raise BitcoinError(f"locktime out of range: {self.locktime!r}")

    # -- encodings and hashes ---------------------------------------------------

    def _encodings(self) -> tuple[bytes, bytes]:
        encoded = self._encoded
        if encoded is None:
            stripped = self._serialize(False)
            encoded = (stripped, self._serialize(True) if self.has_witness else stripped)
            object.__setattr__(self, "_encoded", encoded)
        return encoded

    def serialize(self, *, witness: bool = True) -> bytes:
        """The transaction's bytes: BIP144 with witness data if it has any and ``witness`` is true."""
        stripped, full = self._encodings()
        return full if witness else stripped

    @property
    def raw(self) -> bytes:
        """``serialize()``: the bytes to broadcast or put in a block."""
        return self._encodings()[1]

    def _hashes(self) -> tuple[bytes, bytes]:
        ids = self._ids
        if ids is None:
            stripped, full = self._encodings()
            txid = sha256d(stripped)
            ids = (txid, txid if full is stripped else sha256d(full))
            object.__setattr__(self, "_ids", ids)
        return ids

    @property
    def txid(self) -> bytes:
        """The txid (hash of the serialization without witness), internal byte order."""
        return self._hashes()[0]

    @property
    def wtxid(self) -> bytes:
        """The witness txid (hash of the full serialization), internal byte order."""
        return self._hashes()[1]

    @property
    def txid_hex(self) -> str:
        """The txid as printed (display hex)."""
        return hash_to_hex(self.txid)

    @property
    def weight(self) -> int:
        """BIP141 weight: 3 x size without witness + full size."""
        stripped, full = self._encodings()
        return len(stripped) * (WITNESS_SCALE_FACTOR - 1) + len(full)

    @property
    def vsize(self) -> int:
        """Virtual size in vbytes (weight / 4, rounded up)."""
        return -(-self.weight // WITNESS_SCALE_FACTOR)

    @property
    def has_witness(self) -> bool:
        """Whether any input carries a witness stack."""
        return any(txin.witness for txin in self.inputs)

    @property
    def is_coinbase(self) -> bool:
        """Whether this is a coinbase (one input spending the null outpoint)."""
        return (
            len(self.inputs) == 1
            and self.inputs[0].prevout.vout == _U32_MAX
            and self.inputs[0].prevout.txid == bytes(32)
        )

    def outpoint(self, vout: int) -> OutPoint:
        """The outpoint of this transaction's output ``vout``."""
        if not 0 <= vout < len(self.outputs):
            raise BitcoinError(f"no output {vout}")
        return OutPoint(self.txid, vout)

    # -- changed copies ---------------------------------------------------------

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

    # -- wire format ------------------------------------------------------------

    def _serialize(self, with_witness: bool) -> bytes:
        parts = [struct.pack("<i", self.version)]
        if with_witness:
            parts.append(b"\x00\x01")
        parts.append(compact_size(len(self.inputs)))
        for txin in self.inputs:
            parts += [txin.prevout.serialize(), var_bytes(txin.script_sig), struct.pack("<I", txin.sequence)]
        parts.append(compact_size(len(self.outputs)))
        parts += [out.serialize() for out in self.outputs]
        if with_witness:
            for txin in self.inputs:
                parts.append(compact_size(len(txin.witness)))
                parts += [var_bytes(item) for item in txin.witness]
        parts.append(struct.pack("<I", self.locktime))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> Tx:
        """Parse one serialized transaction (with or without witness data)."""
        reader = Reader(data, "transaction")
        tx = cls.read(reader)
        reader.end("transaction")
        return tx

    @classmethod
    def read(cls, r: Reader) -> Tx:
        """Read one transaction at the reader's position (as in a block)."""
        version = r.i32()
        n_in = r.count(_MIN_TXIN_BYTES)
        segwit = False
        if n_in == 0:
            # BIP144: marker 0x00 then flag 0x01 (a real zero-input transaction is invalid anyway)
            if r.u8() != 1:
                raise BitcoinError("unknown transaction serialization flag")
            segwit = True
            n_in = r.count(_MIN_TXIN_BYTES)
            if n_in == 0:
                raise BitcoinError("transaction without inputs")
        prevouts = []
        for _ in range(n_in):
            prevout = OutPoint(r.take(32), r.u32())
            prevouts.append((prevout, r.var_bytes(), r.u32()))
        outputs = tuple(TxOut(r.i64(), r.var_bytes()) for _ in range(r.count(_MIN_TXOUT_BYTES)))
        witnesses: list[tuple[bytes, ...]] = [()] * n_in
        if segwit:
            witnesses = [tuple(r.var_bytes() for _ in range(r.count(1))) for _ in range(n_in)]
            if not any(witnesses):
                raise BitcoinError("superfluous witness record")
        locktime = r.u32()
        inputs = tuple(
            TxIn(prevout, script_sig, sequence, witness)
            for (prevout, script_sig, sequence), witness in zip(prevouts, witnesses, strict=True)
        )
        return cls(version, inputs, outputs, locktime)
