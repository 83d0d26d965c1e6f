"""Raw chain control calls on the embedded regtest chain, for test drivers
(conformance suites such as lnprototest drive a node's chain this way):

===========================================  ====================================================
call                                         result
===========================================  ====================================================
``chain.submitblock`` [block_hex]            ``{"result": null}`` when the block is accepted,
                                             else Core's word (``"duplicate"``,
                                             ``"inconclusive"``, the reject reason); height, tip
``chain.sendrawtransaction`` [tx_hex]        ``{"txid": ...}`` once the mempool holds it
``chain.getrawmempool`` [verbose?=false]     ``{"txids": [...]}`` (verbose: ``{"entries":
                                             {txid: Core's entry}}``)
``chain.invalidateblock`` [block_hash]       the block and its descendants leave the active
                                             chain; the new height and tip
``chain.getblockhash`` [height]              ``{"hash": ...}``: the active chain's block there
===========================================  ====================================================

They are Bitcoin Core's RPC methods of the same names, run by the very code
the chain's JSON-RPC server runs (:class:`~lnpmsg.chain.rpc_calls.ChainRpcCalls`),
so a script sees the same answers over both. Core's errors become control
errors: ``data.error`` is ``"RpcError"`` with Core's ``data.code`` (e.g.
``-26`` for a transaction the mempool rejects, ``-22`` for bad hex).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.rpc_calls import ChainRpcCalls
from lnpmsg.chain.rpc_methods import RPC_DESERIALIZATION_ERROR, RPC_INVALID_PARAMETER, RPC_TYPE_ERROR, RpcError
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.calls import ChainAppError

if TYPE_CHECKING:
    from lnpmsg.wallet.app import ChainApp

__all__ = ["RawChainCalls"]

#: Core's codes that mean "the caller's params are malformed" (a control -32602)
_PARAM_CODES = frozenset({RPC_DESERIALIZATION_ERROR, RPC_INVALID_PARAMETER, RPC_TYPE_ERROR})


class RawChainCalls:
    """The raw calls of one ``ChainApp`` (see the module docs); ``register`` adds them."""

    def __init__(self, app: ChainApp) -> None:
        self.app = app
        self._calls: ChainRpcCalls | None = None

    def register(self) -> None:
        """Add the calls to the app's control methods."""
        calls: dict[str, Callable[..., Any]] = {
            "submitblock": self.submitblock,
            "sendrawtransaction": self.sendrawtransaction,
            "getrawmempool": self.getrawmempool,
            "invalidateblock": self.invalidateblock,
            "getblockhash": self.getblockhash,
        }
        for name, fn in calls.items():
            self.app.add_control_method(name, fn)

    def _rpc(self, call: str) -> ChainRpcCalls:
        source = self.app.source
        if not isinstance(source, EmbeddedChainSource):
            raise ChainAppError(
                f"chain.{call} works on the embedded chain (lnpmsg node --chain regtest); "
                "with --bitcoind-rpc ask the chain's owner",
                {"error": "ChainError", "code": "unsupported"},
            )
        if self._calls is None or self._calls.core is not source.core:
            self._calls = ChainRpcCalls(source.core)
        return self._calls

    async def _run(self, call: str, *args: Any) -> Any:
        rpc = self._rpc(call)
        try:
            return await trio.to_thread.run_sync(getattr(rpc, call), *args)
        except RpcError as exc:
            if exc.code in _PARAM_CODES:
                raise ParamsError(exc.message) from exc
            raise ChainAppError(exc.message, {"error": "RpcError", "code": exc.code}) from exc

    async def _tip(self) -> dict[str, Any]:
        await self.app.wallet.sync()
        tip = await self.app.source.tip()
        return {"height": tip.height, "tip": tip.hash_hex}

    async def submitblock(self, block_hex: str) -> dict[str, Any]:
        """Submit a whole block (hex); ``result`` is null when it was accepted, else why not."""
        result = await self._run("submitblock", block_hex)
        return {"result": result, **await self._tip()}

    async def sendrawtransaction(self, tx_hex: str) -> dict[str, Any]:
        """Put a raw transaction (hex) in the mempool, with Core's checks; its txid."""
        return {"txid": await self._run("sendrawtransaction", tx_hex)}

    async def getrawmempool(self, verbose: bool = False) -> dict[str, Any]:
        """The waiting transactions' txids (``verbose``: Core's entry for each)."""
        result = await self._run("getrawmempool", verbose)
        return {"entries": result} if verbose else {"txids": result}

    async def invalidateblock(self, block_hash: str) -> dict[str, Any]:
        """Take a block (hash, hex) and its descendants off the active chain; the new tip."""
        await self._run("invalidateblock", block_hash)
        return await self._tip()

    async def getblockhash(self, height: int) -> dict[str, Any]:
        """The hash of the active chain's block at ``height``."""
        return {"hash": await self._run("getblockhash", height)}
