"""Chain layer: the ``ChainSource`` interface the node uses, the embedded
regtest chain validated by Bitcoin Core's consensus engine (``pbk``), and a
Bitcoin Core JSON-RPC source.

- ``ChainSource`` / ``Subscription`` / ``catch_up``: ``lnpmsg.chain.source``
- ``RegtestChain`` (sync core), ``EmbeddedChainSource`` (trio): the embedded chain;
  ``RegtestChain.submit_transactions_in_block(txs) -> BlockResult`` is the
  proof that transactions are valid under the real consensus rules
- ``BitcoindSource``: ``lnpmsg.chain.bitcoind``
- ``ChainRpcServer``: ``lnpmsg.chain.rpc_server``, the embedded chain served
  over Bitcoin Core's JSON-RPC to other processes (``--chain-rpc-listen``)
- transactions and blocks are ``lnpmsg.bitcoin``'s; ``lnpmsg.chain.tx`` is
  where untrusted bytes enter (``BitcoinError`` becomes ``ChainError``)

Importing the package or one of its sans-IO cores (``tx``, ``mining``,
``utxo``, ``mempool``, ``follow``, ``events``) loads no trio: the names of
``lnpmsg.chain.source``, ``events`` and ``follow`` are imported on first access.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports
from lnpmsg.chain.errors import ChainError

if TYPE_CHECKING:
    from lnpmsg.chain.events import (
        BlockConnected,
        BlockDisconnected,
        BlockRef,
        ChainEvent,
        OutputConfirmed,
        OutputSpent,
        ReorgedOut,
        TxOutInfo,
    )
    from lnpmsg.chain.follow import ChainFollower
    from lnpmsg.chain.source import (
        FEERATE_FLOOR_PER_KW,
        ChainSource,
        Subscription,
        catch_up,
        feerate_per_kw_from_btc_per_kvb,
        feerate_per_kw_from_sat_per_vbyte,
    )

#: the trio side (``ChainSource`` and its helpers), imported when first used
_SOURCE_NAMES = (
    "FEERATE_FLOOR_PER_KW",
    "ChainSource",
    "Subscription",
    "catch_up",
    "feerate_per_kw_from_btc_per_kvb",
    "feerate_per_kw_from_sat_per_vbyte",
)
#: the cores' names too, so that a node without a chain (which reads ``ChainError``) loads no event codec
_EVENT_NAMES = ("BlockConnected", "BlockDisconnected", "BlockRef", "ChainEvent", "OutputConfirmed", "OutputSpent", "ReorgedOut", "TxOutInfo")
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(_SOURCE_NAMES, "lnpmsg.chain.source"),
        **dict.fromkeys(_EVENT_NAMES, "lnpmsg.chain.events"),
        "ChainFollower": "lnpmsg.chain.follow",
    },
)

__all__ = [
    "FEERATE_FLOOR_PER_KW",
    "BlockConnected",
    "BlockDisconnected",
    "BlockRef",
    "ChainError",
    "ChainEvent",
    "ChainFollower",
    "ChainSource",
    "OutputConfirmed",
    "OutputSpent",
    "ReorgedOut",
    "Subscription",
    "TxOutInfo",
    "catch_up",
    "feerate_per_kw_from_btc_per_kvb",
    "feerate_per_kw_from_sat_per_vbyte",
]
