"""A forward to a next peer that is connected but still reestablishing the channel (nodes in memory,
the embedded regtest chain): the forward waits for the channel, then goes out once it is usable.

C's ``channel_reestablish`` is held back (its channel app's ``send``) until B has decided to wait, so
B sees C connected and the B-C channel not usable when A's HTLC arrives, whatever the timing; the
wait is lengthened so that a slow machine cannot turn it into a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_payments_app import channels, net, paying, payments, quiet, wait_until

from lnpmsg.channels.messages import ChannelReestablish
from lnpmsg.payments import forwarding
from lnpmsg.testing.nodes import running
from lnpmsg.wire import Message


@pytest.mark.trio
async def test_a_forward_waits_for_a_connected_peer_reestablishing_and_goes_out_once_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forwarding, "REESTABLISH_WAIT", 120.0)
    async with net(tmp_path) as n:
        a, b, c = (n.node(x) for x in "abc")
        async with running(a, b):
            async with running(c):
                await n.fund(a, b)
                await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                await wait_until(lambda: not getattr(payments(b), "restarting", False), "B's start grace is over")
            await wait_until(lambda: not any(ch.usable for ch in channels(b).htlcs.channels() if ch.peer_id == c.node_id), "B sees C gone")
            c = n.node("c")
            release, held = trio.Event(), trio.Event()
            send = channels(c).send

            async def hold_reestablish(peer_id: bytes, msg: Message) -> None:
                if isinstance(msg, ChannelReestablish) and not release.is_set():
                    held.set()
                    await release.wait()
                await send(peer_id, msg)

            channels(c).send = hold_reestablish  # type: ignore[method-assign]
            async with running(c):
                invoice = await payments(c).invoice(2_000_000, "reestablishing", "C reestablishes")
                await b.connect(c.addresses[0])
                with trio.fail_after(60):
                    await held.wait()
                bc = next(ch for ch in channels(b).htlcs.channels() if ch.peer_id == c.node_id)
                assert b.peers[c.node_id].is_ready and not bc.usable  # connected, the channel not usable yet
                async with paying(a, invoice["bolt11"]) as outcome:
                    await wait_until(lambda: bool(payments(b)._waited) or bool(outcome), "B decided")
                    assert not outcome, outcome  # B waits for B-C rather than failing A's HTLC back
                    assert (await payments(b).listforwards())["forwards"] == []  # nothing offered yet
                    release.set()
                assert outcome["paid"]["status"] == "complete", outcome
                (forward,) = (await payments(b).listforwards())["forwards"]
                assert forward["status"] == "settled"
                await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")
