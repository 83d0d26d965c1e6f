"""The onion core is sans-IO: its modules import no I/O library, and importing
the package in a fresh interpreter loads none (not even through an __init__)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lnpmsg"
MODULES = sorted((ROOT / "payments" / "onion").glob("*.py")) + [ROOT / "payments" / "__init__.py"]
FORBIDDEN = {"trio", "socket", "zmq", "stem", "sqlite3", "time", "asyncio", "select", "socks", "os", "pathlib"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_onion_module_imports_no_io(path: Path) -> None:
    assert not _imports(path) & FORBIDDEN


def test_importing_the_onion_package_loads_no_io_library() -> None:
    probe = (
        "import sys, lnpmsg.payments, lnpmsg.payments.onion\n"
        "print(' '.join(m for m in ('trio', 'zmq', 'sqlite3', 'stem', 'socket', 'asyncio') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT.parent))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True, timeout=120)
    assert result.stdout.strip() == ""
