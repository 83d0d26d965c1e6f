"""The attack script, in the short version CI runs (run it longer by hand: see its --help)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_attack_script_short_run_finds_nothing_and_legitimate_peers_get_in():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "attack.py"), "all", "--duration", "8", "--json", "--seed", "1"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["fuzz"]["findings"] == []
    assert len(report["fuzz"]["examples"]) >= 14
    for flood in ("tcp", "zmq", "quic"):
        assert report["admission"][flood]["connect_seconds"]["count"] >= 3, report["admission"][flood]
    assert report["admission"]["quic"]["listener"]["retry"] > 0
