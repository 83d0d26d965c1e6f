"""The payments app on a full disk: it sends nothing it could not write, keeps running, and once
there is space again every payment completes exactly once.

A node's data directory (the whole of it, or only its payments or channel store) sits on
a real 4 MiB tmpfs (:mod:`lnpmsg.testing.disk`), filled with a file while the
node runs: its next writes fail with ``ENOSPC`` as on a full disk (SQLite
says ``database or disk is full``).

- The payee's disk is full when a payment arrives: it never settles an HTLC
  whose settlement (the invoice paid) it could not write, says why, and the
  payments app goes on; once the space is back it settles, the payer sees the
  payment complete once, the money moves once, and the payee restarted from
  its disk agrees.
- The payer's disk is full when it pays: ``pay`` fails with a clear error,
  nothing moves and no HTLC stays in a channel; once the space is back the
  same invoice is paid, once.
- A forwarder's disk fills mid-forward (before the HTLC reaches it, once it
  recorded the forward, once it offered the outgoing HTLC): once the space is
  back the payment completes, once, and the forwarder restarted agrees.
- A settlement the payee's channel could not write (injected: a full disk
  cannot be placed on so small a write) is made again once the channel is back.

Where a channel's log is on the full disk and the refused write is an HTLC's record, the
log's end is first moved to less than an onion before a page's end
(``log_end_before_an_onion``): the record, which carries the onion, then needs a page
the disk no longer has, whatever its size.

Nodes in one process, the in-memory transport, one embedded regtest chain
(as ``test_payments_app.py``, whose helpers these are).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_disk_full import _connected, log_end_before_an_onion
from test_payments_app import channels, net, payments, quiet, wait_until
from test_payments_crash_points import balances

from lnpmsg.channels.messages import UpdateFulfillHtlc
from lnpmsg.channels.store import ChannelLog
from lnpmsg.node.node import Node
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.testing.disk import DiskFiller, small_disk
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError

AMOUNT_MSAT = 5_000_000


@contextmanager
def full_disk_under(path: Path) -> Iterator[DiskFiller]:
    """A small tmpfs on ``path`` (a node's directory or one of its stores), with its filler."""
    with small_disk(path) as disk:
        filler = DiskFiller(disk)
        try:
            yield filler
        finally:
            filler.free()


def _fulfills(node: Node) -> int:
    """The node's fulfills of incoming HTLCs that its channels hold (proposed or committed to)."""
    manager = channels(node).manager
    assert manager is not None
    return sum(isinstance(u, UpdateFulfillHtlc) for c in manager.channels.values() for u in c.core.state.local_changes.all())


def _htlcs(node: Node) -> int:
    """HTLCs in the node's channels: in its latest commitment, or proposed by either side."""
    manager = channels(node).manager
    assert manager is not None
    count = 0
    for c in manager.channels.values():
        s = c.core.state
        count += len(s.local_changes.all()) + len(s.remote_changes.all())
        count += len(s.local_commit.spec.htlcs) if s.local_commit is not None else 0
    return count


async def _pay_in_background(nursery: trio.Nursery, payer: Node, bolt11: str) -> dict[str, Any]:
    """Start ``pay``; the dict gets its ``result`` or its ``error`` when it returns."""
    outcome: dict[str, Any] = {}

    async def pay() -> None:
        try:
            outcome["result"] = await payments(payer).pay(bolt11)
        except ChainAppError as exc:
            outcome["error"] = exc

    nursery.start_soon(pay)
    return outcome


#: where the payee's tmpfs is mounted: its whole data directory (the channel store fills too,
#: and refuses the incoming HTLC first), or only its payments store (the HTLC is committed and
#: the invoice cannot be marked paid)
PAYEE_DISKS = {"data_dir": ".", "payments_store": "payments"}


async def _invoice_over_a_channel(n: Any, a: Node, b: Node, label: str, description: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A's wallet funded and a channel A -> B open: B's invoice for ``AMOUNT_MSAT``, and both balances before paying it."""
    await n.fund(a)
    await n.open([(a, b, 1_000_000, 1_000_000)])
    invoice = await payments(b).invoice(AMOUNT_MSAT, label, description)
    return invoice, balances({"a": a, "b": b})


@pytest.mark.trio
@pytest.mark.parametrize("disk", list(PAYEE_DISKS))
async def test_a_payee_on_a_full_disk_settles_nothing_unwritten_and_completes_once_space_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, disk: str
) -> None:
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b" / PAYEE_DISKS[disk]) as filler:
            a, b = n.node("a"), n.node("b")
            async with running(a):
                async with running(b):
                    invoice, before = await _invoice_over_a_channel(n, a, b, "full", "paid to a full disk")
                    caplog.set_level(logging.INFO)
                    if disk == "data_dir":  # the HTLC's record needs a new page of the full disk
                        await log_end_before_an_onion(b, a, lambda: quiet(a) and quiet(b))

                    assert filler.fill() > 0
                    async with trio.open_nursery() as nursery:
                        outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                        # the payee says it could not write, and settles nothing
                        await wait_until(lambda: "could not be written" in caplog.text, "the payee's write error")
                        assert "disk is full" in caplog.text or "No space left on device" in caplog.text
                        await trio.sleep(1.0)  # time enough to settle, were it wrong to
                        assert not outcome, outcome
                        row = (await payments(b).listinvoices("full"))["invoices"][0]
                        assert row["status"] == "unpaid", row
                        assert balances({"b": b}) == {"b": before["b"]} and not _fulfills(b)
                        assert payments(b).running and payments(b).failures == 0, "the payments app failed"
                        with pytest.raises(ChainAppError) as refused:  # nor can an invoice be made: the caller hears why
                            await payments(b).invoice(AMOUNT_MSAT, "later", "not on a full disk")
                        assert refused.value.details["error"] == "StoreWriteFailed" and "disk is full" in str(refused.value)

                        filler.free()
                        await _connected(b, a)
                    assert outcome.get("result", {}).get("status") == "complete", outcome
                    await wait_until(lambda: quiet(a) and quiet(b), "settled")
                    after = balances({"a": a, "b": b})
                    assert after == {"a": before["a"] - AMOUNT_MSAT, "b": before["b"] + AMOUNT_MSAT}
                    row = (await payments(b).listinvoices("full"))["invoices"][0]
                    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row
                    (paid,) = (await payments(a).listpayments(invoice["payment_hash"]))["payments"]
                    assert paid["status"] == "complete" and paid["preimage"] == outcome["result"]["preimage"]
                    with pytest.raises(ChainAppError) as again:
                        await payments(a).pay(invoice["bolt11"])
                    assert again.value.details["error"] == "AlreadyPaid"
                    assert payments(b).failures == 0
                # the payee from its disk alone agrees
                await wait_until(lambda: b.node_id not in a.peers, "the payer sees the payee stop")
                b = n.node("b")
                async with running(b):
                    await _connected(b, a)
                    await wait_until(lambda: quiet(a) and quiet(b), "reestablished after the restart")
                    assert balances({"a": a, "b": b}) == after
                    row = (await payments(b).listinvoices("full"))["invoices"][0]
                    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row


#: where the payer's tmpfs is mounted, and after which write of its payments store it fills (None:
#: before paying): its whole data directory or its payments store (the payment cannot be recorded),
#: its channel store (the part is recorded, its HTLC cannot be written), or its whole data directory
#: filled once the part is recorded (its HTLC cannot be written, nor then how the payment ended)
PAYER_DISKS = {"data_dir": (".", None), "payments_store": ("payments", None), "channel_store": ("channels", None),
               "part_recorded": (".", "add_part")}  # fmt: skip


@pytest.mark.trio
@pytest.mark.parametrize("disk", list(PAYER_DISKS))
async def test_a_payer_on_a_full_disk_gets_a_clear_error_moves_nothing_and_pays_once_space_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fill_after: dict[str, Any], disk: str
) -> None:
    under, write = PAYER_DISKS[disk]
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "a" / under) as filler:
            a, b = n.node("a"), n.node("b")
            async with running(a, b):
                invoice, before = await _invoice_over_a_channel(n, a, b, "full", "paid from a full disk")
                caplog.set_level(logging.INFO)
                if disk in ("channel_store", "part_recorded"):  # the HTLC's record needs a new page of the full disk
                    await log_end_before_an_onion(a, b, lambda: quiet(a) and quiet(b))

                fill_after.update(write=write, filler=filler)
                if write is None:
                    assert filler.fill() > 0
                with pytest.raises(ChainAppError) as refused:
                    await payments(a).pay(invoice["bolt11"])
                assert "disk is full" in str(refused.value) or "No space left on device" in str(refused.value), refused.value
                assert refused.value.details["error"] == "StoreWriteFailed", refused.value.details
                if write is not None:  # how it ended is not on disk yet: never a second payment meanwhile
                    with pytest.raises(ChainAppError) as again:
                        await payments(a).pay(invoice["bolt11"])
                    assert again.value.details["error"] == "InProgress", again.value.details
                await wait_until(lambda: quiet(a) and quiet(b), "no HTLC left")
                assert balances({"a": a, "b": b}) == before
                assert (await payments(b).listinvoices("full"))["invoices"][0]["status"] == "unpaid"
                assert payments(a).running and payments(a).failures == 0, "the payments app failed"

                filler.free()
                await _connected(a, b)
                await wait_until(lambda: quiet(a) and quiet(b), "reestablished")
                # how the payment ended reaches the disk too (until then a new pay is refused as in progress)
                with trio.fail_after(60):
                    while any(r["status"] == "pending" for r in (await payments(a).listpayments(invoice["payment_hash"]))["payments"]):
                        await trio.sleep(0.05)
                paid = await payments(a).pay(invoice["bolt11"])
                assert paid["status"] == "complete"
                await wait_until(lambda: quiet(a) and quiet(b), "settled")
                assert balances({"a": a, "b": b}) == {"a": before["a"] - AMOUNT_MSAT, "b": before["b"] + AMOUNT_MSAT}
                rows = (await payments(a).listpayments(invoice["payment_hash"]))["payments"]
                assert [r["status"] for r in rows if r["status"] != "failed"] == ["complete"], rows
                assert not _htlcs(a) and not _htlcs(b)


#: when the forwarder's disk fills: before the HTLC reaches it (its channel store refuses the
#: incoming HTLC), right after it recorded the forward (its next channel cannot write the outgoing
#: HTLC), or right after it recorded the outgoing HTLC (it cannot record the preimage that comes back)
FORWARDER_STAGES = {"incoming": None, "forward_recorded": "add_forward", "forward_offered": "forward_out"}


@pytest.fixture
def fill_after(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``fill_after["filler"]`` fills its disk right after the payments store's ``fill_after["write"]`` commits (once)."""
    plan: dict[str, Any] = {"write": None, "filler": None, "fired": False}
    for name in ("add_forward", "forward_out", "add_part"):
        original = getattr(PaymentsStore, name)

        def write(store: PaymentsStore, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(store, *args, **kwargs)
            if plan["write"] == _name and not plan["fired"]:
                plan["fired"] = True
                plan["filler"].fill()
            return result

        monkeypatch.setattr(PaymentsStore, name, write)
    return plan


@pytest.mark.trio
@pytest.mark.parametrize("stage", list(FORWARDER_STAGES))
async def test_a_forwarder_whose_disk_fills_mid_forward_loses_nothing_and_completes_once_space_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fill_after: dict[str, Any], stage: str
) -> None:
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b") as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c")
            async with running(a, c):
                async with running(b):
                    await n.fund(a, b)
                    await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                    invoice = await payments(c).invoice(AMOUNT_MSAT, "full", "forwarded by a full disk")
                    nodes = {"a": a, "b": b, "c": c}
                    for peer in (a, c):  # the incoming and the outgoing HTLC's records need a new page of the full disk
                        await log_end_before_an_onion(b, peer, lambda: quiet(a) and quiet(b) and quiet(c))
                    before = balances(nodes)
                    caplog.set_level(logging.INFO)

                    fill_after.update(write=FORWARDER_STAGES[stage], filler=filler)
                    if stage == "incoming":
                        assert filler.fill() > 0
                    async with trio.open_nursery() as nursery:
                        outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                        await wait_until(lambda: "could not be written" in caplog.text, "the forwarder's write error")
                        await trio.sleep(1.0)  # time enough to settle upstream, were it wrong to
                        assert not outcome and not _fulfills(b), "settled upstream before the forwarder could record it"
                        assert payments(b).running and payments(b).failures == 0, "the payments app failed"
                        filler.free()
                        await _connected(b, a)
                        await _connected(b, c)
                    assert outcome.get("result", {}).get("status") == "complete", outcome
                    await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
                    after = balances(nodes)
                    fee = after["b"] - before["b"]
                    assert fee > 0 and after == {"a": before["a"] - AMOUNT_MSAT - fee, "b": before["b"] + fee, "c": before["c"] + AMOUNT_MSAT}
                    assert outcome["result"]["fee_msat"] == fee
                    assert (await payments(c).listinvoices("full"))["invoices"][0]["status"] == "paid"
                    (forward,) = (await payments(b).listforwards())["forwards"]
                    assert forward["status"] == "settled", forward
                    assert payments(b).failures == 0 and not payments(b)._early
                # the forwarder from its disk alone agrees
                async with restarted_between(n, nodes, after) as b:
                    (forward,) = (await payments(b).listforwards())["forwards"]
                    assert forward["status"] == "settled", forward


@pytest.mark.trio
async def test_a_settlement_the_payees_channel_could_not_write_is_made_again_once_the_channel_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk cannot be placed on a settle's write (it is small enough to fit the free end of
    the log's last page: see ``test_channels_disk_full.py``), so here it is INJECTED: the payee's
    channel log refuses its first two appends of its fulfill with ``ENOSPC``, as a full disk
    would (nothing of them written). The payments app is told (``HtlcNotWritten``), settles again once
    the channel has reconnected, and the payment completes once."""
    refusals = {"left": 2}
    original = ChannelLog.append

    def append(log: ChannelLog, records: Any) -> None:
        # (a record holds its input as JSON: the payee's fulfill is the one that carries the preimage)
        if refusals["left"] and log.log_path.is_relative_to(tmp_path / "b") and any(b'"@":"FulfillHtlc"' in r.data for r in records):
            refusals["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        original(log, records)

    monkeypatch.setattr(ChannelLog, "append", append)
    async with net(tmp_path) as n:
        a, b = n.node("a"), n.node("b")
        async with running(a, b):
            invoice, before = await _invoice_over_a_channel(n, a, b, "settle", "a settlement not written at first")
            caplog.set_level(logging.INFO)
            async with trio.open_nursery() as nursery:
                outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                await wait_until(lambda: not refusals["left"], "both refusals")
                await _connected(b, a)
            assert outcome.get("result", {}).get("status") == "complete", outcome
            assert "could not be written" in caplog.text and "injected" in caplog.text
            await wait_until(lambda: quiet(a) and quiet(b), "settled")
            assert balances({"a": a, "b": b}) == {"a": before["a"] - AMOUNT_MSAT, "b": before["b"] + AMOUNT_MSAT}
            row = (await payments(b).listinvoices("settle"))["invoices"][0]
            assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row
            assert payments(b).failures == 0, "the payments app failed"


@asynccontextmanager
async def restarted_between(n: Any, nodes: dict[str, Node], after: dict[str, int]) -> AsyncIterator[Node]:
    """B (stopped, between A and C) restarted from its disk alone: reconnected to both, quiet, and
    with the balances ``after``."""
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    await wait_until(lambda: b.node_id not in a.peers and b.node_id not in c.peers, "the neighbours see B stop")
    b = nodes["b"] = n.node("b")
    async with running(b):
        await _connected(b, a)
        await _connected(b, c)
        await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "reestablished after the restart")
        assert balances(nodes) == after
        yield b
