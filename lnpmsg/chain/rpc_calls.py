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
from dataclasses import dataclass
from typing import Any

from lnpmsg.bitcoin.block import Block, BlockHeader
from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.script import decode_script
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.regtest import RegtestChain
from lnpmsg.chain.rpc_format import (
    REGTEST_DIFFICULTY,
    Amount,
    block_header_json,
    block_sizes,
    script_pubkey_json,
    tx_json,
)
from lnpmsg.chain.rpc_mempool import MIN_RELAY_SAT_PER_KVB, MempoolCalls
from lnpmsg.chain.rpc_methods import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RpcError,
    RpcMethod,
    Table,
    is_default,
)
from lnpmsg.chain.rpc_params import bool_param, btc_param, hash_param, int_param, json_type, level_param, tx_param

__all__ = ["CORE_VERSION", "ChainRpcCalls"]

#: the Bitcoin Core release whose RPC formats this server follows
CORE_VERSION = 270000
#: blocks whose header, txids and sizes are remembered (a few KB each)
_MAX_CACHED_BLOCKS = 1_024
_NO_TX = "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."


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


@dataclass(frozen=True, slots=True)
class _BlockFacts:
    """A block's header, height, txids and sizes: fixed by its bytes."""

    header: BlockHeader
    height: int
    txids: list[str]
    sizes: dict[str, int]


class ChainRpcCalls(MempoolCalls):
    """The RPC methods over one ``RegtestChain`` (see the module docs)."""

    def __init__(self, core: RegtestChain, *, clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self._clock = clock
        self._started = clock()
        #: when each waiting transaction was first seen here (getmempoolentry's "time")
        self._seen: dict[bytes, int] = {}
        self._facts_cache: dict[bytes, _BlockFacts] = {}

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
            "getblock": m(self.getblock, ("blockhash", "verbosity"), 1, {"verbose": "verbosity"}),
            "getrawtransaction": m(self.getrawtransaction, ("txid", "verbosity", "blockhash"), 1, {"verbose": "verbosity"}),
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
        block_hash = self.core.block_hash(int_param(height, "height"))
        if block_hash is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return hash_to_hex(block_hash)

    def _block(self, block_hash: bytes) -> tuple[Block, bytes, int, bool]:
        """The block, its bytes, its height and whether it is in the active chain."""
        try:
            raw = self.core.block(block_hash)
        except ChainError:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
        block = Block.parse(raw)
        facts = self._facts(block_hash, block, raw)
        return block, raw, facts.height, self._active(facts)

    def _facts(self, block_hash: bytes, block: Block | None = None, raw: bytes | None = None) -> _BlockFacts:
        """What never changes about a block (remembered: parsing is most of a getblock's cost)."""
        facts = self._facts_cache.get(block_hash)
        if facts is not None:
            return facts
        if raw is None or block is None:
            try:
                raw = self.core.block(block_hash)
            except ChainError:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
            block = Block.parse(raw)
        index = self.core.index
        height = 0 if index.hashes and index.hashes[0] == block_hash else _bip34_height(block)
        if height is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        facts = _BlockFacts(block.header, height, [tx.txid_hex for tx in block.txs], block_sizes(block, raw))
        if len(self._facts_cache) >= _MAX_CACHED_BLOCKS:
            del self._facts_cache[next(iter(self._facts_cache))]
        self._facts_cache[block_hash] = facts
        return facts

    def _active(self, facts: _BlockFacts) -> bool:
        index = self.core.index
        return facts.height <= index.height and index.hashes[facts.height] == facts.header.hash

    def _header_json(self, facts: _BlockFacts) -> dict[str, Any]:
        index = self.core.index
        height = facts.height
        active = self._active(facts)
        return block_header_json(
            facts.header,
            height,
            index.height - height + 1 if active else -1,
            n_tx=len(facts.txids),
            median_time=index.median_time_past(height) if active else facts.header.time,
            next_hash=index.hashes[height + 1] if active and height < index.height else None,
        )

    def getblockheader(self, blockhash: Any, verbose: Any = True) -> Any:
        block_hash = hash_param(blockhash, "hash")
        verbose = True if is_default(verbose) else bool_param(verbose, "verbose")
        with self.core.lock:
            facts = self._facts(block_hash)
            if not verbose:
                return facts.header.serialize().hex()
            return self._header_json(facts)

    def getblock(self, blockhash: Any, verbosity: Any = 1) -> Any:
        block_hash = hash_param(blockhash, "blockhash")
        level = 1 if is_default(verbosity) else level_param(verbosity, "verbosity", 3)
        with self.core.lock:
            if level == 0:  # the bytes alone: no parsing
                try:
                    return self.core.block(block_hash).hex()
                except ChainError:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
            facts = self._facts(block_hash)
            result = self._header_json(facts)
            n_tx = result.pop("nTx")
            result.update(facts.sizes)
            if level == 1:
                result["tx"] = list(facts.txids)
            else:
                block, _, _, _ = self._block(block_hash)
                result["tx"] = [tx_json(tx, self.core.network) for tx in block.txs]
            result["nTx"] = n_tx
            return result

    # -- transactions -------------------------------------------------------------

    def getrawtransaction(self, txid: Any, verbose: Any = 0, blockhash: Any = None) -> Any:
        tx_hash = hash_param(txid, "parameter 1")
        level = 0 if is_default(verbose) else level_param(verbose, "verbosity", 2)
        core = self.core
        with core.lock:
            if blockhash is not None and not is_default(blockhash):
                block, _, height, active = self._block(hash_param(blockhash, "parameter 3"))
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
        outpoint_txid = hash_param(txid, "txid")
        vout = int_param(n, "n")
        mempool_too = True if is_default(include_mempool) else bool_param(include_mempool, "include_mempool")
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

    def estimatesmartfee(self, conf_target: Any, estimate_mode: Any = "economical") -> dict[str, Any]:
        target = int_param(conf_target, "conf_target")
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
        count = int_param(nblocks, "nblocks")
        if count < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "nblocks must not be negative")
        script = self._payee(address, descriptors=False)
        return [hash_to_hex(h) for h in self.core.mine(count, script)]

    def generateblock(self, output: Any, transactions: Any, submit: Any = True) -> dict[str, Any]:
        script = self._payee(output, descriptors=True)
        if not is_default(submit) and not bool_param(submit, "submit"):
            raise RpcError(RPC_INVALID_PARAMETER, "submit=false is not supported by this server")
        if not isinstance(transactions, list):
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type %s for transactions is not of expected type array" % json_type(transactions))
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
                txs.append(tx_param(item, f"Transaction decode failed for {str(item)[:80]}"))
            result = core.submit_transactions_in_block(txs, script)
        if not result.accepted:
            raise RpcError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {result.reason}")
        return {"hash": hash_to_hex(result.block_hash)}

    def invalidateblock(self, blockhash: Any) -> None:
        block_hash = hash_param(blockhash, "blockhash")
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

    # -- the faucet as the server's wallet ------------------------------------------------

    def sendtoaddress(self, address: Any, amount: Any, *unused: Any) -> str:
        script = self._payee(address, descriptors=False)
        sat = btc_param(amount, "amount")
        if sat <= 0:
            raise RpcError(RPC_TYPE_ERROR, "Invalid amount for send")
        try:
            outpoint = self.core.faucet(script, sat)
        except ChainError as exc:
            if exc.code == "insufficient-funds":
                raise RpcError(RPC_WALLET_INSUFFICIENT_FUNDS, f"Insufficient funds: {exc.reason}") from exc
            raise
        return outpoint.txid_hex
