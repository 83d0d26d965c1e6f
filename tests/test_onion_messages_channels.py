"""Onion messages over real channels (nodes in memory, on one embedded regtest chain): a blinded
hop that names the next node by the short channel id of one of the relaying node's channels is
forwarded to that channel's peer, found through the channels app; an unknown one is dropped."""

from __future__ import annotations

from lnpmsg.onion_messages import OnionMessagesApp, blinded_path_to
from lnpmsg.testing.nodes import running
from lnpmsg.wire.primitives import ShortChannelId
from test_payments_app import net, wait_until


async def test_a_hop_named_by_short_channel_id_goes_to_that_channels_peer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c")
        apps = {name: node.mount(OnionMessagesApp()) for name, node in (("a", a), ("b", b), ("c", c))}
        got: list[object] = []
        apps["c"].on_tlv(65)(got.append)
        async with running(a, b, c):
            await n.fund(a, b)
            scids = await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            bc = ShortChannelId.from_int(scids[("b", "c")])
            # C's blinded path: B is told "the channel B-C", not C's node id
            path = blinded_path_to(bytes([3]) * 32, [b.node_id, c.node_id], first_scids=[bc])
            await apps["a"].send(path, {65: b"by channel"})
            await wait_until(lambda: got, "C got the message")
            assert got[0].records == {65: b"by channel"} and apps["b"].counts["relayed"] == 1  # type: ignore[attr-defined]
            unknown = blinded_path_to(bytes([4]) * 32, [b.node_id, c.node_id], first_scids=[ShortChannelId(1, 2, 3)])
            await apps["a"].send(unknown, {65: b"lost"})
            await wait_until(lambda: apps["b"].drops.total["unknown short_channel_id"] == 1, "B dropped it")
            assert len(got) == 1
