"""A channel between two onion-only nodes through the session's private Tor network
(real tor, 127.0.0.1 only): open, HTLCs both ways (a trimmed one too), close.
Both nodes' wallets live on one embedded regtest chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.nodes import running
from lnpmsg.testing.tornet import PrivateTorNetwork
from lnpmsg.tor_app import NodeTor, TorSettings
from lnpmsg.wallet.app import ChainApp
from test_channels_app import FUNDING_SAT, PUSH_MSAT, balances, channels, only_channel, pay, settled, wait_until

pytestmark = pytest.mark.slow

TOR_TIMEOUT = 90.0


def onion_node(net: PrivateTorNetwork, source: EmbeddedChainSource, directory: Path) -> Node:
    node = Node(NodeKey.generate(), NodeConfig(onion_only=True, network="regtest", ping_interval=5.0, pong_timeout=20.0))
    settings = TorSettings(directory / "tor", extra_torrc=tuple(net.client_torrc_lines()), bootstrap_timeout=TOR_TIMEOUT,
                           publish_timeout=TOR_TIMEOUT, connect_timeout=TOR_TIMEOUT)  # fmt: skip
    node.mount(NodeTor(settings))
    node.mount(ChainApp(directory / "wallet", source=source))
    node.mount(ChannelsApp(directory / "channels", config=ChannelConfig(minimum_depth=1)))
    return node


async def test_a_channel_between_two_onion_only_nodes(private_tor_network: PrivateTorNetwork, tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        alice, bob = onion_node(private_tor_network, source, tmp_path / "a"), onion_node(private_tor_network, source, tmp_path / "b")
        async with running(alice, bob):
            chain: Any = alice.apps["chain"]
            await source.faucet(chain.wallet.new_address(), 3_000_000)
            await source.mine(1)
            await chain.wallet.sync()
            with trio.fail_after(TOR_TIMEOUT * 2):
                peer = await bob.connect(alice.addresses[0])
            assert peer.transport_kind == "tor"
            await wait_until(lambda: bob.node_id in alice.peers, "alice sees bob")
            result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=PUSH_MSAT)
            assert result["state"] == "await_ready"
            await source.mine(1)
            await wait_until(lambda: settled(alice) and settled(bob), "ready")
            await pay(alice, bob, 30_000_000)
            await pay(bob, alice, 10_000_000)
            await pay(bob, alice, 150_000)  # trimmed
            alice_msat = FUNDING_SAT * 1000 - PUSH_MSAT - 30_000_000 + 10_000_000 + 150_000
            assert balances(alice)[:2] == (alice_msat, FUNDING_SAT * 1000 - alice_msat)
            closed = await channels(alice).closechannel(only_channel(alice).channel_id.hex())
            assert closed["state"] == "closed" and closed["closing_txid"]
            await wait_until(lambda: only_channel(bob).phase is Phase.CLOSED, "bob closed")
