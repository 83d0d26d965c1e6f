"""The chain layer's and wallet's protocol cores, and the Bitcoin primitives
under them, stay sans-IO: no trio, sockets, clock or filesystem; they take
blocks and transactions in and give events and decisions out. Dependencies
point one way: lnpmsg.bitcoin imports no layer above it, and the chain
layer never imports the channels."""

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
        "electrum/index.py",
        "electrum/session.py",
        "rpc_http.py",
        "rpc_methods.py",
        "rpc_params.py",
        "rpc_format.py",
    )
] + [ROOT / "wallet" / "coinselect.py", ROOT / "wallet" / "errors.py"]
BITCOIN = sorted((ROOT / "bitcoin").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("path", CORES + BITCOIN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_does_no_io(path: Path) -> None:
    assert not imported(path) & FORBIDDEN


def _layers(path: Path) -> set[str]:
    return {
        ".".join(name.split(".")[:2])
        for name in imported_modules(path)
        if name.startswith("lnpmsg.")
    }


@pytest.mark.parametrize("path", BITCOIN, ids=lambda p: f"bitcoin/{p.name}")
def test_bitcoin_primitives_import_no_layer_above(path: Path) -> None:
    # ``lnpmsg._hex`` is a leaf helper every package may use (tests/test_sans_io.py's HELPERS)
    assert _layers(path) <= {"lnpmsg.bitcoin", "lnpmsg._hex"}


def test_chain_and_wallet_do_not_import_channels() -> None:
    for path in [*(ROOT / "chain").glob("*.py"), *(ROOT / "wallet").glob("*.py")]:
        assert "lnpmsg.channels" not in _layers(path), path.name


def test_importing_the_chain_package_does_not_load_the_kernel() -> None:
    # lnpmsg.chain is imported by the node; the native kernel loads only with the embedded chain
    assert "pbk" not in imported(ROOT / "chain" / "__init__.py")
    assert "lnpmsg.chain.regtest" not in (ROOT / "chain" / "__init__.py").read_text()
