"""Bitcoin script: opcodes, minimal pushes, assembly and decoding, standard output scripts.

``script(...)`` assembles a script from opcodes (``int``), data pushes
(``bytes``, pushed with the minimal opcode) and numbers (``Num``, minimally
encoded as the interpreter's CScriptNum, as ``CScript() << n`` writes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lnpmsg.bitcoin.ecdsa import check_pubkey
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash160, sha256

__all__ = [
    "MAX_SCRIPT_ELEMENT_SIZE",
    "OP_0",
    "OP_1",
    "OP_1NEGATE",
    "OP_2",
    "OP_16",
    "OP_CHECKLOCKTIMEVERIFY",
    "OP_CHECKMULTISIG",
    "OP_CHECKSEQUENCEVERIFY",
    "OP_CHECKSIG",
    "OP_CHECKSIGVERIFY",
    "OP_DROP",
    "OP_DUP",
    "OP_ELSE",
    "OP_ENDIF",
    "OP_EQUAL",
    "OP_EQUALVERIFY",
    "OP_HASH160",
    "OP_IF",
    "OP_IFDUP",
    "OP_NOTIF",
    "OP_PUSHDATA1",
    "OP_PUSHDATA2",
    "OP_PUSHDATA4",
    "OP_RETURN",
    "OP_SHA256",
    "OP_SIZE",
    "OP_SWAP",
    "OP_TRUE",
    "Num",
    "decode_script",
    "is_op_return",
    "p2pkh_script",
    "p2wpkh",
    "p2wsh",
    "push_data",
    "push_number",
    "script",
    "script_number",
]

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_PUSHDATA4 = 0x4E
OP_1NEGATE = 0x4F
OP_1 = 0x51
OP_TRUE = OP_1
OP_2 = 0x52
OP_16 = 0x60
OP_IF = 0x63
OP_NOTIF = 0x64
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_RETURN = 0x6A
OP_IFDUP = 0x73
OP_DROP = 0x75
OP_DUP = 0x76
OP_SWAP = 0x7C
OP_SIZE = 0x82
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_SHA256 = 0xA8
OP_HASH160 = 0xA9
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKMULTISIG = 0xAE
OP_CHECKLOCKTIMEVERIFY = 0xB1
OP_CHECKSEQUENCEVERIFY = 0xB2

#: consensus: the interpreter refuses to push more than 520 bytes at once
MAX_SCRIPT_ELEMENT_SIZE = 520


@dataclass(frozen=True, slots=True)
class Num:
    """A number to push in a script (as opposed to an ``int`` opcode)."""

    value: int


def push_data(data: bytes) -> bytes:
    """The minimal push of ``data`` (direct length byte, or OP_PUSHDATA1/2)."""
    size = len(data)
    if size > MAX_SCRIPT_ELEMENT_SIZE:
        raise BitcoinError(f"a script push of {size} bytes exceeds {MAX_SCRIPT_ELEMENT_SIZE}")
    if size < OP_PUSHDATA1:
        return bytes([size]) + data
    if size <= 0xFF:
        return bytes([OP_PUSHDATA1, size]) + data
    return bytes([OP_PUSHDATA2]) + size.to_bytes(2, "little") + data


def script_number(value: int) -> bytes:
    """``value`` as CScriptNum bytes: little-endian magnitude, sign in the top bit, minimal."""
    if value == 0:
        return b""
    magnitude = abs(value)
    out = bytearray()
    while magnitude:
        out.append(magnitude & 0xFF)
        magnitude >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if value < 0 else 0x00)
    elif value < 0:
        out[-1] |= 0x80
    return bytes(out)


def push_number(value: int) -> bytes:
    """The minimal push of a script number (OP_0, OP_1NEGATE, OP_1..OP_16, or CScriptNum bytes).

    This is also what BIP34 compares a coinbase's height against.
    """
    if value == 0:
        return bytes([OP_0])
    if value == -1:
        return bytes([OP_1NEGATE])
    if 1 <= value <= 16:
        return bytes([OP_1 + value - 1])
    return push_data(script_number(value))


def script(*parts: int | bytes | Num) -> bytes:
    """Assemble a script: ``int`` is an opcode, ``bytes`` a data push, ``Num`` a number push."""
    out = bytearray()
    for part in parts:
        if isinstance(part, Num):
            out += push_number(part.value)
        elif isinstance(part, bytes | bytearray):
            out += push_data(bytes(part))
        elif isinstance(part, int) and 0 <= part <= 0xFF:
            out.append(part)
        else:
            raise BitcoinError(f"not a script part: {part!r}")
    return bytes(out)


def decode_script(data: bytes) -> Iterator[int | bytes]:
    """Yield each opcode (``int``) or pushed data (``bytes``) of a script; ``BitcoinError`` if truncated."""
    pos = 0
    while pos < len(data):
        code = data[pos]
        pos += 1
        if 0 < code < OP_PUSHDATA1:
            size = code
        elif code == OP_PUSHDATA1:
            size, pos = int.from_bytes(data[pos : pos + 1], "little"), pos + 1
        elif code == OP_PUSHDATA2:
            size, pos = int.from_bytes(data[pos : pos + 2], "little"), pos + 2
        elif code == OP_PUSHDATA4:
            size, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            yield code
            continue
        if pos > len(data) or pos + size > len(data):
            raise BitcoinError("script push runs past the end of the script")
        yield data[pos : pos + size]
        pos += size


def is_op_return(script_pubkey: bytes) -> bool:
    """Whether an output script is provably unspendable (starts with OP_RETURN)."""
    return script_pubkey[:1] == bytes([OP_RETURN])


def p2wsh(witness_script: bytes) -> bytes:
    """The version-0 P2WSH output script of ``witness_script``."""
    return bytes([OP_0, 32]) + sha256(witness_script)


def p2wpkh(pubkey: bytes) -> bytes:
    """The version-0 P2WPKH output script of a compressed public key."""
    return bytes([OP_0, 20]) + hash160(check_pubkey(pubkey))


def p2pkh_script(pubkey_hash: bytes) -> bytes:
    """``OP_DUP OP_HASH160 <hash> OP_EQUALVERIFY OP_CHECKSIG`` (also the BIP143 scriptCode of P2WPKH)."""
    if len(pubkey_hash) != 20:
        raise BitcoinError("a public key hash is 20 bytes")
    return script(OP_DUP, OP_HASH160, pubkey_hash, OP_EQUALVERIFY, OP_CHECKSIG)
