"""The Bitcoin Core RPC methods the embedded regtest chain serves (blocking
calls: run them in a worker thread).

Each method checks its params as Core does and answers in Core's shapes
(``lnpmsg.chain.rpc_format``). Where the embedded chain differs from Core:

- ``estimatesmartfee`` answers the chain's configured fee rate (regtest has
  no fee market); ``getblock`` verbosity 2 and 3 give decoded transactions
  without ``fee`` (as Core does without undo data);
- ``sendtoaddress`` pays from the chain's faucet (the server's only
  "wallet"), so a node on ``--bitcoind-rpc`` can ask for regtest coins as it
  would ask a bitcoind wallet;
- ``generateblock`` needs ``submit=true``; ``getrawmempool`` has no
  ``mempool_sequence``;
- every transaction is indexed (``txindex`` in ``getindexinfo``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.script import decode_script
from lnpmsg.bitcoin.tx import MAX_MONEY, OutPoint, Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mempool import MempoolEntry
from lnpmsg.chain.regtest import RegtestChain
from lnpmsg.chain.rpc_format import (
    REGTEST_DIFFICULTY,
    Amount,
    block_header_json,
    block_sizes,
    script_pubkey_json,
    tx_json,
)
from lnpmsg.chain.rpc_methods import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RpcError,
    RpcMethod,
    Table,
    is_default,
)
from lnpmsg.chain.tx import as_tx

__all__ = ["CORE_VERSION", "ChainRpcCalls"]

#: the Bitcoin Core release whose RPC formats this server follows
CORE_VERSION = 270000
#: Core's default ``maxfeerate`` for sendrawtransaction/testmempoolaccept: 0.10 BTC/kvB
DEFAULT_MAX_FEERATE_SAT_PER_KVB = 10_000_000
#: Core's relay floor, 1 sat/vB, as BTC/kvB
MIN_RELAY_SAT_PER_KVB = 1_000
_MAX_PACKAGE = 25
_NO_TX = "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."


# -- param checks (Core's messages) ---------------------------------------------


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {_json_type(value)} for {name} is not of expected type number")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {_json_type(value)} for {name} is not of expected type bool")
    return value


def _level(value: object, name: str, highest: int) -> int:
    """A verbosity given as a bool (Core's older form) or a number."""
    level = int(value) if isinstance(value, bool) else _int(value, name)
    if not 0 <= level <= highest:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be between 0 and {highest}")
    return level


def _hash(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {_json_type(value)} for {name} is not of expected type string")
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value[:80]}')")
    try:
        return hash_from_hex(value)
    except Exception:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None


def _tx_from_hex(value: object, what: str = "TX decode failed") -> Tx:
    try:
        if not isinstance(value, str):
            raise ValueError
        return as_tx(bytes.fromhex(value))
    except (ValueError, ChainError):
        raise RpcError(RPC_DESERIALIZATION_ERROR, f"{what}. Make sure the tx has at least one input.") from None


def _btc(value: object, name: str) -> int:
    """An amount in BTC (number or string) as satoshis."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise RpcError(RPC_TYPE_ERROR, f"Amount is not a number or string ({name})")
    try:
        sat = Decimal(str(value)) * 100_000_000
    except InvalidOperation:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from None
    if sat != sat.to_integral_value() or not 0 <= sat <= MAX_MONEY:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return int(sat)


def _feerate_limit(value: object) -> int:
    """``maxfeerate`` (BTC/kvB; 0 means no limit) as sat/kvB."""
    return DEFAULT_MAX_FEERATE_SAT_PER_KVB if is_default(value) else _btc(value, "maxfeerate")


def _bip34_height(block: Block) -> int | None:
    try:
        first = next(iter(decode_script(block.txs[0].inputs[0].script_sig)), None)
    except Exception:
        return None
    if isinstance(first, int):
        return 0 if first == 0 else first - 0x50 if 0x51 <= first <= 0x60 else None
    if isinstance(first, bytes) and first and not first[-1] & 0x80:
        return int.from_bytes(first, "little")
    return None


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


class ChainRpcCalls:
    """The RPC methods over one ``RegtestChain`` (see the module docs)."""

    def __init__(self, core: RegtestChain, *, clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self._clock = clock
        self._started = clock()
        #: when each waiting transaction was first seen here (getmempoolentry's "time")
        self._seen: dict[bytes, int] = {}

    def table(self) -> Table:
        """Method name -> ``RpcMethod``, for ``rpc_methods.handle_body``."""
        m = RpcMethod
        return {
            "getblockchaininfo": m(self.getblockchaininfo, ()),
            "getnetworkinfo": m(self.getnetworkinfo, ()),
            "getblockcount": m(self.getblockcount, ()),
            "getbestblockhash": m(self.getbestblockhash, ()),
            "getblockhash": m(self.getblockhash, ("height",), 1),
            "getblockheader": m(self.getblockheader, ("blockhash", "verbose"), 1),
            "getblock": m(self.getblock, ("blockhash", "verbosity"), 1),
            "getrawtransaction": m(self.getrawtransaction, ("txid", "verbose", "blockhash"), 1),
            "gettxout": m(self.gettxout, ("txid", "n", "include_mempool"), 2),
            "sendrawtransaction": m(self.sendrawtransaction, ("hexstring", "maxfeerate", "maxburnamount"), 1),
            "testmempoolaccept": m(self.testmempoolaccept, ("rawtxs", "maxfeerate"), 1),
            "getrawmempool": m(self.getrawmempool, ("verbose", "mempool_sequence")),
            "getmempoolentry": m(self.getmempoolentry, ("txid",), 1),
            "getmempoolinfo": m(self.getmempoolinfo, ()),
            "estimatesmartfee": m(self.estimatesmartfee, ("conf_target", "estimate_mode"), 1),
            "submitblock": m(self.submitblock, ("hexdata", "dummy"), 1),
            "generatetoaddress": m(self.generatetoaddress, ("nblocks", "address", "maxtries"), 2),
            "generateblock": m(self.generateblock, ("output", "transactions", "submit"), 2),
            "invalidateblock": m(self.invalidateblock, ("blockhash",), 1),
            "getindexinfo": m(self.getindexinfo, ("index_name",)),
            "gettxspendingprevout": m(self.gettxspendingprevout, ("outputs", "options"), 1),
            "sendtoaddress": m(
                self.sendtoaddress,
                ("address", "amount", "comment", "comment_to", "subtractfeefromamount", "replaceable",
                 "conf_target", "estimate_mode", "avoid_reuse", "fee_rate", "verbose"),
                2,
            ),
            "uptime": m(self.uptime, ()),
            "ping": m(lambda: None, ()),
        }

    # -- chain ----------------------------------------------------------------

    def getblockchaininfo(self) -> dict[str, Any]:
        core = self.core
        with core.lock:
            index = core.index
            tip = index.tip_hash
            header = Block.parse(core.block(tip)).header
            return {
                "chain": "regtest",
                "blocks": index.height,
                "headers": index.height,
                "bestblockhash": hash_to_hex(tip),
                "bits": f"{header.bits:08x}",
                "difficulty": REGTEST_DIFFICULTY,
                "time": header.time,
                "mediantime": index.median_time_past(),
                "verificationprogress": 1,
                "initialblockdownload": False,
                "chainwork": block_header_json(header, index.height, 1, n_tx=0, median_time=0, next_hash=None)["chainwork"],
                "size_on_disk": sum(p.stat().st_size for p in core.datadir.rglob("*") if p.is_file()),
                "pruned": False,
                "warnings": "",
            }

    def getnetworkinfo(self) -> dict[str, Any]:
        from lnpmsg import __version__

        fee = Amount(MIN_RELAY_SAT_PER_KVB)
        return {
            "version": CORE_VERSION,
            "subversion": f"/lnpmsg:{__version__}/",
            "protocolversion": 70016,
            "localservices": "0000000000000409",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": fee,
            "incrementalfee": fee,
            "localaddresses": [],
            "warnings": "",
        }

    def getblockcount(self) -> int:
        return self.core.height

    def getbestblockhash(self) -> str:
        return self.core.tip().hash_hex

    def uptime(self) -> int:
        return int(self._clock() - self._started)

    def getblockhash(self, height: Any) -> str:
        block_hash = self.core.block_hash(_int(height, "height"))
        if block_hash is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return hash_to_hex(block_hash)

    def _block(self, block_hash: bytes) -> tuple[Block, bytes, int, bool]:
        """The block, its bytes, its height and whether it is in the active chain."""
        core = self.core
        try:
            raw = core.block(block_hash)
        except ChainError:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
        block = Block.parse(raw)
        index = core.index
        if index.hashes and index.hashes[0] == block_hash:
            return block, raw, 0, True
        height = _bip34_height(block)
        if height is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        active = height <= index.height and index.hashes[height] == block_hash
        return block, raw, height, active

    def _header_json(self, block: Block, height: int, active: bool) -> dict[str, Any]:
        index = self.core.index
        return block_header_json(
            block.header,
            height,
            index.height - height + 1 if active else -1,
            n_tx=len(block.txs),
            median_time=index.median_time_past(height) if active else block.header.time,
            next_hash=index.hashes[height + 1] if active and height < index.height else None,
        )

    def getblockheader(self, blockhash: Any, verbose: Any = True) -> Any:
        block_hash = _hash(blockhash, "hash")
        verbose = True if is_default(verbose) else _bool(verbose, "verbose")
        with self.core.lock:
            block, _, height, active = self._block(block_hash)
            if not verbose:
                return block.header.serialize().hex()
            return self._header_json(block, height, active)

    def getblock(self, blockhash: Any, verbosity: Any = 1) -> Any:
        block_hash = _hash(blockhash, "blockhash")
        level = 1 if is_default(verbosity) else _level(verbosity, "verbosity", 3)
        with self.core.lock:
            block, raw, height, active = self._block(block_hash)
            if level == 0:
                return raw.hex()
            result = self._header_json(block, height, active)
            n_tx = result.pop("nTx")
            result.update(block_sizes(block, raw))
            if level == 1:
                result["tx"] = [tx.txid_hex for tx in block.txs]
            else:
                result["tx"] = [tx_json(tx, self.core.network) for tx in block.txs]
            result["nTx"] = n_tx
            return result

    # -- transactions -------------------------------------------------------------

    def getrawtransaction(self, txid: Any, verbose: Any = 0, blockhash: Any = None) -> Any:
        tx_hash = _hash(txid, "parameter 1")
        level = 0 if is_default(verbose) else _level(verbose, "verbosity", 2)
        core = self.core
        with core.lock:
            if blockhash is not None and not is_default(blockhash):
                block, _, height, active = self._block(_hash(blockhash, "parameter 3"))
                found = next((tx for tx in block.txs if tx.txid == tx_hash), None)
                if found is None:
                    raise RpcError(
                        RPC_INVALID_ADDRESS_OR_KEY,
                        "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                    )
                tx, confirmed_at, in_active = found, (height if active else None), active
                block_hash: bytes | None = block.hash
            else:
                hit = core.find_transaction(tx_hash)
                if hit is None:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, _NO_TX)
                tx, confirmed_at = hit
                in_active = None
                block_hash = None if confirmed_at is None else core.block_hash(confirmed_at)
            if level == 0:
                return tx.raw.hex()
            result = tx_json(tx, core.network)
            if in_active is not None:
                result["in_active_chain"] = in_active
            if block_hash is not None:
                result["blockhash"] = hash_to_hex(block_hash)
                if confirmed_at is not None:
                    block_time = core.index.times[confirmed_at]
                    result["confirmations"] = core.index.height - confirmed_at + 1
                    result["time"] = block_time
                    result["blocktime"] = block_time
                else:
                    result["confirmations"] = 0
            return result

    def gettxout(self, txid: Any, n: Any, include_mempool: Any = True) -> Any:
        outpoint_txid = _hash(txid, "txid")
        vout = _int(n, "n")
        mempool_too = True if is_default(include_mempool) else _bool(include_mempool, "include_mempool")
        if vout < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
        core = self.core
        with core.lock:
            outpoint = OutPoint(outpoint_txid, vout)
            if mempool_too and core.mempool.spender_of(outpoint) is not None:
                return None
            coin = core.index.coins.get(outpoint)
            if coin is not None:
                txout, confirmations, coinbase = coin.txout, core.index.height - coin.height + 1, coin.is_coinbase
            else:
                entry = core.mempool.get(outpoint_txid) if mempool_too else None
                if entry is None or vout >= len(entry.tx.outputs):
                    return None
                txout, confirmations, coinbase = entry.tx.outputs[vout], 0, False
            return {
                "bestblock": hash_to_hex(core.index.tip_hash),
                "confirmations": confirmations,
                "value": Amount(txout.amount_sat),
                "scriptPubKey": script_pubkey_json(txout.script_pubkey, core.network),
                "coinbase": coinbase,
            }

    def _trial(self, tx: Tx, max_feerate: int) -> MempoolEntry:
        """Run the mempool's checks on ``tx`` without keeping it (call with the lock held)."""
        core = self.core
        entry = core.mempool.accept(tx, core.index)
        core.mempool.remove([tx.txid])
        if max_feerate and entry.fee_sat * 1000 > max_feerate * tx.vsize:
            raise RpcError(RPC_VERIFY_ERROR, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
        return entry

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any = None, maxburnamount: Any = None) -> str:
        tx = _tx_from_hex(hexstring)
        max_fee = _feerate_limit(maxfeerate)
        max_burn = 0 if is_default(maxburnamount) else _btc(maxburnamount, "maxburnamount")
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
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for rawtxs is not of expected type array" % _json_type(rawtxs))
        if not 1 <= len(rawtxs) <= _MAX_PACKAGE:
            raise RpcError(RPC_INVALID_PARAMETER, f"Array must contain between 1 and {_MAX_PACKAGE} transactions.")
        txs = [_tx_from_hex(raw) for raw in rawtxs]
        max_fee = _feerate_limit(maxfeerate)
        core = self.core
        results: list[dict[str, Any]] = []
        with core.lock:
            added: list[bytes] = []
            try:
                for tx in txs:
                    result: dict[str, Any] = {"txid": tx.txid_hex, "wtxid": hash_to_hex(tx.wtxid)}
                    if tx.txid in core.mempool:
                        result.update(allowed=False, **{"reject-reason": "txn-already-in-mempool"})
                    elif tx.txid in core.index.txs:
                        result.update(allowed=False, **{"reject-reason": "txn-already-known"})
                    else:
                        try:
                            entry = core.mempool.accept(tx, core.index)
                            added.append(tx.txid)  # children in the package see it
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
            finally:
                core.mempool.remove(added)
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
        verbose = False if is_default(verbose) else _bool(verbose, "verbose")
        if not is_default(mempool_sequence) and _bool(mempool_sequence, "mempool_sequence"):
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
        tx_hash = _hash(txid, "txid")
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

    def estimatesmartfee(self, conf_target: Any, estimate_mode: Any = "economical") -> dict[str, Any]:
        target = _int(conf_target, "conf_target")
        if not 1 <= target <= 1008:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        mode = "economical" if is_default(estimate_mode) else estimate_mode
        if not isinstance(mode, str) or mode.lower() not in ("unset", "economical", "conservative"):
            raise RpcError(
                RPC_INVALID_PARAMETER,
                'Invalid estimate_mode parameter, must be one of: "unset", "economical", "conservative"',
            )
        # sat per 1000 weight units to BTC per 1000 vbytes: one vbyte is four weight units
        return {"feerate": Amount(self.core.estimate_feerate(target) * 4), "blocks": target}

    # -- blocks ---------------------------------------------------------------------

    def submitblock(self, hexdata: Any, dummy: Any = None) -> str | None:
        try:
            if not isinstance(hexdata, str):
                raise ValueError
            raw = bytes.fromhex(hexdata)
            block = Block.parse(raw)
        except Exception:
            raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
        if not block.txs[0].is_coinbase:
            raise RpcError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase")
        core = self.core
        with core.lock:
            if block.hash in core.index.hashes[-1:] or self._known(block.hash):
                return "duplicate"
            result = core.submit_block(raw)
        if result.accepted:
            return None
        if result.stored:
            return "inconclusive"
        return result.code or "rejected"

    def _known(self, block_hash: bytes) -> bool:
        try:
            self.core.block(block_hash)
        except ChainError:
            return False
        return True

    def _payee(self, output: Any, *, descriptors: bool) -> bytes:
        text = output
        if descriptors and isinstance(text, str) and "(" in text:
            body = text.split("#", 1)[0]
            if body.startswith("addr(") and body.endswith(")"):
                text = body[5:-1]
            elif body.startswith("raw(") and body.endswith(")"):
                try:
                    return bytes.fromhex(body[4:-1])
                except ValueError:
                    pass
        try:
            return script_for_address(text, self.core.network)
        except ChainError:
            what = "address or descriptor" if descriptors else "address"
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Error: Invalid {what}") from None

    def generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
        count = _int(nblocks, "nblocks")
        if count < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "nblocks must not be negative")
        script = self._payee(address, descriptors=False)
        return [hash_to_hex(h) for h in self.core.mine(count, script)]

    def generateblock(self, output: Any, transactions: Any, submit: Any = True) -> dict[str, Any]:
        script = self._payee(output, descriptors=True)
        if not is_default(submit) and not _bool(submit, "submit"):
            raise RpcError(RPC_INVALID_PARAMETER, "submit=false is not supported by this server")
        if not isinstance(transactions, list):
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for transactions is not of expected type array" % _json_type(transactions))
        core = self.core
        with core.lock:
            txs: list[Tx] = []
            for item in transactions:
                if isinstance(item, str) and len(item) == 64:
                    try:
                        txid = hash_from_hex(item)
                    except Exception:
                        txid = None
                    if txid is not None:
                        entry = core.mempool.get(txid)
                        if entry is None:
                            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
                        txs.append(entry.tx)
                        continue
                txs.append(_tx_from_hex(item, f"Transaction decode failed for {str(item)[:80]}"))
            result = core.submit_transactions_in_block(txs, script)
        if not result.accepted:
            raise RpcError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {result.reason}")
        return {"hash": hash_to_hex(result.block_hash)}

    def invalidateblock(self, blockhash: Any) -> None:
        block_hash = _hash(blockhash, "blockhash")
        with self.core.lock:
            _, _, height, _ = self._block(block_hash)
            if height == 0:
                raise RpcError(RPC_INVALID_PARAMETER, "the genesis block cannot be invalidated")
            self.core.invalidate_block(block_hash)

    # -- indexes and spends -----------------------------------------------------------

    def getindexinfo(self, index_name: Any = "") -> dict[str, Any]:
        info = {"txindex": {"synced": True, "best_block_height": self.core.height}}
        if is_default(index_name) or index_name == "":
            return info
        if not isinstance(index_name, str):
            raise RpcError(RPC_TYPE_ERROR, "index_name must be a string")
        return {k: v for k, v in info.items() if k == index_name}

    def gettxspendingprevout(self, outputs: Any, options: Any = None) -> list[dict[str, Any]]:
        if not isinstance(outputs, list):
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for outputs is not of expected type array" % _json_type(outputs))
        if not outputs:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        wanted: list[OutPoint] = []
        for item in outputs:
            if not isinstance(item, dict):
                raise RpcError(RPC_TYPE_ERROR, "each output is an object {\"txid\", \"vout\"}")
            if "vout" not in item:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
            vout = _int(item["vout"], "vout")
            if vout < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            wanted.append(OutPoint(_hash(item.get("txid"), "txid"), vout))
        results: list[dict[str, Any]] = []
        with self.core.lock:
            for outpoint in wanted:
                entry: dict[str, Any] = {"txid": outpoint.txid_hex, "vout": outpoint.vout}
                spender = self.core.mempool.spender_of(outpoint)
                if spender is not None:
                    entry["spendingtxid"] = hash_to_hex(spender)
                results.append(entry)
        return results

    # -- the faucet as the server's wallet ------------------------------------------------

    def sendtoaddress(self, address: Any, amount: Any, *unused: Any) -> str:
        script = self._payee(address, descriptors=False)
        sat = _btc(amount, "amount")
        if sat <= 0:
            raise RpcError(RPC_TYPE_ERROR, "Invalid amount for send")
        try:
            outpoint = self.core.faucet(script, sat)
        except ChainError as exc:
            if exc.code == "insufficient-funds":
                raise RpcError(RPC_WALLET_INSUFFICIENT_FUNDS, f"Insufficient funds: {exc.reason}") from exc
            raise
        return outpoint.txid_hex
