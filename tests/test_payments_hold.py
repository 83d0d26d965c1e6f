"""Hold invoices (:mod:`lnpmsg.payments.holding`) between nodes in memory, on one embedded regtest chain.

B (or D) makes an invoice for a payment hash whose preimage only the test knows; A pays it. The
payment is accepted and held (``invoice.accepted``, ``listinvoices`` shows the held HTLCs), A's
payment stays in flight, and then:

- ``settleinvoice`` with the preimage: recorded, then fulfilled; A's payment completes with it;
  a wrong preimage, a second settle, a settle of a cancelled or unknown invoice are refused;
- ``cancelinvoice``: A's payment fails with the payee's ``incorrect_or_unknown_payment_details``,
  and so does a later payment of the invoice;
- a multi-part payment is accepted only once every part is held (over a diamond A-{B,C}-D);
  a cancel while its parts are still gathering fails them back at once (not at the MPP
  timeout), and leaves another invoice's parts alone;
- nobody answers: blocks bring the held HTLC within ``SETTLE_MARGIN_BLOCKS`` of its expiry and
  it fails back off chain, the invoice cancelled, the channel open;
- the caller of settleinvoice or cancelinvoice stops waiting as the HTLC's fulfil or fail is on its
  way: the HTLC is resolved all the same (the app's task, not the caller's);
- B restarts while holding: the HTLC is held again (the replay neither fails nor settles it),
  and a settle after the restart completes A's payment;
- B's channel goes on chain while the HTLC is held: a settle hands the preimage to the channel
  monitor, which claims the HTLC on chain; A's monitor reads the preimage there and A's payment
  completes.

Real clock (the chain and stores work in threads); waits are for states.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node
from lnpmsg.payments import bolt11
from lnpmsg.payments.app import PaymentEvent
from lnpmsg.payments.holding import HOLD_POLL
from lnpmsg.payments.onion import decrypt_failure_onion
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.payments.sender import Part, build_part
from lnpmsg.payments.receiving import SETTLE_MARGIN_BLOCKS
from lnpmsg.payments.views import HOLD_MIN_FINAL_CLTV
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing import record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError
from test_payments_app import TIMEOUT, Net, channels, diamond, net, paying, payment_ended, payments, quiet, wait_until
from test_payments_onchain import channel_with

UNKNOWN_PAYMENT_DETAILS = 0x4000 | 15
AMOUNT = 20_000_000


def event(topic: str) -> Any:
    return lambda ev: isinstance(ev, PaymentEvent) and ev.topic == topic


async def hold_invoice(payee: Node, label: str, amount_msat: int = AMOUNT, expiry: int = 3600) -> tuple[bytes, dict[str, Any]]:
    """A fresh preimage (the test's, never the payee's) and the payee's hold invoice for its hash."""
    preimage = os.urandom(32)
    invoice = await payments(payee).invoice(amount_msat, label, "held until settled", expiry, payment_hash=sha256(preimage).hex(), hold=True)
    return preimage, invoice


async def listed(node: Node, label: str) -> dict[str, Any]:
    (row,) = (await payments(node).listinvoices(label))["invoices"]
    return row  # type: ignore[no-any-return]


async def refused(call: Any, *args: Any, **kwargs: Any) -> ChainAppError:
    with pytest.raises(ChainAppError) as info:
        await call(*args, **kwargs)
    return info.value


@asynccontextmanager
async def a_channel(n: Net) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes A and B running, with a channel A-B of 1,000,000 sat that A funded."""
    a, b = n.node("a"), n.node("b")
    async with running(a, b):
        await n.fund(a)
        await n.open([(a, b, 1_000_000, 1_000_000)])
        yield a, b


@dataclass
class Held:
    """A's payment of B's hold invoice, accepted and held by B; ``outcome``: the payment's (``paid`` or ``error``) once it ended."""

    preimage: bytes
    invoice: dict[str, Any]
    events: Any
    outcome: dict[str, Any]


@asynccontextmanager
async def held_payment(a: Node, b: Node, label: str) -> AsyncIterator[Held]:
    """A pays B's hold invoice ``label`` (a fresh preimage, the test's) in the background, and B accepted it;
    the block ends once the payment did (B's events recorded meanwhile)."""
    preimage, invoice = await hold_invoice(b, label)
    with record_events(b) as events:
        async with paying(a, invoice["bolt11"]) as outcome:
            await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
            yield Held(preimage, invoice, events, outcome)


@pytest.mark.trio
async def test_a_held_payment_is_settled_or_cancelled_by_the_payee_and_bad_calls_are_refused(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c")
        async with running(a, b, c):
            await n.fund(a, c)
            await n.open([(a, b, 1_000_000, 1_000_000), (c, b, 1_000_000, 1_000_000)])
            preimage, invoice = await hold_invoice(b, "held")
            assert (await listed(b, "held"))["status"] == "unpaid" and (await listed(b, "held"))["hold"] is True
            # room to hold: a hold invoice asks for a final expiry well beyond the margin it fails back at
            assert bolt11.decode(invoice["bolt11"]).min_final_cltv == HOLD_MIN_FINAL_CLTV > SETTLE_MARGIN_BLOCKS + 40
            with record_events(b) as events:
                async with paying(a, invoice["bolt11"]) as outcome:
                    accepted = await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    assert accepted.amount_msat == AMOUNT and accepted.label == "held"
                    row = await listed(b, "held")
                    (htlc,) = channel_with(b, a).core.state.local_commit.spec.htlcs
                    assert row["status"] == "accepted" and row["held_htlcs"] == 1 and row["held_msat"] == AMOUNT
                    assert row["held_cltv_expiry"] == htlc.add.cltv_expiry and "preimage" not in row
                    # a second payment of it (C's) fails at once: the invoice's payment is held already
                    err = await refused(payments(c).pay, invoice["bolt11"])
                    assert err.details["code"] == UNKNOWN_PAYMENT_DETAILS and err.details["erring_node"] == b.node_id.hex()
                    await trio.sleep(2 * HOLD_POLL)  # held: neither settled nor failed by itself
                    assert not outcome and (await payments(a).listpayments(invoice["payment_hash"]))["payments"][0]["status"] == "pending"
                    # a wrong preimage: no hold invoice has its hash; with the hash named, the mismatch is told
                    err = await refused(payments(b).settleinvoice, os.urandom(32).hex())
                    assert err.details["error"] == "NoSuchInvoice" and "is the preimage right" in str(err)
                    err = await refused(payments(b).settleinvoice, os.urandom(32).hex(), payment_hash=invoice["payment_hash"])
                    assert err.details["error"] == "WrongPreimage" and "does not match" in str(err)
                    with pytest.raises(ParamsError):
                        await payments(b).settleinvoice("zz")
                    assert (await listed(b, "held"))["status"] == "accepted"
                    settled = await payments(b).settleinvoice(preimage.hex())
                    assert settled == {"label": "held", "payment_hash": invoice["payment_hash"], "status": "paid",
                                       "received_msat": AMOUNT, "htlcs": 1}  # fmt: skip
                paid = await events.wait_for(event("invoice.paid"), timeout=TIMEOUT)
            assert paid.amount_msat == AMOUNT
            assert outcome["paid"]["status"] == "complete" and outcome["paid"]["preimage"] == preimage.hex()
            row = await listed(b, "held")
            assert row["status"] == "paid" and row["preimage"] == preimage.hex() and row["received_msat"] == AMOUNT
            err = await refused(payments(b).settleinvoice, preimage.hex())
            assert err.details["error"] == "InvoiceNotAccepted" and "settled already" in str(err)
            assert (await refused(payments(b).cancelinvoice, invoice["payment_hash"])).details["error"] == "InvoicePaid"
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")

            # cancelled: A's payment fails as for a hash B does not know; so does paying it again; no settle after
            preimage, invoice = await hold_invoice(b, "cancelled")
            with record_events(b) as events:
                async with paying(a, invoice["bolt11"]) as outcome:
                    await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    with pytest.raises(ChainAppError, match="parts of a payment"):
                        await payments(b).delinvoice("cancelled")
                    cancelled = await payments(b).cancelinvoice(invoice["payment_hash"])
                    assert cancelled["status"] == "cancelled" and cancelled["htlcs"] == 1
                assert (await events.wait_for(event("invoice.cancelled"), timeout=TIMEOUT)).amount_msat == AMOUNT
            error = outcome["error"]
            assert error.details["code"] == UNKNOWN_PAYMENT_DETAILS and error.details["erring_node"] == b.node_id.hex()
            assert (await listed(b, "cancelled"))["status"] == "cancelled"
            again = await refused(payments(a).pay, invoice["bolt11"])
            assert again.details["code"] == UNKNOWN_PAYMENT_DETAILS
            err = await refused(payments(b).settleinvoice, preimage.hex())
            assert err.details["error"] == "InvoiceNotAccepted" and "cancelled" in str(err)
            # nothing held yet: nothing to settle; a plain invoice is no hold invoice
            preimage, invoice = await hold_invoice(b, "open")
            assert "no payment of it is held" in str(await refused(payments(b).settleinvoice, preimage.hex()))
            plain = await payments(b).invoice(1000, "plain", "not held")
            assert (await refused(payments(b).cancelinvoice, plain["payment_hash"])).details["error"] == "NoSuchInvoice"
            with pytest.raises(ParamsError, match="payment_hash"):
                await payments(b).invoice(1000, "half", "hold without a hash", hold=True)
            with pytest.raises(ParamsError, match="without its preimage"):
                await payments(b).invoice(1000, "both", "hold with a preimage", hold=True, payment_hash="11" * 32, preimage="22" * 32)
            with pytest.raises(ParamsError, match="min_final_cltv must be"):
                await payments(b).invoice(1000, "short", "too close", hold=True, payment_hash="11" * 32, min_final_cltv=SETTLE_MARGIN_BLOCKS)
            chosen = await payments(b).invoice(1000, "long", "a day", hold=True, payment_hash="11" * 32, min_final_cltv=144)
            assert bolt11.decode(chosen["bolt11"]).min_final_cltv == 144
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "nothing left")


@pytest.mark.trio
async def test_a_multi_part_payment_is_accepted_only_once_every_part_is_held(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        async with diamond(n) as (a, b, c, d):
            preimage, invoice = await hold_invoice(d, "mpp", 900_000_000)
            with record_events(d) as events:
                async with paying(a, invoice["bolt11"]) as outcome:
                    accepted = await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    # accepted once, for the whole: never per part
                    assert accepted.amount_msat == 900_000_000
                    row = await listed(d, "mpp")
                    assert row["held_htlcs"] == 2 and row["held_msat"] == 900_000_000
                    await payments(d).settleinvoice(preimage.hex())
            assert [ev.topic for ev in events.of(PaymentEvent)].count("invoice.accepted") == 1
            paid = outcome["paid"]
            assert paid["status"] == "complete" and paid["parts"] == 2 and paid["preimage"] == preimage.hex()
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")


async def one_part(n: Net, payer: Node, payee: Node, bolt11_text: str, amount_msat: int) -> tuple[Part, tuple[str, int]]:
    """The payer offers one part of ``amount_msat`` of the invoice's payment (its total: the invoice's amount) over its channel to the payee."""
    decoded = bolt11.decode(bolt11_text)
    assert decoded.amount_msat is not None
    scid = next(c.short_channel_id for c in channels(payer).htlcs.channels() if c.peer_id == payee.node_id)
    expiry = (await n.source.tip()).height + decoded.min_final_cltv + 10
    route = Route((RouteHop(scid, 0, payee.node_id, amount_msat, expiry, amount_msat, expiry),))
    part = build_part(route, decoded.payment_hash, decoded.payment_secret, decoded.amount_msat)
    ref = await channels(payer).htlcs.add_htlc(scid, amount_msat, decoded.payment_hash, expiry, part.onion)
    return part, ref


@pytest.mark.trio
async def test_a_cancel_fails_back_at_once_the_parts_of_a_payment_still_gathering(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        async with a_channel(n) as (a, b):
            # never within this test: a part that fails back was failed by the cancel
            payments(b).mpp.timeout = 3600.0
            _, invoice = await hold_invoice(b, "gathering")
            _, other = await hold_invoice(b, "other")
            part, ref = await one_part(n, a, b, invoice["bolt11"], AMOUNT // 2)  # one of two parts
            other_part, other_ref = await one_part(n, a, b, other["bolt11"], AMOUNT // 2)
            hashes = [bytes.fromhex(i["payment_hash"]) for i in (invoice, other)]
            await wait_until(lambda: all(payments(b).mpp.holds(h) for h in hashes), "both parts gathering")
            assert (await listed(b, "gathering"))["status"] == "unpaid"
            with record_events(b) as events:
                cancelled = await payments(b).cancelinvoice(invoice["payment_hash"])
                assert cancelled["status"] == "cancelled" and cancelled["htlcs"] == 0  # (none was held: accepted)
                await events.wait_for(event("invoice.cancelled"), timeout=TIMEOUT)
            await wait_until(lambda: ref in payments(a)._early, "the part failed back")
            failed = decrypt_failure_onion(part.shared_secrets, payments(a)._early.pop(ref).reason or b"")
            assert failed.hop_index == 0 and failed.failure is not None and failed.failure.code == UNKNOWN_PAYMENT_DETAILS
            # the other invoice's part is still gathering, its HTLC still committed
            assert payments(b).mpp.holds(hashes[1]) and not payments(b).mpp.holds(hashes[0])
            assert [h.add.payment_hash for h in channels(b).htlcs.pending_incoming()] == [hashes[1]]
            assert (await listed(b, "other"))["status"] == "unpaid" and (await listed(b, "gathering"))["status"] == "cancelled"
            await payments(b).cancelinvoice(other["payment_hash"])
            await wait_until(lambda: other_ref in payments(a)._early, "the other part failed back")
            failed = decrypt_failure_onion(other_part.shared_secrets, payments(a)._early.pop(other_ref).reason or b"")
            assert failed.failure is not None and failed.failure.code == UNKNOWN_PAYMENT_DETAILS
            await wait_until(lambda: quiet(a) and quiet(b), "nothing left")


@pytest.mark.trio
async def test_a_held_payment_fails_back_off_chain_before_its_expiry(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        async with a_channel(n) as (a, b):
            async with held_payment(a, b, "late") as held:
                expiry = (await listed(b, "late"))["held_cltv_expiry"]
                height = (await n.source.tip()).height
                await n.source.mine(expiry - SETTLE_MARGIN_BLOCKS - 1 - height)  # one block short of the margin
                await trio.sleep(3 * HOLD_POLL)
                assert (await listed(b, "late"))["status"] == "accepted" and not held.outcome
                await n.source.mine(1)
                cancelled = await held.events.wait_for(event("invoice.cancelled"), timeout=TIMEOUT)
            assert "held too long" in cancelled.reason and f"expires at height {expiry}" in cancelled.reason
            assert held.outcome["error"].details["code"] == UNKNOWN_PAYMENT_DETAILS
            assert (await listed(b, "late"))["status"] == "cancelled"
            err = await refused(payments(b).settleinvoice, held.preimage.hex())
            assert err.details["error"] == "InvoiceNotAccepted"
            await wait_until(lambda: quiet(a) and quiet(b), "failed back off chain")
            assert channel_with(a, b).phase is Phase.NORMAL and channel_with(b, a).phase is Phase.NORMAL


@pytest.mark.trio
@pytest.mark.parametrize("answer", ["settleinvoice", "cancelinvoice"])
async def test_a_settle_or_cancel_whose_caller_gives_up_midway_still_resolves_the_held_htlc(tmp_path: Path, answer: str) -> None:
    """The caller of settleinvoice (after the preimage is on disk) or cancelinvoice stops waiting (the
    control server's time limit, a client gone) as the held HTLC's fulfil or fail is on its way: the
    HTLC is resolved all the same, without a restart (never left in the channel, neither held nor
    settled, until it times out on chain)."""
    async with net(tmp_path) as n:
        async with a_channel(n) as (a, b):
            async with held_payment(a, b, "given up") as held:
                hook = channels(b).htlcs
                resolve = hook.fulfill if answer == "settleinvoice" else hook.fail
                with trio.CancelScope() as caller:

                    async def given_up(*args: Any) -> None:
                        caller.cancel()  # (in the caller's task, its next wait is cut short)
                        await resolve(*args)

                    setattr(hook, resolve.__name__, given_up)
                    if answer == "settleinvoice":
                        await payments(b).settleinvoice(held.preimage.hex())
                    else:
                        await payments(b).cancelinvoice(held.invoice["payment_hash"])
                assert caller.cancelled_caught
            if answer == "settleinvoice":
                assert held.outcome["paid"]["status"] == "complete" and held.outcome["paid"]["preimage"] == held.preimage.hex()
                assert (await listed(b, "given up"))["status"] == "paid"
            else:
                assert held.outcome["error"].details["code"] == UNKNOWN_PAYMENT_DETAILS
                assert (await listed(b, "given up"))["status"] == "cancelled"
            await wait_until(lambda: quiet(a) and quiet(b), "resolved off chain")


@pytest.mark.trio
async def test_a_held_payment_stays_held_across_a_restart_and_is_settled_after_it(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a = n.node("a")
        async with running(a):
            b = n.node("b")
            async with running(b):
                await n.fund(a)
                await n.open([(a, b, 1_000_000, 1_000_000)])
                preimage, invoice = await hold_invoice(b, "restart", expiry=3)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(payments(a).pay, invoice["bolt11"])
                    with record_events(b) as events:
                        await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    nursery.cancel_scope.cancel()  # (the payment goes on in A)
                # past the invoice's expiry: an HTLC decided again now would fail ("the invoice expired")
                await trio.sleep(max(0.0, invoice["expires_at"] + 1.1 - time.time()))
            b2 = n.node("b")
            async with running(b2):
                row = await listed(b2, "restart")
                assert row["status"] == "accepted" and row["held_htlcs"] == 1 and row["held_msat"] == AMOUNT
                await b2.connect(a.addresses[0])
                await wait_until(lambda: all(c.usable for c in channels(b2).htlcs.channels()), "reconnected")
                await trio.sleep(1.0)  # the replay of the incoming HTLCs runs once the channel is up
                assert channel_with(b2, a).core.state.local_commit.spec.htlcs  # neither failed nor settled
                assert (await listed(b2, "restart"))["status"] == "accepted"
                assert (await payments(b2).settleinvoice(preimage.hex()))["htlcs"] == 1
                row = await payment_ended(a, invoice["payment_hash"])
                assert row["status"] == "complete" and row["preimage"] == preimage.hex()
                assert (await listed(b2, "restart"))["status"] == "paid"
                await wait_until(lambda: quiet(a) and quiet(b2), "settled")


async def settled_on_chain(n: Net, a: Node, b: Node, preimage: bytes, invoice: dict[str, Any], cltv_expiry: int) -> None:
    """B settles its hold invoice whose HTLC is on chain: B's monitor claims it with the preimage
    (HTLC-success), A's monitor reads the preimage there and A's payment completes, before the HTLC's expiry."""
    row = await listed(b, "on chain")
    assert row["status"] == "accepted" and row["held_htlcs"] == 1
    assert (await payments(b).settleinvoice(preimage.hex()))["htlcs"] == 1
    with trio.fail_after(TIMEOUT):
        while (await payments(a).listpayments(invoice["payment_hash"]))["payments"][0]["status"] == "pending":
            assert (await n.source.tip()).height < cltv_expiry, "the HTLC was not claimed before its expiry"
            await n.source.mine(1)
            await trio.sleep(0.3)
    row = (await payments(a).listpayments(invoice["payment_hash"]))["payments"][0]
    assert row["status"] == "complete" and row["preimage"] == preimage.hex()
    assert (await listed(b, "on chain"))["status"] == "paid"


@pytest.mark.trio
@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
async def test_a_settle_after_the_channel_went_on_chain_claims_the_htlc_there(tmp_path: Path, restart: bool) -> None:
    """With ``restart``, B restarts after its channel went on chain: the HTLC, no longer in an open
    channel (never replayed), is held again from the channel's last commitments."""
    async with net(tmp_path) as n:
        a, b = n.node("a"), n.node("b")
        async with running(a):
            async with running(b):
                await n.fund(a)
                await n.open([(a, b, 1_000_000, 1_000_000)])
                preimage, invoice = await hold_invoice(b, "on chain")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(payments(a).pay, invoice["bolt11"])
                    with record_events(b) as events:
                        await events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    nursery.cancel_scope.cancel()
                (htlc,) = channel_with(b, a).core.state.local_commit.spec.htlcs
                await channels(b).closechannel(channel_with(b, a).key, force=True)
                await n.source.mine(1)
                await wait_until(lambda: channel_with(b, a).phase in (Phase.FAILED, Phase.CLOSED), "B-A on chain")
                if not restart:
                    await settled_on_chain(n, a, b, preimage, invoice, htlc.add.cltv_expiry)
            if restart:
                b2 = n.node("b")
                async with running(b2):
                    await settled_on_chain(n, a, b2, preimage, invoice, htlc.add.cltv_expiry)
