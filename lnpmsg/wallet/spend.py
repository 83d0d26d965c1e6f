"""Building and signing the wallet's spends: coin selection over its coins,
BIP69 output order, P2WPKH signatures (BIP143, low R), dust limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160
from lnpmsg.bitcoin.script import p2pkh_script
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut
from lnpmsg.wallet.coinselect import Candidate, Selection, select_all, select_coins
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wallet.keys import DerivedKey

__all__ = [
    "P2WPKH_INPUT_WEIGHT",
    "P2WPKH_OUTPUT_WEIGHT",
    "P2WPKH_TEMPLATE",
    "TX_OVERHEAD_WEIGHT",
    "OwnCoin",
    "build_spend",
    "dust_limit",
]

#: P2WPKH input: 41 bytes outside the witness (x4) + witness 1+1+72+1+33 (72: a max-size signature)
P2WPKH_INPUT_WEIGHT = 41 * 4 + 108
#: P2WPKH output: 8 amount + 1 length + 22 script, x4
P2WPKH_OUTPUT_WEIGHT = 31 * 4
#: version + locktime + input and output counts (x4) + segwit marker and flag
TX_OVERHEAD_WEIGHT = 10 * 4 + 2
#: any P2WPKH script: what the wallet's own outputs (change) look like, for their size and dust limit
P2WPKH_TEMPLATE = b"\x00\x14" + bytes(20)


def dust_limit(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust threshold at its 3 sat/vB dust relay fee.

    The cost to create and spend the output: 67 vB to spend a witness
    program, 148 vB otherwise (294 sat for P2WPKH, 546 for P2PKH).
    """
    size = 8 + 1 + len(script_pubkey)
    witness_program = len(script_pubkey) >= 4 and (
        script_pubkey[0] == 0 or 0x51 <= script_pubkey[0] <= 0x60
    )
    return 3 * (size + (67 if witness_program else 148))


@dataclass(slots=True)
class OwnCoin:
    """A coin of the wallet: confirmed at ``height``, or (``height`` None) an
    output of its own transaction waiting for a block."""

    outpoint: OutPoint
    txout: TxOut
    key: DerivedKey
    height: int | None
    is_coinbase: bool


def build_spend(
    coins: list[OwnCoin],
    script: bytes,
    amount: int | str,
    feerate: int,
    change_script: Callable[[], bytes],
    locktime: int,
) -> tuple[Tx, int, int]:
    """A signed transaction paying ``amount`` (or ``"all"``) to ``script`` from
    ``coins``; returns it, the paying output's index and the fee."""
    by_outpoint = {coin.outpoint: coin for coin in coins}
    candidates = [Candidate(op, c.txout.amount_sat, P2WPKH_INPUT_WEIGHT) for op, c in by_outpoint.items()]
    pay_weight = 4 * (9 + len(script))
    selection: Selection
    if amount == "all":
        selection = select_all(candidates, TX_OVERHEAD_WEIGHT + pay_weight, feerate, dust_limit(script))
        outputs = [TxOut(selection.total_in_sat - selection.fee_sat, script)]
    elif isinstance(amount, int) and not isinstance(amount, bool):
        if amount < dust_limit(script):
            raise WalletError(
                f"amount {amount} sat is below the dust limit {dust_limit(script)} sat of that output",
                code="dust",
            )
        selection = select_coins(
            candidates,
            amount,
            TX_OVERHEAD_WEIGHT + pay_weight,
            P2WPKH_OUTPUT_WEIGHT,
            P2WPKH_INPUT_WEIGHT,
            feerate,
            dust_limit(P2WPKH_TEMPLATE),
        )
        outputs = [TxOut(amount, script)]
        if selection.change_sat:
            outputs.append(TxOut(selection.change_sat, change_script()))
    else:
        raise WalletError(f"amount must be satoshis or 'all', got {amount!r}", code="invalid")
    spent = sorted(
        (by_outpoint[cast(OutPoint, c.key)] for c in selection.chosen),
        key=lambda c: (c.outpoint.txid[::-1], c.outpoint.vout),
    )
    # BIP69 output order: deterministic, and the change position tells nothing
    outputs.sort(key=lambda o: (o.amount_sat, o.script_pubkey))
    pay_index = next(i for i, o in enumerate(outputs) if o.script_pubkey == script)
    tx = sign(spent, outputs, locktime)
    fee = sum(c.txout.amount_sat for c in spent) - sum(o.amount_sat for o in outputs)
    return tx, pay_index, fee


def sign(coins: list[OwnCoin], outputs: list[TxOut], locktime: int) -> Tx:
    """Spend ``coins`` to ``outputs``, every input signed (SIGHASH_ALL)."""
    unsigned = Tx(2, tuple(TxIn(c.outpoint, sequence=SEQUENCE_RBF) for c in coins), tuple(outputs), locktime)
    signed = unsigned
    for i, coin in enumerate(coins):
        signed = signed.with_witness(i, sign_input(unsigned, i, coin))
    return signed


def sign_input(tx: Tx, index: int, coin: OwnCoin) -> tuple[bytes, bytes]:
    """The P2WPKH witness of input ``index`` of ``tx``, spending ``coin`` (SIGHASH_ALL)."""
    # BIP143: a P2WPKH input signs the P2PKH script of its key hash
    script_code = p2pkh_script(hash160(coin.key.pubkey))
    digest = segwit_v0_sighash(tx, index, script_code, coin.txout.amount_sat, SIGHASH_ALL)
    # low R: signatures fit the 72 bytes P2WPKH_INPUT_WEIGHT counts
    der = sign_digest(coin.key.privkey.secret, digest, low_r=True)
    return der + bytes([SIGHASH_ALL]), coin.key.pubkey
