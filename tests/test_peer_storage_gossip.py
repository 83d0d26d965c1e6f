"""A node that lost its data dir finds its channel peers in gossip (``--recover-from-peers``).

Sans-IO: the dial plan (a few dials at once, back-off per peer). End to end (three nodes in one
process on loopback TCP, the embedded regtest chain): Alice and Bob have a public channel; Carol
has none and syncs the gossip from Alice. Bob loses his data dir (his seed material kept: no
``peers.json``, no gossip), starts with ``recover=True`` knowing Carol only, syncs the gossip from
her, finds Alice there (the channel_announcement naming him, her node_announcement's address),
connects to her by himself, gets his backup back and restores: Alice force-closes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from test_channels_app import channels, only_channel, settled
from test_channels_backup import _lose_channels
from test_channels_onchain import FUNDING_SAT, PUSH_MSAT, TO_SELF_DELAY, Pair, wait_until
from test_peer_storage import _held_for, storage

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.backup import decode_backup
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.peer_finder import DialPlan
from lnpmsg.channels.peer_storage import PeerStorageApp
from lnpmsg.channels.state import Phase
from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.commands import _chain_app_funding_check
from lnpmsg.gossip.public.app import AnnounceApp, AnnounceConfig
from lnpmsg.gossip.store import GossipStore
from lnpmsg.io.redial import Backoff
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wire import CHAIN_HASHES


def test_the_plan_dials_a_few_peers_at_once_and_backs_off_a_failed_one() -> None:
    plan = DialPlan(max_dials=2, backoff=lambda: Backoff(10.0, 40.0, jitter=lambda: 1.0))
    a, b, c, d = (bytes([n]) * 33 for n in range(1, 5))
    assert plan.due([d, c, b, a], connected=[a], now=0.0) == [b, c]  # at most two at once; a is connected
    assert plan.due([a, b, c, d], connected=[], now=0.0) == []  # (both dials under way)
    assert plan.done(b, now=1.0) == 10.0
    assert plan.due([a, b, c, d], connected=[a], now=2.0) == [d]  # b waits its back-off
    assert plan.done(d, now=2.0) == 10.0 and plan.done(c, now=2.0) == 10.0
    assert plan.due([a, b, c, d], connected=[a, d], now=11.0) == [b]  # d is connected
    assert plan.done(b, now=11.0) == 20.0  # twice as long after each dial
    assert plan.due([b, c, d], connected=[], now=12.0) == [c, d]  # d dropped us: dialed again after its wait
    assert plan.due([b], connected=[], now=31.0) == []  # (two dials under way)
    plan.done(c, now=31.0)
    assert plan.due([b, c], connected=[], now=31.0) == [b]


class GossipPair(Pair):
    """Nodes on loopback TCP (their node_announcements carry the address) with gossip and peer
    storage; Carol has no channel app (a gossip peer only)."""

    def __init__(self, source: EmbeddedChainSource, tmp: Path) -> None:
        super().__init__(source, tmp, MemoryNetwork())
        self.keys["carol"] = NodeKey.generate()

    def node(self, name: str, listen: bool, recover: bool = False) -> Node:  # type: ignore[override]
        node = Node(self.keys[name], NodeConfig(listen=["127.0.0.1:0"] if listen else [], network="regtest"))
        chain_app = node.mount(ChainApp(self.tmp / name / "wallet", source=self.source))
        if name != "carol":
            node.mount(PeerStorageApp(self.tmp / name / "peer_storage", recover=recover, write_interval=0.5, check_after=0.5,
                                      search_poll=0.2, search_time=120))  # fmt: skip
            node.mount(ChannelsApp(self.tmp / name / "channels", config=ChannelConfig(minimum_depth=1, to_self_delay=TO_SELF_DELAY)))
        (self.tmp / name / "gossip").mkdir(parents=True, exist_ok=True)
        store = GossipStore(self.tmp / name / "gossip" / "gossip.sqlite3", CHAIN_HASHES["regtest"])
        config = GossipConfig(flush_interval=0.05, verify_threads=0, prune_interval=0)
        node.mount(GossipApp(store, config=config, funding_check=_chain_app_funding_check(chain_app)))
        if name != "carol":
            node.mount(AnnounceApp(AnnounceConfig(alias=name, min_interval=0.0, disable_delay=0.0)))
        return node


def gossip(node: Node) -> GossipApp:
    return node.apps["gossip"]  # type: ignore[return-value]


@pytest.mark.trio
@pytest.mark.parametrize("recover", [True, False], ids=["automatic", "command"])
async def test_a_recovering_node_finds_its_channel_peer_in_gossip_and_restores(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                               recover: bool) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="lnpmsg.channels.peer_finder")
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        pair = GossipPair(source, tmp_path)
        alice, carol = pair.node("alice", True), pair.node("carol", True)
        bob_channels = tmp_path / "bob" / "channels"
        async with running(alice, carol):
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.fund_wallet(alice, 3_000_000)
                await carol.connect(alice.addresses[0])
                await bob.connect(alice.addresses[0])
                await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=PUSH_MSAT, announce=True)
                await pair.mine(6, alice, bob)
                await wait_until(lambda: settled(alice) and settled(bob), "channel ready")
                scid = only_channel(bob).core.state.short_channel_id
                seed = (bob_channels / "channel_seed").read_bytes()
                await wait_until(lambda: gossip(carol).graph.has_channel(scid) and bool(getattr(gossip(carol).graph.nodes.get(alice.node_id), "timestamp", 0)),
                                 "carol has the channel and alice's node_announcement")  # fmt: skip
                await wait_until(lambda: [e.short_channel_id for e in _held_for(alice, bob, seed)] == [scid], "alice holds bob's backup")
                # Bob's file names Alice by the alias of her node_announcement; the blob she keeps does not (room for channels)
                await wait_until(lambda: [e.alias for e in decode_backup((bob_channels / "channels.backup").read_bytes(), seed)] == ["alice"],
                                 "bob's backup names alice")  # fmt: skip
                assert [e.alias for e in _held_for(alice, bob, seed)] == [""]
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            # Bob keeps his seed material only: no channels (nor peers.json), no peer storage, no gossip
            _lose_channels(bob_channels, seed)
            shutil.rmtree(tmp_path / "bob" / "peer_storage")
            shutil.rmtree(tmp_path / "bob" / "gossip")
            bob = pair.node("bob", False, recover=recover)
            async with running(bob):
                assert (await channels(bob).listchannels())["channels"] == []
                await bob.connect(carol.addresses[0])  # (Bob knows Carol, a gossip peer, not Alice)
                if not recover:
                    # 'lnpmsg restorechannels --from-peers' with no backup returned yet starts the search
                    await wait_until(lambda: gossip(bob).graph.has_channel(scid), "bob has the gossip")
                    await gossip(bob).drain()  # (in the store, which the search reads)
                    with pytest.raises(ParamsError, match=r"looking for our channels' peers in gossip now \(1 found so far\)"):
                        await storage(bob).restorechannels()
                await wait_until(lambda: alice.node_id in bob.peers, "bob connects to alice by himself")
                if recover:
                    await wait_until(lambda: bool(channels(bob).manager.channels), "restored as the backup arrived")  # type: ignore[union-attr]
                else:
                    await wait_until(lambda: bool(storage(bob).kept), "alice returned bob's backup")
                    await wait_until(lambda: bool(getattr(gossip(bob).graph.nodes.get(alice.node_id), "timestamp", 0)), "bob has alice's alias")
                    await gossip(bob).drain()
                    (restored,) = (await storage(bob).restorechannels())["channels"]
                    # the blob names no alias: the gossip does
                    assert restored["state"] == "restored_awaiting_close" and restored["alias"] == "alice"
                assert only_channel(bob).core.state.short_channel_id == scid
                await wait_until(lambda: only_channel(alice).phase is Phase.FAILED, "alice goes on chain")
                assert only_channel(bob).core.latest_commitment_tx() is None
                await wait_until(lambda: not storage(bob)._searching, "the search stops")
    messages = [r.getMessage() for r in caplog.records if r.name == "lnpmsg.channels.peer_finder"]
    assert any("found 1 channel peer(s) in gossip, connecting" in m and "private channels" in m for m in messages), messages
    assert any("a channel peer returned our backup; stopped looking" in m for m in messages), messages
