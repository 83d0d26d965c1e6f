"""Public channels on three nodes in memory, on one embedded regtest chain.

Alice opens an announced channel to Bob; Carol is connected to Alice only
and has no channel. After 6 confirmations Alice and Bob exchange
announcement_signatures and hand their gossip to their gossip apps; Carol
learns the channel, both policies and both nodes through gossip only, and
her routing graph (fed by her gossip app) routes over them. A new fee
policy and a lost peer re-announce the channel_update. A restart keeps the
announcement and the policy; a close takes the channel out. A private
channel's updates go to the peer only. An onion-only node announces its
onion address and no clearnet one. Bad announcement_signatures get a warning.

Real clock, waits for states (see tests/test_channels_app.py for why).
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.app import App
from lnpmsg.gossip.public.app import AnnounceApp, AnnounceConfig
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.gossip.announce import FeePolicy
from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.commands import _chain_app_funding_check, _print_channel, _print_listchannels
from lnpmsg.gossip.messages import AnnouncementSignatures, ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.sign import sign_digest
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.verify import check_channel_announcement, check_channel_update, check_node_announcement
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.payments import bolt11
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.graph import OverlayGraph, local_channel
from lnpmsg.payments.pathfind import find_route
from lnpmsg.node.events import PeerWarningReceived
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wire import CHAIN_HASHES, Features, ShortChannelId, TorV3Addr, decode_addresses

from tests.test_channels_app import FUNDING_SAT, TIMEOUT, chain, only_channel, settled, wait_until

ALICE_POLICY = FeePolicy(fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=40)


def gossip(node: Node) -> GossipApp:
    return node.apps["gossip"]  # type: ignore[return-value]


def announce(node: Node) -> AnnounceApp:
    return node.apps["announce"]  # type: ignore[return-value]


def make_node(name: str, tmp: Path, source: Any, network: MemoryNetwork, *, channels: bool, policy: FeePolicy | None = None,
              key: NodeKey | None = None, onion_only: bool = False, extra_addresses: tuple[str, ...] = (),
              public: bool = True) -> Node:  # fmt: skip
    config = NodeConfig(listen=[] if onion_only else ["mem://"], network="regtest", onion_only=onion_only)
    # an onion-only node dials through Tor only: none here (its peers dial it)
    node = Node(key or NodeKey.generate(), config, transports={} if onion_only else {"mem": network.transport()})
    chain_app = node.mount(ChainApp(tmp / name / "wallet", source=source))
    if channels:
        node.mount(ChannelsApp(tmp / name / "channels", config=ChannelConfig(minimum_depth=2)))
    (tmp / name).mkdir(parents=True, exist_ok=True)
    store = GossipStore(tmp / name / "gossip.sqlite3", CHAIN_HASHES["regtest"])
    config = GossipConfig(flush_interval=0.05, verify_threads=0, prune_interval=0)
    node.mount(GossipApp(store, config=config, funding_check=_chain_app_funding_check(chain_app)))
    if channels and public:
        config_a = AnnounceConfig(alias=name, policy=policy or FeePolicy(), min_interval=0.0, disable_delay=0.0, extra_addresses=extra_addresses)
        node.mount(AnnounceApp(config_a))
    return node


async def fund_and_connect(source: Any, alice: Node, bob: Node, address: str | None = None) -> None:
    """Alice's wallet funded with 3M sat from the faucet (one block), Bob connected to her (at
    ``address``, or her first listening address)."""
    chain_app = alice.apps["chain"]
    await source.faucet(chain_app.wallet.new_address(), 3_000_000)  # type: ignore[attr-defined]
    await source.mine(1)
    await chain_app.wallet.sync()  # type: ignore[attr-defined]
    await bob.connect(address or alice.addresses[0])


async def open_public(source: Any, alice: Node, bob: Node) -> int:
    """A funded, announced channel Alice -> Bob, 6 blocks deep; its short channel id."""
    await fund_and_connect(source, alice, bob)
    await alice.apps["channels"].fundchannel(bob.node_id.hex(), FUNDING_SAT, announce=True)  # type: ignore[attr-defined]
    await source.mine(6)
    await wait_until(lambda: settled(alice) and settled(bob), "channel ready")
    return only_channel(alice).core.state.short_channel_id


def has_both_updates(node: Node, scid: int) -> bool:
    channel = gossip(node).graph.channels.get(scid)
    return channel is not None and all(channel.update_ts)


@pytest.mark.trio
class AnnouncedOnly(App):
    """An app with a bit for node_announcement alone (as the payments app's keysend bit, bLIP 3)."""

    node_announcement_features = Features.from_bits([55])


async def test_announced_channel_reaches_a_third_node_and_routes(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, channels=True, policy=ALICE_POLICY)
        alice.mount(AnnouncedOnly("announced_only"))
        bob = make_node("bob", tmp_path, source, network, channels=True)
        carol = make_node("carol", tmp_path, source, network, channels=False)
        async with running(alice, bob, carol):
            await fund_and_connect(source, alice, bob)
            await carol.connect(alice.addresses[0])
            await alice.apps["channels"].fundchannel(bob.node_id.hex(), FUNDING_SAT, announce=True)  # type: ignore[attr-defined]
            await source.mine(2)
            await wait_until(lambda: settled(alice) and settled(bob), "channel ready")
            scid = only_channel(alice).core.state.short_channel_id
            # ready, but not deep enough to announce
            await trio.sleep(0.3)
            assert not gossip(alice).graph.has_channel(scid) and not gossip(carol).graph.has_channel(scid)

            await source.mine(4)  # 6 confirmations
            for node in (alice, bob, carol):
                await wait_until(lambda node=node: has_both_updates(node, scid), "the channel and both updates")
                await wait_until(lambda node=node: all(gossip(node).graph.nodes.get(n) is not None and gossip(node).graph.nodes[n].timestamp
                                                       for n in (alice.node_id, bob.node_id)), "both node_announcements")  # fmt: skip
                await gossip(node).drain()

            # What Carol stored verifies with the gossip verify code.
            store = gossip(carol).store
            raw = store.channel_announcement(scid)
            assert raw is not None
            ann = ChannelAnnouncement.decode(raw)
            assert check_channel_announcement(ann, raw) is None
            assert {ann.node_id_1, ann.node_id_2} == {alice.node_id, bob.node_id}
            for direction, raw_update in enumerate(store.channel_updates(scid)):
                assert raw_update is not None
                update = ChannelUpdate.decode(raw_update)
                assert update.channel_flags & 1 == direction and not update.channel_flags & 2
                assert check_channel_update(update, ann.node_id_1, ann.node_id_2, raw_update) is None
            raw_node = store.node_announcement(alice.node_id)
            assert raw_node is not None
            node_ann = NodeAnnouncement.decode(raw_node)
            assert check_node_announcement(node_ann, raw_node) is None
            assert node_ann.alias.rstrip(b"\0") == b"alice"
            # an app's node_announcement-only bit is announced, and stays out of init
            assert 55 in Features.from_bytes(node_ann.features).bits() and 55 not in alice.local_features().bits()
            raw_bob = store.node_announcement(bob.node_id)
            assert raw_bob is not None and 55 not in Features.from_bytes(NodeAnnouncement.decode(raw_bob).features).bits()
            # the gossip app's answer to "what did this node announce"
            assert await gossip(carol).announced_features(alice.node_id) == Features.from_bytes(node_ann.features)
            assert await gossip(carol).announced_features(carol.node_id) is None  # (no channel of Carol's is known)

            # Carol's routing graph has both policies and routes Carol -> Alice -> Bob.
            graph = gossip(carol).routing_graph
            alice_dir = 0 if alice.node_id < bob.node_id else 1
            edge = graph.channel(scid, alice_dir)
            assert edge is not None and not edge.disabled
            assert (edge.fee_base_msat, edge.fee_proportional_millionths, edge.cltv_expiry_delta) == (1000, 100, 40)
            assert edge.capacity_msat == FUNDING_SAT * 1000
            back = graph.channel(scid, 1 - alice_dir)
            assert back is not None and (back.fee_base_msat, back.fee_proportional_millionths) == (1000, 10)
            tip = await source.tip()
            view = OverlayGraph(graph, [local_channel(1, carol.node_id, alice.node_id, 10**9)])
            route = find_route(view, carol.node_id, bob.node_id, 1_000_000, current_height=tip.height, now=0.0)
            assert [h.node_id for h in route.hops] == [alice.node_id, bob.node_id]
            assert route.hops[1].short_channel_id == scid
            assert route.amount_msat == 1_000_000 + 1000 + 100

            # 'lnpmsg gossip listchannels' / 'getchannel' print it.
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                _print_listchannels({"channels": await gossip(carol).list_channels()}, 1000)
                _print_channel(await gossip(carol).get_channel(str(ann.short_channel_id)))  # type: ignore[arg-type]
            text = printed.getvalue()
            assert f"{ann.short_channel_id}" in text and "2/2 updates" in text and "fee 1000 msat + 100 ppm" in text

            # A new policy on Alice's side reaches Carol's routing graph.
            result = await alice.apps["channels"].control_methods["setfee"](str(ann.short_channel_id), fee_base_msat=2500, fee_ppm=7)
            assert result["channels"][0]["fee_base_msat"] == 2500
            await wait_until(lambda: graph.channel(scid, alice_dir).fee_base_msat == 2500, "the new policy at Carol")  # type: ignore[union-attr]
            assert graph.channel(scid, alice_dir).fee_proportional_millionths == 7  # type: ignore[union-attr]
            # forwards meet the new policy, or for BOLT 7's 10 minutes the one before it
            announce = alice.apps["announce"]
            assert announce.config.policy_grace == 600.0  # type: ignore[attr-defined]
            current, before = announce.forwarding_policies(scid)  # type: ignore[attr-defined]
            assert (current.fee_base_msat, current.fee_proportional_millionths) == (2500, 7) and before == ALICE_POLICY
            announce.clock = lambda: time.time() + 601  # type: ignore[attr-defined]
            assert announce.forwarding_policies(scid) == [current]  # type: ignore[attr-defined]
            announce.clock = time.time  # type: ignore[attr-defined]

            # Bob goes away: Alice disables her direction (Carol hears it), and enables it when he is back.
            await bob.disconnect(alice.node_id, "test: gone")
            await wait_until(lambda: graph.channel(scid, alice_dir).disabled, "disabled at Carol")  # type: ignore[union-attr]
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: not graph.channel(scid, alice_dir).disabled, "enabled again at Carol")  # type: ignore[union-attr]


@pytest.mark.trio
async def test_restart_keeps_the_announcement_and_policy_and_a_close_leaves_the_graph(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice_key = NodeKey.generate()
        alice = make_node("alice", tmp_path, source, network, channels=True, key=alice_key)
        bob = make_node("bob", tmp_path, source, network, channels=True)
        async with running(bob):
            async with running(alice):
                scid = await open_public(source, alice, bob)
                await wait_until(lambda: has_both_updates(alice, scid) and has_both_updates(bob, scid), "announced")
                await alice.apps["channels"].control_methods["setfee"]("all", fee_base_msat=3000, cltv_expiry_delta=60)
                alice_dir = 0 if alice.node_id < bob.node_id else 1
                bob_graph = gossip(bob).routing_graph
                await wait_until(lambda: bob_graph.channel(scid, alice_dir).fee_base_msat == 3000, "new fee at Bob")  # type: ignore[union-attr]
                await gossip(alice).drain()
                before = gossip(bob).graph.channels[scid].update_ts[alice_dir]

            # Alice comes back from her stores: the channel is still public (no new announcement
            # needed), her routing graph is loaded with both policies, her policy file holds the fee.
            alice = make_node("alice", tmp_path, source, network, channels=True, key=alice_key)
            assert gossip(alice).routing_graph.channel(scid, alice_dir).fee_base_msat == 3000  # type: ignore[union-attr]
            async with running(alice):
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
                # (an update that still says "disabled" may come first, sent before Bob was back)
                await wait_until(
                    lambda: gossip(bob).graph.channels[scid].update_ts[alice_dir] > before
                    and not bob_graph.channel(scid, alice_dir).disabled,  # type: ignore[union-attr]
                    "a fresh, enabled update from Alice",
                )
                edge = bob_graph.channel(scid, alice_dir)
                assert edge is not None and (edge.fee_base_msat, edge.cltv_expiry_delta, edge.disabled) == (3000, 60, False)
                assert (await announce(alice).listpolicies())["channels"][0]["public"]

                # Bob closes: Alice's channel leaves her gossip graph and her routing graph.
                await bob.apps["channels"].closechannel(only_channel(bob).channel_id.hex())  # type: ignore[attr-defined]
                await wait_until(lambda: not gossip(alice).graph.has_channel(scid), "closed channel gone")
                assert gossip(alice).routing_graph.channel(scid, 0) is None


@pytest.mark.trio
async def test_private_channel_updates_go_to_the_peer_only(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, channels=True, policy=ALICE_POLICY)
        bob = make_node("bob", tmp_path, source, network, channels=True)
        async with running(alice, bob):
            await fund_and_connect(source, alice, bob)
            await alice.apps["channels"].fundchannel(bob.node_id.hex(), FUNDING_SAT)  # type: ignore[attr-defined]
            await source.mine(6)
            await wait_until(lambda: settled(alice) and settled(bob), "channel ready")
            scid = only_channel(alice).core.state.short_channel_id
            # (BOLT 7: each side's update names the alias the other gave it; each keeps the peer's by its own alias)
            a_alias, b_alias = only_channel(alice).core.state.local_alias, only_channel(bob).core.state.local_alias
            assert a_alias and b_alias and a_alias != scid
            # each side holds the other's policy (what a route hint of an invoice needs) ...
            await wait_until(lambda: b_alias in announce(bob).peer_updates and a_alias in announce(alice).peer_updates, "both updates")
            from_alice = announce(bob).peer_updates[b_alias]
            assert from_alice.short_channel_id.to_int() == b_alias and from_alice.message_flags & 2  # dont_forward
            assert (from_alice.fee_base_msat, from_alice.fee_proportional_millionths) == (1000, 100)
            assert announce(alice).peer_updates[a_alias].fee_proportional_millionths == 10
            assert announce(alice).peer_updates[a_alias].short_channel_id.to_int() == a_alias
            listed = (await announce(bob).listpolicies())["channels"][0]
            assert not listed["public"] and listed["peer_policy"]["fee_proportional_millionths"] == 100
            # ... a new policy reaches the peer too ...
            await alice.apps["channels"].control_methods["setfee"]("all", fee_ppm=333)
            await wait_until(lambda: announce(bob).peer_updates[b_alias].fee_proportional_millionths == 333, "the new policy at Bob")
            # ... and the channel is in nobody's public graph
            await gossip(alice).drain()
            await gossip(bob).drain()
            assert not gossip(alice).graph.has_channel(scid) and not gossip(bob).graph.has_channel(scid)
            assert gossip(bob).routing_graph.channel(scid, 0) is None


async def test_invoices_hint_a_public_channel_until_it_is_announced(tmp_path: Path) -> None:
    """A channel opened to be public is found in the gossip only once announced: until then (below six
    confirmations), and for good with a peer that never sends its announcement_signatures (as Electrum),
    our invoices carry its route hint; an announced channel gets none."""
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, channels=True)
        bob = make_node("bob", tmp_path, source, network, channels=True)
        carol = make_node("carol", tmp_path, source, network, channels=True, public=False)  # announces nothing
        for node in (alice, carol):
            node.mount(PaymentsApp(tmp_path / node.node_id.hex()[:8] / "payments"))

        async def hinted(node: Node, peer: Node) -> list[tuple[bytes, int]]:
            text = (await node.apps["payments"].invoice(1_000_000, f"hint-{len(hints_made)}", "hint?"))["bolt11"]  # type: ignore[attr-defined]
            hints_made.append(text)
            return [(h.node_id, h.short_channel_id) for hint in bolt11.decode(text).route_hints for h in hint]

        hints_made: list[str] = []
        async with running(alice, bob, carol):
            for funder in (bob, carol):
                chain_app = funder.apps["chain"]
                await source.faucet(chain_app.wallet.new_address(), 3_000_000)  # type: ignore[attr-defined]
            await source.mine(1)
            for funder in (bob, carol):
                await funder.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
                await funder.connect(alice.addresses[0])
                await funder.apps["channels"].fundchannel(alice.node_id.hex(), FUNDING_SAT, push_msat=0, announce=True)  # type: ignore[attr-defined]
            await source.mine(2)
            ours = alice.apps["channels"].manager.channels.values  # type: ignore[attr-defined]
            await wait_until(lambda: len(ours()) == 2 and all(c.phase is Phase.NORMAL for c in ours()) and settled(bob) and settled(carol),
                             "channels ready")  # fmt: skip
            ab, ac = (next(c for c in ours() if c.peer_id == peer.node_id) for peer in (bob, carol))
            # both public by their flag, neither deep enough to announce: both hinted
            assert {peer for peer, _ in await hinted(alice, bob)} == {bob.node_id, carol.node_id}

            await source.mine(4)  # six confirmations: Alice-Bob is announced; Carol never signs hers
            scid = ab.core.state.short_channel_id
            await wait_until(lambda: gossip(alice).graph.has_channel(scid), "Alice-Bob announced")
            assert announce(alice).is_announced(scid) and not announce(alice).is_announced(ac.core.state.short_channel_id)
            assert [peer for peer, _ in await hinted(alice, bob)] == [carol.node_id]


ONION = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion"


@pytest.mark.trio
async def test_onion_only_node_announces_its_onion_and_no_clearnet_address(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        # Alice is onion-only: reachable through the listener behind her onion service (as NodeTor
        # serves it), and asked to announce a clearnet address too, which she must not.
        alice = make_node("alice", tmp_path, source, network, channels=True, onion_only=True, extra_addresses=("8.8.8.8:9735",))
        bob = make_node("bob", tmp_path, source, network, channels=True)
        async with running(alice, bob):
            listener = await network.transport().listen("")
            alice.add_listener(listener, reachable=f"{ONION}:9735")
            await fund_and_connect(source, alice, bob, f"mem://{alice.node_id.hex()}@{listener.local_address}")
            await alice.apps["channels"].fundchannel(bob.node_id.hex(), FUNDING_SAT, announce=True)  # type: ignore[attr-defined]
            await source.mine(6)
            await wait_until(lambda: (n := gossip(bob).graph.nodes.get(alice.node_id)) is not None and n.timestamp > 0, "Alice's node_announcement")
            await gossip(bob).drain()
            raw = gossip(bob).store.node_announcement(alice.node_id)
            assert raw is not None
            announced = NodeAnnouncement.decode(raw)
            assert check_node_announcement(announced, raw) is None
            assert decode_addresses(announced.addresses) == (TorV3Addr.from_host(ONION, 9735),)
            assert (await gossip(bob).get_node(alice.node_id))["addresses"] == [f"{ONION}:9735"]  # type: ignore[index]


@pytest.mark.trio
async def test_bad_announcement_signatures_get_a_warning_and_announce_nothing(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, channels=True)
        bob = make_node("bob", tmp_path, source, network, channels=True, public=False)  # sends no signatures of his own
        async with running(alice, bob):
            scid = await open_public(source, alice, bob)
            channel_id = only_channel(alice).channel_id
            forged = AnnouncementSignatures(
                channel_id=channel_id, short_channel_id=ShortChannelId.from_int(scid),
                node_signature=sign_digest(b"\x05" * 32, b"\x01" * 32), bitcoin_signature=sign_digest(b"\x06" * 32, b"\x01" * 32),
            )  # fmt: skip
            with record_events(bob) as events:
                # Alice's own signatures reach Bob (who has no announce app to answer)
                await wait_until(lambda: scid in announce(alice)._sent, "Alice's signatures sent")
                await bob.peers[alice.node_id].send(forged.encode())
                warning = await events.wait_for(lambda e: isinstance(e, PeerWarningReceived), timeout=TIMEOUT)
            assert "bad node_signature" in warning.text and warning.channel_id == channel_id
            await gossip(alice).drain()
            assert not gossip(alice).graph.has_channel(scid)
            assert alice.peers.get(bob.node_id) is not None  # a warning, not a disconnection


def test_the_payments_default_policy_is_the_announced_default() -> None:
    """A node without gossip hints (and forwards) with what an lnpmsg peer with gossip announces and charges."""
    from lnpmsg.payments.htlcs import FeePolicy as ForwardingPolicy

    announced, forwarding = FeePolicy(), ForwardingPolicy()
    assert (forwarding.fee_base_msat, forwarding.fee_proportional_millionths, forwarding.cltv_expiry_delta) == (
        announced.fee_base_msat, announced.fee_proportional_millionths, announced.cltv_expiry_delta)
