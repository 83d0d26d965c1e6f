"""Assemble regtest blocks: coinbase (BIP34 height, BIP141 witness commitment),
merkle root, header, proof of work (sans-IO).

Nothing here decides validity: the kernel does. These functions build what a
miner would hand it, and can be asked to build it wrong on purpose (tests).
"""

from __future__ import annotations

from collections.abc import Sequence

from lnpmsg.bitcoin.block import Block, BlockHeader, merkle_root
from lnpmsg.bitcoin.hashes import sha256d
from lnpmsg.bitcoin.script import OP_RETURN, push_number, script
from lnpmsg.bitcoin.tx import SEQUENCE_FINAL, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.errors import ChainError

__all__ = [
    "BLOCK_VERSION",
    "COINBASE_MATURITY",
    "REGTEST_BITS",
    "REGTEST_HALVING_INTERVAL",
    "block_subsidy",
    "build_block",
    "build_coinbase",
    "target_from_bits",
]

#: regtest's proof-of-work limit; regtest never retargets, so every block has it
REGTEST_BITS = 0x207FFFFF
#: regtest halves the subsidy every 150 blocks (mainnet: 210 000)
REGTEST_HALVING_INTERVAL = 150
#: consensus: a coinbase output is spendable 100 blocks after its own
COINBASE_MATURITY = 100
#: BIP9 top bits with no deployment signalled
BLOCK_VERSION = 0x20000000
_INITIAL_SUBSIDY_SAT = 50 * 100_000_000
#: BIP141: coinbase witness reserved value (any 32 bytes; Core uses zeros)
WITNESS_RESERVED_VALUE = b"\x00" * 32
_WITNESS_COMMITMENT_TAG = bytes.fromhex("aa21a9ed")
_NULL_OUTPOINT = OutPoint(bytes(32), 0xFFFFFFFF)
#: nonces tried before giving up; at regtest difficulty half of all hashes qualify
_MAX_NONCE_TRIES = 1 << 20


def block_subsidy(height: int) -> int:
    """New coins a regtest block at ``height`` may claim (before fees)."""
    halvings = height // REGTEST_HALVING_INTERVAL
    return 0 if halvings >= 64 else _INITIAL_SUBSIDY_SAT >> halvings


def target_from_bits(bits: int) -> int:
    """The proof-of-work target encoded by compact ``bits``."""
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def witness_commitment_script(wtxids: Sequence[bytes]) -> bytes:
    """The BIP141 commitment output script for the block's non-coinbase wtxids."""
    root = merkle_root([b"\x00" * 32, *wtxids])
    commitment = sha256d(root + WITNESS_RESERVED_VALUE)
    return script(OP_RETURN, _WITNESS_COMMITMENT_TAG + commitment)


def build_coinbase(
    height: int,
    payout_script: bytes,
    value_sat: int,
    txs: Sequence[Tx],
    extra_nonce: int = 0,
) -> Tx:
    """The coinbase for a block at ``height`` holding ``txs``.

    The scriptSig starts with the BIP34 height; ``extra_nonce`` follows it so
    that two blocks at the same height (a fork) never share a coinbase txid.
    """
    script_sig = push_number(height) + push_number(extra_nonce + 1)
    return Tx(
        version=2,
        inputs=(
            TxIn(_NULL_OUTPOINT, script_sig, SEQUENCE_FINAL, (WITNESS_RESERVED_VALUE,)),
        ),
        outputs=(
            TxOut(value_sat, payout_script),
            TxOut(0, witness_commitment_script([tx.wtxid for tx in txs])),
        ),
        locktime=0,
    )


def build_block(
    prev_hash: bytes,
    height: int,
    time: int,
    payout_script: bytes,
    txs: Sequence[Tx],
    fees_sat: int,
    extra_nonce: int = 0,
) -> Block:
    """A solved regtest block on ``prev_hash`` paying subsidy + ``fees_sat`` to ``payout_script``."""
    coinbase = build_coinbase(
        height, payout_script, block_subsidy(height) + fees_sat, txs, extra_nonce
    )
    all_txs = (coinbase, *txs)
    root = merkle_root([tx.txid for tx in all_txs])
    target = target_from_bits(REGTEST_BITS)
    for nonce in range(_MAX_NONCE_TRIES):
        header = BlockHeader(BLOCK_VERSION, prev_hash, root, time, REGTEST_BITS, nonce)
        if int.from_bytes(header.hash, "little") <= target:
            return Block(header, all_txs)
    raise ChainError("no nonce satisfies the regtest target", code="mining")
