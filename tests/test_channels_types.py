"""Channel types and the opening options end to end between two lnpmsg nodes
(the channel app on each, the in-memory transport, one embedded regtest chain).

- ``fundchannel --channel-type``: a static_remotekey and an
  anchors_zero_fee_htlc_tx channel are each negotiated (both sides agree),
  carry HTLCs both ways in their own commitment format (two anchor outputs,
  zero-fee HTLC transactions) and close.
- option_shutdown_anysegwit: a cooperative close pays a witness v1 (taproot)
  address, which both nodes accept because both offer the feature.
- the limits each node announces (ChannelConfig) are what its peer enforces:
  an HTLC above the peer's max_htlc_value_in_flight_msat, or one too many for
  its max_accepted_htlcs, is refused by the sender before it leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import (
    FUNDING_SAT,
    PUSH_MSAT,
    Pair,
    balances,
    chain,
    channels,
    only_channel,
    running_pair,
    settled,
    wait_until,
)

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

ANCHOR_SAT = 330


async def _open(pair: Pair, alice: Node, bob: Node, channel_type: str | None) -> dict[str, Any]:
    result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=PUSH_MSAT, channel_type=channel_type)
    await pair.source.mine(2)
    await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
    return result


@pytest.mark.trio
@pytest.mark.parametrize("channel_type", ["static_remotekey", "anchors"])
async def test_each_channel_type_is_negotiated_and_carries_htlcs_both_ways(tmp_path: Path, channel_type: str) -> None:
    anchors = channel_type == "anchors"
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_and_connect(alice, bob)
        await wait_until(lambda: bob.node_id in alice.peers, "connected")
        opened = await _open(pair, alice, bob, channel_type)
        expected = "anchors_zero_fee_htlc_tx" if anchors else "static_remotekey"
        assert opened["channel_type"] == expected
        assert (await channels(bob).listchannels())["channels"][0]["channel_type"] == expected
        assert only_channel(alice).core.state.anchors is anchors and only_channel(bob).core.state.anchors is anchors

        # An HTLC each way in the commitment (above the dust limits): its own output, in this format.
        cid = only_channel(alice).channel_id.hex()
        for sender, receiver, amount in ((alice, bob, 60_000_000), (bob, alice, 25_000_000)):
            added = await channels(sender).dev_addhtlc(cid, amount)
            await wait_until(lambda: settled(alice) and settled(bob) and balances(receiver)[2] == 1, "HTLC committed")
            for node in (alice, bob):
                commitment = Tx.parse(only_channel(node).core.latest_commitment_tx())  # type: ignore[arg-type]
                values = sorted(o.amount_sat for o in commitment.outputs)
                assert len(values) == (5 if anchors else 3)  # to_local, to_remote, the HTLC (+ two anchors)
                assert values.count(ANCHOR_SAT) == (2 if anchors else 0)
                assert amount // 1000 in values
            (htlc,) = only_channel(receiver).core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
            await channels(receiver).dev_fulfill(cid, htlc.add.id, added["preimage"])
            await wait_until(lambda: settled(alice) and settled(bob) and balances(receiver)[2] == 0, "settled")
        alice_msat = FUNDING_SAT * 1000 - PUSH_MSAT - 60_000_000 + 25_000_000
        assert balances(alice)[:2] == (alice_msat, FUNDING_SAT * 1000 - alice_msat)
        assert balances(bob)[:2] == (FUNDING_SAT * 1000 - alice_msat, alice_msat)

        # option_shutdown_anysegwit: Bob closes to a taproot (witness v1) address.
        closed = await channels(bob).closechannel(cid, destination=_p2tr_address())
        assert closed["state"] == "closed"
        await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")
        closing = Tx.parse(only_channel(bob).core.state.closing_tx)  # type: ignore[arg-type]
        assert any(o.script_pubkey[:2] == b"\x51\x20" for o in closing.outputs)
        mempool = [t[::-1].hex() for t in await trio.to_thread.run_sync(source.core.mempool_txids)]
        assert mempool == [closing.txid_hex]


def _p2tr_address() -> str:
    """A regtest taproot address (any 32-byte key: the close only pays it)."""
    from lnpmsg.chain.address import address_for_script

    return address_for_script(b"\x51\x20" + bytes(range(32)), "bcrt")


@pytest.mark.trio
async def test_channel_type_choices_get_clear_errors(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: bob.node_id in alice.peers, "connected")
        with pytest.raises(ParamsError, match="channel_type is one of"):
            await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, channel_type="legacy")
        assert (await channels(alice).listchannels())["channels"] == []


@pytest.mark.trio
async def test_the_limits_a_node_announces_are_enforced_on_its_peer(tmp_path: Path) -> None:
    """Bob announces max_htlc_value_in_flight 100k sat and 2 accepted HTLCs; Alice keeps to them."""
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, MemoryNetwork())
        bob_config = ChannelConfig(minimum_depth=2, max_htlc_value_in_flight_msat=100_000_000, max_accepted_htlcs=2)
        alice = pair.node("alice", True)
        bob = Node(pair.keys["bob"], NodeConfig(listen=[], network="regtest"), transports={"mem": pair.network.transport()})
        bob.mount(ChainApp(tmp_path / "bob" / "wallet", source=source))
        bob.mount(ChannelsApp(tmp_path / "bob" / "channels", config=bob_config))
        async with running(alice, bob):
            await pair.fund_connect_open(alice, bob)
            remote = only_channel(alice).core.state.remote
            assert remote is not None and (remote.max_htlc_value_in_flight_msat, remote.max_accepted_htlcs) == (100_000_000, 2)
            cid = only_channel(alice).channel_id.hex()
            with pytest.raises(ChainAppError, match="in flight|in_flight"):
                await channels(alice).dev_addhtlc(cid, 100_000_001)
            await channels(alice).dev_addhtlc(cid, 30_000_000)
            await channels(alice).dev_addhtlc(cid, 30_000_000)
            with pytest.raises(ChainAppError, match="accepts at most 2 HTLCs"):
                await channels(alice).dev_addhtlc(cid, 1_000_000)
            await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 2, "two HTLCs committed")
