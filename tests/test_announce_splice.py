"""A public channel spliced between two lnpmsg nodes: once the splice locks, the channel is
announced again under its new short channel id (announcement_signatures for the splice's
funding, BOLT 2), with its new capacity and the fee policy it had, in both nodes' gossip graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_announce_app import gossip, has_both_updates, make_node, open_public
from test_channels_app import chain, channels, only_channel, settled, wait_until

from lnpmsg.channels.manager import format_scid
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running


@pytest.mark.trio
async def test_a_spliced_public_channel_is_announced_under_its_new_id(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = make_node("alice", tmp_path, source, network, channels=True)
        bob = make_node("bob", tmp_path, source, network, channels=True)
        async with running(alice, bob):
            old = await open_public(source, alice, bob)
            await wait_until(lambda: has_both_updates(alice, old) and has_both_updates(bob, old), "announced")
            await alice.apps["channels"].control_methods["setfee"]("all", fee_base_msat=3000, cltv_expiry_delta=60)
            cid = only_channel(alice).channel_id.hex()
            result = await channels(alice).splice(cid, 400_000)
            await source.mine(6)
            await wait_until(lambda: only_channel(alice).core.state.splice is None and only_channel(bob).core.state.splice is None
                             and settled(alice) and settled(bob), "spliced on both sides")
            new = only_channel(alice).core.state.short_channel_id
            assert new != old and only_channel(bob).core.state.short_channel_id == new
            await wait_until(lambda: has_both_updates(alice, new) and has_both_updates(bob, new), "announced anew")
            announced = gossip(bob).graph.channels[new]
            assert announced is not None and result["new_capacity_sat"] == only_channel(bob).core.state.funding_sat
            # the fee policy set before the splice follows the channel to its new id
            alice_dir = 0 if alice.node_id < bob.node_id else 1
            edge = gossip(bob).routing_graph.channel(new, alice_dir)
            assert edge is not None and (edge.fee_base_msat, edge.cltv_expiry_delta) == (3000, 60)
            # a forward naming the old id (a payer with stale gossip) still leaves on the channel
            listed = (await channels(alice).listchannels())["channels"][0]
            assert format_scid(old) in listed["forwarding_scids"] and format_scid(new) in listed["forwarding_scids"]
