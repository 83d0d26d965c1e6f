"""A BOLT 11 payee's own ``mpp_timeout`` (plain, not blinded: it names the payee) between nodes in
memory on one embedded regtest chain: the payer reads it as a set that did not arrive whole in
time, not as the payee's refusal, and sends the missing amount again.

The twin of ``test_a_part_the_issuer_timed_out_does_not_cost_its_path``
(test_payments_offers_mpp_nodes.py), where the same timeout comes back inside a blinded path as
``invalid_onion_blinding``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from test_payments_app import diamond, first_forward_late, net, payments, quiet, wait_until

#: more than A's channel to B or to C carries alone (the diamond's)
AMOUNT = 900_000_000


@pytest.mark.trio
async def test_a_part_the_bolt11_payee_timed_out_is_sent_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pays D in two parts, one through B, one through C; C forwards its part to D late, past D's MPP
    timeout. D fails B's part with mpp_timeout: from the payee, a failure that is final for any other
    code, yet A pays on, sends the missing amount into B's path again, it joins C's late part at D and
    the set is whole: D's invoice is paid once, nothing is left in flight."""
    caplog.set_level(logging.INFO, logger="lnpmsg.payments")
    async with net(tmp_path) as n:
        async with diamond(n) as (a, b, c, d):
            payments(d).mpp.timeout = 3.0
            inv = await payments(d).invoice(AMOUNT, "late", "a part comes late")
            late = first_forward_late(c, payments(d).mpp.timeout + 1.0)
            paid = await payments(a).pay(inv["bolt11"])
            assert paid["status"] == "complete" and late
            assert "did not arrive whole within 3 s (mpp_timeout)" in caplog.text  # D timed out B's part
            (sent,) = (await payments(a).listpayments(inv["payment_hash"]))["payments"]
            assert sent["status"] == "complete" and sent["attempts"] >= 3
            assert {r[0]["node_id"] for r in paid["routes"]} == {b.node_id.hex(), c.node_id.hex()}
            assert sum(r[-1]["amt_to_forward"] for r in paid["routes"]) == AMOUNT
            (row,) = (await payments(d).listinvoices("late"))["invoices"]
            assert row["status"] == "paid" and row["received_msat"] == AMOUNT
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")
