"""Importing the payments cores loads no I/O: no trio, zmq, sqlite3, stem, sockets or asyncio,
not even through a package ``__init__`` or a dependency (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["lnpmsg.payments", "lnpmsg.payments.bolt11", "lnpmsg.payments.plan", "lnpmsg.payments.graph", "lnpmsg.payments.route", "lnpmsg.payments.scorer", "lnpmsg.payments.pathfind"]
FORBIDDEN = {"trio", "zmq", "sqlite3", "_sqlite3", "stem", "socket", "_socket", "asyncio"}


def test_importing_payments_loads_no_io():
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout))
    assert "lnpmsg" in loaded
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
