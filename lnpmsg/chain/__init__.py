"""Chain layer: the ``ChainSource`` interface the node uses, the embedded
regtest chain validated by Bitcoin Core's consensus engine (``pbk``), and a
Bitcoin Core JSON-RPC source.

- ``ChainSource`` / ``Subscription`` / ``catch_up``: ``lnpmsg.chain.source``
- ``RegtestChain`` (sync core), ``EmbeddedChainSource`` (trio): the embedded chain;
  ``RegtestChain.submit_transactions_in_block(txs) -> BlockResult`` is the
  proof that transactions are valid under the real consensus rules
- ``BitcoindSource``: ``lnpmsg.chain.bitcoind``
- transactions and blocks: ``lnpmsg.chain.tx``
"""

from lnpmsg.chain.errors import ChainError
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
    fee_for_weight,
    feerate_per_kw_from_btc_per_kvb,
    feerate_per_kw_from_sat_per_vbyte,
)
from lnpmsg.chain.tx import Block, BlockHeader, OutPoint, Tx, TxIn, TxOut

__all__ = [
    "FEERATE_FLOOR_PER_KW",
    "Block",
    "BlockConnected",
    "BlockDisconnected",
    "BlockHeader",
    "BlockRef",
    "ChainError",
    "ChainEvent",
    "ChainFollower",
    "ChainSource",
    "OutPoint",
    "OutputConfirmed",
    "OutputSpent",
    "ReorgedOut",
    "Subscription",
    "Tx",
    "TxIn",
    "TxOut",
    "TxOutInfo",
    "catch_up",
    "fee_for_weight",
    "feerate_per_kw_from_btc_per_kvb",
    "feerate_per_kw_from_sat_per_vbyte",
]
