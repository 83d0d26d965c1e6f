"""A fee bump's version of a splice that the peer forgot after our ``tx_signatures`` left, between two
lnpmsg nodes in memory on one embedded regtest chain: the node notes it (``listchannels``), then takes it
up when it is mined (the peer completed it with our signatures) or, when the first version is mined
instead, locks on that one and drops the forgotten version; the channel pays on the splice either way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_channels_app import channels, only_channel, pay, running_pair, settled, wait_until, withhold
from test_channels_splice_nodes import locked_on, pending
from test_channels_splice_rbf_nodes import a_block_without_the_splice, first_version, open_and_splice

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.messages_v2 import TxSignatures


@pytest.mark.trio
@pytest.mark.parametrize("mined", ["bump", "first"])
async def test_a_bump_the_peer_forgot_is_noted_then_taken_up_or_dropped_by_what_is_mined(tmp_path: Path, mined: str) -> None:
    """Alice bumps her splice; Bob signs first, Alice's tx_signatures of the bump are lost, but she holds
    it complete (broadcast). She forgets the bump (her first version stands) and answers Bob's
    next_funding with tx_abort: Bob notes it. Then the bump is mined (Bob takes it up; Alice, who learnt
    it again, locks it) or a miner that saw only the first version mines that one (the bump can no longer
    confirm: Bob locks the first version, the forgotten bump dropped at the switch)."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        cid, _ = await open_and_splice(pair, alice, bob)
        first = first_version(alice)
        await wait_until(lambda: source.core.find_transaction(first.txid) is not None, "the splice in the mempool")
        await a_block_without_the_splice(alice, bob)
        release = withhold(alice, TxSignatures)
        await channels(alice).bumpsplice(cid, feerate=6)  # (returns once Alice holds both signatures)
        bumped = pending(alice)
        assert bumped is not None and bumped.signed and bumped.previous and bumped.tx is not None
        await wait_until(lambda: (sp := pending(bob)) is not None and sp.signatures_sent and sp.previous, "Bob signed the bump")
        only_channel(alice).core.state.splice = replace(bumped.previous[-1], previous=bumped.previous[:-1])  # Alice forgets it
        release()
        channels(bob).disconnect_peer(alice.node_id, "a reconnection")
        await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "apart")
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: (sp := pending(bob)) is not None and sp.peer_forgot and settled(bob), "Alice's tx_abort at Bob")
        listed = (await channels(bob).listchannels())["channels"][0]["splice"]
        assert listed["peer_forgot"] and listed["funding_txid"] == bumped.outpoint.txid_hex  # type: ignore[union-attr]
        bump = Tx.parse(bumped.tx)
        if mined == "bump":
            await wait_until(lambda: source.core.find_transaction(bump.txid) is not None, "the bump in the mempool")
            only_channel(alice).core.state.splice = bumped  # (Alice took it up again)
            await source.mine(1)
            await wait_until(lambda: (sp := pending(bob)) is not None and sp.signed and sp.outpoint == bumped.outpoint, "Bob took the bump up")
            confirmed = bump
        else:
            assert (await source.submit_transactions_in_block([first])).accepted  # a miner that saw only the first
            confirmed = first
        await source.mine(1)
        await wait_until(lambda: locked_on(alice, confirmed.txid_hex) and locked_on(bob, confirmed.txid_hex), "spliced both ways")
        await pay(alice, bob, 7_000_000)
        await pay(bob, alice, 2_000_000)
