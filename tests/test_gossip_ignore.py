"""A node without the gossip app (``--no-gossip``) drops the gossip peers send it (real mainnet
messages here) and keeps the connection; an even type nobody knows still fails the peer; an
app that handles gossip itself keeps it."""

from __future__ import annotations

from pathlib import Path

import trio

from lnpmsg.app import App
from lnpmsg.gossip.ignore import GOSSIP_BROADCASTS, GOSSIP_IGNORED
from lnpmsg.gossip.messages import ChannelUpdate
from lnpmsg.runtime import NodeSettings, build_node
from lnpmsg.testing.nodes import make_node, running

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gossip" / "cln-unit-vectors.txt"


def real_gossip() -> list[bytes]:
    """The valid channel_announcement, channel_update and node_announcement (types included)."""
    rows = [line.split() for line in VECTORS.read_text().splitlines() if line and not line.startswith("#")]
    return [bytes.fromhex(row[3]) for row in rows if row[1] == "valid"]


def settings(tmp_path: Path, **fields: object) -> NodeSettings:
    return NodeSettings(data_dir=tmp_path, listen=["127.0.0.1:0"], control=False, **fields)  # type: ignore[arg-type]


async def test_a_node_without_gossip_drops_gossip_and_keeps_the_peer(tmp_path: Path) -> None:
    gossip = real_gossip()
    assert sorted(int.from_bytes(m[:2], "big") for m in gossip) == sorted(GOSSIP_BROADCASTS)
    built = build_node(settings(tmp_path, gossip=False))
    assert "gossip" not in built.node.apps
    sender = make_node(listen=False)
    with trio.fail_after(30):
        async with built.running() as node, running(sender):
            peer = await sender.connect(node.addresses[0])
            # ... and a public channel's announcement_signatures (type 259: channel id, scid, two signatures)
            gossip.append((259).to_bytes(2, "big") + bytes(32 + 8 + 64 + 64))
            for data in gossip * 2:
                await peer.send(data)
            while node.ignored_messages < 2 * len(gossip):
                assert peer.is_ready, "the node failed the connection over gossip"
                await trio.sleep(0.01)
            assert peer.is_ready and node.peers[sender.node_id].is_ready

            # the drop is for gossip only: an even type nobody knows still fails the connection (BOLT 1)
            await peer.send((300).to_bytes(2, "big") + b"\x00")
            while sender.node_id in node.peers:
                await trio.sleep(0.01)
            assert node.ignored_messages == 2 * len(gossip)


def test_an_app_that_handles_gossip_keeps_it(tmp_path: Path) -> None:
    mine = App("updates", protocol=True)
    mine.on(ChannelUpdate)(lambda peer, message: None)
    built = build_node(settings(tmp_path, gossip=False, apps=[mine]))
    apphost = built.node.apphost
    assert apphost.owner_of(ChannelUpdate.TYPE) is mine
    assert all(t in apphost.handlers and apphost.owner_of(t) is None for t in GOSSIP_IGNORED if t != ChannelUpdate.TYPE)

    with_gossip = build_node(settings(tmp_path / "g"))
    assert all(with_gossip.node.apphost.owner_of(t) is with_gossip.node.apps["gossip"] for t in GOSSIP_BROADCASTS)
