"""lnprototest, Core Lightning's conformance suite, drives a real ``lnpmsg
node`` process through :mod:`lnpmsg.testing.lnprototest_runner`: the
scripted BOLT 1 / BOLT 2 / BOLT 7 / chain tests in ``conformance/lnprototest`` run
with lnprototest's own events, in lnprototest's own venv (its pins clash
with ours: :mod:`lnpmsg.testing.lnprototest_env`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lnpmsg.testing.lnprototest_env import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "conformance" / "lnprototest"
#: seconds the whole suite may take (each test starts a node and drives it
#: through CLI processes: slow on a loaded machine, never asserted)
SUITE_TIMEOUT = 1800


def _suite(python: Path, *args: str, rootdir: Path = SUITE) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LNPMSG_PYTHON=sys.executable)
    return subprocess.run(
        [str(python), "-m", "pytest", "-c", str(SUITE / "pytest.ini"), "--rootdir", str(rootdir), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def lnprototest_python() -> Path:
    return ensure_venv()


@pytest.mark.slow
def test_the_lnprototest_venv_has_lnprototest_and_its_own_pins(lnprototest_python: Path) -> None:
    done = subprocess.run(
        [str(lnprototest_python), "-c", "import importlib.metadata as m; print(m.version('lnprototest'), m.version('pyln-proto'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    lnprototest_version, pyln_version = done.stdout.split()
    assert lnprototest_version == "0.0.7"
    assert int(pyln_version.split(".")[0]) < 24  # why it cannot share lnpmsg's venv


@pytest.mark.slow
def test_lnprototest_drives_the_node_through_bolt1_bolt2_bolt7_and_the_chain(lnprototest_python: Path) -> None:
    expected = sum(len(re.findall(r"^def test_", path.read_text(), re.M)) for path in SUITE.glob("test_*.py"))
    assert expected >= 24
    done = _suite(lnprototest_python, "-q", str(SUITE))
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert re.search(rf"\b{expected} passed\b", done.stdout), report


@pytest.mark.slow
def test_a_spec_violation_fails_the_suite(lnprototest_python: Path, tmp_path: Path) -> None:
    # the same machinery must fail when the node does not do what a script expects:
    # here a script that wants a pong of the wrong length
    script = tmp_path / "test_wrong.py"
    script.write_text(
        "from lnprototest import Connect, ExpectMsg, Msg\n"
        "def test_wrong_pong(runner):\n"
        "    runner.run([Connect(connprivkey='02'), ExpectMsg('init'), Msg('init', globalfeatures='', features=''),\n"
        "                Msg('ping', num_pong_bytes=2, ignored=''), ExpectMsg('pong', ignored='000000')])\n"
    )
    (tmp_path / "conftest.py").write_text((SUITE / "conftest.py").read_text())
    done = _suite(lnprototest_python, "-q", str(script), rootdir=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 failed" in done.stdout and "pong" in done.stdout
