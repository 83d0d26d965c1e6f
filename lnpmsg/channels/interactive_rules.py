"""The rules of BOLT-2 interactive transaction construction that look at one item alone.

Script classes (what a received ``prevtx`` output and ``tx_add_output`` script
may be), the weight each contribution is charged for (fee responsibility),
and the witnesses ``tx_signatures`` may carry. Pure functions, no I/O: the
session in :mod:`.interactive_tx` calls them.
"""

from __future__ import annotations

from lnpmsg.bitcoin.encoding import Reader, compact_size, var_bytes
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash160
from lnpmsg.bitcoin.script import p2wsh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL

__all__ = [
    "COMMON_FIELDS_WEIGHT",
    "FUNDING_PLACEHOLDER",
    "MAX_RECEIVED_ADDS",
    "MAX_STANDARD_TX_WEIGHT",
    "MAX_TX_INPUTS",
    "MAX_TX_OUTPUTS",
    "MAX_SEQUENCE",
    "check_witness",
    "decode_witness",
    "encode_witness",
    "input_weight",
    "is_segwit_script",
    "is_standard_output_script",
    "output_weight",
]

#: BOLT 2: the negotiation fails once a peer has sent this many tx_add_input (or tx_add_output):
#: a bound on what one peer can make us hold
MAX_RECEIVED_ADDS = 4096
#: BOLT 2: at tx_complete, more inputs (outputs) than this fail it; it keeps both counts one byte
MAX_TX_INPUTS = 252
MAX_TX_OUTPUTS = 252
#: Bitcoin Core's relay limit, which BOLT 2 applies to the estimated weight at tx_complete
MAX_STANDARD_TX_WEIGHT = 400_000
#: the highest nSequence an input may carry (it must signal replaceability)
MAX_SEQUENCE = 0xFFFFFFFD
#: version (4) + input count (1) + output count (1) + locktime (4), times 4, plus the
#: segwit marker and flag (2 witness bytes): the initiator pays for these
COMMON_FIELDS_WEIGHT = (4 + 1 + 1 + 4) * 4 + 2
#: stands for a new funding output (a v2 open's, a splice's) while the wallet picks our coins and
#: the fees are counted: a P2WSH, the size of the real one. The wallet's transaction paying it
#: (never broadcast) is how the coins of an open or a splice stay reserved, so at start the
#: channels app knows those transactions by this script (and frees those of attempts that ended).
#: Its preimage must never change: wallets hold such transactions across upgrades
FUNDING_PLACEHOLDER = p2wsh(b"lnpmsg: the funding output of a dual-funded channel")

#: outpoint (36) + empty scriptSig length (1) + nSequence (4): every segwit input's base bytes
_INPUT_BASE_WEIGHT = (36 + 1 + 4) * 4
#: a P2WPKH witness at its largest: item count, a 72-byte signature (DER plus sighash), a 33-byte key
_P2WPKH_WITNESS_WEIGHT = 1 + 1 + 72 + 1 + 33
#: a P2TR key-path witness with an explicit sighash byte: item count, a 65-byte signature
_P2TR_WITNESS_WEIGHT = 1 + 1 + 65
#: any other witness weighs at least its item count and one item length: the sender pays the rest
_MIN_WITNESS_WEIGHT = 2

_OP_0 = 0x00
_OP_1 = 0x51
_OP_16 = 0x60
_OP_RETURN = 0x6A
#: Bitcoin Core's default -datacarriersize (an OP_RETURN script of at most 83 bytes relays)
_MAX_OP_RETURN_SCRIPT = 83


def is_segwit_script(script: bytes) -> bool:
    """BOLT 2's test of a spent output: a 1-byte push of 0..16, then one 2..40-byte data push, nothing else."""
    if len(script) < 4 or len(script) > 42:
        return False
    version, push = script[0], script[1]
    return (version == _OP_0 or _OP_1 <= version <= _OP_16) and 2 <= push <= 40 and len(script) == 2 + push


def _witness_program(script: bytes) -> tuple[int, bytes] | None:
    if not is_segwit_script(script):
        return None
    version = 0 if script[0] == _OP_0 else script[0] - _OP_1 + 1
    return version, script[2:]


def is_standard_output_script(script: bytes) -> bool:
    """What Bitcoin Core relays as an output: P2PKH, P2SH, the v0 witness programs, P2TR,
    a future witness version, or a small OP_RETURN."""
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return True  # P2PKH
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return True  # P2SH
    if script[:1] == bytes([_OP_RETURN]):
        return len(script) <= _MAX_OP_RETURN_SCRIPT
    program = _witness_program(script)
    if program is None:
        return False
    version, data = program
    if version == 0:
        return len(data) in (20, 32)  # P2WPKH, P2WSH: other v0 lengths are unspendable
    return True  # P2TR and future versions are standard outputs


def input_weight(prev_script: bytes) -> int:
    """The weight an input spending ``prev_script`` is charged for (its largest witness when known)."""
    program = _witness_program(prev_script)
    if program == (0, prev_script[2:]) and len(prev_script) == 22:
        return _INPUT_BASE_WEIGHT + _P2WPKH_WITNESS_WEIGHT
    if program is not None and program[0] == 1 and len(program[1]) == 32:
        return _INPUT_BASE_WEIGHT + _P2TR_WITNESS_WEIGHT
    return _INPUT_BASE_WEIGHT + _MIN_WITNESS_WEIGHT


def output_weight(script: bytes) -> int:
    """An output's weight: amount, script length and script, all base bytes."""
    return (8 + len(compact_size(len(script))) + len(script)) * 4


def encode_witness(stack: tuple[bytes, ...]) -> bytes:
    """A witness stack in Bitcoin's serialization (what ``tx_signatures``' ``witness_data`` holds)."""
    return compact_size(len(stack)) + b"".join(var_bytes(item) for item in stack)


def decode_witness(data: bytes) -> tuple[bytes, ...]:
    """The stack of a ``witness_data``; it must be exactly one serialized stack."""
    try:
        reader = Reader(data)
        count = reader.count(1)  # each item is at least its length byte: bounds the loop
        stack = tuple(reader.var_bytes() for _ in range(count))
        if reader.remaining():
            raise BitcoinError("bytes after the witness stack")
    except BitcoinError as exc:
        raise ValueError(f"malformed witness: {exc}") from None
    return stack


def check_witness(stack: tuple[bytes, ...], prev_script: bytes) -> str | None:
    """Why a received witness for an input spending ``prev_script`` is refused, or None.

    BOLT 2 forbids an empty witness, non-standard witnesses and any sighash
    flag but SIGHASH_ALL. The shapes we know (P2WPKH, P2TR key path) are
    checked fully; for others (P2WSH) only emptiness, since which items
    are signatures depends on the script.
    """
    if not stack:
        return "an empty witness"
    program = _witness_program(prev_script)
    if program is not None and program[0] == 0 and len(program[1]) == 20:
        if len(stack) != 2 or len(stack[1]) != 33:
            return "a P2WPKH witness is a signature and a 33-byte key"
        if hash160(stack[1]) != program[1]:
            return "the P2WPKH key does not match the spent output"
        if not 9 <= len(stack[0]) <= 73 or stack[0][-1] != SIGHASH_ALL:
            return "a signature without SIGHASH_ALL"
        return None
    if program is not None and program[0] == 1 and len(program[1]) == 32 and len(stack) == 1:
        # key path: 64 bytes is SIGHASH_DEFAULT (which commits as ALL does), 65 ends in the flag
        if len(stack[0]) == 64 or (len(stack[0]) == 65 and stack[0][-1] == SIGHASH_ALL):
            return None
        return "a taproot signature without SIGHASH_ALL"
    return None
