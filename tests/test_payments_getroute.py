"""getroute (:mod:`lnpmsg.payments.getroute`) between nodes in memory, on one embedded regtest chain.

A line A-B-C: A's route to C goes through B, with B's fee and delta, and is the
route A's ``pay`` of C's invoice then takes; no route to a node A cannot reach,
nor under a fee limit lower than B's fee (the limit at the fee is met); bad
parameters are refused. Nothing is sent: no payment is recorded, no HTLC offered.
With B-C private, C is reached by its invoice's hints, or by the same hints given by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from lnpmsg.node.node import Node
from lnpmsg.payments import bolt11
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError
from test_payments_app import net, payments, quiet, wait_until

AMOUNT = 30_000_000
STRANGER = "02" + "11" * 32


@pytest.mark.trio
async def test_route_a_to_c_via_b_is_what_pay_takes_and_what_is_refused(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c")
        async with running(a, b, c):
            await n.fund(a, b)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            height = (await n.source.tip()).height
            found = await payments(a).getroute(c.node_id.hex(), AMOUNT)
            hops = found["route"]
            assert [h["node_id"] for h in hops] == [b.node_id.hex(), c.node_id.hex()] and found["height"] == height
            assert hops[1]["amount_msat"] == AMOUNT and hops[1]["cltv_expiry"] == height + DEFAULT_MIN_FINAL_CLTV
            assert hops[0]["amount_msat"] == AMOUNT + found["fee_msat"] and found["fee_msat"] > 0 and found["amount_msat"] == hops[0]["amount_msat"]
            assert hops[0]["cltv_expiry"] > hops[1]["cltv_expiry"] and [h["delay"] for h in hops] == [h["cltv_expiry"] - height for h in hops]
            assert found["cltv_expiry"] == hops[0]["cltv_expiry"]
            # nothing was sent nor recorded
            assert not (await payments(a).listpayments())["payments"] and quiet(a)

            # pay takes that very route (C's invoice asks the same final delta)
            invoice = await payments(c).invoice(AMOUNT, "tea", "a cup of tea")
            paid = await payments(a).pay(invoice["bolt11"])
            (route,) = paid["routes"]
            assert paid["fee_msat"] == found["fee_msat"] and route == [{k: v for k, v in h.items() if k != "delay"} for h in hops]
            await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")

            # no route: a node A's graph does not know; fees above the limit
            with pytest.raises(ChainAppError) as info:
                await payments(a).getroute(STRANGER, AMOUNT)
            assert info.value.details == {"error": "NoRoute", "node_id": STRANGER, "amount_msat": AMOUNT}
            assert str(info.value).startswith(f"no route to {STRANGER} for {AMOUNT} msat: ")
            fee = (await payments(a).getroute(c.node_id.hex(), AMOUNT))["fee_msat"]
            with pytest.raises(ChainAppError) as info:
                await payments(a).getroute(c.node_id.hex(), AMOUNT, max_fee_msat=fee - 1)
            assert info.value.details["error"] == "NoRoute"
            assert (await payments(a).getroute(c.node_id.hex(), AMOUNT, max_fee_msat=fee))["fee_msat"] == fee
            # more than A's channel can send
            with pytest.raises(ChainAppError, match="no route"):
                await payments(a).getroute(c.node_id.hex(), 2_000_000_000)
            # the payee's final delta is the caller's (an invoice's min_final_cltv_expiry_delta)
            longer = await payments(a).getroute(c.node_id.hex(), AMOUNT, final_cltv=144)
            assert longer["route"][1]["delay"] == 144
            # a direct channel: one hop, no fee
            direct = await payments(a).getroute(b.node_id.hex(), AMOUNT)
            assert [h["node_id"] for h in direct["route"]] == [b.node_id.hex()] and direct["fee_msat"] == 0
            for bad in ({"node_id": a.node_id.hex(), "amount_msat": AMOUNT}, {"node_id": "02", "amount_msat": AMOUNT},
                        {"node_id": STRANGER, "amount_msat": 0}, {"node_id": STRANGER, "amount_msat": AMOUNT, "max_fee_msat": -1},
                        {"node_id": STRANGER, "amount_msat": AMOUNT, "final_cltv": 0}):  # fmt: skip
                with pytest.raises(ParamsError):
                    await payments(a).getroute(**bad)
            assert len((await payments(a).listpayments())["payments"]) == 1  # the pay only


@asynccontextmanager
async def _private_payee(tmp_path: Path) -> AsyncIterator[tuple[Any, Node, Node, Node, dict[str, Any]]]:
    """A-B-C running, B-C private (not in A's graph: no route to C by node id alone), and C's invoice (it hints B-C)."""
    async with net(tmp_path) as n:
        a, b, c = n.node("a"), n.node("b"), n.node("c")
        async with running(a, b, c):
            await n.fund(a, b)
            scids = await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
            n.graph.remove_channel(scids[("b", "c")])
            with pytest.raises(ChainAppError) as info:
                await payments(a).getroute(c.node_id.hex(), AMOUNT)
            assert info.value.details["error"] == "NoRoute"
            yield n, a, b, c, await payments(c).invoice(AMOUNT, "tea", "a cup of tea")


@pytest.mark.trio
async def test_an_invoices_route_uses_its_hints_to_a_private_payee_and_is_what_pay_takes(tmp_path: Path) -> None:
    """A-B-C with B-C private (not in A's graph): no route to C by node id alone; C's invoice hints B-C,
    and getroute of the invoice is the route A's pay of it takes. The invoice is checked as pay checks it."""
    async with _private_payee(tmp_path) as (n, a, b, c, invoice):
        height = (await n.source.tip()).height
        found = await payments(a).getroute(bolt11=invoice["bolt11"])
        hops = found["route"]
        assert [h["node_id"] for h in hops] == [b.node_id.hex(), c.node_id.hex()] and found["routes"] == [hops]
        assert hops[1]["amount_msat"] == AMOUNT and hops[1]["delay"] == DEFAULT_MIN_FINAL_CLTV and found["height"] == height
        assert found["destination"] == c.node_id.hex() and found["payment_hash"] == invoice["payment_hash"] and found["route_hints"] == 1
        assert not (await payments(a).listpayments())["payments"] and quiet(a)  # nothing sent
        paid = await payments(a).pay(invoice["bolt11"])
        (route,) = paid["routes"]
        assert paid["fee_msat"] == found["fee_msat"] and route == [{k: v for k, v in h.items() if k != "delay"} for h in hops]
        await wait_until(lambda: quiet(a) and quiet(b) and quiet(c), "settled")

        # an invoice without an amount takes one (as pay); pay's checks refuse what pay would
        any_amount = await payments(c).invoice(None, "any", "whatever it is")
        assert (await payments(a).getroute(bolt11=any_amount["bolt11"], amount_msat=5_000_000))["route"][1]["amount_msat"] == 5_000_000
        with pytest.raises(ChainAppError) as info:
            await payments(a).getroute(bolt11=any_amount["bolt11"])
        assert info.value.details["error"] == "InvoiceError"
        own = await payments(a).invoice(AMOUNT, "mine", "to myself")
        with pytest.raises(ChainAppError) as info:
            await payments(a).getroute(bolt11=own["bolt11"])
        assert info.value.details["error"] == "InvoiceError"
        for bad in ({"bolt11": "lnbcrt1nonsense"}, {"bolt11": invoice["bolt11"], "node_id": c.node_id.hex()},
                    {"bolt11": invoice["bolt11"], "max_fee_msat": 10}, {"bolt11": invoice["bolt11"], "final_cltv": 144},
                    {"bolt11": any_amount["bolt11"], "amount_msat": 0}, {}):  # fmt: skip
            with pytest.raises(ParamsError):
                await payments(a).getroute(**bad)


@pytest.mark.trio
async def test_route_hints_by_hand_reach_a_private_payee_as_its_invoice_does(tmp_path: Path) -> None:
    """A-B-C with B-C private: no route to C by node id alone; the hint C's invoice carries, given by hand
    (as decodepay shows it), gives the invoice's route; the hint's fee and delta are what the route pays
    and waits; malformed hints are refused, naming the hint, hop and field."""
    async with _private_payee(tmp_path) as (n, a, b, c, invoice):
        hints = bolt11.decode(invoice["bolt11"]).to_dict()["route_hints"]
        assert [[h["node_id"] for h in hint] for hint in hints] == [[b.node_id.hex()]]
        by_invoice = await payments(a).getroute(bolt11=invoice["bolt11"])
        found = await payments(a).getroute(c.node_id.hex(), AMOUNT, route_hints=hints)
        assert found["route"] == by_invoice["route"] and found["fee_msat"] == by_invoice["fee_msat"] > 0 and found["route_hints"] == 1
        assert "routes" not in found and "route_hints" not in await payments(a).getroute(b.node_id.hex(), AMOUNT)
        assert not (await payments(a).listpayments())["payments"] and quiet(a)  # nothing sent
        # the hint's policy is the route's: 1000 msat more base fee, 100 blocks more delta
        (hop,) = hints[0]
        dearer = [[{**hop, "fee_base_msat": hop["fee_base_msat"] + 1000, "cltv_expiry_delta": hop["cltv_expiry_delta"] + 100}]]
        costlier = await payments(a).getroute(c.node_id.hex(), AMOUNT, route_hints=dearer)
        assert costlier["fee_msat"] == found["fee_msat"] + 1000
        assert costlier["route"][0]["cltv_expiry"] == found["route"][0]["cltv_expiry"] + 100
        # a hint that leads nowhere A reaches (from a node A's graph does not know) gives no route
        with pytest.raises(ChainAppError) as info:
            await payments(a).getroute(c.node_id.hex(), AMOUNT, route_hints=[[{**hop, "node_id": STRANGER}]])
        assert info.value.details["error"] == "NoRoute"

        bad_hints = {
            "route_hints must be a list": {},
            "route_hints must be a list of 1 to 32": [],
            r"route_hints\[0\] must be a list of 1 to 12 hops": [[hop] * 13],
            r"route_hints\[0\]\[0\] must be an object with exactly": [[{**hop, "extra": 1}]],
            r"route_hints\[0\]\[0\].node_id": [[{**hop, "node_id": "02"}]],
            r"route_hints\[1\]\[0\].short_channel_id: not a short_channel_id": [[hop], [{**hop, "short_channel_id": "1:2:3"}]],
            r"route_hints\[0\]\[0\].cltv_expiry_delta must be an integer from 0 to 65535": [[{**hop, "cltv_expiry_delta": 65536}]],
            r"route_hints\[0\]\[0\].fee_base_msat must be an integer": [[{**hop, "fee_base_msat": "1"}]],
            r"route_hints\[0\]: a hop starts at the payee": [[{**hop, "node_id": c.node_id.hex()}]],
            r"route_hints\[0\]: a node starts two of its hops": [[hop, hop]],
        }
        for message, bad in bad_hints.items():
            with pytest.raises(ParamsError, match=message):
                await payments(a).getroute(c.node_id.hex(), AMOUNT, route_hints=bad)
        with pytest.raises(ParamsError, match="give no route_hints"):
            await payments(a).getroute(bolt11=invoice["bolt11"], route_hints=hints)
