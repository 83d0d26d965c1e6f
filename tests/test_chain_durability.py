"""The chain and wallet survive crashes and damage, tried as a user would:
real ``lnpmsg node --chain regtest`` processes, ``kill -9``, the CLI."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import trio

from cli_in_process import cli
from lnpmsg.app import App
from lnpmsg.wallet.app import ChainApp
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.control_client import NodeStarting, locate
from lnpmsg.testing.processes import PROCESS_WAIT, finish_process, lnpmsg_argv, start_node_process


async def cli_json(capsys, *argv):
    code, out, err = await cli(capsys, *argv, "--json")
    return code, json.loads(out) if out else {"stderr": err}


async def mine_and_faucet(capsys, d: tuple[object, ...], amount_sat: int) -> None:
    """101 blocks on the node's regtest chain (a mature coinbase for the faucet), then ``amount_sat``
    from the faucet to the node's wallet; ``d`` is the node's ``--data-dir`` arguments."""
    assert (await cli_json(capsys, "mine", 101, *d))[0] == 0
    assert (await cli_json(capsys, "faucet", amount_sat, *d))[0] == 0


async def stop(process: trio.Process) -> str:
    process.send_signal(signal.SIGINT)
    code, stderr = await finish_process(process)
    assert code == 0, stderr
    return stderr


async def test_damaged_block_files_stop_the_start_and_reindex_rebuilds_them(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, mined = await cli_json(capsys, "mine", 120, *d)
        assert code == 0
    finally:
        await stop(process)
    blk = data_dir / "chain" / "blocks" / "blk00000.dat"
    data = bytearray(blk.read_bytes())
    for i in range(64):
        data[20_000 + i] ^= 0xFF
    blk.write_bytes(bytes(data))

    process, info = await start_node_process(data_dir, "--chain", "regtest")
    code, stderr = await finish_process(process)
    assert info is None and code == 1 and "Traceback" not in stderr
    assert "block files in" in stderr and "are damaged" in stderr and "--reindex" in stderr

    process, info = await start_node_process(data_dir, "--chain", "regtest", "--reindex")
    try:
        assert info is not None
        code, chain = await cli_json(capsys, "getchaininfo", *d)
        assert code == 0 and chain["height"] == 120 and chain["tip"] == mined["tip"]
    finally:
        stderr = await stop(process)
    assert "rebuilding the kernel's blocks and chainstate" in stderr


async def test_unconfirmed_change_pending_balance_and_a_kill_9_before_the_block(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        # a faucet call that cannot succeed fails before it mines anything
        code, out, err = await cli(capsys, "faucet", 20_000 * 100_000_000, *d)
        assert code == 1 and "the faucet cannot raise" in err and "nothing was mined" in err
        code, info = await cli_json(capsys, "getchaininfo", *d)
        assert info["height"] == 0
        await mine_and_faucet(capsys, d, 500_000)
        code, out, _ = await cli(capsys, "newaddr", *d)
        target = out.strip()
        code, first = await cli_json(capsys, "withdraw", target, 100_000, "--feerate", 1000, *d)
        assert code == 0
        # a second withdrawal before any block spends the first one's change
        code, second = await cli_json(capsys, "withdraw", target, 150_000, "--feerate", 1000, *d)
        assert code == 0, second
        code, info = await cli_json(capsys, "getchaininfo", *d)
        # both payments went to our own address: all of it is unconfirmed, pending
        pending = 500_000 - first["fee_sat"] - second["fee_sat"]
        assert info["mempool"] == 2 and info["balance_sat"] == 0 and info["pending_sat"] == pending
        code, out, _ = await cli(capsys, "getchaininfo", *d)
        assert f"wallet:   0 sat spendable, {pending} sat unconfirmed change" in out
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["unconfirmed_sat"] == pending and balance["reserved_sat"] == 0
        assert balance["spendable_sat"] == balance["total_sat"] == pending
        code, funds = await cli_json(capsys, "listfunds", *d)
        # the faucet's coin and the first change are on their way (reserved by our own withdrawals)
        listed = [(o["status"], o["reserved_by"]) for o in funds["outputs"]]
        assert listed[0] == ("confirmed", first["txid"]) and ("unconfirmed", second["txid"]) in listed
        assert funds["total_sat"] == funds["spendable_sat"] == pending
    finally:
        process.kill()  # kill -9: no clean close of anything
        await process.wait()

    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, info = await cli_json(capsys, "getchaininfo", *d)
        assert info["mempool"] == 2 and info["pending_sat"] == pending
        assert (await cli_json(capsys, "mine", *d))[0] == 0
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["confirmed_sat"] == pending and balance["unconfirmed_sat"] == 0
    finally:
        await stop(process)


async def test_a_reservation_left_by_a_crash_is_resolved_at_start_or_by_releasecoins(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        await mine_and_faucet(capsys, d, 300_000)
        code, out, _ = await cli(capsys, "newaddr", *d)
        code, sent = await cli_json(capsys, "withdraw", out.strip(), 100_000, "--feerate", 1000, *d)
        assert code == 0
    finally:
        process.kill()
        await process.wait()
    # the crash also garbled the mempool file (as if the withdrawal never left)
    (data_dir / "chain" / "mempool.dat").write_bytes(b"\x00garbage" * 100)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, info = await cli_json(capsys, "getchaininfo", *d)
        assert info["mempool"] == 1  # the wallet broadcast its held withdrawal again
        assert (await cli_json(capsys, "mine", *d))[0] == 0
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["confirmed_sat"] == 300_000 - sent["fee_sat"] and balance["reserved_sat"] == 0
        code, out, _ = await cli(capsys, "withdraw", out.strip(), "all", "--feerate", 1000, *d)
        assert code == 0
    finally:
        process.kill()
        code, stderr = await finish_process(process)
    assert "mempool.dat was damaged: moved it to" in stderr and "mempool.dat.corrupt-1" in stderr
    assert f"wallet: broadcast unconfirmed transaction {sent['txid']} again" in stderr

    # the same crash with a transaction the wallet only holds (a channel funding, not its to send)
    (data_dir / "chain" / "mempool.dat").unlink()
    state_path = data_dir / "wallet" / "wallet.json"
    state = json.loads(state_path.read_text())
    ((txid, held),) = state["held"].items()
    held["broadcast"] = False
    state_path.write_text(json.dumps(state))
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        assert (await cli_json(capsys, "mine", *d))[0] == 0
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["spendable_sat"] == 0 and balance["reserved_sat"] > 0  # held, as the finding saw
        code, out, _ = await cli(capsys, "listfunds", *d)
        assert f"reserved by {txid}" in out
        code, out, err = await cli(capsys, "releasecoins", "00" * 32, *d)
        assert code == 1 and "no coins are reserved for" in err
        code, out, err = await cli(capsys, "releasecoins", "nothex", *d)
        assert code == 1 and "txid is 64 hex digits" in err
        code, released = await cli_json(capsys, "releasecoins", txid, *d)
        assert code == 0 and {c["reserved_by"] for c in released["released"]} == {txid} and len(released["released"]) == 2
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["reserved_sat"] == 0 and balance["spendable_sat"] == balance["total_sat"] > 0
        code, released = await cli_json(capsys, "releasecoins", "--all", *d)
        assert code == 0 and released == {"released": []}
    finally:
        await stop(process)


async def test_stop_returns_once_the_process_is_gone_and_a_fresh_start_is_waited_for(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process = await trio.lowlevel.open_process(
        lnpmsg_argv("node", *d, "--listen", "127.0.0.1:0", "--chain", "regtest"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # called the moment the process exists: --wait waits for the node, then for its start-up
        code, info = await cli_json(capsys, "getchaininfo", "--wait", "--timeout", 3 * PROCESS_WAIT, *d)
        assert code == 0 and info["height"] == 0
        assert (await cli_json(capsys, "mine", 150, *d))[0] == 0
        code, out, _ = await cli(capsys, "stop", *d)
        assert code == 0 and out == "node stopped\n"
        assert process.poll() == 0  # gone (the chain flushed), not merely told to stop
    finally:
        if process.poll() is None:
            process.kill()
        code, stderr = await finish_process(process)
    assert "Traceback" not in stderr
    code, _, err = await cli(capsys, "getchaininfo", *d)
    assert code == 3 and "no node is running" in err and "--wait" in err


class _SlowStart(App):
    """An app whose start waits for the test: the node is starting meanwhile."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.go = trio.Event()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.go.wait()
        await super().run(task_status=task_status)


async def test_a_node_that_is_starting_is_waited_for(capsys, tmp_path):
    node = Node(NodeKey.generate(), NodeConfig(listen=[]))
    slow = node.mount(_SlowStart())
    node.mount(ControlServer(tmp_path)).reserve()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.run)
        with pytest.raises(NodeStarting, match="is starting"):
            locate(tmp_path)
        done = trio.Event()
        result = {}

        async def call() -> None:
            result["call"] = await cli(capsys, "getinfo", "--data-dir", tmp_path)
            done.set()

        nursery.start_soon(call)
        await trio.sleep(0.5)
        assert not done.is_set()  # waiting, not failing
        slow.go.set()
        with trio.fail_after(PROCESS_WAIT):
            await done.wait()
        code, out, err = result["call"]
        assert code == 0 and node.node_id.hex() in out
        assert f"the node at {tmp_path} is starting: waiting for it" in err
        node.stop()


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("chain.releasecoins", {}, "give exactly one of txid, outpoint or all=true"),
        ("chain.releasecoins", {"txid": "00" * 32, "all": True}, "give exactly one of"),
        ("chain.releasecoins", {"all": "yes"}, "'all' must be bool"),
        ("chain.releasecoins", {"outpoint": "nothing"}, "outpoint is TXID:VOUT"),
        ("chain.releasecoins", {"outpoint": "00" * 32 + ":x"}, "outpoint is TXID:VOUT"),
        ("chain.releasecoins", {"txid": "zz"}, "txid is 64 hex digits"),
        ("chain.getbalance", {"extra": 1}, "extra"),
        ("chain.faucet", {"amount_sat": True}, "amount_sat"),
        ("chain.faucet", {"amount_sat": 10**17}, "out of range"),
    ],
)
async def test_bad_params_of_the_wallet_calls_are_refused_and_change_nothing(capsys, tmp_path, method, params, message):
    node = Node(NodeKey.generate(), NodeConfig(listen=[], network="regtest"))
    app = node.mount(ChainApp(tmp_path / "wallet", chain_dir=tmp_path / "chain"))
    node.mount(ControlServer(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        tip = await app.source.tip()
        code, failure = await cli_json(capsys, "call", method, json.dumps(params), "--data-dir", tmp_path)
        assert code == 1 and failure["error"]["code"] == -32602, failure
        assert message in failure["error"]["message"]
        assert await app.source.tip() == tip and app.wallet.reserved() == {}
        node.stop()


def test_reindex_needs_the_embedded_chain(tmp_path):
    result = subprocess.run(
        lnpmsg_argv("node", "--data-dir", tmp_path, "--reindex"),
        check=False,
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT,
    )
    assert result.returncode == 2 and "--reindex rebuilds the embedded chain: it needs --chain regtest" in result.stderr
