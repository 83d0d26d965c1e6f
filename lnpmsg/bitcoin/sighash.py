"""Signature hashes: BIP143 (segwit v0) and legacy, for every sighash type.

Anchor HTLC signatures use ``SIGHASH_SINGLE|SIGHASH_ANYONECANPAY``, so all
types are supported, not only ``SIGHASH_ALL``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace

from lnpmsg.bitcoin.encoding import compact_size, var_bytes
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import sha256d
from lnpmsg.bitcoin.tx import Tx, TxOut

__all__ = [
    "SIGHASH_ALL",
    "SIGHASH_ANYONECANPAY",
    "SIGHASH_NONE",
    "SIGHASH_SINGLE",
    "legacy_sighash",
    "segwit_v0_sighash",
]

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
_ZERO = bytes(32)


def _check_sighash_type(tx: Tx, input_index: int, sighash_type: int) -> int:
    if not 0 <= input_index < len(tx.inputs):
        raise BitcoinError(f"no input {input_index}")
    base = sighash_type & 0x1F
    if base not in (SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE) or sighash_type & ~0x9F:
        raise BitcoinError(f"unsupported sighash type {sighash_type:#x}")
    return base


def segwit_v0_sighash(tx: Tx, input_index: int, script_code: bytes, amount_sat: int, sighash_type: int) -> bytes:
    """The BIP143 signature hash of input ``input_index`` spending ``amount_sat`` under ``script_code``."""
    base = _check_sighash_type(tx, input_index, sighash_type)
    anyone_can_pay = bool(sighash_type & SIGHASH_ANYONECANPAY)
    hash_prevouts = _ZERO if anyone_can_pay else sha256d(b"".join(i.prevout.serialize() for i in tx.inputs))
    if anyone_can_pay or base != SIGHASH_ALL:
        hash_sequence = _ZERO
    else:
        hash_sequence = sha256d(b"".join(struct.pack("<I", i.sequence) for i in tx.inputs))
    if base == SIGHASH_ALL:
        hash_outputs = sha256d(b"".join(o.serialize() for o in tx.outputs))
    elif base == SIGHASH_SINGLE and input_index < len(tx.outputs):
        hash_outputs = sha256d(tx.outputs[input_index].serialize())
    else:
        hash_outputs = _ZERO
    txin = tx.inputs[input_index]
    preimage = b"".join(
        (
            struct.pack("<i", tx.version),
            hash_prevouts,
            hash_sequence,
            txin.prevout.serialize(),
            var_bytes(script_code),
            struct.pack("<q", amount_sat),
            struct.pack("<I", txin.sequence),
            hash_outputs,
            struct.pack("<I", tx.locktime),
            struct.pack("<I", sighash_type),
        )
    )
    return sha256d(preimage)


class _BlankOutput:
    """The ``-1`` amount, empty-script output that SIGHASH_SINGLE puts before the signed one."""

    __slots__ = ()

    def serialize(self) -> bytes:
        return b"\xff" * 8 + b"\x00"


def legacy_sighash(tx: Tx, input_index: int, script_code: bytes, sighash_type: int) -> bytes:
    """The pre-segwit signature hash (P2PKH and bare-script inputs)."""
    base = _check_sighash_type(tx, input_index, sighash_type)
    if base == SIGHASH_SINGLE and input_index >= len(tx.outputs):
        # Bitcoin Core signs the number one here (a historical bug kept for consensus)
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
    body = [struct.pack("<i", tx.version), compact_size(len(inputs))]
    for txin in inputs:
        body += [txin.prevout.serialize(), var_bytes(txin.script_sig), struct.pack("<I", txin.sequence)]
    body.append(compact_size(len(outputs)))
    body += [txout.serialize() for txout in outputs]
    body.append(struct.pack("<II", tx.locktime, sighash_type))
    return sha256d(b"".join(body))
