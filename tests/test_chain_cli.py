"""The chain and wallet commands against a real ``lnpmsg node --chain regtest``
process (the CLI runs in a worker thread, exactly as ``main(argv)`` runs
from a shell)."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import trio

from cli_in_process import cli
from lnpmsg.app import AppError
from lnpmsg.bitcoin.tx import Tx, TxOut
from lnpmsg.wallet.app import ChainApp, ChainTip
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.cli import main
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.control import ControlServer
from lnpmsg.testing.processes import (
    PROCESS_WAIT,
    finish_process,
    lnpmsg_argv,
    start_node_process,
)


#: seconds a node process may take to start or stop
async def cli_json(capsys, *argv):
    code, out, _ = await cli(capsys, *argv, "--json")
    return code, json.loads(out)


async def test_chain_and_wallet_commands_against_a_node_process(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, info = await start_node_process(data_dir, "--chain", "regtest")
    try:
        assert info["network"] == "regtest" and info["chain"].startswith("embedded regtest in ")
        assert (data_dir / "chain").is_dir() and (data_dir / "wallet" / "seed").is_file()
        code, out, _ = await cli(capsys, "getchaininfo", *d)
        assert code == 0 and "network:  regtest (embedded)" in out and "height:   0\n" in out
        assert "wallet:   0 sat spendable" in out
        code, result = await cli_json(capsys, "mine", 101, *d)
        assert code == 0 and len(result["blocks"]) == 101 and result["height"] == 101
        assert result["tip"] == result["blocks"][-1]
        code, out, _ = await cli(capsys, "mine", *d)
        assert code == 0 and out.startswith("mined 1 block(s): height 102, tip ")

        # faucet: to our own wallet by default, confirmed by a block
        code, out, _ = await cli(capsys, "faucet", 200_000, *d)
        assert code == 0 and out.startswith("faucet paid 200000 sat to bcrt1q") and "confirmed at height 103" in out
        code, funds = await cli_json(capsys, "listfunds", *d)
        assert code == 0 and funds["spendable_sat"] == funds["total_sat"] == 200_000
        (coin,) = funds["outputs"]
        assert coin["confirmations"] == 1 and coin["spendable"] and not coin["coinbase"]
        code, out, _ = await cli(capsys, "listfunds", *d)
        assert code == 0 and f"{coin['outpoint']}        200000 sat  {coin['address']}  1 conf" in out
        assert out.endswith("total: 200000 sat, spendable: 200000 sat\n")

        # a second address of the same wallet: payments to it come back as coins
        code, out, _ = await cli(capsys, "newaddr", *d)
        own = out.strip()
        assert code == 0 and own.startswith("bcrt1q") and own != coin["address"]
        code, result = await cli_json(capsys, "faucet", 50_000, "--address", own, "--no-confirm", *d)
        assert code == 0 and result["confirmed"] is False and result["height"] is None
        code, info_json = await cli_json(capsys, "getchaininfo", *d)
        assert info_json["mempool"] == 1 and info_json["balance_sat"] == 200_000

        code, sent = await cli_json(capsys, "withdraw", own, 30_000, "--feerate", 1000, *d)
        assert code == 0 and sent["amount_sat"] == 30_000 and sent["address"] == own
        # 1000 sat/kw on a 1-input, 2-output P2WPKH spend (~141 vB = ~561 weight units)
        assert 500 <= sent["fee_sat"] <= 600
        code, out, _ = await cli(capsys, "mine", *d)
        assert code == 0
        code, funds = await cli_json(capsys, "listfunds", *d)
        amounts = sorted(o["amount_sat"] for o in funds["outputs"])
        assert amounts == sorted([50_000, 30_000, 200_000 - 30_000 - sent["fee_sat"]])
        assert funds["spendable_sat"] == 250_000 - sent["fee_sat"]

        # insufficient funds: a clear error with both amounts, exit status 1
        code, out, err = await cli(capsys, "withdraw", own, 10_000_000, *d)
        assert code == 1 and out == ""
        assert "error: chain.withdraw: insufficient funds: need 1000" in err and f"{funds['spendable_sat']} sat spendable" in err
        code, failure = await cli_json(capsys, "withdraw", own, 10_000_000, *d)
        assert code == 1 and failure["error"]["code"] == -32000
        data = failure["error"]["data"]
        assert data["error"] == "InsufficientFunds" and data["available_sat"] == funds["spendable_sat"]
        assert data["needed_sat"] > 10_000_000

        # broadcast: a rebroadcast is fine; a double spend is refused with the consensus reason
        code, result = await cli_json(capsys, "call", "chain.broadcast", json.dumps({"tx_hex": sent["tx_hex"]}), *d)
        assert code == 0 and result == {"txid": sent["txid"]}
        tx = Tx.parse(bytes.fromhex(sent["tx_hex"]))
        first = tx.outputs[0]
        double = Tx(tx.version, tx.inputs, (TxOut(first.amount_sat - 100, first.script_pubkey), *tx.outputs[1:]), tx.locktime)
        code, failure = await cli_json(capsys, "call", "chain.broadcast", json.dumps({"tx_hex": double.raw.hex()}), *d)
        assert code == 1 and failure["error"]["data"] == {"error": "ChainError", "code": "bad-txns-inputs-missingorspent"}
        assert "bad-txns-inputs-missingorspent" in failure["error"]["message"]
        code, failure = await cli_json(capsys, "call", "chain.broadcast", json.dumps({"tx_hex": sent["tx_hex"][:-2]}), *d)
        assert code == 1 and failure["error"]["data"]["code"] == "malformed"

        # bad input: clear errors, the node carries on
        code, out, err = await cli(capsys, "withdraw", "bcrt1qnotanaddress", 1000, *d)
        assert code == 1 and "bad address" in err
        code, out, err = await cli(capsys, "withdraw", own, 1000, "--feerate", 100, *d)
        assert code == 1 and "below the relay floor 253" in err
        code, out, err = await cli(capsys, "mine", 0, *d)
        assert code == 1 and "blocks must be 1..1000" in err
        code, failure = await cli_json(capsys, "faucet", 1000, "--address", "tb1qwrongnetwork", *d)
        assert code == 1 and failure["error"]["code"] == -32602

        # everything goes: "all" empties the wallet
        code, out, _ = await cli(capsys, "withdraw", own, "all", *d)
        assert code == 0 and out.startswith("sent ") and f"to {own} (fee " in out
        await cli(capsys, "mine", *d)
        code, info_json = await cli_json(capsys, "getchaininfo", *d)
        height, balance = info_json["height"], info_json["balance_sat"]
        assert height == 105 and info_json["wallet_height"] == 105 and info_json["mempool"] == 0
        code, funds = await cli_json(capsys, "listfunds", *d)
        assert [o["address"] for o in funds["outputs"]] == [own] and balance == funds["spendable_sat"] > 0

        code, out, _ = await cli(capsys, "stop", *d)
        assert code == 0 and out == "node stopped\n"
    except BaseException:
        process.send_signal(signal.SIGINT)
        raise
    finally:
        code, stderr = await finish_process(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr

    # a restart finds the same chain and wallet
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, info_json = await cli_json(capsys, "getchaininfo", *d)
        assert (info_json["height"], info_json["balance_sat"]) == (height, balance)
    finally:
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 0, stderr


async def test_a_second_node_on_the_same_data_dir_is_refused(tmp_path):
    data_dir = tmp_path / "node"
    async with EmbeddedChainSource.open(data_dir / "chain"):
        process, info = await start_node_process(data_dir, "--chain", "regtest")
        code, stderr = await finish_process(process)
    assert info is None and code == 1
    assert "cannot start: cannot open the chain and wallet" in stderr and "Traceback" not in stderr


def test_chain_and_network_must_agree(tmp_path):
    result = subprocess.run(
        lnpmsg_argv("node", "--data-dir", tmp_path, "--chain", "regtest", "--network", "bitcoin"),
        check=False,
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT,
    )
    assert result.returncode == 2 and "--chain regtest needs --network regtest" in result.stderr


async def test_without_a_chain_or_a_node(capsys, tmp_path):
    code, _, err = await cli(capsys, "getchaininfo", "--data-dir", tmp_path)
    assert code == 3 and f"error: no node is running at {tmp_path}" in err
    # a node started without --chain: the commands say how to get one
    node = Node(NodeKey.generate(), NodeConfig(listen=[]))
    node.mount(ControlServer(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        code, _, err = await cli(capsys, "mine", 5, "--data-dir", tmp_path)
        assert code == 1 and "runs without a chain: start it with 'lnpmsg node --chain regtest'" in err
        code, failure = await cli_json(capsys, "listfunds", "--data-dir", tmp_path)
        assert code == 1 and failure["error"]["code"] == -32601
        node.stop()


@pytest.mark.parametrize("amount", ["0", "-5", "1.5", "some"])
def test_withdraw_amount_is_checked_before_calling(capsys, tmp_path, amount):
    with pytest.raises(SystemExit) as exc:
        main(["withdraw", "bcrt1qq", amount, "--data-dir", str(tmp_path)])
    assert exc.value.code == 2 and "AMOUNT|all" in capsys.readouterr().err


async def test_the_app_follows_new_tips_and_publishes_them(tmp_path):
    node = Node(NodeKey.generate(), NodeConfig(listen=[], network="regtest"))
    app = node.mount(ChainApp(tmp_path / "wallet", chain_dir=tmp_path / "chain"))
    with pytest.raises(AppError):
        app.wallet  # noqa: B018 - not running yet
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with node.events.subscribe(lambda e: isinstance(e, ChainTip)) as tips:
            address = (await app.newaddr())["address"]
            # mined by someone else (straight on the chain): the wallet still sees its coinbase
            await app.source.mine(3, address)
            with trio.fail_after(10):
                async for tip in tips:
                    if tip.height == 3:
                        break
            assert tip.block_hash == (await app.getchaininfo())["tip"]
            funds = await app.listfunds()
            assert [o["coinbase"] and not o["spendable"] for o in funds["outputs"]] == [True] * 3
            assert funds["spendable_sat"] == 0 and funds["total_sat"] == 3 * 50 * 100_000_000
        node.stop()
    with pytest.raises(AppError, match="a chain_dir .* or a source"):
        ChainApp(tmp_path / "w")
