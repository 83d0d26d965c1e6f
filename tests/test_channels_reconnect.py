"""The channel app keeps its channel peers connected.

Bob dials Alice and opens a channel with her: Bob remembers where he reached
her. When the link drops, Bob dials her again by himself; when Bob restarts,
he dials her at start; either way the channel is reestablished and carries
HTLCs, with no ``connect`` from anyone. Alice never dialed Bob, so she has
no address of his and waits for him. With ``reconnect=False`` nothing dials.
A damaged address book only means waiting for the peer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.transports.address import parse_peer_address
from lnpmsg.wallet.app import ChainApp
from test_channels_app import Pair, chain, channels, only_channel, pay, settled, wait_until


def connected(node: Node) -> bool:
    return only_channel(node).core.state.connected and settled(node)


def no_redial_bob(pair: Pair) -> Node:
    node = Node(pair.keys["bob"], NodeConfig(listen=[], network="regtest"), transports={"mem": pair.network.transport()})
    node.mount(ChainApp(pair.tmp / "bob" / "wallet", source=pair.source))
    node.mount(ChannelsApp(pair.tmp / "bob" / "channels", config=ChannelConfig(minimum_depth=2), reconnect=False))
    return node


@pytest.mark.trio
async def test_a_channel_peer_we_dialed_is_dialed_again_after_a_drop_and_after_a_restart(tmp_path: Path) -> None:
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.fund_connect_open(alice, bob)
                book = channels(bob).reconnector.book  # type: ignore[union-attr]
                await wait_until(lambda: book.get(alice.node_id) is not None, "bob noted alice's address")
                assert parse_peer_address(book.get(alice.node_id)) == parse_peer_address(alice.addresses[0])  # type: ignore[arg-type]
                assert channels(alice).reconnector.book.addresses == {}  # type: ignore[union-attr]  # she never dialed

                # the link drops: Bob dials again by himself
                await alice.disconnect(bob.node_id, "test: drop the link")
                await wait_until(lambda: not only_channel(alice).core.state.connected, "the link is down")
                await wait_until(lambda: connected(alice) and connected(bob), "bob dialed alice again")
                await pay(alice, bob, 10_000_000)

            # Bob stops and starts again: he dials Alice at start
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            bob = pair.node("bob", False)
            async with running(bob):
                await wait_until(lambda: connected(alice) and connected(bob), "bob dialed alice at start")
                await pay(bob, alice, 5_000_000)

            # without reconnection, a restarted Bob waits (and Alice has nothing to dial)
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            bob = no_redial_bob(pair)
            async with running(bob):
                assert channels(bob).reconnector is None
                with trio.move_on_after(3):
                    await wait_until(lambda: only_channel(bob).core.state.connected, "nobody dials")
                assert not only_channel(bob).core.state.connected and bob.node_id not in alice.peers

            # a damaged address book: Bob waits for Alice instead of failing
            (tmp_path / "bob" / "channels" / "peers.json").write_bytes(b"{not json")
            bob = pair.node("bob", False)
            async with running(bob):
                assert channels(bob).reconnector.book.addresses == {}  # type: ignore[union-attr]
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: connected(alice) and connected(bob), "reestablished by hand")
                book = channels(bob).reconnector.book  # type: ignore[union-attr]
                await wait_until(lambda: book.get(alice.node_id) is not None, "the address noted again")
