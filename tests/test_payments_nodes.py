"""Payments across three ``lnpmsg node`` processes on one chain, driven by the CLI.

A (the chain owner) pays C through B; A-B runs over TCP, B-C over ZeroMQ
in one test and over UDP in the other. C's channel is private: its invoice
carries the route hint B -> C, A knows its own channel to B. C runs with
``--accept-keysend``: B keysends to it with ``lnpmsg keysend``; A cannot (a
keysend has no invoice, so no hint to C's private channel), nor to B, which
takes none. In the second
test B is killed with SIGKILL the moment A's HTLC is irrevocably committed
on its disk (before B decides anything), then restarted: it decides the
HTLC again, forwards it, and the payment completes; no HTLC is left and
no commitment reaches the chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.channels.manager import CRASH_ENV
from test_channels_nodes import LISTEN, WAIT, _run_main, cli, owner_argv, start, stop, user_argv

pytestmark = pytest.mark.slow

FUNDING_SAT = 1_000_000


async def channels(data_dir: Path) -> list[dict[str, Any]]:
    return (await cli("listchannels", "--data-dir", data_dir))["channels"]  # type: ignore[no-any-return]


async def wait_quiet(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """``count`` channels, all normal, connected, with no HTLC."""
    with trio.fail_after(WAIT):
        while True:
            got = await channels(data_dir)
            if len(got) == count and all(c["state"] == "normal" and c["connected"] and not c["htlcs"] for c in got):
                return got
            await trio.sleep(0.2)


async def line(tmp_path: Path, bc_kind: str, processes: list[tuple[trio.Process, Path]], b_env: dict[str, str] | None = None,
               c_options: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Start A, B and C (with ``c_options``), open A-B (TCP) and B-C (``bc_kind``), both funded by their left node."""
    dirs = {x: tmp_path / x for x in "abc"}
    a, a_info = await start(dirs["a"], LISTEN["tcp"], *owner_argv("127.0.0.1:0"))
    processes.append((a, dirs["a"]))
    url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
    b_options = user_argv(url, cookie)
    b, b_info = await start(dirs["b"], LISTEN["tcp"], *b_options, env=b_env)
    processes.append((b, dirs["b"]))
    c, c_info = await start(dirs["c"], LISTEN[bc_kind], *user_argv(url, cookie), *c_options)
    processes.append((c, dirs["c"]))
    await cli("faucet", 3_000_000, "--data-dir", dirs["a"])
    b_address = (await cli("newaddr", "--data-dir", dirs["b"]))["address"]
    await cli("faucet", 3_000_000, "--address", b_address, "--data-dir", dirs["a"])
    await cli("connect", a_info["addresses"][0], "--data-dir", dirs["b"])
    await cli("connect", c_info["addresses"][0], "--data-dir", dirs["b"])
    await _wait_funds(dirs["b"])
    await cli("fundchannel", b_info["node_id"], FUNDING_SAT, "--data-dir", dirs["a"])
    await cli("fundchannel", c_info["node_id"], FUNDING_SAT, "--data-dir", dirs["b"])
    await cli("mine", 3, "--data-dir", dirs["a"])
    await wait_quiet(dirs["a"], 1)
    await wait_quiet(dirs["b"], 2)
    await wait_quiet(dirs["c"], 1)
    return {"dirs": dirs, "a": a_info, "b": b_info, "c": c_info, "b_options": b_options}


async def _wait_funds(data_dir: Path) -> None:
    with trio.fail_after(WAIT):
        while (await cli("getbalance", "--data-dir", data_dir))["confirmed_sat"] < 3_000_000:
            await trio.sleep(0.2)


async def check_paid(setup: dict[str, Any], paid: dict[str, Any], invoice: dict[str, Any], amount_msat: int) -> None:
    dirs = setup["dirs"]
    assert paid["status"] == "complete" and paid["payment_hash"] == invoice["payment_hash"]
    (route,) = paid["routes"]
    assert [h["node_id"] for h in route] == [setup["b"]["node_id"], setup["c"]["node_id"]]
    assert paid["fee_msat"] == route[0]["amount_msat"] - route[0]["amt_to_forward"] > 0
    (inv,) = (await cli("listinvoices", "--data-dir", dirs["c"]))["invoices"]
    assert inv["status"] == "paid" and inv["received_msat"] == amount_msat and inv["preimage"] == paid["preimage"]
    (p,) = (await cli("listpayments", "--data-dir", dirs["a"]))["payments"]
    assert p["status"] == "complete" and p["preimage"] == paid["preimage"] and p["fee_msat"] == paid["fee_msat"]
    (c_chan,) = await wait_quiet(dirs["c"], 1)
    assert c_chan["to_local_msat"] == amount_msat
    (fwd,) = (await cli("listforwards", "--data-dir", dirs["b"]))["forwards"]
    assert fwd["status"] == "settled" and fwd["in_msat"] - fwd["out_msat"] == paid["fee_msat"]


async def test_pay_across_three_processes_over_tcp_and_zeromq(tmp_path: Path) -> None:
    processes: list[tuple[trio.Process, Path]] = []
    try:
        setup = await line(tmp_path, "zmq", processes, c_options=("--accept-keysend",))
        dirs = setup["dirs"]
        invoice = await cli("invoice", 25_000_000, "first", "across three processes", "--data-dir", dirs["c"])
        decoded = await cli("decodepay", invoice["bolt11"])
        assert decoded["payee"] == setup["c"]["node_id"] and decoded["route_hints"]  # the private B -> C channel
        paid = await cli("pay", invoice["bolt11"], "--data-dir", dirs["a"])
        await check_paid(setup, paid, invoice, 25_000_000)
        # keysends: B pays C (started with --accept-keysend) over their channel; A cannot reach C, whose channel is
        # private (no invoice, no route hint); B takes none (its refusal, as the payee's)
        sent = await cli("keysend", setup["c"]["node_id"], 7_000_000, "--data-dir", dirs["b"])
        assert sent["status"] == "complete" and [h["node_id"] for h in sent["routes"][0]] == [setup["c"]["node_id"]]
        got = next(i for i in (await cli("listinvoices", "--data-dir", dirs["c"]))["invoices"] if i["keysend"])
        assert got["status"] == "paid" and got["preimage"] == sent["preimage"] and got["received_msat"] == 7_000_000

        async def refused(payer: str, payee: str) -> str:
            code, out = await trio.to_thread.run_sync(_run_main, ["keysend", setup[payee]["node_id"], "1000000", "--data-dir", str(dirs[payer]), "--json"])
            assert code == 1, out
            return json.dumps(json.loads(out)["error"])

        assert "no route" in await refused("a", "c")
        assert "incorrect_or_unknown_payment_details" in await refused("a", "b")
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)


async def test_sigkill_of_the_forwarding_node_with_an_htlc_in_flight_then_restart(tmp_path: Path) -> None:
    processes: list[tuple[trio.Process, Path]] = []
    try:
        # B kills itself the moment A's revoke_and_ack (A's HTLC irrevocably committed) is on its disk
        setup = await line(tmp_path, "udp", processes, b_env={CRASH_ENV: "RevokeAndAck"})
        dirs = setup["dirs"]
        invoice = await cli("invoice", 30_000_000, "crash", "through a crashing node", "--data-dir", dirs["c"])
        result: dict[str, Any] = {}

        async def pay() -> None:
            result.update(await cli("pay", invoice["bolt11"], "--data-dir", dirs["a"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pay)
            b = next(p for p, d in processes if d == dirs["b"])
            with trio.fail_after(WAIT):
                await b.wait()
            assert b.returncode == -9
            processes.remove((b, dirs["b"]))
            (a_chan,) = await channels(dirs["a"])
            assert len(a_chan["htlcs"]) == 1  # in flight on A's side
            b, _ = await start(dirs["b"], LISTEN["tcp"], *setup["b_options"])
            processes.append((b, dirs["b"]))
            await cli("connect", setup["a"]["addresses"][0], "--data-dir", dirs["b"])
            await cli("connect", setup["c"]["addresses"][0], "--data-dir", dirs["b"])
        await check_paid(setup, result, invoice, 30_000_000)
        await wait_quiet(dirs["a"], 1)
        await wait_quiet(dirs["b"], 2)
        assert (await cli("getchaininfo", "--data-dir", dirs["a"]))["mempool"] == 0  # nothing went on chain
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)
