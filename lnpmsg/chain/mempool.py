"""A small mempool for the embedded chain: pre-checks before a transaction
may wait for a block (sans-IO).

The pre-checks exist so that one bad transaction cannot make every block the
chain mines fail; they are not the judge. The kernel is: a block holding a
transaction is the only proof that it is valid. Checks, in order, each
failing with ``ChainError`` whose ``code`` is Bitcoin Core's reject reason
where Core has one:

1. structure: at least one input and output, amounts within [0, 21M BTC]
   (``bad-txns-vout-negative`` / ``-toolarge``), no input twice
   (``bad-txns-inputs-duplicate``), not a coinbase (``coinbase``);
2. policy size: weight <= 400 000 (``tx-size``), non-witness size >= 65
   bytes (``tx-size-small``);
3. inputs exist unspent in the chain or in the mempool
   (``bad-txns-inputs-missingorspent``), coinbase outputs are mature
   (``bad-txns-premature-spend-of-coinbase``); inputs another mempool
   transaction spends: a BIP 125 replacement of it (see
   :mod:`lnpmsg.chain.replacement`), else ``txn-mempool-conflict``;
4. fee = inputs - outputs >= 0 (``bad-txns-in-belowout``);
5. finality for the next block: nLockTime (``non-final``) and BIP68
   relative locks (``non-BIP68-final``);
6. scripts, checked by the kernel's own script interpreter through the
   injected ``verify_scripts`` (``mandatory-script-verify-flag-failed``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.encoding import MAX_BLOCK_WEIGHT
from lnpmsg.bitcoin.hashes import hash_from_hex
from lnpmsg.bitcoin.tx import (
    LOCKTIME_THRESHOLD,
    MAX_MONEY,
    SEQUENCE_FINAL,
    OutPoint,
    Tx,
    TxOut,
)
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mining import COINBASE_MATURITY
from lnpmsg.chain.replacement import Conflict, check_replacement, descendants_of
from lnpmsg.chain.utxo import Coin, UtxoIndex

__all__ = [
    "MAX_MEMPOOL_WEIGHT",
    "MAX_STANDARD_TX_WEIGHT",
    "MIN_STANDARD_TX_NONWITNESS_SIZE",
    "Mempool",
    "MempoolEntry",
    "ScriptVerifier",
]

log = logging.getLogger(__name__)

#: Core policy: larger transactions are not relayed (they would crowd blocks)
MAX_STANDARD_TX_WEIGHT = 400_000
#: Core policy: 64-byte transactions are ambiguous with merkle tree nodes (CVE-2017-12842)
MIN_STANDARD_TX_NONWITNESS_SIZE = 65
#: bound on what waits here: ten blocks' worth, plenty for a development chain
MAX_MEMPOOL_WEIGHT = 10 * MAX_BLOCK_WEIGHT
#: BIP68 fields of nSequence
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0x0000FFFF
SEQUENCE_LOCKTIME_GRANULARITY = 9  # time-based locks count units of 512 s
#: a txid in a reject reason
_HEX_HASH = re.compile(r"\b[0-9a-f]{64}\b")

#: checks a transaction's input scripts against the outputs they spend;
#: returns None when all pass, else the reason
ScriptVerifier = Callable[[Tx, list[TxOut]], "str | None"]


@dataclass(frozen=True, slots=True)
class MempoolEntry:
    """A transaction waiting for a block, with its fee."""

    tx: Tx
    fee_sat: int


class Mempool:
    """Transactions waiting for the next blocks, in arrival order (parents first)."""

    def __init__(self, verify_scripts: ScriptVerifier | None = None) -> None:
        self._verify_scripts = verify_scripts
        self._entries: dict[bytes, MempoolEntry] = {}
        self._spent_by: dict[OutPoint, bytes] = {}
        self._weight = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, txid: object) -> bool:
        return txid in self._entries

    def entries(self) -> list[MempoolEntry]:
        """Entries in arrival order (every parent before its children)."""
        return list(self._entries.values())

    def get(self, txid: bytes) -> MempoolEntry | None:
        return self._entries.get(txid)

    def spender_of(self, outpoint: OutPoint) -> bytes | None:
        """Txid of the mempool transaction spending ``outpoint``, if any."""
        return self._spent_by.get(outpoint)

    def accept(
        self, tx: Tx, index: UtxoIndex, *, check_scripts: bool = True
    ) -> MempoolEntry:
        """Run the pre-checks for inclusion in the block after ``index``'s tip; add ``tx``."""
        return self.accept_replacing(tx, index, check_scripts=check_scripts)[0]

    def accept_replacing(
        self, tx: Tx, index: UtxoIndex, *, check_scripts: bool = True, replace: bool = True
    ) -> tuple[MempoolEntry, list[Tx]]:
        """``accept``, and the transactions ``tx`` replaced (BIP 125), evicted from the mempool.

        ``replace=False``: a conflict is refused (``txn-mempool-conflict``) whatever the fees.
        """
        if tx.txid in self._entries:
            return self._entries[tx.txid], []
        entry = self.check(tx, index, check_scripts=check_scripts, replace=replace)
        evicted = [self._entries[txid].tx for txid in self._conflicts_of(tx)]
        self.remove(t.txid for t in evicted)
        self._entries[tx.txid] = entry
        for txin in tx.inputs:
            self._spent_by[txin.prevout] = tx.txid
        self._weight += tx.weight
        if evicted:
            log.info("mempool: %s replaced %s", tx.txid_hex, ", ".join(t.txid_hex for t in evicted))
        return entry, evicted

    def _conflicts_of(self, tx: Tx) -> list[bytes]:
        """The mempool transactions spending ``tx``'s inputs, then all their descendants."""
        direct = [txid for txin in tx.inputs if (txid := self._spent_by.get(txin.prevout)) is not None]
        return descendants_of(direct, self._spent_by.get, lambda txid: len(self._entries[txid].tx.outputs))

    def check(
        self,
        tx: Tx,
        index: UtxoIndex,
        *,
        check_scripts: bool = True,
        package: Sequence[Tx] = (),
        replace: bool = True,
    ) -> MempoolEntry:
        """Run the pre-checks ``accept`` runs, changing nothing: the entry ``tx`` would get.

        ``package``: transactions checked before it (``testmempoolaccept``'s
        list), counted as waiting here: ``tx`` may spend their outputs and
        conflicts with what they spend. A transaction spending what a mempool
        transaction spends must replace it (BIP 125; never within a package,
        nor with ``replace=False``): the entry is then what it would be once
        the conflicts are evicted.
        """
        package_outputs = {p.txid: p for p in package}
        package_spent = {txin.prevout: p.txid for p in package for txin in p.inputs}
        _check_structure(tx)
        spent_coins = [self._coin_for(txin.prevout, index, package_outputs) for txin in tx.inputs]
        replaces = replace and not package and any(txin.prevout in self._spent_by for txin in tx.inputs)
        for txin in tx.inputs:
            other = package_spent.get(txin.prevout) or (None if replaces else self._spent_by.get(txin.prevout))
            if other is not None:
                raise ChainError(
                    f"txn-mempool-conflict: input {txin.prevout} is already spent by mempool "
                    f"transaction {other[::-1].hex()}",
                    code="txn-mempool-conflict",
                )
        next_height = index.height + 1
        for txin, coin in zip(tx.inputs, spent_coins):
            if coin.is_coinbase and next_height - coin.height < COINBASE_MATURITY:
                raise ChainError(
                    f"bad-txns-premature-spend-of-coinbase: {txin.prevout} is a coinbase output "
                    f"of height {coin.height}, spendable from height {coin.height + COINBASE_MATURITY}",
                    code="bad-txns-premature-spend-of-coinbase",
                )
        value_in = sum(c.txout.amount_sat for c in spent_coins)
        value_out = sum(o.amount_sat for o in tx.outputs)
        if value_in < value_out:
            raise ChainError(
                f"bad-txns-in-belowout: inputs {value_in} sat < outputs {value_out} sat",
                code="bad-txns-in-belowout",
            )
        _check_final(tx, spent_coins, index)
        if check_scripts and self._verify_scripts is not None:
            failure = self._verify_scripts(tx, [c.txout for c in spent_coins])
            if failure is not None:
                raise ChainError(
                    f"mandatory-script-verify-flag-failed: {failure}",
                    code="mandatory-script-verify-flag-failed",
                )
        fee = value_in - value_out
        freed = 0
        if replaces:
            evicted = self._conflicts_of(tx)
            direct = {self._spent_by[txin.prevout] for txin in tx.inputs if txin.prevout in self._spent_by}
            check_replacement(
                tx,
                fee,
                [Conflict(self._entries[t].tx, self._entries[t].fee_sat, t in direct) for t in evicted],
                self.__contains__,
            )
            freed = sum(self._entries[t].tx.weight for t in evicted)
        if self._weight - freed + sum(p.weight for p in package) + tx.weight > MAX_MEMPOOL_WEIGHT:
            raise ChainError("mempool full", code="mempool-full")
        return MempoolEntry(tx, fee)

    def _coin_for(self, outpoint: OutPoint, index: UtxoIndex, package: dict[bytes, Tx]) -> Coin:
        coin = index.coins.get(outpoint)
        if coin is not None:
            return coin
        parent_entry = self._entries.get(outpoint.txid)
        parent = parent_entry.tx if parent_entry is not None else package.get(outpoint.txid)
        if parent is not None and outpoint.vout < len(parent.outputs):
            # an unconfirmed parent counts as confirming in the next block (as Core does)
            return Coin(parent.outputs[outpoint.vout], index.height + 1, False)
        raise ChainError(
            f"bad-txns-inputs-missingorspent: {outpoint} does not exist or is already spent",
            code="bad-txns-inputs-missingorspent",
        )

    def select(self, max_weight: int) -> list[MempoolEntry]:
        """Entries for the next block in arrival order, within ``max_weight``.

        A transaction whose parent did not fit is skipped too.
        """
        chosen: list[MempoolEntry] = []
        chosen_ids: set[bytes] = set()
        weight = 0
        for entry in self._entries.values():
            parents_ok = all(
                txin.prevout.txid not in self._entries
                or txin.prevout.txid in chosen_ids
                for txin in entry.tx.inputs
            )
            if parents_ok and weight + entry.tx.weight <= max_weight:
                chosen.append(entry)
                chosen_ids.add(entry.tx.txid)
                weight += entry.tx.weight
        return chosen

    def remove(self, txids: Iterable[bytes]) -> None:
        for txid in txids:
            entry = self._entries.pop(txid, None)
            if entry is None:
                continue
            self._weight -= entry.tx.weight
            for txin in entry.tx.inputs:
                if self._spent_by.get(txin.prevout) == txid:
                    del self._spent_by[txin.prevout]

    def revalidate(
        self, index: UtxoIndex, first: Iterable[Tx] = ()
    ) -> list[tuple[Tx, ChainError]]:
        """Re-run the pre-checks after the chain changed; drop what no longer passes.

        ``first`` are transactions to try before the current entries (those of
        blocks a reorg disconnected). Scripts are not re-checked for entries
        that passed before: script validity does not depend on the chain.
        Returns the dropped transactions with the reason.
        """
        previous = self.entries()
        self._entries.clear()
        self._spent_by.clear()
        self._weight = 0
        dropped: list[tuple[Tx, ChainError]] = []
        for tx in first:
            if tx.txid in index.txs:
                continue
            try:
                self.accept_replacing(tx, index, replace=False)
            except ChainError as exc:
                dropped.append((tx, exc))
        for entry in previous:
            if entry.tx.txid in index.txs:
                continue  # confirmed
            try:
                # what waited before does not replace a transaction a reorg brought back
                self.accept_replacing(entry.tx, index, check_scripts=False, replace=False)
            except ChainError as exc:
                dropped.append((entry.tx, exc))
        return dropped


    def evict_for_rejected_block(self, block: Block, reason: str, index: UtxoIndex) -> int:
        """Drop what made a block of mempool transactions fail: the
        transactions the kernel's ``reason`` names, or, if it names none,
        every one the block held; then re-check the rest. Returns how many
        left."""
        in_block = {tx.txid for tx in block.txs[1:]}
        named = {hash_from_hex(h) for h in _HEX_HASH.findall(reason)} & in_block
        before = len(self)
        self.remove(named or in_block)
        self.revalidate(index)
        return before - len(self)

def _check_structure(tx: Tx) -> None:
    if tx.is_coinbase:
        raise ChainError("coinbase: a coinbase cannot be broadcast", code="coinbase")
    if not tx.outputs:
        raise ChainError(
            "bad-txns-vout-empty: transaction without outputs",
            code="bad-txns-vout-empty",
        )
    total = 0
    for out in tx.outputs:
        if out.amount_sat < 0:
            raise ChainError(
                "bad-txns-vout-negative: negative output amount",
                code="bad-txns-vout-negative",
            )
        if out.amount_sat > MAX_MONEY:
            raise ChainError(
                "bad-txns-vout-toolarge: output above 21M BTC",
                code="bad-txns-vout-toolarge",
            )
        total += out.amount_sat
    if total > MAX_MONEY:
        raise ChainError(
            "bad-txns-txouttotal-toolarge: outputs sum above 21M BTC",
            code="bad-txns-txouttotal-toolarge",
        )
    prevouts = [txin.prevout for txin in tx.inputs]
    if len(set(prevouts)) != len(prevouts):
        raise ChainError(
            "bad-txns-inputs-duplicate: an input is spent twice",
            code="bad-txns-inputs-duplicate",
        )
    if tx.weight > MAX_STANDARD_TX_WEIGHT:
        raise ChainError(
            f"tx-size: weight {tx.weight} > {MAX_STANDARD_TX_WEIGHT}", code="tx-size"
        )
    if len(tx.serialize(witness=False)) < MIN_STANDARD_TX_NONWITNESS_SIZE:
        raise ChainError(
            "tx-size-small: non-witness size below 65 bytes", code="tx-size-small"
        )


def _check_final(tx: Tx, coins: list[Coin], index: UtxoIndex) -> None:
    next_height = index.height + 1
    # BIP113: time locks compare against the median time past of the tip
    mtp = index.median_time_past()
    if tx.locktime and any(txin.sequence != SEQUENCE_FINAL for txin in tx.inputs):
        limit = next_height if tx.locktime < LOCKTIME_THRESHOLD else mtp
        if tx.locktime >= limit:
            raise ChainError(
                f"non-final: nLockTime {tx.locktime} not reached (next block height {next_height}, "
                f"median time past {mtp})",
                code="non-final",
            )
    if tx.version < 2:
        return
    for txin, coin in zip(tx.inputs, coins):
        seq = txin.sequence
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG:
            continue
        value = seq & SEQUENCE_LOCKTIME_MASK
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG:
            base = index.median_time_past(max(coin.height - 1, 0))
            ready = base + (value << SEQUENCE_LOCKTIME_GRANULARITY) - 1 < mtp
        else:
            ready = coin.height + value - 1 < next_height
        if not ready:
            raise ChainError(
                f"non-BIP68-final: input {txin.prevout} is relatively locked for {value} "
                f"{'units of 512 s' if seq & SEQUENCE_LOCKTIME_TYPE_FLAG else 'blocks'} "
                f"from its confirmation at height {coin.height}",
                code="non-BIP68-final",
            )
