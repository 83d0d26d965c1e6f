"""Bitcoin script building and the BOLT-3 scripts.

``script(...)`` assembles a script from opcodes (``int``), data pushes
(``bytes``, pushed with the minimal opcode) and numbers (``Num``, minimally
encoded as the interpreter's CScriptNum). Every BOLT-3 witness script is
written out below exactly as the spec prints it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ChannelError
from .hashes import hash160, ripemd160, sha256
from .keys import check_pubkey

__all__ = [
    "ANCHOR_CSV_DELAY",
    "OP_0",
    "OP_1",
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
    "OP_RETURN",
    "OP_SHA256",
    "OP_SIZE",
    "OP_SWAP",
    "Num",
    "anchor_script",
    "decode_script",
    "funding_script",
    "is_op_return",
    "offered_htlc_script",
    "p2pkh_script",
    "p2wpkh",
    "p2wsh",
    "push_data",
    "push_number",
    "received_htlc_script",
    "script",
    "sort_pubkeys",
    "to_local_script",
    "to_remote_anchor_script",
]

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_PUSHDATA4 = 0x4E
OP_1NEGATE = 0x4F
OP_1 = 0x51
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

#: Anchor outputs become spendable by anyone after this many blocks.
ANCHOR_CSV_DELAY = 16
# Standardness caps a single push at 520 bytes; scripts here never come close.
_MAX_PUSH = 520


@dataclass(frozen=True, slots=True)
class Num:
    """A number to push in a script (as opposed to an ``int`` opcode)."""

    value: int


def push_data(data: bytes) -> bytes:
    """The minimal push of ``data`` (direct length byte, or OP_PUSHDATA1/2)."""
    size = len(data)
    if size > _MAX_PUSH:
        raise ChannelError(f"a script push of {size} bytes exceeds {_MAX_PUSH}")
    if size < OP_PUSHDATA1:
        return bytes([size]) + data
    if size <= 0xFF:
        return bytes([OP_PUSHDATA1, size]) + data
    return bytes([OP_PUSHDATA2]) + size.to_bytes(2, "little") + data


def _script_num(value: int) -> bytes:
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
    """The minimal push of a script number (OP_0, OP_1NEGATE, OP_1..OP_16, or CScriptNum bytes)."""
    if value == 0:
        return bytes([OP_0])
    if value == -1:
        return bytes([OP_1NEGATE])
    if 1 <= value <= 16:
        return bytes([OP_1 + value - 1])
    return push_data(_script_num(value))


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
            raise ChannelError(f"not a script part: {part!r}")
    return bytes(out)


def decode_script(data: bytes) -> Iterator[int | bytes]:
    """Yield each opcode (``int``) or pushed data (``bytes``) of a script; ``ChannelError`` if truncated."""
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
            raise ChannelError("script push runs past the end of the script")
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
    """``OP_DUP OP_HASH160 <hash> OP_EQUALVERIFY OP_CHECKSIG`` (also the BIP-143 scriptCode of P2WPKH)."""
    if len(pubkey_hash) != 20:
        raise ChannelError("a public key hash is 20 bytes")
    return script(OP_DUP, OP_HASH160, pubkey_hash, OP_EQUALVERIFY, OP_CHECKSIG)


def sort_pubkeys(pubkey_a: bytes, pubkey_b: bytes) -> tuple[bytes, bytes]:
    """The two keys, lexicographically lesser first (funding script order)."""
    check_pubkey(pubkey_a)
    check_pubkey(pubkey_b)
    return (pubkey_a, pubkey_b) if pubkey_a <= pubkey_b else (pubkey_b, pubkey_a)


def funding_script(pubkey_a: bytes, pubkey_b: bytes) -> bytes:
    """``2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG`` with the keys sorted."""
    first, second = sort_pubkeys(pubkey_a, pubkey_b)
    return script(OP_2, first, second, OP_2, OP_CHECKMULTISIG)


def to_local_script(revocation_pubkey: bytes, to_self_delay: int, local_delayed_pubkey: bytes) -> bytes:
    """The to_local (and HTLC-transaction output) script: revocation key now, or delayed key after CSV."""
    if not 0 <= to_self_delay <= 0xFFFF:
        raise ChannelError(f"to_self_delay {to_self_delay} is not a 16-bit block count")
    return script(
        OP_IF,
        check_pubkey(revocation_pubkey),
        OP_ELSE,
        Num(to_self_delay),
        OP_CHECKSEQUENCEVERIFY,
        OP_DROP,
        check_pubkey(local_delayed_pubkey),
        OP_ENDIF,
        OP_CHECKSIG,
    )


def to_remote_anchor_script(remote_pubkey: bytes) -> bytes:
    """``<remotepubkey> OP_CHECKSIGVERIFY 1 OP_CHECKSEQUENCEVERIFY`` (to_remote with option_anchors)."""
    return script(check_pubkey(remote_pubkey), OP_CHECKSIGVERIFY, Num(1), OP_CHECKSEQUENCEVERIFY)


def anchor_script(funding_pubkey: bytes) -> bytes:
    """An anchor: the funding key at any time, anyone after 16 blocks."""
    return script(
        check_pubkey(funding_pubkey),
        OP_CHECKSIG,
        OP_IFDUP,
        OP_NOTIF,
        Num(ANCHOR_CSV_DELAY),
        OP_CHECKSEQUENCEVERIFY,
        OP_ENDIF,
    )


def _payment_hash_lock(payment_hash: bytes) -> bytes:
    if len(payment_hash) != 32:
        raise ChannelError("a payment hash is 32 bytes")
    return ripemd160(payment_hash)


def _anchor_csv_tail(anchors: bool) -> tuple[int | bytes | Num, ...]:
    return (Num(1), OP_CHECKSEQUENCEVERIFY, OP_DROP) if anchors else ()


def offered_htlc_script(
    revocation_pubkey: bytes,
    local_htlc_pubkey: bytes,
    remote_htlc_pubkey: bytes,
    payment_hash: bytes,
    *,
    anchors: bool,
) -> bytes:
    """The output of an HTLC offered by the commitment's owner."""
    return script(
        OP_DUP, OP_HASH160, hash160(check_pubkey(revocation_pubkey)), OP_EQUAL,
        OP_IF,
        OP_CHECKSIG,
        OP_ELSE,
        check_pubkey(remote_htlc_pubkey), OP_SWAP, OP_SIZE, Num(32), OP_EQUAL,
        OP_NOTIF,
        OP_DROP, OP_2, OP_SWAP, check_pubkey(local_htlc_pubkey), OP_2, OP_CHECKMULTISIG,
        OP_ELSE,
        OP_HASH160, _payment_hash_lock(payment_hash), OP_EQUALVERIFY,
        OP_CHECKSIG,
        OP_ENDIF,
        *_anchor_csv_tail(anchors),
        OP_ENDIF,
    )  # fmt: skip


def received_htlc_script(
    revocation_pubkey: bytes,
    local_htlc_pubkey: bytes,
    remote_htlc_pubkey: bytes,
    payment_hash: bytes,
    cltv_expiry: int,
    *,
    anchors: bool,
) -> bytes:
    """The output of an HTLC received by the commitment's owner."""
    if not 0 <= cltv_expiry < 500_000_000:
        raise ChannelError(f"cltv_expiry {cltv_expiry} is not a block height")
    return script(
        OP_DUP, OP_HASH160, hash160(check_pubkey(revocation_pubkey)), OP_EQUAL,
        OP_IF,
        OP_CHECKSIG,
        OP_ELSE,
        check_pubkey(remote_htlc_pubkey), OP_SWAP, OP_SIZE, Num(32), OP_EQUAL,
        OP_IF,
        OP_HASH160, _payment_hash_lock(payment_hash), OP_EQUALVERIFY,
        OP_2, OP_SWAP, check_pubkey(local_htlc_pubkey), OP_2, OP_CHECKMULTISIG,
        OP_ELSE,
        OP_DROP, Num(cltv_expiry), OP_CHECKLOCKTIMEVERIFY, OP_DROP,
        OP_CHECKSIG,
        OP_ENDIF,
        *_anchor_csv_tail(anchors),
        OP_ENDIF,
    )  # fmt: skip
