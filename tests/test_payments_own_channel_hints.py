"""A payee's route hints that name the payer's own channels (nodes in memory, one embedded regtest chain).

A funds two private channels to B; B's invoice hints both (they start at A, the payer). A pays
more than either channel can send: the payment must split over the two, each part within what
its channel can carry. A hint of our own channel says nothing about its size, so the payer
plans over what the channel can send now, never over the hint's copy of unknown size (which
would let one part ask a channel for more than it holds, again and again, and never split).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpmsg.channels.state import Phase
from lnpmsg.testing.nodes import running
from test_payments_app import channels, net, payments, quiet, wait_until

CHANNEL_SAT = 400_000


@pytest.mark.trio
async def test_a_payment_splits_over_our_two_channels_the_payees_hints_name(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b = n.node("a"), n.node("b")
        async with running(a, b):
            await n.fund(a)
            await a.connect(b.addresses[0])
            for _ in range(2):
                await channels(a).fundchannel(b.node_id.hex(), CHANNEL_SAT)
                await n.source.mine(1)  # each funding spends the wallet's change
                await a.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            await n.source.mine(1)
            ours = lambda: [c for c in channels(a).htlcs.channels() if c.short_channel_id]  # noqa: E731
            await wait_until(lambda: len(ours()) == 2 and quiet(a) and quiet(b) and all(
                c.phase is Phase.NORMAL for c in channels(b).manager.channels.values()), "two channels ready")  # type: ignore[union-attr]  # fmt: skip
            sendable = [c.spendable_msat for c in ours()]
            amount = max(sendable) + 100_000_000
            assert amount < sum(sendable)

            inv = await payments(b).invoice(amount, "split", "more than one channel")
            hints = (await payments(b).decodepay(inv["bolt11"]))["route_hints"]
            assert sorted(h[0]["node_id"] for h in hints) == [a.node_id.hex()] * 2  # both hints start at the payer
            paid = await payments(a).pay(inv["bolt11"])
            assert paid["status"] == "complete" and paid["parts"] >= 2 and paid["attempts"] == paid["parts"], paid
            assert len({r[0]["short_channel_id"] for r in paid["routes"]}) == 2 and all(len(r) == 1 for r in paid["routes"]), paid["routes"]
            await wait_until(lambda: quiet(a) and quiet(b), "settled")
