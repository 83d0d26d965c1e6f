"""Multi-part payments (basic_mpp) between lnpmsg and Electrum 4.3.4 (Debian's, a separate process
on Debian's Python), Electrum with two channels of 400,000 sat it opened to one ``lnpmsg node``
(Electrum 4.3.4 opens a second channel to a peer, and lnpmsg takes it).

- Electrum -> A -> B: Electrum pays B's invoice of 450,000 sat, more than either of its channels
  to A carries. Its ``lnpay`` splits it over both; A forwards each part over the A-B channel
  (B's invoice hints it), B holds the parts until the whole has arrived and settles them at
  once. Then A pays an Electrum request of 300,000 sat, more than its side of either channel
  holds: its ``pay`` splits it over both, Electrum waits for the whole and marks it paid.
- Electrum pays A's own invoice of 450,000 sat directly (its two channels end at the payee):
  Electrum 4.3.4 cannot. Our invoice hints both channels (private, as every channel Electrum
  opens), and Electrum's path finding takes a hint that starts at Electrum itself as a way out
  even when it has pinned a part to its other channel, so every part goes out over one channel;
  the first leaves, the next does not fit (``Not enough balance``) and ``lnpay`` gives up with
  the first in flight. A holds that part of a set that never arrives whole and fails it with
  ``mpp_timeout`` after 60 s; Electrum takes the failure (it no longer reads it: its payment
  ended), and nothing is left of it on either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.electrum import ElectrumWallet
from test_channels_nodes import WAIT, cli
from test_payments_electrum import Line, electrum_line, normal_channels

pytestmark = pytest.mark.slow

#: each of Electrum's channels to A (Electrum can send some 292,000 sat over each: its reserve and fees)
CHANNEL_BTC = "0.004"
CHANNEL_SAT = 400_000
#: what Electrum pays, then what A pays it: each more than one channel can carry
TO_LNPMSG_MSAT = 450_000_000
TO_ELECTRUM_MSAT = 300_000_000
#: lnpmsg fails an incomplete multi-part set after 60 s (mpp_timeout): a margin on top
MPP_WAIT = 90


def open_channels(wallet: ElectrumWallet) -> list[dict[str, Any]]:
    return [c for c in wallet.call("list_channels") if c["state"] == "OPEN"]


async def electrum_with_two_channels(line: Line) -> ElectrumWallet:
    """Electrum (synced to A's chain, funded) once it has opened two channels to A, both open."""
    wallet = await line.funded_electrum()
    for _ in range(2):
        await wallet.acall("open_channel", connection_string=line.a_info["addresses"][0], amount=CHANNEL_BTC)
    await cli("mine", 3, "--data-dir", line.a_dir)
    await trio.to_thread.run_sync(wallet.wait_for, lambda: len(open_channels(wallet)) == 2, "two channels open in Electrum", WAIT)
    return wallet


def by_peer(channels: list[dict[str, Any]], peer: str) -> dict[str, dict[str, Any]]:
    return {c["channel_id"]: c for c in channels if c["peer_id"] == peer}


async def test_electrum_pays_in_parts_through_lnpmsg_and_lnpmsg_pays_electrum_in_parts(tmp_path: Path) -> None:
    async with electrum_line(tmp_path) as line:
        a_dir, b_dir = line.a_dir, line.b_dir
        await cli("faucet", 3_000_000, "--data-dir", a_dir)
        await cli("connect", line.a_info["addresses"][0], "--data-dir", b_dir)
        await cli("fundchannel", line.b_info["node_id"], 1_000_000, "--data-dir", a_dir)
        wallet = await electrum_with_two_channels(line)
        electrum_id = (await wallet.acall("nodeid")).split("@")[0]
        channels = await normal_channels(a_dir, 3)
        from_electrum = by_peer(channels, electrum_id)
        assert len(from_electrum) == 2 and all(c["opener"] == "remote" and c["capacity_sat"] == CHANNEL_SAT for c in from_electrum.values())

        # Electrum pays B more than one of its channels can carry: in parts over both, each forwarded by A
        invoice = await cli("invoice", TO_LNPMSG_MSAT, "mpp-in", "paid in parts by Electrum", "--data-dir", b_dir)
        result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
        assert result["success"], result["log"]
        assert all(entry[2] == "Success" for entry in result["log"]), result["log"]  # (lnpay returns at the first part settled)
        (row,) = (await cli("listinvoices", "--label", "mpp-in", "--data-dir", b_dir))["invoices"]
        assert row["status"] == "paid" and row["preimage"] == result["preimage"] and row["received_msat"] == TO_LNPMSG_MSAT, row
        assert Path(f"{b_dir}.log").read_text().count("payments: invoice mpp-in paid") == 1
        forwards = (await cli("listforwards", "--data-dir", a_dir))["forwards"]
        assert len(forwards) >= 2 and all(f["status"] == "settled" for f in forwards), forwards
        # (a forward names its channels by peer and key: both of Electrum's came in)
        ins = {f["in_channel"] for f in forwards}
        assert len(ins) == 2 and all(key.startswith(electrum_id) for key in ins), ins
        assert sum(f["out_msat"] for f in forwards) == TO_LNPMSG_MSAT
        after = by_peer(await normal_channels(a_dir, 3), electrum_id)
        assert all(not c["htlcs"] and c["to_local_msat"] > 0 for c in after.values())
        assert sum(c["to_local_msat"] for c in after.values()) == sum(f["in_msat"] for f in forwards)

        # A pays Electrum more than its side of either channel holds: in parts over both
        assert all(c["to_local_msat"] < TO_ELECTRUM_MSAT for c in after.values())
        request = await wallet.acall("add_request", amount="0.003", memo="paid in parts by lnpmsg", expiration=1800)
        paid = await cli("pay", request["lightning_invoice"], "--data-dir", a_dir)
        assert paid["status"] == "complete" and paid["amount_msat"] == TO_ELECTRUM_MSAT and paid["parts"] >= 2 and paid["fee_msat"] == 0, paid
        # (one hop each, over two channels: a route names our channel by our alias for it)
        assert len({route[0]["short_channel_id"] for route in paid["routes"]}) == 2 and all(len(r) == 1 for r in paid["routes"]), paid["routes"]
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: wallet.call("get_request", request_id=request["request_id"])["status"] == 3, "Electrum paid", WAIT
        )
        (listed,) = (await cli("listpayments", "--payment-hash", request["rhash"], "--data-dir", a_dir))["payments"]
        assert listed["status"] == "complete" and len(listed["routes"]) == paid["parts"] and listed["preimage"] == paid["preimage"]
        final = by_peer(await normal_channels(a_dir, 3), electrum_id)
        sent = {cid: after[cid]["to_local_msat"] - final[cid]["to_local_msat"] for cid in after}
        assert all(s > 0 for s in sent.values()) and sum(sent.values()) == TO_ELECTRUM_MSAT, sent
        assert all(not c["htlcs"] for c in final.values())


async def test_electrum_sends_part_of_a_payment_to_lnpmsg_which_fails_it_with_mpp_timeout(tmp_path: Path) -> None:
    async with electrum_line(tmp_path) as line:  # (A alone is the payee here)
        node_dir, d = line.a_dir, ("--data-dir", line.a_dir)
        wallet = await electrum_with_two_channels(line)
        before = {c["channel_id"]: c for c in await normal_channels(node_dir, 2)}
        electrum_before = sorted(c["local_balance"] for c in await trio.to_thread.run_sync(open_channels, wallet))

        invoice = await cli("invoice", TO_LNPMSG_MSAT, "partial", "more than one channel carries", *d)
        assert len((await cli("decodepay", invoice["bolt11"]))["route_hints"]) == 2  # (both channels: Electrum's are private)
        result = await wallet.acall("lnpay", invoice=invoice["bolt11"], timeout=WAIT)
        assert result["success"] is False and result["log"] == [], result  # (it gave up before any part came back)
        assert "PaymentFailure('Not enough balance." in await trio.to_thread.run_sync(wallet.log, 20_000)
        # one part arrived: we hold it, waiting for the rest
        held = [c for c in (await cli("listchannels", *d))["channels"] if c["htlcs"]]
        assert len(held) == 1 and len(held[0]["htlcs"]) == 1, held
        assert (await cli("listinvoices", "--label", "partial", *d))["invoices"][0]["status"] == "unpaid"

        # 60 s after the part came, we fail it with mpp_timeout; Electrum decodes that
        with trio.fail_after(MPP_WAIT):
            while any(c["htlcs"] for c in (await cli("listchannels", *d))["channels"]):
                await trio.sleep(1.0)
        assert "did not arrive whole within 60 s (mpp_timeout)" in Path(f"{node_dir}.log").read_text()
        # (Electrum takes the failure, but its payment is over: it has no route left to read the onion with)
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: "received unknown htlc_failed" in wallet.log(20_000), "Electrum took the failure", WAIT
        )
        after = {c["channel_id"]: c for c in await normal_channels(node_dir, 2)}
        assert {k: c["to_local_msat"] for k, c in after.items()} == {k: c["to_local_msat"] for k, c in before.items()}
        assert (await cli("listinvoices", "--label", "partial", *d))["invoices"][0]["status"] == "unpaid"
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: sorted(c["local_balance"] for c in open_channels(wallet)) == electrum_before, "Electrum's balances back", WAIT
        )
