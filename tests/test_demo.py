"""``lnpmsg demo``: two nodes, a TCP link, the embedded regtest chain and two
wallets, as a first-time user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.demo import (
    DEMO_CUSTOM_TYPE,
    DEMO_FAUCET_SAT,
    DEMO_WITHDRAW_SAT,
    run_demo,
)

#: seconds the demo process may take (it needs well under ten)
DEMO_WAIT = 60


def demo(*args):
    return subprocess.run(
        [sys.executable, "-m", "lnpmsg.cli", "demo", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=DEMO_WAIT,
    )


def test_demo_json_reports_every_step_and_cleans_up():
    result = demo("--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    assert document["ok"] is True and "error" not in document
    assert [s["step"] for s in document["steps"]] == list(range(1, 9))
    s = document["summary"]
    assert s["node_a"] != s["node_b"] and s["node_b"].endswith(s["link"])
    assert s["height"] == 103 and s["balance_b_sat"] == DEMO_WITHDRAW_SAT
    assert s["balance_a_sat"] == DEMO_FAUCET_SAT - DEMO_WITHDRAW_SAT - s["fee_sat"] and s["fee_sat"] > 0
    assert s["temporary"] is True and not Path(s["data_dir"]).exists()
    assert "Traceback" not in result.stderr


def test_demo_prints_progress_and_a_summary():
    result = demo()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for number in range(1, 9):
        assert f"[{number}/8] " in out
    assert "B received 'hello from A'" in out and f"custom message type {DEMO_CUSTOM_TYPE} delivered" in out
    assert "demo finished in " in out and f"wallet B: {DEMO_WITHDRAW_SAT} sat" in out and "(removed)" in out
    assert result.stderr == ""  # nodes log warnings only, and there are none


async def test_demo_in_a_kept_data_dir_runs_again_on_the_same_chain(tmp_path):
    lines: list[str] = []
    assert await run_demo(tmp_path, json_output=True, write=lines.append) == 0
    assert await run_demo(tmp_path, json_output=True, write=lines.append) == 0
    first, second = (json.loads(line)["summary"] for line in lines)
    assert (first["height"], second["height"]) == (103, 206)
    assert first["node_a"].split("@")[0] == second["node_a"].split("@")[0]  # the same node keys
    assert second["balance_b_sat"] == 2 * DEMO_WITHDRAW_SAT  # the same wallets, funded twice
    assert (tmp_path / "chain").is_dir() and (tmp_path / "a" / "wallet" / "seed").is_file()


async def test_demo_fails_clearly_when_its_chain_is_in_use(tmp_path):
    lines: list[str] = []
    async with EmbeddedChainSource.open(tmp_path / "chain"):
        assert await run_demo(tmp_path, json_output=True, write=lines.append) == 1
    (line,) = lines
    document = json.loads(line)
    assert document["ok"] is False and document["steps"] == []
    assert f"cannot open the chain in {tmp_path / 'chain'}" in document["error"]
    lines.clear()
    async with EmbeddedChainSource.open(tmp_path / "chain"):
        assert await run_demo(tmp_path, write=lines.append) == 1
    assert lines[-1].startswith("demo failed: cannot open the chain")
