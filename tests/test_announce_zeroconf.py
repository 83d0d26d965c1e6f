"""A public zero-conf channel's fee policy, set before its funding confirms, follows it to its real short channel id.

Before the funding confirms, the channel's routing id is our alias (``setchannelfee`` keys the
policy by it); once the real id is known, the policy moves there (``policies.json`` too), so the
channel_update announcing the channel carries the policy the user set, and forwards meet it.
Nodes in memory on one embedded regtest chain (as tests/test_announce_app.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.state import Phase
from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.commands import _chain_app_funding_check
from lnpmsg.gossip.messages import ChannelUpdate
from lnpmsg.gossip.public.app import AnnounceApp, AnnounceConfig
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wire import CHAIN_HASHES

from tests.test_announce_app import announce, fund_and_connect, gossip
from tests.test_channels_app import FUNDING_SAT, chain, only_channel, wait_until


def make_node(name: str, tmp: Path, source: object, network: MemoryNetwork, key: NodeKey, trusts: tuple[bytes, ...] = ()) -> Node:
    node = Node(key, NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": network.transport()})
    chain_app = node.mount(ChainApp(tmp / name / "wallet", source=source))
    node.mount(ChannelsApp(tmp / name / "channels", config=ChannelConfig(minimum_depth=1), policy=OpeningPolicy(zeroconf_peers=trusts)))
    (tmp / name).mkdir(parents=True, exist_ok=True)
    store = GossipStore(tmp / name / "gossip.sqlite3", CHAIN_HASHES["regtest"])
    node.mount(GossipApp(store, config=GossipConfig(flush_interval=0.05, verify_threads=0, prune_interval=0),
                         funding_check=_chain_app_funding_check(chain_app)))  # fmt: skip
    node.mount(AnnounceApp(AnnounceConfig(alias=name, min_interval=0.0, disable_delay=0.0)))
    return node


@pytest.mark.trio
async def test_a_policy_set_before_a_public_zeroconf_channel_confirms_is_announced_with_its_real_id(tmp_path: Path) -> None:
    network = MemoryNetwork()
    keys = {"alice": NodeKey.generate(), "bob": NodeKey.generate()}
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, keys["alice"])
        bob = make_node("bob", tmp_path, source, network, keys["bob"], trusts=(keys["alice"].node_id,))
        async with running(alice, bob):
            await fund_and_connect(source, alice, bob)
            await alice.apps["channels"].fundchannel(bob.node_id.hex(), FUNDING_SAT, announce=True, zeroconf=True)  # type: ignore[attr-defined]
            await wait_until(lambda: only_channel(alice).phase is Phase.NORMAL and only_channel(bob).phase is Phase.NORMAL, "zero-conf ready")
            s = only_channel(alice).core.state
            assert not s.short_channel_id and s.local_alias
            set_ = await announce(alice).setchannelfee(s.channel_id.hex(), fee_base_msat=4321, fee_ppm=77)
            alias = set_["channels"][0]["short_channel_id"]  # (keyed by the alias: no real id yet)
            assert announce(alice).forwarding_policies(s.local_alias)[0].fee_base_msat == 4321

            await source.mine(6)
            await wait_until(lambda: bool(s.short_channel_id), "the real id")
            scid = s.short_channel_id
            direction = 0 if alice.node_id < bob.node_id else 1
            graph = gossip(alice).graph
            await wait_until(lambda: graph.has_channel(scid) and bool(graph.channels[scid].update_ts[direction]), "announced, alice's update")
            await gossip(alice).drain()
            update = ChannelUpdate.decode(gossip(alice).store.channel_updates(scid)[direction])  # type: ignore[arg-type]
            assert (update.fee_base_msat, update.fee_proportional_millionths) == (4321, 77)
            # forwards by the real id or the alias meet it; listpolicies and the file name the real id
            for named in (scid, s.local_alias):
                assert announce(alice).forwarding_policies(named)[0].fee_base_msat == 4321
            (row,) = (await announce(alice).listpolicies())["channels"]
            assert row["fee_base_msat"] == 4321 and row["public"] and row["short_channel_id"] != alias
            saved = json.loads((tmp_path / "alice" / "channels" / "policies.json").read_text())["channels"]
            assert list(saved) == [str(scid)]
