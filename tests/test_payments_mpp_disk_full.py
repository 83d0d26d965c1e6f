"""A multi-part payment to a payee on a full disk: no part is settled before the payee has
recorded the invoice paid, the parts are held while the disk is full and their deadline allows,
and the payment either completes exactly once (space came back) or every part fails back
together (it did not) — never some parts settled and others failed.

The payer A reaches the payee B over two paths, A-B and A-C-B, neither big enough for the
whole amount, so the payment goes in two parts (one per path). B's data directory (the whole
of it, or only its payments store) sits on a real 4 MiB tmpfs (:mod:`lnpmsg.testing.disk`),
filled before the parts arrive or right after B holds the first one.

- Space comes back within the deadline: the payment completes once (also when B stopped
  while holding the parts and restarts), and B restarted from its disk agrees.
- It does not (the MPP timeout passes, or blocks bring the parts near their expiry): both
  parts fail back together (``temporary_node_failure``), nothing moves, B answers other
  payments meanwhile, and the invoice is paid once later.
- B's whole data directory stays full after the first part: the payment ends one way only.

Nodes in one process, the in-memory transport, one embedded regtest chain (the helpers of
``test_payments_app.py`` and ``test_payments_disk_full.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_disk_full import _connected, log_end_before_an_onion
from test_payments_app import Net, channels, net, pay_error, payments, quiet, wait_until
from test_payments_crash_points import balances
from test_payments_disk_full import _fulfills, _htlcs, _pay_in_background, full_disk_under, restarted_between

from lnpmsg.node.node import Node
from lnpmsg.payments import bolt11
from lnpmsg.payments.htlcs import MppSets
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError

#: more than either path carries (600 000 sat channels): two parts
AMOUNT_MSAT = 900_000_000

#: where B's tmpfs is mounted: its whole data directory (its channel store fills too: a part that
#: has not reached B when the disk fills cannot be committed), or only its payments store (the
#: parts are committed and held; the invoice cannot be marked paid)
DISKS = {"data_dir": ".", "payments_store": "payments"}


@pytest.fixture
def fill_after_first_part(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``plan["filler"]`` fills its disk right after the payee holds the first part of a set (once)."""
    plan: dict[str, Any] = {"filler": None, "fired": False}
    original = MppSets.add

    def add(sets: MppSets, htlc: tuple[str, int], part: Any, now: float) -> Any:
        result = original(sets, htlc, part, now)
        if result is None and plan["filler"] is not None and not plan["fired"]:
            plan["fired"] = True
            plan["filler"].fill()
        return result

    monkeypatch.setattr(MppSets, "add", add)
    return plan


async def _two_paths(n: Net, a: Node, b: Node, c: Node) -> tuple[dict[str, Any], dict[str, int]]:
    """Channels A-B, A-C and C-B; B's invoice for ``AMOUNT_MSAT`` and the balances before paying it."""
    await n.fund(a, c)
    await n.open([(a, b, 600_000, 600_000), (a, c, 600_000, 600_000), (c, b, 1_000_000, 1_000_000)])
    invoice = await payments(b).invoice(AMOUNT_MSAT, "mpp", "two parts to a full disk")
    return invoice, balances({"a": a, "b": b, "c": c})


def _forged_invoice(n: Net, bolt11_text: str) -> str:
    """An invoice B signed for a small amount and a payment hash it never stored (B refuses its payment)."""
    real = bolt11.decode(bolt11_text)
    forged = replace(real, payment_hash=os.urandom(32), amount_msat=10_000, amount_text=None, signature=None, payee=None)
    return bolt11.encode(bolt11.sign(forged, n.keys["b"].secret))


def _incoming_parts(b: Node, payment_hash: str) -> int:
    """The payee's incoming HTLCs of this payment its channels hold committed."""
    return sum(h.add.payment_hash.hex() == payment_hash for h in channels(b).htlcs.pending_incoming())


async def _invoice_row(b: Node) -> dict[str, Any]:
    return (await payments(b).listinvoices("mpp"))["invoices"][0]  # type: ignore[no-any-return]


@pytest.mark.trio
@pytest.mark.parametrize("disk", list(DISKS))
@pytest.mark.parametrize("when", ["before_the_parts", "after_the_first_part"])
async def test_an_mpp_to_a_full_disk_is_held_and_completes_exactly_once_when_space_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fill_after_first_part: dict[str, Any], disk: str, when: str
) -> None:
    """B's disk is full when the two parts arrive, or fills once B holds the first: B settles no
    part (the preimage leaves only once the invoice is paid on disk), fails none, and its payments
    app keeps running; once the space is back (well within the MPP timeout) the payment completes
    once: the invoice paid once with the whole amount, both parts settled, no HTLC left, the money
    moved once; and B restarted from its disk agrees."""
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b" / DISKS[disk]) as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c")
            nodes = {"a": a, "b": b, "c": c}
            async with running(a, c):
                async with running(b):
                    payments(b).mpp.timeout = 120.0  # the space comes back long before: the parts are held, never failed
                    invoice, before = await _two_paths(n, a, b, c)
                    caplog.set_level(logging.INFO)
                    if disk == "data_dir":  # a part's record needs a new page of the full disk, on either path
                        for peer in (a, c):
                            await log_end_before_an_onion(b, peer, lambda: quiet(a) and quiet(b) and quiet(c))

                    if when == "before_the_parts":
                        assert filler.fill() > 0
                    else:
                        fill_after_first_part["filler"] = filler
                    async with trio.open_nursery() as nursery:
                        outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                        await wait_until(lambda: "could not be written" in caplog.text, "the payee's write error")
                        assert when == "before_the_parts" or fill_after_first_part["fired"]
                        await trio.sleep(1.5)  # time enough to settle or fail a part, were it wrong to
                        assert not outcome, outcome
                        assert not _fulfills(b), "a part settled before the invoice was paid on disk"
                        assert "failing HTLC" not in caplog.text, "a part failed while the disk was full"
                        assert (await _invoice_row(b))["status"] == "unpaid"
                        assert balances({"b": b}) == {"b": before["b"]}
                        assert payments(b).running and payments(b).failures == 0, "the payments app failed"

                        filler.free()
                        await _connected(b, a)
                        await _connected(b, c)
                    result = outcome.get("result", {})
                    assert result.get("status") == "complete" and result.get("parts") == 2, outcome
                    await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
                    after = await _paid_once(nodes, before, caplog)
                    assert result["fee_msat"] == after["c"] - before["c"] > 0
                    assert "failing HTLC" not in caplog.text
                    with pytest.raises(ChainAppError) as again:
                        await payments(a).pay(invoice["bolt11"])
                    assert again.value.details["error"] == "AlreadyPaid"
                    assert not _htlcs(a) and not _htlcs(b) and not _htlcs(c)
                    assert payments(b).failures == 0
                # the payee from its disk alone agrees
                async with restarted_between(n, nodes, after) as b:
                    row = await _invoice_row(b)
                    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row


#: the deadline that passes while the payee's disk stays full: its MPP timeout (counted from the
#: first part), or the chain coming within SETTLE_MARGIN_BLOCKS of the parts' expiry (blocks mined
#: while the MPP timeout is far off)
DEADLINES = {"mpp_timeout": (8.0, "MPP timeout"), "cltv": (600.0, "expires at height")}
#: blocks mined at most towards the parts' expiry (DEFAULT_MIN_FINAL_CLTV, 24, and more: past it)
MAX_BLOCKS = 40


@pytest.mark.trio
@pytest.mark.parametrize("deadline", list(DEADLINES))
async def test_an_mpp_whose_payee_disk_stays_full_past_its_deadline_fails_every_part_together(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deadline: str
) -> None:
    """B's payments store is full when both parts arrive and stays full past their deadline (B's
    MPP timeout, or the chain nearing the parts' expiry): B holds the complete set, cannot mark
    the invoice paid, and at the deadline fails BOTH parts back (``temporary_node_failure``: the
    payee's own trouble, not a set that never arrived), settles none: the payer's ``pay`` fails
    saying why, no HTLC is left, nothing moved, no channel went on chain. Once the space is back
    the same invoice is paid, once; B restarted from its disk agrees."""
    timeout, why = DEADLINES[deadline]
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b" / "payments") as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c")
            nodes = {"a": a, "b": b, "c": c}
            async with running(a, c):
                async with running(b):
                    payments(b).mpp.timeout = timeout
                    invoice, before = await _two_paths(n, a, b, c)
                    caplog.set_level(logging.INFO)

                    assert filler.fill() > 0
                    async with trio.open_nursery() as nursery:
                        outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                        await wait_until(lambda: _incoming_parts(b, invoice["payment_hash"]) == 2, "both parts held")
                        await wait_until(lambda: "could not be written" in caplog.text, "the payee's write error")
                        if deadline == "cltv":  # (before any block: the parts wait on) B answers another payment meanwhile
                            refused = await pay_error(a, _forged_invoice(n, invoice["bolt11"]))
                            assert "incorrect_or_unknown_payment_details" in str(refused) and refused.details["erring_node"] == b.node_id.hex()
                            assert not outcome and _incoming_parts(b, invoice["payment_hash"]) == 2, "the set was not held meanwhile"
                        mined = 0
                        with trio.fail_after(90):
                            while not outcome:
                                assert not _fulfills(b), "a part settled before the invoice was paid on disk"
                                if deadline == "cltv" and mined < MAX_BLOCKS and _incoming_parts(b, invoice["payment_hash"]) == 2:
                                    await n.source.mine(1)
                                    mined += 1
                                await trio.sleep(0.2)
                    assert "error" in outcome, outcome
                    assert "temporary_node_failure" in str(outcome["error"]), outcome["error"]
                    assert "invoice mpp not paid, " in caplog.text and why in caplog.text
                    await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "every part failed back")
                    assert balances(nodes) == before
                    assert (await _invoice_row(b))["status"] == "unpaid"
                    assert "invoice mpp paid" not in caplog.text
                    assert payments(b).running and payments(b).failures == 0, "the payments app failed"

                    filler.free()
                    with trio.fail_after(60):  # how the failed payment ended reaches the payer's disk
                        while any(r["status"] == "pending" for r in (await payments(a).listpayments(invoice["payment_hash"]))["payments"]):
                            await trio.sleep(0.05)
                    paid = await payments(a).pay(invoice["bolt11"])
                    assert paid["status"] == "complete" and paid["parts"] >= 2, paid
                    await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
                    after = await _paid_once(nodes, before, caplog)
                # the payee from its disk alone agrees
                async with restarted_between(n, nodes, after) as b:
                    row = await _invoice_row(b)
                    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row



@pytest.mark.trio
async def test_an_mpp_payee_stopped_while_holding_the_parts_on_a_full_disk_completes_once_after_its_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """B holds both parts on a full disk (its payments store cannot mark the invoice paid) and
    stops; the space comes back and B restarts from its disk: it decides the two committed parts
    again and settles them, once: the payer's ``pay`` completes, the invoice is paid once with the
    whole amount, the money moved once, no HTLC is left."""
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b" / "payments") as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c")
            nodes = {"a": a, "b": b, "c": c}
            async with running(a, c):
                async with trio.open_nursery() as nursery:
                    async with running(b):
                        payments(b).mpp.timeout = 120.0
                        invoice, before = await _two_paths(n, a, b, c)
                        caplog.set_level(logging.INFO)
                        assert filler.fill() > 0
                        outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                        await wait_until(lambda: _incoming_parts(b, invoice["payment_hash"]) == 2, "both parts held")
                        await wait_until(lambda: "could not be written" in caplog.text, "the payee's write error")
                        assert not _fulfills(b) and not outcome
                    await wait_until(lambda: b.node_id not in a.peers and b.node_id not in c.peers, "the peers see B stop")
                    assert _stored_invoice(tmp_path)["status"] == "unpaid"
                    filler.free()
                    b = nodes["b"] = n.node("b")
                    async with running(b):
                        payments(b).mpp.timeout = 120.0
                        await _connected(b, a)
                        await _connected(b, c)
                        with trio.fail_after(90):
                            while not outcome:
                                await trio.sleep(0.05)
                        result = outcome.get("result", {})
                        assert result.get("status") == "complete" and result.get("parts") == 2, outcome
                        await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")
                        await _paid_once(nodes, before, caplog)
                        assert "failing HTLC" not in caplog.text and "not paid, " not in caplog.text
                        assert payments(b).failures == 0


async def _paid_once(nodes: dict[str, Node], before: dict[str, int], caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """The payment moved AMOUNT_MSAT from A to B once (C kept a fee for its part) and B's invoice is
    paid with all of it, said once in the log; the balances now."""
    after = balances(nodes)
    fee = after["c"] - before["c"]
    assert after == {"a": before["a"] - AMOUNT_MSAT - fee, "b": before["b"] + AMOUNT_MSAT, "c": before["c"] + fee}
    row = await _invoice_row(nodes["b"])
    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row
    assert caplog.text.count("invoice mpp paid") == 1
    return after


def _stored_invoice(tmp_path: Path) -> dict[str, Any]:
    """B's invoice as its payments store holds it while B is stopped."""
    store = PaymentsStore(tmp_path / "b" / "payments")
    try:
        return store.invoices("mpp")[0]  # type: ignore[no-any-return]
    finally:
        store.close()


@pytest.mark.trio
async def test_an_mpp_whose_payee_data_dir_stays_full_past_the_mpp_timeout_after_the_first_part_never_ends_half_paid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fill_after_first_part: dict[str, Any]
) -> None:
    """B's whole data directory fills once B holds the first part, and stays full past B's MPP
    timeout. B settles nothing meanwhile. Either the second part cannot reach B (its channel
    store cannot write it: the set never completes, the held part times out with
    ``mpp_timeout`` and the payer sends it again, which B's channel cannot take either), or it
    was committed before the disk filled (the set completes, the invoice cannot be marked paid,
    and both parts fail back together with ``temporary_node_failure``): which one is a race of
    the two paths. Once the space is back the payment ends one way only: paid once with every
    part settled and the money moved once, or failed with nothing moved. No HTLC is left, no
    channel went on chain."""
    async with net(tmp_path) as n:
        with full_disk_under(tmp_path / "b") as filler:
            a, b, c = n.node("a"), n.node("b"), n.node("c")
            nodes = {"a": a, "b": b, "c": c}
            async with running(a, b, c):
                payments(b).mpp.timeout = 6.0
                invoice, before = await _two_paths(n, a, b, c)
                caplog.set_level(logging.INFO)
                fill_after_first_part["filler"] = filler
                async with trio.open_nursery() as nursery:
                    outcome = await _pay_in_background(nursery, a, invoice["bolt11"])
                    await wait_until(lambda: fill_after_first_part["fired"], "the first part held")
                    await wait_until(lambda: "(mpp_timeout)" in caplog.text or "invoice mpp not paid, " in caplog.text, "a deadline")
                    await trio.sleep(2.0)
                    assert not _fulfills(b), "a part settled though the invoice was not paid on disk"
                    assert (await _invoice_row(b))["status"] == "unpaid"
                    filler.free()
                    await _connected(b, a)
                    await _connected(b, c)
                with trio.fail_after(120):  # how the payment ended reaches the payer's disk too
                    while any(r["status"] == "pending" for r in (await payments(a).listpayments(invoice["payment_hash"]))["payments"]):
                        await trio.sleep(0.1)
                await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "no HTLC left")
                assert not _htlcs(a) and not _htlcs(b) and not _htlcs(c)
                after = balances(nodes)
                row = await _invoice_row(b)
                statuses = [r["status"] for r in (await payments(a).listpayments(invoice["payment_hash"]))["payments"]]
                if "result" in outcome:
                    assert outcome["result"]["status"] == "complete" and statuses == ["complete"], (outcome, statuses)
                    fee = after["c"] - before["c"]
                    assert outcome["result"]["fee_msat"] == fee
                    assert after == {"a": before["a"] - AMOUNT_MSAT - fee, "b": before["b"] + AMOUNT_MSAT, "c": before["c"] + fee}
                    assert row["status"] == "paid" and row["received_msat"] == AMOUNT_MSAT, row
                    assert caplog.text.count("invoice mpp paid") == 1
                else:
                    assert "temporary_node_failure" in str(outcome["error"]), outcome
                    assert statuses == ["failed"] and after == before and row["status"] == "unpaid", (statuses, row)
                    assert "invoice mpp paid" not in caplog.text
