"""Payments across five ``lnpmsg node`` processes on one chain, driven by the CLI as a user would.

A owns the embedded regtest chain; B, C, D and E use it over ``--bitcoind-rpc``.
Every channel is public (``fundchannel --announce``, 6 confirmations) and each
pair of nodes talks over another transport::

        TCP        UDP        ZeroMQ       Tor
    A ------- B ------- C ---------- D ------- E (onion-only)
    \\__________________ UDP ________/ (small)

so A-B-C-D-E is a line of 4 hops (a payment over it crosses every transport)
and A-{B,D}-C is a diamond. E is onion-only (its own tor in the session's
private Tor network on 127.0.0.1); D runs a tor too and dials E's onion.
Routes come from gossip only: each payer waits until ``lnpmsg gossip
listchannels`` shows every channel with both policies, and the invoices
carry no route hints.

Payments over 1, 2, 3 and 4 hops and a multi-part payment over the diamond
that neither path carries alone; failures, each reported by ``lnpmsg pay``
(exit 1, a JSON error naming the hop): no route, a hop without the
liquidity, an invoice the payee deleted (unknown payment hash), an expired
invoice, and a hop that raised its ``cltv_expiry_delta`` just before (D runs
with ``--dev-policy-grace 0``, so its new policy holds at once instead of
after BOLT 7's 10 minutes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.testing.processes import start_logged_node
from lnpmsg.testing.tornet import PrivateTorNetwork

from tests.test_channels_nodes import WAIT, _run_main, cli, owner_argv, stop, user_argv

pytestmark = pytest.mark.slow

#: seconds for a tor to bootstrap and publish its onion service in the private network (loaded machines)
TOR_TIMEOUT = 120
#: (funder, fundee, transport the funder dials, capacity sat, push msat)
CHANNELS = (
    ("a", "b", "tcp", 1_500_000, 0),
    ("b", "c", "udp", 1_000_000, 0),
    ("c", "d", "zmq", 1_000_000, 500_000_000),
    ("d", "e", "tor", 1_000_000, 0),
    ("a", "d", "udp", 300_000, 0),
)
#: temporary_channel_failure, incorrect_cltv_expiry (BOLT 4)
TEMPORARY_CHANNEL_FAILURE = 0x1007
INCORRECT_CLTV_EXPIRY = 0x100D


async def start(data_dir: Path, *options: str, wait: float = WAIT) -> tuple[trio.Process, dict[str, Any]]:
    """A node with gossip (flushed every second) and its summary; its log in DATA_DIR.log."""
    return await start_logged_node(data_dir, "--dev-fast-gossip", *options, wait=wait)


def address(info: dict[str, Any], kind: str) -> str:
    """The node's address on one transport, from its start-up summary."""
    for a in info["addresses"]:
        host = a.split("@", 1)[1]
        if {"udp": a.startswith("udp://"), "zmq": a.startswith("zmq+tcp://"), "tor": ".onion" in host,
                "tcp": "://" not in a and ".onion" not in host}[kind]:  # fmt: skip
            return a  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} address in {info['addresses']}")


async def pay_fails(payer: Path, bolt11: str) -> dict[str, Any]:
    """``lnpmsg pay`` that must fail: exit 1 and its JSON error."""
    args = ["pay", bolt11, "--data-dir", str(payer), "--json"]
    code, out = await trio.to_thread.run_sync(_run_main, args)
    assert code == 1, out
    return json.loads(out)["error"]  # type: ignore[no-any-return]


async def invoice(payee: Path, amount_msat: int, label: str, *extra: object) -> dict[str, Any]:
    made = await cli("invoice", amount_msat, label, f"five nodes: {label}", *extra, "--data-dir", payee)
    decoded = await cli("decodepay", made["bolt11"])
    assert decoded["route_hints"] == []  # public channels: the payer finds them in its graph
    return made  # type: ignore[no-any-return]


async def wait_for(what: str, check: Any, timeout: float = WAIT) -> Any:
    with trio.fail_after(timeout):
        while True:
            got = await check()
            if got:
                return got
            await trio.sleep(0.3)


async def setup(tmp_path: Path, tor: PrivateTorNetwork, processes: list[tuple[trio.Process, Path]]) -> dict[str, Any]:
    dirs = {x: tmp_path / x for x in "abcde"}
    tor_options = ["--tor-timeout", str(TOR_TIMEOUT)] + [o for line in tor.client_torrc_lines() for o in ("--tor-option", line)]
    a, a_info = await start(dirs["a"], "--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0", *owner_argv("127.0.0.1:0"))
    processes.append((a, dirs["a"]))
    rpc = user_argv(a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"]))
    options = {
        "b": ["--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0"],
        "c": ["--listen", "udp://127.0.0.1:0", "--listen", "zmq+tcp://127.0.0.1:0"],
        "d": ["--listen", "zmq+tcp://127.0.0.1:0", "--listen", "udp://127.0.0.1:0", "--tor", "--no-onion-service", *tor_options,
              "--dev-policy-grace", "0"],
        "e": ["--onion-only", *tor_options],
    }
    info = {"a": a_info}

    async def one(name: str) -> None:
        process, info[name] = await start(dirs[name], *options[name], *rpc, wait=TOR_TIMEOUT * 2)
        processes.append((process, dirs[name]))

    async with trio.open_nursery() as nursery:
        for name in "bcde":
            nursery.start_soon(one, name)
    assert info["e"]["addresses"] == [address(info["e"], "tor")]  # onion-only: nothing else

    funders = [funder for funder, *_ in CHANNELS]  # one confirmed coin per channel (change waits for a block)
    for name in funders:
        to = [] if name == "a" else ["--address", (await cli("newaddr", "--data-dir", dirs[name]))["address"]]
        await cli("faucet", 2_000_000, *to, "--data-dir", dirs["a"])
    await cli("mine", 1, "--data-dir", dirs["a"])
    for name in set(funders):
        await wait_for(f"{name}'s coins", lambda n=name: _confirmed(dirs[n], 2_000_000 * funders.count(n)))
    for funder, fundee, kind, capacity, push in CHANNELS:
        with trio.fail_after(TOR_TIMEOUT * 2):
            await cli("connect", address(info[fundee], kind), "--data-dir", dirs[funder])
        await cli("fundchannel", info[fundee]["node_id"], capacity, "--push-msat", push, "--announce", "--data-dir", dirs[funder])
    await cli("mine", 6, "--data-dir", dirs["a"])
    scids = {}
    for funder, fundee, _kind, capacity, _push in CHANNELS:
        chan = await wait_for(f"{funder}-{fundee} normal", lambda f=funder, p=info[fundee]["node_id"]: _normal(dirs[f], p))
        assert chan["capacity_sat"] == capacity
        scids[funder + fundee] = chan["short_channel_id"]
    for name in "abcde":  # every channel with both policies in every node's graph, from gossip
        await wait_for(f"{name}'s graph", lambda n=name: _graph_complete(dirs[n], set(scids.values())), TOR_TIMEOUT)
    return {"dirs": dirs, "info": info, "ids": {n: i["node_id"] for n, i in info.items()}, "scids": scids}


async def _confirmed(data_dir: Path, sat: int) -> bool:
    return (await cli("getbalance", "--data-dir", data_dir))["confirmed_sat"] >= sat  # type: ignore[no-any-return]


async def _normal(data_dir: Path, peer: str) -> dict[str, Any] | None:
    for c in (await cli("listchannels", "--data-dir", data_dir))["channels"]:
        if c["peer_id"] == peer and c["state"] == "normal" and c["connected"] and c["short_channel_id"]:
            return c  # type: ignore[no-any-return]
    return None


async def _graph_complete(data_dir: Path, scids: set[str]) -> bool:
    channels = (await cli("gossip", "listchannels", "--data-dir", data_dir))["channels"]
    ready = {c["short_channel_id"] for c in channels if all(p is not None and p["active"] for p in c["policies"])}
    return scids <= ready


async def _policy_seen(data_dir: Path, scid: str, node_id: str, cltv_delta: int) -> bool:
    (channel,) = [c for c in (await cli("gossip", "listchannels", "--data-dir", data_dir))["channels"] if c["short_channel_id"] == scid]
    policy = channel["policies"][0 if channel["node_id_1"] == node_id else 1]
    return policy is not None and policy["cltv_expiry_delta"] == cltv_delta


def hops(paid: dict[str, Any]) -> list[list[str]]:
    return [[h["node_id"] for h in route] for route in paid["routes"]]


async def test_payments_over_five_nodes_and_four_transports(private_tor_network: PrivateTorNetwork, tmp_path: Path) -> None:
    processes: list[tuple[trio.Process, Path]] = []
    try:
        s = await setup(tmp_path, private_tor_network, processes)
        dirs, ids, scids = s["dirs"], s["ids"], s["scids"]
        a, b, c, d, e = (ids[x] for x in "abcde")

        # 1 hop: A -> B over TCP (B is left below its reserve on A-B: it can send nothing back there)
        made = await invoice(dirs["b"], 10_000_000, "one-hop")
        paid = await cli("pay", made["bolt11"], "--data-dir", dirs["a"])
        assert hops(paid) == [[b]] and paid["fee_msat"] == 0 and paid["parts"] == 1
        # a hop without the liquidity: B -> A. B's own side of A-B is below its reserve, so the only path is
        # B-C-D-A, and D has nothing on its side of A-D (the graph shows the channel's capacity, not its balance)
        made = await invoice(dirs["a"], 100_000_000, "no-liquidity")
        error = await pay_fails(dirs["b"], made["bolt11"])
        attempts = [x for x in error["data"]["attempts"] if x.get("failure")]
        assert attempts and "temporary_channel_failure" in error["message"]
        for x in attempts:  # every part, however split, failed at D for A-D
            assert (x["code"], x["erring_node"], x["erring_channel"]) == (TEMPORARY_CHANNEL_FAILURE, d, scids["ad"])
            assert [h["node_id"] for h in x["route"]] == [c, d, a]
        assert (error["data"]["erring_node"], error["data"]["erring_channel"]) == (d, scids["ad"])
        # 3 hops: B -> E (B still cannot send over A-B) over UDP, ZeroMQ and Tor
        made = await invoice(dirs["e"], 100_000_000, "three-hops")
        paid = await cli("pay", made["bolt11"], "--data-dir", dirs["b"])
        assert hops(paid) == [[c, d, e]]
        # 2 hops: A -> C, too big for the small A-D channel: A-B-C (TCP, UDP)
        made = await invoice(dirs["c"], 350_000_000, "two-hops")
        paid = await cli("pay", made["bolt11"], "--data-dir", dirs["a"])
        assert hops(paid) == [[b, c]] and paid["fee_msat"] > 0
        # 4 hops: A -> E over every transport (the A-D shortcut is too small)
        made = await invoice(dirs["e"], 350_000_000, "four-hops")
        paid = await cli("pay", made["bolt11"], "--data-dir", dirs["a"])
        assert hops(paid) == [[b, c, d, e]] and paid["parts"] == 1
        (received,) = (await cli("listinvoices", "--label", "four-hops", "--data-dir", dirs["e"]))["invoices"]
        assert received["status"] == "paid" and received["received_msat"] == 350_000_000
        for name in "bcd":
            fwd = (await cli("listforwards", "--data-dir", dirs[name]))["forwards"]
            assert any(f["status"] == "settled" and f["payment_hash"] == made["payment_hash"] for f in fwd)

        # failures, each named by pay: no route (more than any path holds)
        made = await invoice(dirs["e"], 5_000_000_000, "too-big")
        error = await pay_fails(dirs["a"], made["bolt11"])
        assert error["data"]["error"] == "NoRoute" and "no route" in error["message"] and not error["data"]["attempts"]
        # an invoice the payee deleted: unknown payment hash, from the payee (the last hop)
        made = await invoice(dirs["c"], 5_000_000, "deleted")
        await cli("delinvoice", "deleted", "--data-dir", dirs["c"])
        error = await pay_fails(dirs["a"], made["bolt11"])
        assert "incorrect_or_unknown_payment_details" in error["message"] and error["data"]["erring_node"] == c
        # an expired invoice: the payer refuses it before sending anything
        made = await invoice(dirs["b"], 5_000_000, "expired", "--expiry", 1)
        await trio.sleep(2.5)
        error = await pay_fails(dirs["a"], made["bolt11"])
        assert error["data"]["code"] == "expired" and "expired" in error["message"]
        assert (await cli("listinvoices", "--label", "expired", "--data-dir", dirs["b"]))["invoices"][0]["status"] == "expired"

        # CLTV too close: D (every path to E ends on D-E; with --dev-policy-grace 0 a new policy holds at once) asks
        # a larger cltv_expiry_delta twice in a row. Its second channel_update waits for BOLT 7's rate limit, so A
        # pays with an older delta: D refuses it with incorrect_cltv_expiry, which pay reports. Once the update
        # reaches A's graph, paying the same invoice again uses D's delta.
        await cli("setchannelfee", scids["de"], "--cltv-delta", 100, "--data-dir", dirs["d"])
        await cli("setchannelfee", scids["de"], "--cltv-delta", 144, "--data-dir", dirs["d"])
        made = await invoice(dirs["e"], 20_000_000, "cltv")
        code, out = await trio.to_thread.run_sync(_run_main, ["pay", made["bolt11"], "--data-dir", str(dirs["a"]), "--json"])
        if code == 1:  # (A's graph had not heard of 144 yet: the usual case)
            error = json.loads(out)["error"]
            assert "incorrect_cltv_expiry" in error["message"] and error["data"]["code"] == INCORRECT_CLTV_EXPIRY
            assert (error["data"]["erring_node"], error["data"]["erring_channel"]) == (d, scids["de"])
            await wait_for("D's delta at A", lambda: _policy_seen(dirs["a"], scids["de"], d, 144))
            paid = await cli("pay", made["bolt11"], "--data-dir", dirs["a"])
        else:  # (the update was faster)
            assert code == 0, out
            paid = json.loads(out)
        (route,) = paid["routes"]
        (at_d,) = [h for h in route if h["node_id"] == d]
        assert paid["status"] == "complete" and at_d["cltv_expiry"] - at_d["outgoing_cltv_value"] == 144

        # multi-part over the diamond A-{B,D}-C: neither path carries 400,000 sat alone
        made = await invoice(dirs["c"], 400_000_000, "mpp")
        paid = await cli("pay", made["bolt11"], "--data-dir", dirs["a"])
        assert paid["parts"] >= 2 and {r[0] for r in hops(paid)} == {b, d} and all(r[-1] == c for r in hops(paid))
        assert sum(route[-1]["amt_to_forward"] for route in paid["routes"]) == 400_000_000
        (received,) = (await cli("listinvoices", "--label", "mpp", "--data-dir", dirs["c"]))["invoices"]
        assert received["status"] == "paid" and received["received_msat"] == 400_000_000
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)
