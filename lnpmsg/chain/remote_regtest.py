"""Mining and the faucet of a regtest chain someone else owns, over its JSON-RPC.

A node on ``--bitcoind-rpc`` asks the chain's owner (another lnpmsg node's
``--chain-rpc-listen``, or a regtest bitcoind with a wallet) with standard
calls: ``generatetoaddress`` mines, ``sendtoaddress`` pays (the owner's
faucet is its wallet). ``RemoteRegtest`` offers the same ``mine``/``faucet``
calls as ``EmbeddedChainSource``, so the chain app treats both alike.
"""

from __future__ import annotations

from typing import Any

from lnpmsg.bitcoin.hashes import hash_from_hex
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.address import address_for_script, script_for_destination
from lnpmsg.chain.bitcoind import BitcoindSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef
from lnpmsg.chain.regtest import FAUCET_SCRIPT

__all__ = ["FAUCET_ADDRESS", "RemoteRegtest"]

#: where blocks mined without a payee go: the faucet's anyone-can-spend script
FAUCET_ADDRESS = address_for_script(FAUCET_SCRIPT, "bcrt")


def _address(destination: str | bytes | None) -> str:
    if destination is None:
        return FAUCET_ADDRESS
    if isinstance(destination, str):
        return destination
    return address_for_script(script_for_destination(destination, "bcrt"), "bcrt")


class RemoteRegtest:
    """``mine`` and ``faucet`` of a regtest chain reached through ``BitcoindSource``."""

    def __init__(self, source: BitcoindSource) -> None:
        if source.network != "bcrt":
            raise ChainError("mining and the faucet are for regtest chains only", code="unsupported")
        self.source = source

    async def tip(self) -> BlockRef:
        return await self.source.tip()

    async def mine(self, n: int = 1, to_script: bytes | str | None = None) -> list[bytes]:
        """Mine ``n`` blocks on the owner's chain (default payee: the faucet)."""
        result = await self.source.call("generatetoaddress", n, _address(to_script))
        try:
            return [hash_from_hex(h) for h in result]
        except (TypeError, ValueError) as exc:
            raise ChainError(f"unexpected generatetoaddress reply: {result!r}"[:200], code="protocol") from exc

    async def faucet(self, destination: str | bytes, amount_sat: int) -> OutPoint:
        """Ask the owner's wallet (an lnpmsg chain's faucet) to pay; ``mine()`` confirms it."""
        address = _address(destination)
        amount = f"{amount_sat // 100_000_000}.{amount_sat % 100_000_000:08d}"
        try:
            txid_hex = await self.source.call("sendtoaddress", address, amount)
            decoded: Any = await self.source.call("getrawtransaction", txid_hex, True)
        except ChainError as exc:
            if exc.code == -32601:
                raise ChainError(
                    "the chain's owner has no wallet to pay from (sendtoaddress is unknown): "
                    "load a wallet in bitcoind, or use an lnpmsg node's --chain-rpc-listen",
                    code="unsupported",
                ) from exc
            if exc.code == -6:
                raise ChainError(exc.reason, code="insufficient-funds") from exc
            raise
        try:
            for out in decoded["vout"]:
                if out["scriptPubKey"].get("address") == address:
                    return OutPoint(hash_from_hex(txid_hex), int(out["n"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ChainError(f"unexpected getrawtransaction reply: {exc}", code="protocol") from exc
        raise ChainError(f"the faucet's transaction {txid_hex} does not pay {address}", code="protocol")
