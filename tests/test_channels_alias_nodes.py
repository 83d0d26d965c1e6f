"""Aliases and zero-conf channels on nodes in memory, on one embedded regtest chain (BOLT 2, BOLT 7).

A pays C over A-B (in the test graph) and B-C, a private ``option_scid_alias``
channel known only from C's invoice: its route hint names the alias B gave C,
and B forwards by it; a forward naming the channel's real short channel id is
refused (BOLT 2). A zero-conf channel A-B (B trusts A: ``--zeroconf-peer``)
carries a payment before its funding has any confirmation, then learns its
real id when it confirms; C, trusting nobody, refuses A's zero-conf channel.
A restart keeps every alias.

Real clock (the chain and stores work in threads); waits are for states.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.backup import decode_backup
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.ready import is_alias
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.payments import bolt11
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.onion import decrypt_failure_onion
from lnpmsg.payments.onion.failures import UnknownNextPeer
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.payments.sender import build_part
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

from test_payments_app import POLICY, Net, channels, net, payments, quiet, wait_until


class AliasNet(Net):
    """:class:`Net` whose nodes may trust listed peers with zero-conf channels."""

    def node(self, name: str, policy: object = POLICY, accept_keysend: bool = False, trusts: tuple[str, ...] = ()) -> Node:  # type: ignore[override]
        for who in (name, *trusts):
            self.keys.setdefault(who, NodeKey.generate())
        node = Node(self.keys[name], NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": self.network.transport()})
        node.mount(ChainApp(self.tmp / name / "wallet", source=self.source))
        opening = OpeningPolicy(zeroconf_peers=tuple(self.keys[t].node_id for t in trusts))
        node.mount(ChannelsApp(self.tmp / name / "channels", config=ChannelConfig(minimum_depth=1), policy=opening))
        node.mount(PaymentsApp(self.tmp / name / "payments", policy=POLICY, graph=self.graph, mpp_timeout=20.0))
        self.nodes[name] = node
        return node


def the_channel(node: Node, peer: Node) -> object:
    manager = channels(node).manager
    assert manager is not None
    return next(c for c in manager.channels.values() if c.peer_id == peer.node_id and c.phase is not Phase.NEW)


def idle(node: Node, peer: Node) -> bool:
    """The channel with ``peer`` is normal, connected, with nothing pending (others may have failed)."""
    c = the_channel(node, peer)
    s = c.core.state  # type: ignore[attr-defined]
    return (c.phase is Phase.NORMAL and s.connected and not s.awaiting_reestablish and not s.local_changes.all()  # type: ignore[attr-defined]
            and not s.remote_changes.all() and s.remote_next_commit is None and not s.local_commit.spec.htlcs)  # fmt: skip


async def listed(node: Node, peer: Node) -> dict[str, object]:
    (row,) = (await channels(node).listchannels(peer.node_id.hex()))["channels"]
    return row  # type: ignore[no-any-return]


async def forward_refused(n: Net, a: Node, b: Node, c: Node, scid_bc: int, invoice_text: str) -> bool:
    """A offers B an HTLC whose onion asks B to forward over ``scid_bc`` to C (C's invoice): True when B
    answers unknown_next_peer."""
    invoice = bolt11.decode(invoice_text)
    amount = invoice.amount_msat or 0
    expiry = (await n.source.tip()).height + invoice.min_final_cltv_expiry_delta + 5
    info = next(x for x in channels(a).htlcs.channels() if x.peer_id == b.node_id)
    in_amount, in_expiry = amount + POLICY.fee(amount), expiry + POLICY.cltv_expiry_delta
    route = Route((RouteHop(info.short_channel_id, 0, b.node_id, in_amount, in_expiry, amount, expiry),
                   RouteHop(scid_bc, 0, c.node_id, amount, expiry, amount, expiry)))  # fmt: skip
    part = build_part(route, invoice.payment_hash, invoice.payment_secret, amount)
    ref = await channels(a).htlcs.add_htlc(info.short_channel_id, in_amount, invoice.payment_hash, in_expiry, part.onion)
    await wait_until(lambda: ref in payments(a)._early, "the HTLC came back")
    result = payments(a)._early.pop(ref)
    if result.preimage is not None:
        return False
    failed = decrypt_failure_onion(part.shared_secrets, result.reason or b"")
    return failed.hop_index == 0 and isinstance(failed.failure, UnknownNextPeer)


@pytest.mark.trio
async def test_a_payment_through_an_alias_only_private_channel_by_its_route_hint(tmp_path: Path) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b, c = (n.node(x) for x in "abc")
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 1_000_000, 1_000_000)])
            await b.connect(c.addresses[0])
            opened = await channels(b).fundchannel(c.node_id.hex(), 1_000_000, push_msat=10_000_000, channel_type="scid_alias")
            assert opened["scid_alias"] is True and opened["local_alias"]
            await n.source.mine(1)
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)) and the_channel(c, b).core.state.short_channel_id, "B-C ready")
            bc, cb = the_channel(b, c).core.state, the_channel(c, b).core.state  # type: ignore[attr-defined]
            assert bc.local_alias == cb.remote_alias and cb.local_alias == bc.remote_alias and is_alias(bc.local_alias)
            assert bc.short_channel_id == cb.short_channel_id and not is_alias(bc.short_channel_id)
            row = await listed(c, b)
            assert row["scid_alias"] is True and row["remote_alias"] == _text(bc.local_alias)
            assert row["forwarding_scids"] == [_text(cb.local_alias)]  # never the real one

            # C's invoice: the hint over B-C names the alias B gave C, not the real id (BOLT 2)
            inv = await payments(c).invoice(50_000_000, "alias", "through an alias")
            (hint,) = bolt11.decode(inv["bolt11"]).route_hints
            assert [(h.node_id, h.short_channel_id) for h in hint] == [(b.node_id, bc.local_alias)]
            paid = await payments(a).pay(inv["bolt11"])
            assert paid["status"] == "complete"
            assert [h["node_id"] for h in paid["routes"][0]] == [b.node_id.hex(), c.node_id.hex()]
            (fwd,) = (await payments(b).listforwards())["forwards"]
            assert fwd["status"] == "settled"
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")

            # BOLT 2: with option_scid_alias, B refuses a forward by the real id; by the alias it goes
            inv2 = await payments(c).invoice(3_000_000, "real", "by the real id")
            assert await forward_refused(n, a, b, c, bc.short_channel_id, inv2["bolt11"])
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "failed back")
            assert not await forward_refused(n, a, b, c, bc.local_alias, inv2["bolt11"])
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")
            assert (await payments(c).listinvoices("real"))["invoices"][0]["status"] == "paid"
            # a plain private channel (A-B) still forwards by its real id too (C -> B -> A)
            ab_real = the_channel(b, a).core.state.short_channel_id  # type: ignore[attr-defined]
            inv_a = await payments(a).invoice(1_000_000, "back", "by the real id of a plain channel")
            assert not await forward_refused(n, c, b, a, ab_real, inv_a["bolt11"])
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")
            assert (await payments(a).listinvoices("back"))["invoices"][0]["status"] == "paid"
            aliases = {x: (s.local_alias, s.remote_alias) for x, s in (("b", bc), ("c", cb))}

        # a restart keeps the aliases (they are in the channels' records), and routing by them still works
        a2, b2, c2 = (n.node(x) for x in "abc")
        async with running(a2, b2, c2):
            await a2.connect(b2.addresses[0])
            await b2.connect(c2.addresses[0])
            await wait_until(lambda: all(quiet(x) for x in (a2, b2, c2)), "reestablished")
            for x, node, peer in (("b", b2, c2), ("c", c2, b2)):
                s = the_channel(node, peer).core.state  # type: ignore[attr-defined]
                assert (s.local_alias, s.remote_alias) == aliases[x]
            inv3 = await payments(c2).invoice(1_000_000, "after", "after a restart")
            paid = await payments(a2).pay(inv3["bolt11"])
            assert paid["status"] == "complete"
            await wait_until(lambda: all(quiet(x) for x in (a2, b2, c2)), "settled after the restart")
            # and the real id is still refused (the type is in the records: BOLT 2)
            inv4 = await payments(c2).invoice(1_000_000, "real2", "by the real id after a restart")
            assert await forward_refused(n, a2, b2, c2, bc.short_channel_id, inv4["bolt11"])


@pytest.mark.trio
async def test_a_zeroconf_channel_pays_before_its_funding_confirms_and_untrusted_peers_refuse_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b, c = n.node("a"), n.node("b", trusts=("a",)), n.node("c")
        async with running(a, b, c):
            await n.fund(a)
            await a.connect(b.addresses[0])
            await a.connect(c.addresses[0])
            # C trusts nobody: BOLT 2's "does not trust the sender": the open fails, nothing is funded
            with pytest.raises(ChainAppError, match="option_zeroconf"):
                await channels(a).fundchannel(c.node_id.hex(), 500_000, zeroconf=True, channel_type="scid_alias")
            height = (await n.source.tip()).height
            assert the_channel(a, c).phase is Phase.FAILED  # type: ignore[attr-defined]
            await channels(a).fundchannel(b.node_id.hex(), 500_000, zeroconf=True, channel_type="scid_alias")
            await wait_until(lambda: idle(a, b) and idle(b, a), "ready at 0 confirmations")
            ab, ba = the_channel(a, b).core.state, the_channel(b, a).core.state  # type: ignore[attr-defined]
            assert ab.short_channel_id == ba.short_channel_id == 0 and ba.minimum_depth == 0
            assert (await n.source.tip()).height == height  # not a block mined
            row = await listed(b, a)
            assert row["zeroconf"] is True and row["short_channel_id"] is None and row["local_alias"] == _text(ba.local_alias)
            # a channel in use is in the static backup before its funding confirms (no short channel id yet)
            await wait_until(lambda: backed_up_scid(b, ba.channel_id) == 0 and backed_up_scid(a, ab.channel_id) == 0, "backed up")

            inv = await payments(b).invoice(20_000_000, "zc", "zero-conf")
            paid = await payments(a).pay(inv["bolt11"])
            assert paid["status"] == "complete"
            await wait_until(lambda: idle(a, b) and idle(b, a), "settled")
            assert ab.short_channel_id == 0  # still unconfirmed
            # a funding that stays unconfirmed (double-spent?) is said loudly in the log after 6 blocks
            with caplog.at_level(logging.WARNING, logger="lnpmsg.channels.app"):
                for h in range(height, height + 7):
                    channels(b)._warn_unconfirmed(the_channel(b, a), h)  # type: ignore[arg-type]
            (warned,) = [r for r in caplog.records if "still unconfirmed after 6 blocks" in r.getMessage()]
            assert ba.funding_outpoint.txid_hex in warned.getMessage()

            # the funding confirms: both learn the real id; the channel keeps its alias and keeps paying
            await n.source.mine(1)
            await wait_until(lambda: ab.short_channel_id and ba.short_channel_id, "the real id")
            assert ab.short_channel_id == ba.short_channel_id and not is_alias(ab.short_channel_id)
            assert (await listed(a, b))["short_channel_id"] == _text(ab.short_channel_id)
            # both static backups are written again with it (a restore reads the chain from there)
            for node, s in ((a, ab), (b, ba)):
                await wait_until(lambda node=node, s=s: backed_up_scid(node, s.channel_id) == s.short_channel_id, "the backup")  # type: ignore[misc]
            inv2 = await payments(b).invoice(1_000_000, "zc2", "confirmed")
            assert (await payments(a).pay(inv2["bolt11"]))["status"] == "complete"
            await wait_until(lambda: idle(a, b) and idle(b, a), "settled")


def backed_up_scid(node: Node, channel_id: bytes) -> int | None:
    """The short channel id the node's static channel backup holds for the channel (None: not in it)."""
    app = channels(node)
    if not app.backup_path.exists():
        return None
    entries = decode_backup(app.backup_path.read_bytes(), app.manager.seed)  # type: ignore[union-attr]
    return next((e.short_channel_id for e in entries if e.channel_id == channel_id), None)


def _text(scid: int) -> str:
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"

