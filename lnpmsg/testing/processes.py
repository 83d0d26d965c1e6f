"""The ``lnpmsg`` command run as a user runs it: real processes, for the CLI tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

__all__ = ["PROCESS_WAIT", "NodeProcesses", "finish_process", "lnpmsg_argv", "node_processes", "start_logged_node", "start_node_process"]

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
    line = await _first_line(process, PROCESS_WAIT)
    return process, (json.loads(line) if line else None)


async def start_logged_node(data_dir: str | Path, *options: object, env: Mapping[str, str] | None = None,
                            wait: float = 60.0) -> tuple[trio.Process, Any]:  # fmt: skip
    """``lnpmsg node --data-dir DATA_DIR --json OPTIONS...``, its log appended to DATA_DIR.log (a
    file, so a full pipe never blocks a long-running node); the process and its start-up summary.

    ``env`` is added to this process's environment. AssertionError quoting the log's tail if the
    node exits before printing its summary, or does not print it within ``wait`` seconds (it is
    killed then).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(f"{data_dir}.log")
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = await trio.lowlevel.open_process(
            lnpmsg_argv("node", "--data-dir", data_dir, "--json", *options),
            stdout=subprocess.PIPE, stderr=log, env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        line = await _first_line(process, wait)
    except trio.TooSlowError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{data_dir} did not start within {wait:g} s (killed): {log_path.read_text(errors='replace')[-3000:]}") from None
    if not line.endswith(b"\n"):
        raise AssertionError(f"{data_dir} exited: {log_path.read_text()[-3000:]}")
    return process, json.loads(line)


async def _first_line(process: trio.Process, wait: float) -> bytes:
    """The first line a process prints on stdout, read a byte at a time so that nothing after
    it is taken from the pipe; what it printed before exiting (maybe b"") if it exits first."""
    assert process.stdout is not None
    line = b""
    with trio.fail_after(wait):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                break
            line += chunk
    return line


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


class NodeProcesses:
    """The ``lnpmsg node`` processes a test started (:func:`node_processes`)."""

    def __init__(self) -> None:
        self.processes: list[trio.Process] = []
        #: each process's exit status and stderr, in start order, once they ended
        self.finished: list[tuple[int, str]] = []

    async def start(self, data_dir: str | Path, *extra: object) -> Any:
        """:func:`start_node_process`; its start-up summary."""
        process, info = await start_node_process(data_dir, *extra)
        self.processes.append(process)
        return info


@asynccontextmanager
async def node_processes() -> AsyncIterator[NodeProcesses]:
    """Node processes for a test to start, and to stop itself (``lnpmsg stop``).

    If the test fails, each gets SIGINT; either way they are waited for. A test that
    passes has them exit cleanly: status 0 and no traceback in their stderr."""
    nodes = NodeProcesses()
    try:
        yield nodes
    except BaseException:
        for process in nodes.processes:
            process.send_signal(signal.SIGINT)
        raise
    finally:
        nodes.finished = [await finish_process(p) for p in nodes.processes]
    for code, stderr in nodes.finished:
        assert code == 0 and "Traceback" not in stderr, stderr
