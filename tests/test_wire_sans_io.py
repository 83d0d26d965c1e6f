"""The wire codec is sans-IO: no module of lnpmsg.wire imports I/O, clocks or event loops."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lnpmsg.wire

FORBIDDEN = {
    "trio",
    "socket",
    "zmq",
    "stem",
    "time",
    "asyncio",
    "selectors",
    "select",
    "ssl",
    "threading",
    "aioquic",
}
WIRE = Path(lnpmsg.wire.__file__).parent


def test_no_module_imports_io() -> None:
    sources = sorted(WIRE.glob("*.py"))
    assert len(sources) >= 9
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, (
                    f"{path.name} imports {name}"
                )
                if name.startswith("lnpmsg."):
                    assert name.startswith("lnpmsg.wire"), (
                        f"{path.name} imports {name}: wire depends on nothing above it"
                    )


def test_importing_the_codec_loads_no_io_package() -> None:
    code = "import sys, lnpmsg.wire; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert "lnpmsg.wire.bolt1" in loaded
    assert not loaded & {"trio", "zmq", "stem", "aioquic", "asyncio", "socket"}
