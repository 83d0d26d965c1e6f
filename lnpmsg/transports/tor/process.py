"""Small helpers for running ``tor`` processes: finding the binary, picking
free loopback ports, and reading the tail of a captured log.

Tor prints its early errors (a bad torrc line, a port already taken) on
stdout before any control connection exists, so every ``tor`` we start has
its stdout written to a file, and errors quote the file's last lines.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from lnpmsg.transports.tor.errors import TorNotFound

__all__ = [
    "LOG_TAIL_LINES",
    "PORT_RANGE",
    "base_command",
    "find_tor",
    "indent",
    "join_torrc",
    "pick_free_ports",
    "tail_text",
]

#: lines of a tor log quoted in an error: enough to show the failing line
#: and the few notices before it, short enough to read in a test report
LOG_TAIL_LINES = 25

#: Ports we pick ourselves lie below Linux's ephemeral range (32768-60999):
#: a port there can be handed to some outgoing connection between the moment
#: we find it free and the moment tor binds it.
PORT_RANGE = (20000, 32767)

_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def find_tor(path: str | os.PathLike[str] | None = None, name: str = "tor") -> str:
    """Return the full path of the ``tor`` executable (or of ``name``, e.g. ``tor-gencert``).

    ``path`` may name the executable explicitly; otherwise ``PATH`` is
    searched, then ``/usr/sbin`` and ``/usr/bin`` (Debian puts ``tor`` in
    ``/usr/sbin``, which is not on every user's ``PATH``).

    Raises :class:`TorNotFound` with how to install it.
    """
    if path is not None:
        text = os.fspath(path)
        found = shutil.which(text)
        if found is None:
            raise TorNotFound(f"{name} executable not found at {text!r} (not a file, or not executable)")
        return found
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/bin")
    if found is None:
        raise TorNotFound(
            f"{name} is not installed (not on PATH). Install Tor, e.g. "
            "`apt-get install -y --no-install-recommends tor`, or attach to a running Tor's control port"
        )
    return found


def base_command(tor: str, torrc: Path) -> list[str]:
    """The command line that runs ``tor`` on ``torrc`` and on nothing else.

    ``--defaults-torrc /dev/null`` keeps the system's ``/etc/tor`` files out.
    """
    return [tor, "--defaults-torrc", os.devnull, "-f", str(torrc)]


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports in :data:`PORT_RANGE` that are free on ``host`` right now.

    Ports handed out earlier in this process are never handed out again, so
    two tors started by the same process cannot be given the same port.
    """
    low, high = PORT_RANGE
    result: list[int] = []
    rng = random.SystemRandom()
    attempts = 0
    with _ports_lock:
        while len(result) < count:
            attempts += 1
            if attempts > 50 * count + 1000:
                raise OSError(f"no free TCP port found in {low}-{high} on {host}")
            port = rng.randint(low, high)
            if port in _ports_given or port in result:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            result.append(port)
        _ports_given.update(result)
    return result


def tail_text(path: str | os.PathLike[str], lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            # Tor's notice lines are ~150 bytes; read enough for the wanted lines.
            handle.seek(max(0, size - 400 * lines))
            data = handle.read()
    except OSError as exc:
        return f"(no log: {exc.strerror or exc})"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text) if text else "(log is empty)"


def indent(text: str, prefix: str = "    ") -> str:
    """Indent every line of ``text`` (used to quote logs inside error messages)."""
    return "\n".join(prefix + line for line in text.splitlines())


def join_torrc(lines: Sequence[str]) -> str:
    """Join torrc lines into a file's text, refusing line breaks inside a line.

    A newline inside a value would let one option smuggle in another.
    """
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"torrc line contains a line break: {line!r}")
    return "".join(line + "\n" for line in lines)
