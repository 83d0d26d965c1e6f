"""Transaction replacement in the embedded chain's mempool: BIP 125 opt-in
Replace-By-Fee, as Bitcoin Core checks it (sans-IO).

A transaction whose inputs are already spent by mempool transactions (its
*direct conflicts*) replaces them, and every mempool descendant of them,
when all of these hold (Core's reject reason in brackets):

1. every direct conflict signals replaceability: an input with nSequence
   <= 0xfffffffd (``txn-mempool-conflict``, as without RBF). Signalling is
   not inherited from ancestors, as in Core (BIP 125's inheritance was never
   implemented). This is Core with ``-mempoolfullrbf=0``, its default
   before v28; v28 and later replace non-signalling transactions too;
2. the replacement spends no unconfirmed output that none of the direct
   conflicts spent (``replacement-adds-unconfirmed``);
3. it pays at least the sum of the fees of everything it evicts, and
4. on top of that, the incremental relay fee (1 sat/vB, Core's default)
   for its own size (both ``insufficient fee``);
5. it evicts at most 100 transactions (``too many potential replacements``);
6. its fee rate is higher than each direct conflict's (``insufficient fee``);

and it does not spend an output of a transaction it evicts
(``bad-txns-spends-conflicting-tx``). Fee rates compare fee per virtual
byte exactly (cross-multiplied), as Core's CFeeRate does up to its rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError

__all__ = [
    "INCREMENTAL_RELAY_SAT_PER_VB",
    "MAX_BIP125_RBF_SEQUENCE",
    "MAX_REPLACEMENT_CANDIDATES",
    "Conflict",
    "check_replacement",
    "signals_rbf",
]

#: an input with nSequence at most this opts its transaction in to replacement (BIP 125)
MAX_BIP125_RBF_SEQUENCE = 0xFFFFFFFD
#: rule 5: transactions one replacement may evict (Core's MAX_REPLACEMENT_CANDIDATES)
MAX_REPLACEMENT_CANDIDATES = 100
#: rule 4: Core's DEFAULT_INCREMENTAL_RELAY_FEE, 1000 sat/kvB
INCREMENTAL_RELAY_SAT_PER_VB = 1


@dataclass(frozen=True, slots=True)
class Conflict:
    """A mempool transaction a replacement would evict, with its fee; ``direct``: it spends one
    of the replacement's inputs (else it descends from one that does)."""

    tx: Tx
    fee_sat: int
    direct: bool


def signals_rbf(tx: Tx) -> bool:
    """BIP 125 opt-in: some input's nSequence is at most 0xfffffffd."""
    return any(txin.sequence <= MAX_BIP125_RBF_SEQUENCE for txin in tx.inputs)


def check_replacement(
    tx: Tx,
    fee_sat: int,
    conflicts: Collection[Conflict],
    in_mempool: Callable[[bytes], bool],
) -> None:
    """Raise ``ChainError`` unless ``tx`` (paying ``fee_sat``) may evict ``conflicts`` (the direct
    conflicts and all their descendants) under the rules above. ``in_mempool(txid)``: whether a
    transaction waits in the mempool (its outputs are unconfirmed)."""
    new_txid = tx.txid[::-1].hex()
    direct = [c for c in conflicts if c.direct]
    for c in direct:
        if not signals_rbf(c.tx):
            shared = next(i.prevout for i in tx.inputs if i.prevout in {j.prevout for j in c.tx.inputs})
            raise ChainError(
                f"txn-mempool-conflict: input {shared} is already spent by mempool transaction "
                f"{c.tx.txid_hex}, which does not signal replaceability (BIP 125)",
                code="txn-mempool-conflict",
            )
    if len(conflicts) > MAX_REPLACEMENT_CANDIDATES:
        raise ChainError(
            f"too many potential replacements: rejecting replacement {new_txid}; too many potential "
            f"replacements ({len(conflicts)} > {MAX_REPLACEMENT_CANDIDATES})",
            code="too many potential replacements",
        )
    # rule 2: unconfirmed inputs only those the replaced transactions had already
    known = {txin.prevout.txid for c in direct for txin in c.tx.inputs}
    for txin in tx.inputs:
        if txin.prevout.txid not in known and in_mempool(txin.prevout.txid):
            raise ChainError(
                f"replacement-adds-unconfirmed: replacement {new_txid} adds unconfirmed input, idx "
                f"{tx.inputs.index(txin)}",
                code="replacement-adds-unconfirmed",
            )
    evicted = {c.tx.txid for c in conflicts}
    for txin in tx.inputs:
        if txin.prevout.txid in evicted:
            raise ChainError(
                f"bad-txns-spends-conflicting-tx: {new_txid} spends conflicting transaction "
                f"{txin.prevout.txid[::-1].hex()}",
                code="bad-txns-spends-conflicting-tx",
            )
    vsize = tx.vsize
    for c in direct:  # rule 6, checked first by Core
        if fee_sat * c.tx.vsize <= c.fee_sat * vsize:
            raise ChainError(
                f"insufficient fee: rejecting replacement {new_txid}; new feerate "
                f"{fee_sat / vsize:.3f} sat/vB <= old feerate {c.fee_sat / c.tx.vsize:.3f} sat/vB",
                code="insufficient fee",
            )
    evicted_fees = sum(c.fee_sat for c in conflicts)
    if fee_sat < evicted_fees:  # rule 3
        raise ChainError(
            f"insufficient fee: rejecting replacement {new_txid}, less fees than conflicting txs; "
            f"{fee_sat} < {evicted_fees} sat",
            code="insufficient fee",
        )
    relay = INCREMENTAL_RELAY_SAT_PER_VB * vsize
    if fee_sat - evicted_fees < relay:  # rule 4
        raise ChainError(
            f"insufficient fee: rejecting replacement {new_txid}, not enough additional fees to relay; "
            f"{fee_sat - evicted_fees} < {relay} sat",
            code="insufficient fee",
        )


def descendants_of(roots: Collection[bytes], spender_of: Callable[[OutPoint], bytes | None],
                   outputs: Callable[[bytes], int]) -> list[bytes]:
    """``roots`` and every transaction spending their outputs, transitively (roots first, then by
    discovery). ``spender_of(outpoint)``: the mempool transaction spending it; ``outputs(txid)``:
    how many outputs that transaction has."""
    found = list(dict.fromkeys(roots))
    seen = set(found)
    i = 0
    while i < len(found):
        txid = found[i]
        i += 1
        for vout in range(outputs(txid)):
            child = spender_of(OutPoint(txid, vout))
            if child is not None and child not in seen:
                seen.add(child)
                found.append(child)
    return found
