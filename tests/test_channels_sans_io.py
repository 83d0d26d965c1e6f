"""The channel core stays sans-IO: no I/O, clock or randomness imports outside the store shell."""

from __future__ import annotations

import ast
import pathlib

import pytest

from lnpmsg.channels import SHELL_MODULES

CHANNELS = pathlib.Path(__file__).resolve().parent.parent / "lnpmsg" / "channels"
FORBIDDEN = {"trio", "socket", "zmq", "stem", "time", "asyncio", "select", "os", "sqlite3", "random", "secrets", "datetime"}
SHELLS = {f"{name}.py" for name in SHELL_MODULES}  # the file I/O, trio and CLI shells
CORE = sorted(p for p in CHANNELS.glob("*.py") if p.name not in SHELLS)


def imported(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level == 1 and node.module:
                names.add("." + node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_channel_core_modules_do_no_io(path: pathlib.Path) -> None:
    names = imported(path)
    assert not names & FORBIDDEN
    assert not names & {f".{name}" for name in SHELL_MODULES}  # the core never reaches into its shells


def test_the_modules_stay_small() -> None:
    for path in CHANNELS.glob("*.py"):
        assert len(path.read_text().splitlines()) < 600, path.name
