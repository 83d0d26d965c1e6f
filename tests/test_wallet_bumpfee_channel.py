"""CPFP of a channel's funding transaction, on two nodes in memory over one embedded regtest chain:
the funder bumps the funding before it is mined (RBF is refused: the channel is built on its
txid), funding and child confirm in one block, and the channel opens normally."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpmsg.wallet.calls import ChainAppError
from test_channels_app import FUNDING_SAT, channels, only_channel, running_pair, settled, wait_until


@pytest.mark.trio
async def test_cpfp_of_a_channel_funding_then_the_channel_opens(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
        assert result["state"] == "await_ready"
        funding = only_channel(alice).core.state.funding_outpoint
        assert funding is not None
        await wait_until(lambda: funding.txid in source.core.mempool_txids(), "the funding in the mempool")
        chain_app = alice.apps["chain"]
        with pytest.raises(ChainAppError) as info:
            await chain_app.bumpfee(funding.txid_hex, 25, method="rbf")  # type: ignore[attr-defined]
        assert info.value.details["code"] == "channel" and "funds a channel" in str(info.value)
        bump = await chain_app.bumpfee(funding.txid_hex, 25)  # type: ignore[attr-defined]
        assert bump["method"] == "cpfp" and bump["parent_txid"] == funding.txid_hex
        assert bump["package_feerate_sat_per_vb"] >= 25 > bump["parent_feerate_sat_per_vb"]
        _, waiting = source.core.mempool_snapshot()
        fees = {tx.txid_hex: fee for tx, fee in waiting}
        assert fees[bump["txid"]] == bump["fee_sat"] and fees[funding.txid_hex] == bump["parent_fee_sat"]
        wallet = chain_app.wallet  # type: ignore[attr-defined]
        child_out = wallet.balances().unconfirmed_sat
        assert child_out > 0  # the child's output: the funding's change, less the child's fee

        await source.mine(1)
        parent_found = source.core.find_transaction(funding.txid)
        child_found = source.core.find_transaction(bytes.fromhex(bump["txid"])[::-1])
        assert parent_found and child_found and parent_found[1] == child_found[1] == source.core.height
        await source.mine(1)  # the channel's minimum depth is 2
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
        assert only_channel(alice).core.state.short_channel_id
        await wallet.sync()
        assert wallet.reserved() == {} and wallet.held_transactions() == []
        assert wallet.balances().confirmed_sat == child_out
        assert child_out == 3_000_000 - FUNDING_SAT - bump["parent_fee_sat"] - bump["fee_sat"]
