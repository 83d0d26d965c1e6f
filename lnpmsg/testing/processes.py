"""The ``lnpmsg`` command run as a user runs it: real processes, for the CLI tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

__all__ = ["PROCESS_WAIT", "finish_process", "lnpmsg_argv", "start_node_process"]

#: seconds a node process may take to start or to exit (also passed on as a CLI wait)
PROCESS_WAIT = 20


def lnpmsg_argv(*args: object) -> list[str]:
    """The command line of ``lnpmsg ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "lnpmsg.cli", *map(str, args)]


async def start_node_process(data_dir: str | Path, *extra: object) -> tuple[trio.Process, Any]:
    """An ``lnpmsg node --json`` process on a free loopback port.

    Returns the process and its start-up summary (the first line it prints),
    or None if it exited before printing one.
    """
    process = await trio.lowlevel.open_process(
        lnpmsg_argv("node", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--json", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(PROCESS_WAIT):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                break
            line += chunk
    return process, (json.loads(line) if line else None)


async def finish_process(process: trio.Process) -> tuple[int, str]:
    """Wait for a process to exit; its exit status and all it wrote on stderr."""
    assert process.stderr is not None
    stderr = b""
    with trio.fail_after(PROCESS_WAIT):
        while chunk := await process.stderr.receive_some(1 << 16):
            stderr += chunk
        code = await process.wait()
    # its pipes too: an exited process leaves them open otherwise
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()
    return code, stderr.decode()
