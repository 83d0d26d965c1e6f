"""The Electrum server's index of one chain (sans-IO): headers, and for every
script hash its history, unspent outputs and waiting transactions.

Kept incrementally: ``connect(height, block)`` and ``disconnect()`` follow
the active chain block by block (each block keeps the undo record a reorg
needs), ``set_mempool(entries)`` applies the difference to the last mempool
seen. Every change returns the script hashes whose history changed, so the
server notifies only their subscribers. Nothing is rebuilt per request.

The index lives in memory and is rebuilt from the chain on start (a regtest
chain of 10,000 blocks takes seconds).

A script hash is SHA-256 of an output's scriptPubKey, kept here in that
byte order; the protocol shows it reversed, as hex (``scripthash_from_hex``).
Transaction and block hashes are in internal order (``hash_to_hex`` prints).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lnpmsg._hex import parse_hex
from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import hash_to_hex, sha256, sha256d
from lnpmsg.bitcoin.tx import Tx

__all__ = [
    "ElectrumIndex",
    "HistoryItem",
    "IndexMismatch",
    "Unspent",
    "merkle_branch",
    "script_hash",
    "scripthash_from_hex",
    "scripthash_to_hex",
]

#: (txid, vout), cheaper than ``OutPoint`` for a dict key built per output
_Key = tuple[bytes, int]


class IndexMismatch(Exception):
    """The index cannot apply a block (it does not extend the indexed tip)."""


def script_hash(script_pubkey: bytes) -> bytes:
    """The index key of a scriptPubKey: its SHA-256 (not reversed)."""
    return sha256(script_pubkey)


def scripthash_to_hex(sh: bytes) -> str:
    """A script hash as the protocol shows it (reversed, hex)."""
    return sh[::-1].hex()


def scripthash_from_hex(text: str) -> bytes:
    """Parse a protocol script hash (64 hex digits); ValueError if it is not one."""
    return parse_hex(text, "a script hash", 32)[::-1]


def merkle_branch(hashes: Sequence[bytes], index: int) -> tuple[list[bytes], bytes]:
    """The merkle branch of ``hashes[index]`` and the root (Bitcoin's tree: an
    odd level repeats its last node). Hashes in internal order."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"position {index} outside 0..{len(hashes) - 1}")
    branch: list[bytes] = []
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[index ^ 1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return branch, level[0]


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One transaction touching a script hash: confirmed (``height`` > 0), or
    waiting (``height`` 0, or -1 with an unconfirmed parent; ``fee`` in sat)."""

    txid: bytes
    height: int
    fee: int | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"height": self.height, "tx_hash": hash_to_hex(self.txid)}
        if self.fee is not None:
            out["fee"] = self.fee
        return out


@dataclass(frozen=True, slots=True)
class Unspent:
    """An unspent output of a script hash (``height`` 0: waiting)."""

    txid: bytes
    vout: int
    value: int
    height: int

    def as_json(self) -> dict[str, object]:
        return {"tx_hash": hash_to_hex(self.txid), "tx_pos": self.vout, "height": self.height, "value": self.value}


@dataclass(slots=True)
class _Output:
    sh: bytes
    value: int
    height: int
    position: int  # of its transaction in the block (chain order for listunspent)


@dataclass(slots=True)
class _Undo:
    touched: list[bytes]  # one entry per history item added, in order
    created: list[_Key]
    spent: list[tuple[_Key, _Output]]


@dataclass(slots=True)
class _Waiting:
    """A mempool transaction as the index sees it."""

    txid: bytes
    fee: int
    vsize: int
    inputs: tuple[tuple[_Key, bytes, int], ...]  # prevout, its script hash, its value
    outputs: tuple[tuple[int, bytes, int], ...]  # vout, script hash, value
    touched: frozenset[bytes]
    height: int = 0  # 0, or -1 while a parent waits too


class ElectrumIndex:
    """Headers and per-script-hash history of the active chain and the mempool."""

    def __init__(self) -> None:
        self.headers: list[bytes] = []  # 80 bytes each, index = height
        self.hashes: list[bytes] = []
        self._txids: list[tuple[bytes, ...]] = []
        self._history: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self._outputs: dict[_Key, _Output] = {}
        self._unspent: dict[bytes, dict[_Key, None]] = {}
        self._undo: list[_Undo] = []
        self._waiting: dict[bytes, _Waiting] = {}
        self._waiting_by_sh: dict[bytes, dict[bytes, None]] = {}
        self._waiting_outputs: dict[_Key, tuple[bytes, int]] = {}
        self._waiting_spends: dict[_Key, bytes] = {}
        self._status: dict[bytes, str | None] = {}

    # ------------------------------------------------------------ chain

    @property
    def height(self) -> int:
        """Height of the indexed tip (-1 when empty)."""
        return len(self.hashes) - 1

    @property
    def tip_hash(self) -> bytes | None:
        return self.hashes[-1] if self.hashes else None

    def connect(self, block: Block) -> set[bytes]:
        """Apply the next block of the active chain; the script hashes it touched."""
        height = len(self.hashes)
        if height and block.header.prev_hash != self.hashes[-1]:
            raise IndexMismatch(f"block {hash_to_hex(block.hash)} does not extend the indexed tip")
        undo = _Undo([], [], [])
        txids = tuple(tx.txid for tx in block.txs)
        # the genesis coinbase is unspendable and in no history (as Core's UTXO set)
        for position, tx in enumerate(block.txs if height else ()):
            txid = txids[position]
            touched: dict[bytes, None] = {}
            if not tx.is_coinbase:
                for txin in tx.inputs:
                    key = (txin.prevout.txid, txin.prevout.vout)
                    out = self._outputs.pop(key, None)
                    if out is None:
                        continue  # an output nobody can own (OP_RETURN) or from genesis
                    self._unspent[out.sh].pop(key, None)
                    undo.spent.append((key, out))
                    touched[out.sh] = None
            for vout, txout in enumerate(tx.outputs):
                if txout.script_pubkey[:1] == b"\x6a":
                    continue  # OP_RETURN: provably unspendable, in no history (as ElectrumX)
                sh = script_hash(txout.script_pubkey)
                touched[sh] = None
                key = (txid, vout)
                self._outputs[key] = _Output(sh, txout.amount_sat, height, position)
                self._unspent.setdefault(sh, {})[key] = None
                undo.created.append(key)
            for sh in touched:
                self._history.setdefault(sh, []).append((height, position, txid))
                undo.touched.append(sh)
        self.headers.append(block.header.serialize())
        self.hashes.append(block.hash)
        self._txids.append(txids)
        self._undo.append(undo)
        changed = set(undo.touched)
        self._forget_status(changed)
        return changed

    def disconnect(self) -> set[bytes]:
        """Roll back the tip block (a reorg); the script hashes it had touched."""
        if not self.hashes:
            raise IndexMismatch("nothing to disconnect")
        height = len(self.hashes) - 1
        undo = self._undo.pop()
        for sh in reversed(undo.touched):
            items = self._history[sh]
            items.pop()
            if not items:
                del self._history[sh]
        for key in undo.created:
            out = self._outputs.pop(key)
            unspent = self._unspent[out.sh]
            unspent.pop(key, None)
            if not unspent:
                del self._unspent[out.sh]
        for key, out in undo.spent:
            self._outputs[key] = out
            self._unspent.setdefault(out.sh, {})[key] = None
        self.headers.pop()
        self.hashes.pop()
        self._txids.pop()
        assert len(self.hashes) == height
        changed = set(undo.touched)
        self._forget_status(changed)
        return changed

    def txids_at(self, height: int) -> tuple[bytes, ...]:
        """The txids of the active chain's block at ``height``, in block order."""
        return self._txids[height]

    def header_at(self, height: int) -> bytes:
        return self.headers[height]

    # ------------------------------------------------------------ mempool

    def set_mempool(self, entries: Iterable[tuple[Tx, int]]) -> set[bytes]:
        """Make the mempool layer equal ``entries`` ((tx, fee), parents first);
        the script hashes whose waiting transactions changed.

        Call it with a mempool that goes with the indexed tip: inputs are
        looked up among confirmed outputs and earlier entries.
        """
        wanted = {tx.txid: (tx, fee) for tx, fee in entries}
        changed: set[bytes] = set()
        for txid in [t for t in self._waiting if t not in wanted]:
            changed |= self._remove_waiting(txid)
        for txid, (tx, fee) in wanted.items():
            if txid not in self._waiting:
                changed |= self._add_waiting(tx, fee)
        # a child's height is -1 while any parent waits: parents may have confirmed
        for waiting in self._waiting.values():
            height = -1 if any(key[0] in self._waiting for key, _, _ in waiting.inputs) else 0
            if height != waiting.height:
                waiting.height = height
                changed |= waiting.touched
        self._forget_status(changed)
        return changed

    def _add_waiting(self, tx: Tx, fee: int) -> set[bytes]:
        txid = tx.txid
        inputs: list[tuple[_Key, bytes, int]] = []
        for txin in tx.inputs:
            key = (txin.prevout.txid, txin.prevout.vout)
            confirmed = self._outputs.get(key)
            if confirmed is not None:
                inputs.append((key, confirmed.sh, confirmed.value))
            elif (parent := self._waiting_outputs.get(key)) is not None:
                inputs.append((key, parent[0], parent[1]))
        outputs = tuple(
            (vout, script_hash(out.script_pubkey), out.amount_sat)
            for vout, out in enumerate(tx.outputs)
            if out.script_pubkey[:1] != b"\x6a"
        )
        touched = frozenset([sh for _, sh, _ in inputs] + [sh for _, sh, _ in outputs])
        waiting = _Waiting(txid, fee, tx.vsize, tuple(inputs), outputs, touched)
        self._waiting[txid] = waiting
        for key, _, _ in inputs:
            self._waiting_spends[key] = txid
        for vout, sh, value in outputs:
            self._waiting_outputs[(txid, vout)] = (sh, value)
        for sh in touched:
            self._waiting_by_sh.setdefault(sh, {})[txid] = None
        return set(touched)

    def _remove_waiting(self, txid: bytes) -> set[bytes]:
        waiting = self._waiting.pop(txid)
        for key, _, _ in waiting.inputs:
            if self._waiting_spends.get(key) == txid:
                del self._waiting_spends[key]
        for vout, _, _ in waiting.outputs:
            self._waiting_outputs.pop((txid, vout), None)
        for sh in waiting.touched:
            by_sh = self._waiting_by_sh[sh]
            by_sh.pop(txid, None)
            if not by_sh:
                del self._waiting_by_sh[sh]
        return set(waiting.touched)

    @property
    def mempool_size(self) -> int:
        return len(self._waiting)

    def fee_histogram(self, bin_vsize: int = 100_000) -> list[list[float | int]]:
        """``mempool.get_fee_histogram``: [fee rate sat/vB, vsize] pairs, rates
        strictly falling; each pair covers at least ``bin_vsize`` vbytes
        (except the last) at rates at least that high."""
        rates = sorted(((w.fee / w.vsize, w.vsize) for w in self._waiting.values()), reverse=True)
        out: list[list[float | int]] = []
        size = 0
        for i, (rate, vsize) in enumerate(rates):
            size += vsize
            last = i + 1 == len(rates)
            if (size >= bin_vsize or last) and (last or rates[i + 1][0] < rate):
                out.append([round(rate, 3), size])
                size = 0
        # rounding may join neighbours: keep the rates strictly falling
        merged: list[list[float | int]] = []
        for rate, vsize in out:
            if merged and merged[-1][0] <= rate:
                merged[-1][1] += vsize
            else:
                merged.append([rate, vsize])
        return merged

    # ------------------------------------------------------------ queries

    def history(self, sh: bytes) -> list[HistoryItem]:
        """Confirmed by height and position in block, then waiting in arrival order."""
        items = [HistoryItem(txid, height) for height, _, txid in self._history.get(sh, ())]
        return items + self.mempool_history(sh)

    def mempool_history(self, sh: bytes) -> list[HistoryItem]:
        out = []
        for txid in self._waiting_by_sh.get(sh, ()):
            waiting = self._waiting[txid]
            out.append(HistoryItem(txid, waiting.height, waiting.fee))
        return out

    def status(self, sh: bytes) -> str | None:
        """The protocol's status of a script hash: SHA-256 of ``txid:height:``
        for each history item, hex; None without history. Cached until it changes."""
        if sh in self._status:
            return self._status[sh]
        items = self.history(sh)
        status = (
            sha256("".join(f"{hash_to_hex(i.txid)}:{i.height}:" for i in items).encode()).hex()
            if items
            else None
        )
        self._status[sh] = status
        return status

    def unspent(self, sh: bytes) -> list[Unspent]:
        """Outputs not spent on the chain nor by a waiting transaction: confirmed
        ones in chain order, then waiting ones (height 0)."""
        out: list[Unspent] = []
        for key in self._unspent.get(sh, ()):
            if key not in self._waiting_spends:
                o = self._outputs[key]
                out.append(Unspent(key[0], key[1], o.value, o.height))
        out.sort(key=lambda u: (u.height, self._outputs[(u.txid, u.vout)].position, u.vout))
        for txid in self._waiting_by_sh.get(sh, ()):
            for vout, out_sh, value in self._waiting[txid].outputs:
                if out_sh == sh and (txid, vout) not in self._waiting_spends:
                    out.append(Unspent(txid, vout, value, 0))
        return out

    def balance(self, sh: bytes) -> tuple[int, int]:
        """(confirmed, unconfirmed) in sat, as ElectrumX counts: confirmed
        outputs, and what waiting transactions add to and take from them."""
        confirmed = sum(self._outputs[key].value for key in self._unspent.get(sh, ()))
        unconfirmed = 0
        for txid in self._waiting_by_sh.get(sh, ()):
            waiting = self._waiting[txid]
            unconfirmed += sum(v for _, s, v in waiting.outputs if s == sh)
            unconfirmed -= sum(v for _, s, v in waiting.inputs if s == sh)
        return confirmed, unconfirmed

    def _forget_status(self, changed: Iterable[bytes]) -> None:
        for sh in changed:
            self._status.pop(sh, None)
