"""Bitcoin Core's JSON shapes for transactions, scripts, blocks and amounts
(sans-IO): what ``getrawtransaction``, ``getblock`` and ``gettxout`` print.

Amounts are printed as Core prints them, a JSON number with exactly eight
decimals (``0.00004048``), never a float's ``4.048e-05``: ``Amount`` holds
satoshis and ``dumps`` writes it that way.

Scripts are described as Core describes them: ``asm`` (opcode names, pushes
of up to four bytes as numbers, longer pushes as hex), ``type``
(``witness_v0_keyhash``...), ``address`` for standard outputs and ``desc``,
the inferred output descriptor with its BIP-380 checksum.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from embit import base58  # type: ignore[import-untyped]

from lnpmsg.bitcoin.block import Block, BlockHeader
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.bitcoin.script import decode_script
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.address import NETWORK_HRPS, address_for_script
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mining import REGTEST_BITS, target_from_bits

__all__ = [
    "Amount",
    "block_header_json",
    "descriptor_checksum",
    "dumps",
    "script_pubkey_json",
    "tx_json",
]

#: regtest's difficulty as Core prints it (bits 0x207fffff against the PoW limit)
REGTEST_DIFFICULTY = 4.656542373906925e-10
#: work of one regtest block: 2**256 // (target + 1)
REGTEST_BLOCK_WORK = (1 << 256) // (target_from_bits(REGTEST_BITS) + 1)
SAT_PER_BTC = 100_000_000


class Amount:
    """Satoshis, printed as BTC with eight decimals."""

    __slots__ = ("sat",)

    def __init__(self, sat: int) -> None:
        self.sat = sat

    def text(self) -> str:
        sign = "-" if self.sat < 0 else ""
        whole, frac = divmod(abs(self.sat), SAT_PER_BTC)
        return f"{sign}{whole}.{frac:08d}"


# a marker no request can forge: random per process
_MARK = "\x00amt" + secrets.token_hex(8) + ":"
_MARKED = re.compile(re.escape(json.dumps(_MARK)[:-1]) + r'(-?[0-9]+\.[0-9]{8})"')


def _default(value: object) -> object:
    if isinstance(value, Amount):
        return _MARK + value.text()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def dumps(document: object) -> bytes:
    """JSON bytes of ``document``, ``Amount`` as a number with eight decimals."""
    text = json.dumps(document, default=_default, separators=(",", ":"))
    if _MARK[:4] in text or "\\u0000amt" in text:
        text = _MARKED.sub(r"\1", text)
    return text.encode()


# -- scripts ------------------------------------------------------------------

_OPCODE_NAMES = {
    0x4F: "-1", 0x50: "OP_RESERVED", 0x61: "OP_NOP", 0x62: "OP_VER", 0x63: "OP_IF",
    0x64: "OP_NOTIF", 0x65: "OP_VERIF", 0x66: "OP_VERNOTIF", 0x67: "OP_ELSE",
    0x68: "OP_ENDIF", 0x69: "OP_VERIFY", 0x6A: "OP_RETURN", 0x6B: "OP_TOALTSTACK",
    0x6C: "OP_FROMALTSTACK", 0x6D: "OP_2DROP", 0x6E: "OP_2DUP", 0x6F: "OP_3DUP",
    0x70: "OP_2OVER", 0x71: "OP_2ROT", 0x72: "OP_2SWAP", 0x73: "OP_IFDUP",
    0x74: "OP_DEPTH", 0x75: "OP_DROP", 0x76: "OP_DUP", 0x77: "OP_NIP", 0x78: "OP_OVER",
    0x79: "OP_PICK", 0x7A: "OP_ROLL", 0x7B: "OP_ROT", 0x7C: "OP_SWAP", 0x7D: "OP_TUCK",
    0x7E: "OP_CAT", 0x7F: "OP_SUBSTR", 0x80: "OP_LEFT", 0x81: "OP_RIGHT",
    0x82: "OP_SIZE", 0x83: "OP_INVERT", 0x84: "OP_AND", 0x85: "OP_OR", 0x86: "OP_XOR",
    0x87: "OP_EQUAL", 0x88: "OP_EQUALVERIFY", 0x89: "OP_RESERVED1",
    0x8A: "OP_RESERVED2", 0x8B: "OP_1ADD", 0x8C: "OP_1SUB", 0x8D: "OP_2MUL",
    0x8E: "OP_2DIV", 0x8F: "OP_NEGATE", 0x90: "OP_ABS", 0x91: "OP_NOT",
    0x92: "OP_0NOTEQUAL", 0x93: "OP_ADD", 0x94: "OP_SUB", 0x95: "OP_MUL", 0x96: "OP_DIV",
    0x97: "OP_MOD", 0x98: "OP_LSHIFT", 0x99: "OP_RSHIFT", 0x9A: "OP_BOOLAND",
    0x9B: "OP_BOOLOR", 0x9C: "OP_NUMEQUAL", 0x9D: "OP_NUMEQUALVERIFY",
    0x9E: "OP_NUMNOTEQUAL", 0x9F: "OP_LESSTHAN", 0xA0: "OP_GREATERTHAN",
    0xA1: "OP_LESSTHANOREQUAL", 0xA2: "OP_GREATERTHANOREQUAL", 0xA3: "OP_MIN",
    0xA4: "OP_MAX", 0xA5: "OP_WITHIN", 0xA6: "OP_RIPEMD160", 0xA7: "OP_SHA1",
    0xA8: "OP_SHA256", 0xA9: "OP_HASH160", 0xAA: "OP_HASH256",
    0xAB: "OP_CODESEPARATOR", 0xAC: "OP_CHECKSIG", 0xAD: "OP_CHECKSIGVERIFY",
    0xAE: "OP_CHECKMULTISIG", 0xAF: "OP_CHECKMULTISIGVERIFY", 0xB0: "OP_NOP1",
    0xB1: "OP_CHECKLOCKTIMEVERIFY", 0xB2: "OP_CHECKSEQUENCEVERIFY", 0xB3: "OP_NOP4",
    0xB4: "OP_NOP5", 0xB5: "OP_NOP6", 0xB6: "OP_NOP7", 0xB7: "OP_NOP8", 0xB8: "OP_NOP9",
    0xB9: "OP_NOP10", 0xBA: "OP_CHECKSIGADD",
}
for _n in range(1, 17):
    _OPCODE_NAMES[0x50 + _n] = str(_n)
_OPCODE_NAMES[0x00] = "0"


def _script_num(data: bytes) -> int:
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def script_asm(script: bytes) -> str:
    """Core's ``asm`` of a script; ``[error]`` ends a truncated one, as Core's does."""
    parts: list[str] = []
    try:
        for item in decode_script(script):
            if isinstance(item, bytes):
                parts.append(str(_script_num(item)) if len(item) <= 4 else item.hex())
            else:
                parts.append(_OPCODE_NAMES.get(item, "OP_UNKNOWN"))
    except BitcoinError:
        parts.append("[error]")
    return " ".join(parts)


_DESC_INPUT = (
    "0123456789()[],'/*abcdefgh@:$%{}"
    "IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    'ijklmnopqrstuvwxyzABCDEFGH`#"\\ '
)
_DESC_CHECKSUM = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_DESC_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def _desc_polymod(symbols: list[int]) -> int:
    check = 1
    for value in symbols:
        top = check >> 35
        check = ((check & 0x7FFFFFFFF) << 5) ^ value
        for i, generator in enumerate(_DESC_GENERATOR):
            if (top >> i) & 1:
                check ^= generator
    return check


def descriptor_checksum(descriptor: str) -> str:
    """The eight-character BIP-380 checksum of an output descriptor."""
    symbols: list[int] = []
    groups: list[int] = []
    for ch in descriptor:
        position = _DESC_INPUT.find(ch)
        if position < 0:
            raise ChainError(f"character {ch!r} cannot be in a descriptor", code="invalid")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    check = _desc_polymod(symbols + [0] * 8) ^ 1
    return "".join(_DESC_CHECKSUM[(check >> (5 * (7 - i))) & 31] for i in range(8))


def _script_type(script: bytes) -> str:
    n = len(script)
    if n == 22 and script[:2] == b"\x00\x14":
        return "witness_v0_keyhash"
    if n == 34 and script[:2] == b"\x00\x20":
        return "witness_v0_scripthash"
    if n == 34 and script[:2] == b"\x51\x20":
        return "witness_v1_taproot"
    if script == b"\x51\x02\x4e\x73":
        return "anchor"
    if 4 <= n <= 42 and (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] == n - 2:
        return "witness_unknown"
    if n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "pubkeyhash"
    if n == 23 and script[:2] == b"\xa9\x14" and script[22:] == b"\x87":
        return "scripthash"
    if (n == 35 and script[0] == 33 or n == 67 and script[0] == 65) and script[-1] == 0xAC:
        return "pubkey"
    if script[:1] == b"\x6a":
        return "nulldata"
    if n >= 3 and script[-1] == 0xAE and 0x51 <= script[0] <= 0x60:
        return "multisig"
    return "nonstandard"


def _address(script: bytes, kind: str, hrp: str) -> str | None:
    if kind.startswith("witness_") or kind == "anchor":
        try:
            return address_for_script(script, hrp)
        except ChainError:
            return None
    p2pkh, p2sh = NETWORK_HRPS[hrp]
    if kind == "pubkeyhash":
        return str(base58.encode_check(bytes([p2pkh]) + script[3:23]))
    if kind == "scripthash":
        return str(base58.encode_check(bytes([p2sh]) + script[2:22]))
    return None


def script_pubkey_json(script: bytes, hrp: str = "bcrt") -> dict[str, Any]:
    """An output script as Core's ``scriptPubKey`` object."""
    kind = _script_type(script)
    address = _address(script, kind, hrp)
    if address is not None:
        desc = f"addr({address})"
    elif kind == "pubkey":
        desc = f"pk({script[1:-1].hex()})"
    else:
        desc = f"raw({script.hex()})"
    result: dict[str, Any] = {
        "asm": script_asm(script),
        "desc": f"{desc}#{descriptor_checksum(desc)}",
        "hex": script.hex(),
    }
    if address is not None:
        result["address"] = address
    result["type"] = kind
    return result


# -- transactions and blocks -----------------------------------------------------


def tx_json(
    tx: Tx,
    hrp: str = "bcrt",
    *,
    fee_sat: int | None = None,
    with_hex: bool = True,
) -> dict[str, Any]:
    """A transaction as Core's decoded object (``getrawtransaction`` verbose)."""
    vin: list[dict[str, Any]] = []
    for txin in tx.inputs:
        entry: dict[str, Any]
        if tx.is_coinbase:
            entry = {"coinbase": txin.script_sig.hex()}
        else:
            entry = {
                "txid": txin.prevout.txid_hex,
                "vout": txin.prevout.vout,
                "scriptSig": {"asm": script_asm(txin.script_sig), "hex": txin.script_sig.hex()},
            }
        if txin.witness:
            entry["txinwitness"] = [item.hex() for item in txin.witness]
        entry["sequence"] = txin.sequence
        vin.append(entry)
    result: dict[str, Any] = {
        "txid": tx.txid_hex,
        "hash": hash_to_hex(tx.wtxid),
        "version": tx.version,
        "size": len(tx.raw),
        "vsize": tx.vsize,
        "weight": tx.weight,
        "locktime": tx.locktime,
        "vin": vin,
        "vout": [
            {"value": Amount(out.amount_sat), "n": n, "scriptPubKey": script_pubkey_json(out.script_pubkey, hrp)}
            for n, out in enumerate(tx.outputs)
        ],
    }
    if fee_sat is not None:
        result["fee"] = Amount(fee_sat)
    if with_hex:
        result["hex"] = tx.raw.hex()
    return result


def block_header_json(
    header: BlockHeader,
    height: int,
    confirmations: int,
    *,
    n_tx: int,
    median_time: int,
    next_hash: bytes | None,
) -> dict[str, Any]:
    """A block header as Core's ``getblockheader`` verbose object."""
    result: dict[str, Any] = {
        "hash": hash_to_hex(header.hash),
        "confirmations": confirmations,
        "height": height,
        "version": header.version,
        "versionHex": f"{header.version & 0xFFFFFFFF:08x}",
        "merkleroot": hash_to_hex(header.merkle_root),
        "time": header.time,
        "mediantime": median_time,
        "nonce": header.nonce,
        "bits": f"{header.bits:08x}",
        "target": f"{target_from_bits(header.bits):064x}",
        "difficulty": REGTEST_DIFFICULTY,
        "chainwork": f"{(height + 1) * REGTEST_BLOCK_WORK:064x}",
        "nTx": n_tx,
    }
    if height > 0:
        result["previousblockhash"] = hash_to_hex(header.prev_hash)
    if next_hash is not None:
        result["nextblockhash"] = hash_to_hex(next_hash)
    return result


def block_sizes(block: Block, raw: bytes) -> dict[str, int]:
    """``strippedsize``, ``size`` and ``weight`` of a block."""
    stripped = len(raw) - sum(len(tx.raw) - len(tx.serialize(witness=False)) for tx in block.txs)
    return {"strippedsize": stripped, "size": len(raw), "weight": stripped * 3 + len(raw)}
