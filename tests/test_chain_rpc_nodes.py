"""Three ``lnpmsg node`` processes on one chain: A owns the embedded regtest
chain and serves it (``--chain-rpc-listen`` and ``--electrum-listen``), B and
C use it (``--bitcoind-rpc``), and an Electrum 4.3.4 wallet (a separate
process) uses A's Electrum server. Coins move A -> B -> C, A -> Electrum and
Electrum -> C with the ordinary commands, every wallet sees every
confirmation, and A is killed with SIGKILL while it mines: restarted on the
same ports, it still has every block the others saw, and B, C and Electrum
reconnect and catch up.
"""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.chain.bitcoind import BitcoindSource
from lnpmsg.cli import main
from lnpmsg.testing.electrum import ElectrumWallet
from lnpmsg.testing.processes import start_logged_node

pytestmark = pytest.mark.slow

#: seconds a process may take to start, a wallet to catch up (generous: shared machines)
WAIT = 60
#: seconds Electrum may take to reconnect to a restarted server: it retries
#: with a back-off of up to 10 s, and A's restart itself takes a while under load
ELECTRUM_RECONNECT_WAIT = 180


def owner_argv(data_dir: Path, rpc_listen: str, electrum_listen: str, *extra: str) -> list[str]:
    """The chain owner's ``lnpmsg node`` options: both servers."""
    return ["--chain", "regtest", "--chain-rpc-listen", rpc_listen, "--electrum-listen", electrum_listen, *extra]


def user_argv(url: str, cookie: Path) -> list[str]:
    return ["--bitcoind-rpc", url, "--bitcoind-cookie", str(cookie), "--bitcoind-poll", "0.2"]


async def start(data_dir: Path, *options: str) -> tuple[trio.Process, dict[str, Any]]:
    """A node process (its log in DATA_DIR.log, so a full pipe never blocks it) and its summary."""
    return await start_logged_node(data_dir, "--listen", "127.0.0.1:0", "--no-gossip", *options, wait=WAIT)


async def cli(*argv: object) -> Any:
    """Run ``lnpmsg ARGV --json`` as a shell would; its JSON result (asserting exit 0)."""
    args = [str(a) for a in argv] + ["--json"]
    code, out = await trio.to_thread.run_sync(_run_main, args)
    assert code == 0, (args, out)
    return json.loads(out)


def _run_main(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(args)
    return code, buffer.getvalue()


async def stop(process: trio.Process, data_dir: Path) -> None:
    await trio.to_thread.run_sync(main, ["stop", "--data-dir", str(data_dir)])
    with trio.fail_after(WAIT):
        await process.wait()


async def wait_for_height(data_dir: Path, height: int) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        while True:
            info = await cli("getchaininfo", "--data-dir", data_dir)
            if info["height"] >= height and info["wallet_height"] >= height:
                return info
            await trio.sleep(0.2)


def electrum_entry(wallet: ElectrumWallet, txid: str) -> dict[str, Any] | None:
    """The Electrum wallet's history entry for ``txid`` (None if it has none)."""
    return next((e for e in wallet.history() if e["txid"] == txid), None)


async def electrum_sees(wallet: ElectrumWallet, txid: str, height: int, tip: int, timeout: float = WAIT) -> dict[str, Any]:
    """Wait until Electrum has ``txid`` confirmed in block ``height`` (its proof
    checked) with the confirmations of a wallet that knows block ``tip``."""
    def seen() -> dict[str, Any] | None:
        entry = electrum_entry(wallet, txid)
        if entry is not None and entry["height"] == height and entry["confirmations"] == tip - height + 1:
            return entry
        return None

    return await trio.to_thread.run_sync(
        lambda: wallet.wait_for(seen, f"{txid} in block {height} with the tip at {tip}", timeout))


async def all_see(dirs: tuple[Path, ...], wallet: ElectrumWallet, mined: dict[str, Any], timeout: float = WAIT) -> None:
    """Every lnpmsg wallet and the Electrum wallet have caught up with ``mined``'s tip."""
    for d in dirs:
        assert (await wait_for_height(d, mined["height"]))["tip"] == mined["tip"]
    info = await trio.to_thread.run_sync(lambda: wallet.wait_synced(mined["height"], timeout))
    assert info["blockchain_height"] == mined["height"]


async def test_three_nodes_and_electrum_on_one_served_chain_survive_the_owner_being_killed(tmp_path):
    a_dir, b_dir, c_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    nodes = (a_dir, b_dir, c_dir)
    processes: list[trio.Process] = []
    electrum = ElectrumWallet(tmp_path / "electrum", "127.0.0.1:0")  # its server is known once A runs
    try:
        a, a_info = await start(a_dir, *owner_argv(a_dir, "127.0.0.1:0", "127.0.0.1:0"))
        processes.append(a)
        url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
        assert cookie == a_dir / "chain" / ".cookie" and cookie.stat().st_mode & 0o777 == 0o600
        electrum.server = a_info["electrum"]
        b, b_info = await start(b_dir, *user_argv(url, cookie))
        c, c_info = await start(c_dir, *user_argv(url, cookie))
        processes += [b, c]
        assert b_info["network"] == "regtest" and "through bitcoind RPC" in b_info["chain"]

        # A -> B: A's faucet funds A, A withdraws to B, B mines (forwarded to A)
        await cli("faucet", 1_000_000, "--data-dir", a_dir)
        # Electrum joins once there are blocks: with only the genesis block it fetches no
        # header (an edge case its interface.step leaves to the next block)
        await trio.to_thread.run_sync(electrum.create)
        await trio.to_thread.run_sync(electrum.start)
        await trio.to_thread.run_sync(lambda: electrum.wait_synced(timeout=WAIT))
        b_address = (await cli("newaddr", "--data-dir", b_dir))["address"]
        sent = await cli("withdraw", b_address, 400_000, "--data-dir", a_dir)
        mined = await cli("mine", "--data-dir", b_dir)
        await all_see(nodes, electrum, mined)
        b_funds = await cli("listfunds", "--data-dir", b_dir)
        assert [(o["txid"], o["amount_sat"], o["confirmations"]) for o in b_funds["outputs"]] == [(sent["txid"], 400_000, 1)]

        # B -> C, mined from C
        c_address = (await cli("newaddr", "--data-dir", c_dir))["address"]
        to_c = await cli("withdraw", c_address, 150_000, "--data-dir", b_dir)
        mined = await cli("mine", 2, "--data-dir", c_dir)
        await all_see(nodes, electrum, mined)
        c_funds = await cli("listfunds", "--data-dir", c_dir)
        assert [(o["txid"], o["amount_sat"], o["confirmations"]) for o in c_funds["outputs"]] == [(to_c["txid"], 150_000, 2)]
        b_funds = await cli("listfunds", "--data-dir", b_dir)
        assert b_funds["spendable_sat"] == 400_000 - 150_000 - to_c["fee_sat"]
        assert {o["confirmations"] for o in b_funds["outputs"]} == {2}

        # A -> Electrum: Electrum sees it waiting, then confirmed (its merkle proof checked)
        e_address = await electrum.acall("getunusedaddress")
        to_e = await cli("withdraw", e_address, 300_000, "--data-dir", a_dir)
        await trio.to_thread.run_sync(
            lambda: electrum.wait_for(lambda: electrum.call("getbalance").get("unconfirmed") == "0.003", "A's payment waiting", WAIT))
        mined = await cli("mine", "--data-dir", a_dir)
        to_e_height = mined["height"]
        await all_see(nodes, electrum, mined)
        await electrum_sees(electrum, to_e["txid"], to_e_height, mined["height"])
        assert await electrum.acall("getbalance") == {"confirmed": "0.003"}

        # Electrum -> C, mined from B; C and Electrum both see it confirmed
        c_address2 = (await cli("newaddr", "--data-dir", c_dir))["address"]
        tx = await electrum.acall("payto", destination=c_address2, amount="0.001", feerate=2)
        e_to_c = await electrum.acall("broadcast", tx=tx)
        mined = await cli("mine", "--data-dir", b_dir)
        e_to_c_height = mined["height"]
        await all_see(nodes, electrum, mined)
        await electrum_sees(electrum, e_to_c, e_to_c_height, mined["height"])
        c_funds = await cli("listfunds", "--data-dir", c_dir)
        assert sorted((o["txid"], o["amount_sat"], o["confirmations"]) for o in c_funds["outputs"]) == sorted(
            [(to_c["txid"], 150_000, 4), (e_to_c, 100_000, 1)])
        a_funds = await cli("listfunds", "--data-dir", a_dir)
        assert to_e["txid"] in {o["txid"] for o in a_funds["outputs"]}  # A's change
        seen_height = mined["height"]
        async with BitcoindSource(url, cookie_file=cookie) as rpc:
            seen = [await rpc.block_hash(h) for h in range(seen_height + 1)]
        e_balance = await electrum.acall("getbalance")
        assert Decimal("0.0019") < Decimal(e_balance["confirmed"]) < Decimal("0.002") and set(e_balance) == {"confirmed"}

        # kill -9 A while it mines; restart it on the same port
        # B mines through A, call after call, until A dies under it
        stop_mining = trio.Event()

        async def keep_mining() -> None:
            while not stop_mining.is_set():
                await trio.to_thread.run_sync(_run_main, ["mine", "3", "--data-dir", str(b_dir), "--timeout", "20"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_mining)
            async with BitcoindSource(url, cookie_file=cookie) as rpc:  # (the CLI's stdout is busy)
                with trio.fail_after(WAIT):
                    while (await rpc.tip()).height < seen_height + 30:
                        await trio.sleep(0.05)
            a.send_signal(signal.SIGKILL)
            with trio.fail_after(WAIT):
                await a.wait()
            stop_mining.set()  # the call in flight fails at once (A is gone); nothing is left pending
        port = url.rsplit(":", 1)[1]
        a, a_info = await start(a_dir, *owner_argv(a_dir, f"127.0.0.1:{port}", electrum.server))
        processes[0] = a
        assert a_info["electrum"] == electrum.server
        async with BitcoindSource(url, cookie_file=cookie) as rpc:
            tip = await rpc.tip()
            assert tip.height >= seen_height
            assert [await rpc.block_hash(h) for h in range(seen_height + 1)] == seen  # nothing lost
        mined = await cli("mine", "--data-dir", b_dir)  # B reaches the restarted A (new cookie)
        assert mined["height"] == tip.height + 1
        # Electrum reconnects by itself (same server address) and catches up
        await all_see(nodes, electrum, mined, ELECTRUM_RECONNECT_WAIT)
        await electrum_sees(electrum, to_e["txid"], to_e_height, mined["height"])
        await electrum_sees(electrum, e_to_c, e_to_c_height, mined["height"])
        assert await electrum.acall("getbalance") == e_balance
        c_funds = await cli("listfunds", "--data-dir", c_dir)
        assert sorted((o["txid"], o["confirmations"]) for o in c_funds["outputs"]) == sorted(
            [(to_c["txid"], mined["height"] - seen_height + 4), (e_to_c, mined["height"] - seen_height + 1)])
        # and coins still move: C -> A
        a_address = (await cli("newaddr", "--data-dir", a_dir))["address"]
        back = await cli("withdraw", a_address, 50_000, "--data-dir", c_dir)
        mined = await cli("mine", "--data-dir", c_dir)
        await wait_for_height(a_dir, mined["height"])
        a_funds = await cli("listfunds", "--data-dir", a_dir)
        assert any(o["txid"] == back["txid"] and o["confirmations"] == 1 for o in a_funds["outputs"])
        await trio.to_thread.run_sync(electrum.stop)
        for process, d in zip(processes[::-1], (c_dir, b_dir, a_dir)):
            await stop(process, d)
        assert not cookie.exists()  # removed at a clean stop
    finally:
        await trio.to_thread.run_sync(electrum.stop)
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
