"""Protocol cores stay sans-IO: no trio, sockets, zmq, stem or clock imports."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "lnpmsg"
FORBIDDEN = {"trio", "socket", "zmq", "stem", "time", "asyncio", "select", "socks"}
CORES = sorted(
    [*ROOT.joinpath("wire").glob("*.py"), *ROOT.joinpath("noise").glob("*.py"), *ROOT.joinpath("bitcoin").glob("*.py"), ROOT / "node" / "session.py", ROOT / "node" / "admission.py", ROOT / "transports" / "udp_retry.py"]
)


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", CORES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_no_io(path):
    assert not set(imported_modules(path)) & FORBIDDEN
