"""A splice transaction whose block a reorganization takes out, mined again in the block that
replaces it, between two lnpmsg nodes on one embedded regtest chain: both find it there and lock
it at the channel's depth."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_channels_app import channels, only_channel, wait_until
from test_channels_onchain import Pair, invalidate, open_channel
from test_channels_splice_nodes import locked_on, pending

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running


@pytest.mark.trio
async def test_a_splice_reorganized_out_and_mined_again_in_the_next_block_locks(tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = Pair(source, tmp_path, MemoryNetwork(), minimum_depth=3)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            cid = await open_channel(pair, alice, bob, "static_remotekey")
            result = await channels(alice).splice(cid, 150_000)
            txid = bytes.fromhex(result["splice_txid"])[::-1]
            await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
            await wait_until(lambda: source.core.find_transaction(txid) is not None, "the splice in the mempool")
            await pair.mine(1, alice, bob)
            mined_at = (await source.tip()).height
            assert source.core.find_transaction(txid)[1] is not None  # type: ignore[index]
            await invalidate(source, mined_at)  # its block leaves the chain: the splice back in the mempool
            await wait_until(lambda: all(channels(n).onchain.done_height == mined_at - 1 for n in (alice, bob)), "the reorg followed")
            await pair.mine(1, alice, bob)  # mined again, at the same height
            found = source.core.find_transaction(txid)
            assert found is not None and found[1] is not None
            await pair.mine(2, alice, bob)
            await wait_until(lambda: locked_on(alice, result["splice_txid"]) and locked_on(bob, result["splice_txid"]), "spliced")
            assert only_channel(alice).core.state.short_channel_id >> 40 == mined_at
