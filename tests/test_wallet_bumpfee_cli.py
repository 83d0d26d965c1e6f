"""``lnpmsg bumpfee`` against a real ``lnpmsg node --chain regtest`` process: JSON and human output
of CPFP and RBF, the refusals as errors, the argument checks and the help."""

from __future__ import annotations

import json
import re

import pytest

from cli_in_process import cli
from lnpmsg.chain.address import address_for_script
from lnpmsg.chain.faucet import FAUCET_SCRIPT
from lnpmsg.cli import main
from lnpmsg.testing.processes import start_node_process
from test_chain_durability import mine_and_faucet, stop

#: an address that is not the node's (the faucet's)
ELSEWHERE = address_for_script(FAUCET_SCRIPT, "bcrt")


async def cli_json(capsys, *argv):
    code, out, err = await cli(capsys, *argv, "--json")
    return code, json.loads(out or err)


async def test_bumpfee_commands(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        await mine_and_faucet(capsys, d, 500_000)
        code, sent = await cli_json(capsys, "withdraw", ELSEWHERE, 100_000, "--feerate", 253, *d)
        assert code == 0

        code, bump = await cli_json(capsys, "bumpfee", sent["txid"], "--feerate", 10, *d)
        assert code == 0 and bump["method"] == "cpfp" and bump["parent_txid"] == sent["txid"]
        assert bump["parent_fee_sat"] == sent["fee_sat"] and bump["package_fee_sat"] == sent["fee_sat"] + bump["fee_sat"]
        assert bump["package_vsize"] == sent["vsize"] + bump["vsize"] and bump["package_feerate_sat_per_vb"] >= 10
        code, pool = await cli_json(capsys, "getchaininfo", *d)
        assert pool["mempool"] == 2

        # RBF of a second withdrawal, in words
        code, second = await cli_json(capsys, "withdraw", ELSEWHERE, 50_000, "--feerate", 253, *d)
        code, out, _ = await cli(capsys, "bumpfee", second["txid"], "--feerate", 5.5, "--method", "rbf", *d)
        assert code == 0 and out.startswith("sent ") and f"replacing {second['txid']} (fee {second['fee_sat']} sat)" in out
        rbf_fee = int(re.search(r"\(fee (\d+) sat, ", out).group(1))  # type: ignore[union-attr]
        code, funds = await cli_json(capsys, "listfunds", *d)
        assert second["txid"] not in {o["txid"] for o in funds["outputs"]}  # the replaced change counts no more

        # a payment to us still waiting (the embedded chain shows it): CPFP from our side
        code, paid = await cli_json(capsys, "faucet", 70_000, "--no-confirm", *d)
        code, incoming = await cli_json(capsys, "bumpfee", paid["txid"], "--feerate", 20, *d)
        assert code == 0 and incoming["parent_txid"] == paid["txid"] and incoming["package_feerate_sat_per_vb"] >= 20
        assert incoming["parent_feerate_sat_per_vb"] < 20

        # refusals: errors with the wallet's code
        code, err = await cli_json(capsys, "bumpfee", second["txid"], "--feerate", 20, "--method", "rbf", *d)
        assert code == 1 and err["error"]["data"]["code"] == "unknown"  # replaced: not the wallet's any more
        code, out, err = await cli(capsys, "bumpfee", sent["txid"], "--feerate", 1, *d)
        assert code == 1 and "spent already by unconfirmed" in err
        assert (await cli_json(capsys, "mine", *d))[0] == 0
        code, err = await cli_json(capsys, "bumpfee", bump["txid"], "--feerate", 50, *d)
        assert code == 1 and err["error"]["data"]["code"] == "confirmed" and "confirmed already" in err["error"]["message"]
        code, out, err = await cli(capsys, "bumpfee", "zz", "--feerate", 5, *d)
        assert code == 1 and "txid is 64 hex digits" in err
        code, balance = await cli_json(capsys, "getbalance", *d)
        assert balance["reserved_sat"] == 0 and balance["unconfirmed_sat"] == 0
        assert balance["confirmed_sat"] == 500_000 - 150_000 - sent["fee_sat"] - bump["fee_sat"] - rbf_fee + 70_000 - incoming["fee_sat"]
    finally:
        await stop(process)


@pytest.mark.parametrize("rate", ["0.5", "fast", "nan"])
def test_the_rate_is_checked_before_calling(capsys, tmp_path, rate):
    with pytest.raises(SystemExit) as exit_info:
        main(["bumpfee", "00" * 32, "--feerate", rate, "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "sat/vB" in capsys.readouterr().err


def test_the_help_teaches_both_methods(capsys):
    with pytest.raises(SystemExit):
        main(["bumpfee", "--help"])
    out = capsys.readouterr().out
    assert "cpfp (default)" in out and "Replace-By-Fee (BIP 125)" in out and "channel's funding" in out
