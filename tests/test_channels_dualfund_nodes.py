"""Channel establishment v2 between two lnpmsg nodes in memory, on one embedded regtest chain:
``--dual-fund`` on both, a channel opened with only the opener's coins and one with both
sides' coins (the funding transaction mined, so accepted by the consensus engine), payments
both ways, a cooperative close; an open the peer refuses frees the opener's coins; without the
option (the default) channels open with v1 and bit 29 is not offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_channels_app import balances, chain, channels, only_channel, pay, settled, wait_until

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.dualfund import DualFundSession
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

FUNDING_SAT = 1_000_000


def node(tmp: Path, network: MemoryNetwork, source: Any, name: str, policy: OpeningPolicy, listen: bool) -> Node:
    n = Node(NodeKey.generate(), NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
             transports={"mem": network.transport()})  # fmt: skip
    n.mount(ChainApp(tmp / name / "wallet", source=source))
    n.mount(ChannelsApp(tmp / name / "channels", config=ChannelConfig(minimum_depth=2), policy=policy))
    return n


async def fund(source: Any, n: Node, amount_sat: int) -> None:
    await source.faucet(n.apps["chain"].wallet.new_address(), amount_sat)  # type: ignore[attr-defined]
    await source.mine(1)
    await n.apps["chain"].wallet.sync()  # type: ignore[attr-defined]


def reserved(n: Node) -> int:
    return len(n.apps["chain"].wallet.reserved())  # type: ignore[attr-defined]


@pytest.mark.trio
@pytest.mark.parametrize("contribute", [0, 300_000], ids=["opener_only", "both"])
async def test_v2_open_pay_close(tmp_path: Path, contribute: int) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = node(tmp_path, network, source, "alice", OpeningPolicy(dual_fund=True), True)
        bob = node(tmp_path, network, source, "bob", OpeningPolicy(dual_fund=True, dual_fund_contribute_sat=contribute), False)
        async with running(alice, bob):
            await fund(source, alice, 3_000_000)
            await fund(source, bob, 2_000_000)
            await bob.connect(alice.addresses[0])
            assert alice.local_features(bob.node_id).has(29)
            result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            assert result["state"] == "await_ready" and result["capacity_sat"] == FUNDING_SAT + contribute
            a, b = only_channel(alice), only_channel(bob)
            assert isinstance(a.core.state.dual, DualFundSession) and a.core.state.channel_id == b.core.state.channel_id
            funding = Tx.parse(a.core.state.funding_tx)
            assert len(funding.inputs) == (2 if contribute else 1)
            await source.mine(2)  # the kernel accepts the block with the funding: both sides' inputs signed
            await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
            assert source.core.find_transaction(funding.txid)[1] is not None  # type: ignore[index]
            assert balances(alice)[:2] == (FUNDING_SAT * 1000, contribute * 1000)
            assert reserved(alice) == 0 and reserved(bob) == 0  # the coins were spent by the funding
            await pay(alice, bob, 50_000_000)
            await pay(bob, alice, 20_000_000)
            assert balances(bob)[:2] == ((contribute + 30_000) * 1000, (FUNDING_SAT - 30_000) * 1000)
            closed = await channels(bob).closechannel(b.channel_id.hex())
            assert closed["state"] == "closed"
            await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")


@pytest.mark.trio
async def test_refused_v2_open_frees_the_coins_and_v1_stays_default(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = node(tmp_path, network, source, "alice", OpeningPolicy(dual_fund=True), True)
        # Bob speaks v2 but wants bigger channels: he refuses the open_channel2
        bob = node(tmp_path, network, source, "bob", OpeningPolicy(dual_fund=True, min_funding_sat=5_000_000), False)
        carol = node(tmp_path, network, source, "carol", OpeningPolicy(), False)  # the default: v1 only
        async with running(alice, bob, carol):
            await fund(source, alice, 3_000_000)
            await bob.connect(alice.addresses[0])
            with pytest.raises(ChainAppError, match="funding_satoshis"):
                await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            assert reserved(alice) == 0  # the coins picked for it are free again
            assert not [c for c in channels(alice).manager.channels.values() if c.peer_id == bob.node_id]  # type: ignore[union-attr]
            # a peer without option_dual_fund: v1, and --v2 is refused
            await carol.connect(alice.addresses[0])
            assert not carol.local_features(alice.node_id).has(29) and not carol.local_features(alice.node_id).has(28)
            with pytest.raises(Exception, match="option_dual_fund"):
                await channels(alice).fundchannel(carol.node_id.hex(), FUNDING_SAT, v2=True)
            assert reserved(alice) == 0
            result = await channels(alice).fundchannel(carol.node_id.hex(), FUNDING_SAT)
            assert result["state"] == "await_ready"
            (channel,) = [c for c in channels(alice).manager.channels.values() if c.peer_id == carol.node_id]  # type: ignore[union-attr]
            assert channel.core.state.dual is None  # v1
