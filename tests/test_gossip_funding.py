"""Funding-output checks of channel announcements against the embedded regtest chain (a real kernel)."""

from __future__ import annotations

from pathlib import Path

from lnpmsg.bitcoin.block import Block
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.gossip.funding import chain_funding_check, funding_script_pubkey
from lnpmsg.gossip.messages import ChannelAnnouncement
from lnpmsg.gossip.sign import public_key, sign_channel_announcement
from lnpmsg.wire import CHAIN_HASH_REGTEST, ShortChannelId

KEYS = [bytes([i]) * 32 for i in range(1, 5)]


async def test_funding_outputs_are_checked_on_chain(tmp_path: Path) -> None:
    script = funding_script_pubkey(public_key(KEYS[2]), public_key(KEYS[3]))
    assert script == funding_script_pubkey(public_key(KEYS[3]), public_key(KEYS[2]))  # key order does not matter
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        outpoint = await source.faucet(script, 1_500_000)
        await source.mine(1)
        found = source.core.find_transaction(outpoint.txid)
        assert found is not None and found[1] is not None
        tx, height = found
        block_hash = await source.block_hash(height)
        assert block_hash is not None
        index = [t.txid for t in Block.parse(await source.block(block_hash)).txs].index(tx.txid)
        scid = ShortChannelId(height, index, outpoint.vout)

        def announce(sid: ShortChannelId, funding_keys: tuple[bytes, bytes] = (KEYS[2], KEYS[3])) -> ChannelAnnouncement:
            return sign_channel_announcement(KEYS[0], KEYS[1], *funding_keys, sid, CHAIN_HASH_REGTEST)

        check = chain_funding_check(source)
        shallow = await check(announce(scid))
        assert shallow.error is not None and "1 confirmations" in shallow.error
        await source.mine(5)
        good = await check(announce(scid))
        assert good.error is None and good.capacity_sat == 1_500_000
        # Other keys than the output's: not this channel's funding.
        wrong_keys = await check(announce(scid, (KEYS[0], KEYS[1])))
        assert wrong_keys.error == "funding output is not the 2-of-2 of the announced bitcoin keys"
        # Ids pointing at nothing.
        for sid, words in (
            (ShortChannelId(height, 50, 0), "transactions"),
            (ShortChannelId(height, index, 9), "outputs"),
            (ShortChannelId(10_000, 0, 0), "lookup failed"),
        ):
            result = await check(announce(sid))
            assert result.error is not None and words in result.error, result.error
        # The coinbase output of a block is no funding output either.
        coinbase = await check(announce(ShortChannelId(height, 0, 0)))
        assert coinbase.error is not None
