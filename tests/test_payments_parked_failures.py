"""A peer's failure of our HTLC that comes while our payments app is not running yet survives a stop.

A line A-B-C on nodes in memory and one embedded regtest chain; A pays C
through B an invoice signed by C for a payment hash C does not know, so C
refuses it. C's payments app is held back until the HTLC is committed at C.
Then the node that is to hear the refusal (B, the forwarder; then A, the
payer) stops and starts again with its payments app held back: the failure
comes back, its channel app takes it while no payments app listens, and the
node stops once more before any payments app ran. After the next start:

- B sends upstream the payee's own failure (A reads
  ``incorrect_or_unknown_payment_details`` from the payee), not the
  ``temporary_channel_failure`` of a forward lost downstream;
- A's payment fails with that failure, attributed to the payee, not
  ``interrupted``.

And the channel apps keep no failure once the payments apps recorded them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from test_payments_app import Net, channels, net, payment_ended, payments, quiet, wait_until, waits_at

from lnpmsg.node.node import Node
from lnpmsg.payments import bolt11
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.wallet.calls import ChainAppError


NEIGHBOURS = {"a": "b", "b": "ac", "c": "b"}


class HeldBack:
    """Payments apps that report started but run only once released (their node runs without them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gates: dict[int, trio.Event] = {}
        original: Callable[..., Awaitable[None]] = PaymentsApp.run

        async def run(app: PaymentsApp, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            gate = self.gates.get(id(app))
            if gate is None:
                await original(app, task_status=task_status)
                return
            task_status.started()
            await gate.wait()
            await original(app)

        monkeypatch.setattr(PaymentsApp, "run", run)

    def hold(self, node: Node) -> trio.Event:
        """Hold ``node``'s payments app back until the returned event is set (call before it starts)."""
        gate = self.gates[id(payments(node))] = trio.Event()
        return gate


def usable(node: Node) -> bool:
    """Every channel of the node is back (reestablished with its peer)."""
    return all(c.usable for c in channels(node).htlcs.channels())


def no_htlc_with(node: Node, peer: Node) -> bool:
    """The node's channel with ``peer`` holds no HTLC and no update in flight (a failure is irrevocable)."""
    manager = channels(node).manager
    assert manager is not None
    return all(not c.core.state.local_changes.all() and not c.core.state.remote_changes.all() and c.core.state.local_commit is not None
               and not c.core.state.local_commit.spec.htlcs and c.core.state.remote_commit is not None and not c.core.state.remote_commit.spec.htlcs
               for c in manager.channels.values() if c.peer_id == peer.node_id)  # fmt: skip


def forged(n: Net, template: bolt11.Invoice) -> tuple[str, str]:
    """An invoice C signed for a payment hash C does not know (C refuses its payment): (bolt11, payment hash)."""
    unknown = os.urandom(32)
    text = bolt11.encode(bolt11.sign(replace(template, payment_hash=unknown, signature=None, payee=None), n.keys["c"].secret))
    return text, unknown.hex()


async def pay_quietly(payer: Node, text: str) -> None:
    """Pay (the outcome is read from the store: the payer may stop before it ends)."""
    try:
        await payments(payer).pay(text)
    except ChainAppError:
        pass


async def connect_all(node: Node, *peers: Node) -> None:
    for peer in peers:
        if peer.node_id not in node.peers:
            await node.connect(peer.addresses[0])


@pytest.mark.trio
async def test_a_failure_that_comes_while_no_payments_app_runs_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldBack(monkeypatch)
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        live: dict[str, Node] = {}

        async def run_node(name: str, hold: bool = False, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            node = live[name] = n.node(name)
            if hold:
                held.hold(node)
            await node.run(task_status=task_status)

        async def restart(name: str, hold: bool = False) -> trio.Event | None:
            """Stop node ``name`` (if running) and start it again from its directories."""
            old = live.get(name)
            if old is not None:
                old.stop()
                others = [live[x] for x in "abc" if x != name]
                await wait_until(lambda: all(old.node_id not in x.peers for x in others), f"{name} is gone")
            await nursery.start(run_node, name, hold)
            node = live[name]
            await connect_all(node, *(live[x] for x in NEIGHBOURS[name] if x in live))
            return held.gates.get(id(payments(node)))

        for name in "abc":
            await restart(name)
        a, b, c = live["a"], live["b"], live["c"]
        await n.fund(a, b)
        await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
        template = bolt11.decode((await payments(c).invoice(1_000_000, "template", "signed by C"))["bolt11"])

        # 1. the forwarder: C holds the HTLC; B comes back without a payments app, takes C's refusal, stops
        text, payment_hash = forged(n, template)
        c_gate = await restart("c", hold=True)
        nursery.start_soon(pay_quietly, a, text)
        await wait_until(lambda: waits_at(live["c"], payment_hash), "the HTLC is committed at C")
        b_gate = await restart("b", hold=True)
        assert c_gate is not None and b_gate is not None
        await wait_until(lambda: usable(live["b"]), "B's channels are back")
        c_gate.set()  # C refuses; B's channel app takes the failure while B has no payments app
        await wait_until(lambda: no_htlc_with(live["b"], live["c"]), "C's failure is irrevocable at B")
        pass
        await restart("b")  # stops before any payments app of B ran
        row = await payment_ended(live["a"], payment_hash)
        assert row["status"] == "failed", row
        assert "the payee" in row["error"] and "incorrect_or_unknown_payment_details" in row["error"], row["error"]
        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")

        # 2. the payer: C holds the HTLC; A comes back without a payments app, takes the refusal, stops
        await restart("a")  # (what A's mission control learned in part 1 is gone)
        text, payment_hash = forged(n, template)
        c_gate = await restart("c", hold=True)
        nursery.start_soon(pay_quietly, live["a"], text)
        await wait_until(lambda: waits_at(live["c"], payment_hash), "the HTLC is committed at C")
        a_gate = await restart("a", hold=True)
        assert c_gate is not None and a_gate is not None
        await wait_until(lambda: usable(live["a"]), "A's channel is back")
        c_gate.set()
        await wait_until(lambda: no_htlc_with(live["a"], live["b"]), "the failure is irrevocable at A")
        await restart("a")
        row = await payment_ended(live["a"], payment_hash)
        assert row["status"] == "failed", row
        assert "the payee" in row["error"] and "incorrect_or_unknown_payment_details" in row["error"], row["error"]

        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")
        for name in "ab":  # recorded by the payments apps: the channel apps forgot them
            await wait_until(lambda name=name: not channels(live[name]).htlcs.failed_offered(), f"{name} keeps no failure")  # type: ignore[misc]
        for node in live.values():
            node.stop()
