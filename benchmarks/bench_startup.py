"""Start-up benchmark: how long ``lnpmsg`` takes to import and a node to come up.

Each trial is a fresh process (with a fresh data dir, as most test nodes start):

- ``import``: ``python -c "import lnpmsg.cli"``, process start to exit;
- ``node``: ``lnpmsg node --listen 127.0.0.1:0 --json``, process start to
  its start-up summary on stdout (printed once the node listens and its
  control API answers), then SIGTERM;
- ``regtest``: the same with ``--chain regtest`` (embedded chain, wallet,
  channels and payments apps).

Give one source tree, or two (``--tree OLD --tree NEW``) to compare: the
trials alternate between the trees, round by round, so both see the same
seconds of a shared machine. Each tree gets its own bytecode cache
(``PYTHONPYCACHEPREFIX``), filled by a warm-up trial first, as the test
suite's processes share one. The table gives the median and the lowest trial.

Usage: ``python benchmarks/bench_startup.py [--tree DIR]... [--rounds N] [--only import,node,regtest]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "import": None,
    "node": [],
    "regtest": ["--chain", "regtest"],
}


def _env(tree: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(cache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def trial(tree: Path, cache: Path, case: str) -> float:
    """Seconds from process start to the case's end point (see the module docstring)."""
    env = _env(tree, cache)
    extra = CASES[case]
    if extra is None:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import lnpmsg.cli"], env=env, check=True)
        return time.perf_counter() - started
    data_dir = tempfile.mkdtemp(prefix="lnpstart-", dir="/tmp")  # ipc socket paths must stay short
    try:
        command = [sys.executable, "-m", "lnpmsg.cli", "node", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--json", "--log-level", "warning", *extra]
        started = time.perf_counter()
        node = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=data_dir)
        assert node.stdout is not None
        line = node.stdout.readline()
        elapsed = time.perf_counter() - started
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        if not line.startswith(b"{"):
            raise RuntimeError(f"{case}: the node did not start ({tree})")
        return elapsed
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="an lnpmsg source tree (default: this one); repeat to compare")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default=",".join(CASES), help="cases, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parent.parent]]
    cases = args.only.split(",")
    caches = {tree: Path(tempfile.mkdtemp(prefix="lnpstart-pyc-")) for tree in trees}
    results: dict[tuple[str, Path], list[float]] = {(case, tree): [] for case in cases for tree in trees}
    try:
        for tree in trees:
            for case in cases:
                trial(tree, caches[tree], case)  # warm-up: the bytecode cache, the page cache
        for _ in range(args.rounds):
            for case in cases:
                for tree in trees:
                    results[case, tree].append(trial(tree, caches[tree], case))
    finally:
        for cache in caches.values():
            shutil.rmtree(cache, ignore_errors=True)
    print(f"{'case':<8} {'tree':<40} {'median':>8} {'lowest':>8}  ({args.rounds} trials, load {os.getloadavg()[0]:.2f})")
    for case in cases:
        for tree in trees:
            times = results[case, tree]
            print(f"{case:<8} {str(tree)[-40:]:<40} {statistics.median(times) * 1000:7.0f}ms {min(times) * 1000:7.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
