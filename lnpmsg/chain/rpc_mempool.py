"""The mempool's RPC methods (``sendrawtransaction``, ``testmempoolaccept``,
``getrawmempool``, ``getmempoolentry``, ``getmempoolinfo``,
``gettxspendingprevout``) over the embedded chain; blocking calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mempool import MempoolEntry
from lnpmsg.chain.regtest import RegtestChain
from lnpmsg.chain.rpc_format import Amount
from lnpmsg.chain.rpc_methods import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
    RpcError,
    is_default,
)
from lnpmsg.chain.rpc_params import bool_param, btc_param, feerate_limit, hash_param, int_param, json_type, tx_param

__all__ = ["MIN_RELAY_SAT_PER_KVB", "MempoolCalls"]

#: Core's relay floor, 1 sat/vB, as BTC/kvB
MIN_RELAY_SAT_PER_KVB = 1_000
_MAX_PACKAGE = 25


def _policy_error(exc: ChainError) -> RpcError:
    """A mempool rejection as sendrawtransaction reports it."""
    code = exc.code if isinstance(exc.code, str) else None
    if code == "malformed":
        return RpcError(RPC_DESERIALIZATION_ERROR, exc.reason)
    if code == "bad-txns-inputs-missingorspent":
        return RpcError(RPC_VERIFY_ERROR, code)
    reason = exc.reason
    if code and reason.startswith(code + ": "):
        reason = f"{code} ({reason[len(code) + 2:]})"
    return RpcError(RPC_VERIFY_REJECTED, reason)


class MempoolCalls:
    """The mempool methods; ``ChainRpcCalls`` has them with the rest."""

    core: RegtestChain
    _clock: Callable[[], float]
    _seen: dict[bytes, int]

    def _trial(self, tx: Tx, max_feerate: int) -> MempoolEntry:
        """Run the mempool's checks on ``tx``, changing nothing (call with the lock held)."""
        core = self.core
        entry = core.mempool.check(tx, core.index)
        if max_feerate and entry.fee_sat * 1000 > max_feerate * tx.vsize:
            raise RpcError(RPC_VERIFY_ERROR, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
        return entry

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any = None, maxburnamount: Any = None) -> str:
        tx = tx_param(hexstring)
        max_fee = feerate_limit(maxfeerate)
        max_burn = 0 if is_default(maxburnamount) else btc_param(maxburnamount, "maxburnamount")
        if any(out.script_pubkey[:1] == b"\x6a" and out.amount_sat > max_burn for out in tx.outputs):
            raise RpcError(RPC_VERIFY_ERROR, "Unspendable output exceeds maximum configured by user (maxburnamount)")
        core = self.core
        with core.lock:
            if tx.txid in core.mempool:
                return tx.txid_hex
            if tx.txid in core.index.txs:
                raise RpcError(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
            try:
                if max_fee:
                    self._trial(tx, max_fee)
                core.broadcast(tx)
            except ChainError as exc:
                raise _policy_error(exc) from exc
            self._seen[tx.txid] = int(self._clock())
        return tx.txid_hex

    def testmempoolaccept(self, rawtxs: Any, maxfeerate: Any = None) -> list[dict[str, Any]]:
        if not isinstance(rawtxs, list):
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for rawtxs is not of expected type array" % json_type(rawtxs))
        if not 1 <= len(rawtxs) <= _MAX_PACKAGE:
            raise RpcError(RPC_INVALID_PARAMETER, f"Array must contain between 1 and {_MAX_PACKAGE} transactions.")
        txs = [tx_param(raw) for raw in rawtxs]
        max_fee = feerate_limit(maxfeerate)
        core = self.core
        results: list[dict[str, Any]] = []
        # a dry run: the mempool (and mempool.dat) are never touched; a
        # transaction that passes is counted as waiting for the ones after it
        with core.lock:
            package: list[Tx] = []
            for tx in txs:
                result: dict[str, Any] = {"txid": tx.txid_hex, "wtxid": hash_to_hex(tx.wtxid)}
                if tx.txid in core.mempool:
                    result.update(allowed=False, **{"reject-reason": "txn-already-in-mempool"})
                elif tx.txid in core.index.txs:
                    result.update(allowed=False, **{"reject-reason": "txn-already-known"})
                elif len(txs) > 1 and any(core.mempool.spender_of(i.prevout) is not None for i in tx.inputs):
                    # as Core: a lone transaction may replace (BIP 125), a package's may not
                    result.update(allowed=False, **{"reject-reason": "bip125-replacement-disallowed"})
                else:
                    try:
                        entry = core.mempool.check(tx, core.index, package=package)
                        package.append(tx)  # children in the package see it
                        if max_fee and entry.fee_sat * 1000 > max_fee * tx.vsize:
                            result.update(allowed=False, **{"reject-reason": "max-fee-exceeded"})
                        else:
                            result.update(
                                allowed=True,
                                vsize=tx.vsize,
                                fees={
                                    "base": Amount(entry.fee_sat),
                                    "effective-feerate": Amount(entry.fee_sat * 1000 // tx.vsize),
                                    "effective-includes": [hash_to_hex(tx.wtxid)],
                                },
                            )
                    except ChainError as exc:
                        reason = exc.code if isinstance(exc.code, str) else "rejected"
                        if reason == "bad-txns-inputs-missingorspent":
                            reason = "missing-inputs"
                        result.update(allowed=False, **{"reject-reason": reason})
                results.append(result)
        return results

    def _entry_json(self, entry: MempoolEntry) -> dict[str, Any]:
        core = self.core
        mempool = core.mempool
        tx = entry.tx
        parents = sorted({txin.prevout.txid for txin in tx.inputs if txin.prevout.txid in mempool})
        children = sorted(
            {spender for vout in range(len(tx.outputs)) if (spender := mempool.spender_of(OutPoint(tx.txid, vout)))}
        )
        ancestors = self._closure(tx.txid, up=True)
        descendants = self._closure(tx.txid, up=False)
        size = {txid: mempool.get(txid).tx.vsize for txid in ancestors | descendants}  # type: ignore[union-attr]
        fee = {txid: mempool.get(txid).fee_sat for txid in ancestors | descendants}  # type: ignore[union-attr]
        return {
            "vsize": tx.vsize,
            "weight": tx.weight,
            "time": self._seen.setdefault(tx.txid, int(self._clock())),
            "height": core.index.height,
            "descendantcount": len(descendants),
            "descendantsize": sum(size[t] for t in descendants),
            "ancestorcount": len(ancestors),
            "ancestorsize": sum(size[t] for t in ancestors),
            "wtxid": hash_to_hex(tx.wtxid),
            "fees": {
                "base": Amount(entry.fee_sat),
                "modified": Amount(entry.fee_sat),
                "ancestor": Amount(sum(fee[t] for t in ancestors)),
                "descendant": Amount(sum(fee[t] for t in descendants)),
            },
            "depends": [hash_to_hex(t) for t in parents],
            "spentby": [hash_to_hex(t) for t in children],
            "bip125-replaceable": any(txin.sequence < 0xFFFFFFFE for txin in tx.inputs),
            "unbroadcast": False,
        }

    def _closure(self, txid: bytes, *, up: bool) -> set[bytes]:
        """The transaction and its mempool ancestors (``up``) or descendants."""
        mempool = self.core.mempool
        found = {txid}
        todo = [txid]
        while todo:
            entry = mempool.get(todo.pop())
            if entry is None:
                continue
            if up:
                nexts = {i.prevout.txid for i in entry.tx.inputs if i.prevout.txid in mempool}
            else:
                nexts = {
                    s for v in range(len(entry.tx.outputs))
                    if (s := mempool.spender_of(OutPoint(entry.tx.txid, v))) is not None
                }
            for other in nexts - found:
                found.add(other)
                todo.append(other)
        return found

    def getrawmempool(self, verbose: Any = False, mempool_sequence: Any = False) -> Any:
        verbose = False if is_default(verbose) else bool_param(verbose, "verbose")
        if not is_default(mempool_sequence) and bool_param(mempool_sequence, "mempool_sequence"):
            raise RpcError(RPC_INVALID_PARAMETER, "mempool_sequence is not supported by this server")
        core = self.core
        with core.lock:
            entries = core.mempool.entries()
            waiting = {e.tx.txid for e in entries}
            for gone in [t for t in self._seen if t not in waiting]:
                del self._seen[gone]
            if not verbose:
                return [e.tx.txid_hex for e in entries]
            return {e.tx.txid_hex: self._entry_json(e) for e in entries}

    def getmempoolentry(self, txid: Any) -> dict[str, Any]:
        tx_hash = hash_param(txid, "txid")
        with self.core.lock:
            entry = self.core.mempool.get(tx_hash)
            if entry is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
            return self._entry_json(entry)

    def getmempoolinfo(self) -> dict[str, Any]:
        with self.core.lock:
            entries = self.core.mempool.entries()
            floor = Amount(MIN_RELAY_SAT_PER_KVB)
            return {
                "loaded": True,
                "size": len(entries),
                "bytes": sum(e.tx.vsize for e in entries),
                "usage": sum(e.tx.weight for e in entries),
                "total_fee": Amount(sum(e.fee_sat for e in entries)),
                "maxmempool": 300_000_000,
                "mempoolminfee": floor,
                "minrelaytxfee": floor,
                "incrementalrelayfee": floor,
                "unbroadcastcount": 0,
                "fullrbf": False,
            }

    def gettxspendingprevout(self, outputs: Any, options: Any = None) -> list[dict[str, Any]]:
        if not isinstance(outputs, list):
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for outputs is not of expected type array" % json_type(outputs))
        if not outputs:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        wanted: list[OutPoint] = []
        for item in outputs:
            if not isinstance(item, dict):
                raise RpcError(RPC_TYPE_ERROR, "each output is an object {\"txid\", \"vout\"}")
            if "vout" not in item:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
            vout = int_param(item["vout"], "vout")
            if vout < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            wanted.append(OutPoint(hash_param(item.get("txid"), "txid"), vout))
        results: list[dict[str, Any]] = []
        with self.core.lock:
            for outpoint in wanted:
                entry: dict[str, Any] = {"txid": outpoint.txid_hex, "vout": outpoint.vout}
                spender = self.core.mempool.spender_of(outpoint)
                if spender is not None:
                    entry["spendingtxid"] = hash_to_hex(spender)
                results.append(entry)
        return results
