"""A Python environment for lnprototest, apart from lnpmsg's.

lnprototest 0.0.7 pins ``pyln-proto<24`` and ``python-bitcoinlib<0.12``;
lnpmsg's tests need ``pyln-proto>=25`` and ``python-bitcoinlib>=0.12``. So
the suite runs in a venv of its own, which :func:`ensure_venv` builds once
(``python -m venv`` + ``pip install lnprototest==0.0.7``) and reuses. The
node under test still runs with lnpmsg's interpreter (``$LNPMSG_PYTHON``,
see :mod:`lnpmsg.testing.lnprototest_runner`).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["LNPROTOTEST_VERSION", "default_venv_dir", "ensure_venv"]

#: the lnprototest release the runner is written against
LNPROTOTEST_VERSION = "0.0.7"
#: seconds creating the venv and installing lnprototest may take
INSTALL_TIMEOUT = 900
#: written last: a venv without it is half-built and is built again
_READY = "lnpmsg-ready"


def default_venv_dir() -> Path:
    """``$LNPMSG_LNPROTOTEST_VENV``, else ``~/.cache/lnpmsg/lnprototest-VERSION``."""
    configured = os.environ.get("LNPMSG_LNPROTOTEST_VENV")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "lnpmsg" / f"lnprototest-{LNPROTOTEST_VERSION}"


def ensure_venv(directory: Path | None = None) -> Path:
    """The venv's python, with lnprototest installed (built on first use; safe
    when several test runs ask at once). Raises ``RuntimeError`` with pip's
    output if the install fails."""
    directory = directory or default_venv_dir()
    python = directory / "bin" / "python"
    if (directory / _READY).exists():
        return python
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it: wait for it
        if (directory / _READY).exists():
            return python
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(directory)],
            [str(python), "-m", "pip", "install", "--quiet", f"lnprototest=={LNPROTOTEST_VERSION}"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"cannot build the lnprototest venv in {directory}: {' '.join(step)}:\n{done.stdout}{done.stderr}")
        (directory / _READY).write_text(LNPROTOTEST_VERSION + "\n")
    return python
