"""Funding-output check of channel announcements against a chain source.

BOLT 7: the output a ``short_channel_id`` names (block height, transaction
index, output index) must be the P2WSH of the 2-of-2 multisig of
``bitcoin_key_1`` and ``bitcoin_key_2`` (BOLT 3's funding script), unspent,
and about 6 blocks deep; otherwise the announcement is ignored. Its amount
is the channel's capacity.

:func:`chain_funding_check` makes the :data:`~lnpmsg.gossip.app.FundingCheck`
the gossip app takes, from any :class:`~lnpmsg.chain.source.ChainSource`.
Blocks are fetched whole and a few are kept: the channels of one block
arrive together during a sync. Without a chain source, the app accepts
channels on their four signatures alone (see :mod:`lnpmsg.gossip.graph`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.source import ChainSource
from lnpmsg.gossip.app import FundingCheck, FundingResult
from lnpmsg.gossip.messages import ChannelAnnouncement

__all__ = ["BLOCK_CACHE", "MIN_CONFIRMATIONS", "chain_funding_check", "funding_script_pubkey"]

#: BOLT 7: announced channels are at least 6 blocks deep
MIN_CONFIRMATIONS = 6
#: parsed blocks kept (mainnet blocks are 1-4 MB; a sync visits them in order)
BLOCK_CACHE = 8

_OP_2, _OP_CHECKMULTISIG, _PUSH_33 = 0x52, 0xAE, 33


def funding_script_pubkey(bitcoin_key_1: bytes, bitcoin_key_2: bytes) -> bytes:
    """The P2WSH scriptPubKey of BOLT 3's funding output ``2 <key> <key> 2 CHECKMULTISIG`` (keys sorted)."""
    low, high = sorted((bitcoin_key_1, bitcoin_key_2))
    witness = bytes([_OP_2, _PUSH_33]) + low + bytes([_PUSH_33]) + high + bytes([_OP_2, _OP_CHECKMULTISIG])
    return b"\x00\x20" + hashlib.sha256(witness).digest()


def chain_funding_check(source: ChainSource, *, min_confirmations: int = MIN_CONFIRMATIONS) -> FundingCheck:
    """A funding check looking outputs up in ``source``.

    ``min_confirmations`` below 6 lets announcements through a little early
    (BOLT 7 allows it when our chain view may lag by a block or two).
    """
    blocks: OrderedDict[int, Block] = OrderedDict()

    async def block_at(height: int) -> Block:
        block = blocks.get(height)
        if block is None:
            block = Block.parse(await source.block_at(height))
            blocks[height] = block
            if len(blocks) > BLOCK_CACHE:
                blocks.popitem(last=False)
        else:
            blocks.move_to_end(height)
        return block

    async def check(announcement: ChannelAnnouncement) -> FundingResult:
        scid = announcement.short_channel_id
        try:
            block = await block_at(scid.block)
            if scid.tx >= len(block.txs):
                return FundingResult(error=f"funding output not found: block {scid.block} has {len(block.txs)} transactions")
            tx = block.txs[scid.tx]
            if scid.output >= len(tx.outputs):
                return FundingResult(error=f"funding output not found: the transaction has {len(tx.outputs)} outputs")
            output = tx.outputs[scid.output]
            if output.script_pubkey != funding_script_pubkey(announcement.bitcoin_key_1, announcement.bitcoin_key_2):
                return FundingResult(error="funding output is not the 2-of-2 of the announced bitcoin keys")
            info = await source.get_txout(OutPoint(tx.txid, scid.output))
        except (ChainError, BitcoinError) as exc:
            return FundingResult(error=f"funding lookup failed: {exc}")
        if info is None:
            return FundingResult(error="funding output spent")
        if info.confirmations < min_confirmations:
            return FundingResult(error=f"funding output has {info.confirmations} confirmations, fewer than {min_confirmations}")
        return FundingResult(capacity_sat=output.amount_sat)

    return check
