"""The ``lnpmsg`` command line run in the test's own process (its own thread), for tests of commands."""

from __future__ import annotations

import pytest
import trio

from lnpmsg.cli import main


async def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``lnpmsg ARGV...`` (each argument as text): its exit code, standard output and standard error."""
    code = await trio.to_thread.run_sync(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
