"""The chain layer's and wallet's protocol cores stay sans-IO: no trio,
sockets, clock or filesystem; they take blocks and transactions in and give
events and decisions out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lnpmsg"
FORBIDDEN = {
    "trio",
    "socket",
    "time",
    "asyncio",
    "select",
    "socks",
    "os",
    "pathlib",
    "pbk",
}
CORES = [
    ROOT / "chain" / name
    for name in (
        "tx.py",
        "mining.py",
        "utxo.py",
        "mempool.py",
        "follow.py",
        "events.py",
        "errors.py",
    )
] + [ROOT / "wallet" / "coinselect.py", ROOT / "wallet" / "errors.py"]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_does_no_io(path: Path) -> None:
    assert not imported(path) & FORBIDDEN


def test_importing_the_chain_package_does_not_load_the_kernel() -> None:
    # lnpmsg.chain is imported by the node; the native kernel loads only with the embedded chain
    assert "pbk" not in imported(ROOT / "chain" / "__init__.py")
    assert "lnpmsg.chain.regtest" not in (ROOT / "chain" / "__init__.py").read_text()
