"""Tor's control port through stem, from trio.

stem is blocking (its calls wait on a socket and a lock), so every call
runs in a worker thread (``trio.to_thread.run_sync``); the trio loop never
blocks on Tor. Events that stem delivers on its own thread are handed to
trio through the run's token (:meth:`TorController.events`).

Two ways to get a Tor:

- :class:`LaunchedTor`: start and own a ``tor`` process. Its data
  directory, torrc, control-port file and log live in ``<directory>/tor``.
  The control port (cookie auth) and the SOCKS port listen on 127.0.0.1 on
  ports Tor picks itself (``auto``: no window in which another program can
  take a port we chose) unless given. ``__OwningControllerProcess`` makes
  Tor exit when this process dies, and (through stem's ``TAKEOWNERSHIP``)
  when our control connection closes.
- :class:`AttachedTor`: use a Tor that already runs, through its control
  port (cookie or password authentication).

Both give :attr:`TorHandle.socks_address` and :attr:`TorHandle.controller`
(a :class:`~lnpmsg.transports.tor.controller.TorController`).
"""

from __future__ import annotations

import abc
import errno
import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import trio

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.transports.tor.controller import (
    DEFAULT_BOOTSTRAP_TIMEOUT,
    BootstrapStatus,
    ProgressCallback,
    TorController,
    TorEvent,
    open_controller,
    parse_bootstrap_phase,
)
from lnpmsg.transports.tor.errors import (
    TorBootstrapError,
    TorControlError,
    TorDiskFull,
    TorError,
)
from lnpmsg.transports.tor.output import TorOutput
from lnpmsg.transports.tor.process import (
    LOG_TAIL_LINES,
    base_command,
    find_tor,
    indent,
    join_torrc,
)

if TYPE_CHECKING:
    from lnpmsg.transports.tor.transport import TorTransport

__all__ = [
    "DEFAULT_BOOTSTRAP_TIMEOUT",
    "AttachedTor",
    "BootstrapStatus",
    "LaunchedTor",
    "ProgressCallback",
    "TorController",
    "TorEvent",
    "TorHandle",
    "parse_bootstrap_phase",
]

log = logging.getLogger(__name__)

#: how long a launched tor may take to open its control port (it parses its
#: config and binds its ports first; seconds even on a loaded machine)
CONTROL_PORT_TIMEOUT = 30.0

#: how often the same "tor cannot write X: no room" is logged again while tor runs on
DISK_FULL_WARN_INTERVAL = 600.0

#: tor's warnings quoted in a TorDiskFull (those of its failed writes, and why it stopped)
DISK_FULL_WARNINGS = 8

#: how long to wait for tor's last lines once it exited (they are in the pipe already)
OUTPUT_DRAIN_TIMEOUT = 2.0

#: how long a launched tor may take to exit after its owning control
#: connection closed, before it is terminated (then killed)
STOP_TIMEOUT = 5.0


def _quote(value: str | os.PathLike[str]) -> str:
    """A torrc value, quoted so spaces and ``#`` in paths survive."""
    text = os.fspath(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TorHandle(abc.ABC):
    """A Tor we can control and proxy through: started by :meth:`start`, released by :meth:`aclose`."""

    def __init__(self) -> None:
        self._controller: TorController | None = None
        self._socks: tuple[str, int] | None = None

    @property
    def controller(self) -> TorController:
        if self._controller is None:
            raise TorError("Tor is not started")
        return self._controller

    @property
    def socks_address(self) -> tuple[str, int]:
        """Where Tor's SOCKS port listens, as ``(host, port)``."""
        if self._socks is None:
            raise TorError("Tor is not started")
        return self._socks

    @abc.abstractmethod
    async def start(self) -> None:
        """Get the Tor ready (connected, authenticated, bootstrapped)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the Tor (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def transport(self, **options: Any) -> TorTransport:
        """A :class:`~lnpmsg.transports.tor.transport.TorTransport` over this Tor's SOCKS port."""
        from lnpmsg.transports.tor.transport import TorTransport

        return TorTransport(self.socks_address, **options)


async def _pick_socks(controller: TorController) -> tuple[str, int]:
    addresses = await controller.socks_addresses()
    if not addresses:
        raise TorControlError(f"Tor at {controller.endpoint} has no TCP SOCKS port (SocksPort is 0 or a unix socket)")
    return addresses[0]


class LaunchedTor(TorHandle):
    """A ``tor`` process started and owned by this process.

    ``directory``: the node's directory; Tor's own files go in
    ``directory/tor`` (``data/`` is Tor's DataDirectory, plus ``torrc``,
    ``tor.log`` with Tor's stdout, the previous run's in ``tor.log.1``).
    Tor's stdout reaches the log through a pipe of ours
    (:class:`~lnpmsg.transports.tor.output.TorOutput`), so its last lines are
    at hand even when the disk has no room for them.
    ``extra_torrc``: more torrc lines, e.g. those joining a private network.
    ``socks_port``/``control_port``: ``None`` lets Tor pick free ones.
    ``on_progress``: called with each new :class:`BootstrapStatus`.
    ``bootstrap_timeout=None``: :meth:`start` returns once the control
    connection is up, without waiting for bootstrap.

    Errors raised by :meth:`start` end with the tail of Tor's log. A tor
    that says, while starting, that a write of its found no room (its state,
    its cookie, its control-port file, a directory: a full disk or no inode
    left) is stopped at once with :class:`TorDiskFull` naming the path; a
    running tor's such warnings are logged (:attr:`disk_full`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        tor_path: str | os.PathLike[str] | None = None,
        extra_torrc: Sequence[str] = (),
        socks_port: int | None = None,
        control_port: int | None = None,
        bootstrap_timeout: float | None = DEFAULT_BOOTSTRAP_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__()
        self.directory = Path(directory) / "tor"
        self.data_dir = self.directory / "data"
        self.torrc_path = self.directory / "torrc"
        self.log_path = self.directory / "tor.log"
        self.cookie_path = self.data_dir / "control_auth_cookie"
        self._port_file = self.directory / "control-port"
        self._tor_path = tor_path
        self._extra = list(extra_torrc)
        self._socks_port = socks_port
        self._control_port = control_port
        self.bootstrap_timeout = bootstrap_timeout
        self._on_progress = on_progress
        self._process: trio.Process | None = None
        self._closed = False
        self._output = TorOutput(self.log_path, self._on_disk_full)
        self._warned: dict[str, float] = {}
        self._up = False  # started: a write that finds no room is a warning now, not a failed start

    @property
    def control_address(self) -> tuple[str, int]:
        """Where the control port listens (to attach further controllers)."""
        host, _, port = self.controller.endpoint.rpartition(":")
        return host, int(port)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The tor process's exit code, or ``None`` while it runs."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 25) -> str:
        """Tor's last lines (kept in memory: also those a full disk kept out of the log file)."""
        return self._output.tail(lines)

    @property
    def disk_full(self) -> str | None:
        """The first path tor said it could not write for lack of room (``None``: it never said so)."""
        return self._output.disk_full

    def _on_disk_full(self, path: str, line: str) -> None:
        # Called from the output thread (logging is thread-safe). Tor retries such writes (its
        # state every few minutes, its cached directory at each new consensus): one warning per
        # path per DISK_FULL_WARN_INTERVAL says it without flooding the node's log.
        now = time.monotonic()
        if not self._up:
            return  # while starting, the start fails and says it (TorDiskFull)
        if now - self._warned.get(path, -DISK_FULL_WARN_INTERVAL) < DISK_FULL_WARN_INTERVAL:
            return
        self._warned[path] = now
        log.warning("tor (pid %s) cannot write %s: no room on its disk; free some space there (tor said: %s)",
                    self.pid, path, line.split("] ", 1)[-1])

    def torrc_lines(self) -> list[str]:
        """The full torrc this Tor runs with."""
        socks = "auto" if self._socks_port is None else str(self._socks_port)
        control = "auto" if self._control_port is None else str(self._control_port)
        return [
            f"DataDirectory {_quote(self.data_dir)}",
            f"ControlPort 127.0.0.1:{control}",
            f"ControlPortWriteToFile {_quote(self._port_file)}",
            "CookieAuthentication 1",
            f"CookieAuthFile {_quote(self.cookie_path)}",
            # IsolateSOCKSAuth (Tor's default) is spelled out: TorTransport's per-peer
            # isolation depends on it. ExtendedErrors gives onion-specific reply codes.
            f"SocksPort 127.0.0.1:{socks} IsolateSOCKSAuth ExtendedErrors",
            "ClientOnly 1",
            f"__OwningControllerProcess {os.getpid()}",
            "Log notice stdout",
            *self._extra,
        ]

    async def start(self) -> None:
        if self._process is not None or self._closed:
            raise TorError("this LaunchedTor was already started")
        tor = find_tor(self._tor_path)
        await trio.to_thread.run_sync(self._prepare_files)
        write_end = self._output.open()
        try:
            self._process = await trio.lowlevel.open_process(
                base_command(tor, self.torrc_path),
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        finally:
            self._output.started()
        log.info("started tor (pid %d), log %s", self._process.pid, self.log_path)
        try:
            host, port = await self._wait_control_port()
            self._controller = TorController(
                await trio.to_thread.run_sync(open_controller, host, port, None, str(self.cookie_path)),
                f"{host}:{port}",
            )
            self._socks = await _pick_socks(self._controller)
            if self.bootstrap_timeout is not None:
                await self._controller.wait_bootstrapped(self.bootstrap_timeout, self._on_progress, self._exited_or_full)
            self._exited_or_full()
            self._up = True
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._stop()
                await self._drained()  # tor's last words may be in the pipe still: read before quoted
            if isinstance(exc, TorError):
                raise self._with_output(exc) from exc
            raise

    def _exited_or_full(self) -> int | None:
        """The exit code (``None`` while tor runs); raises :class:`TorDiskFull` once tor said a write
        of its found no room: a tor starting on a full disk is stopped at once, not waited for until a
        timeout (it may never write its control-port file, or run on without its state)."""
        if self._output.disk_full is not None:
            raise TorDiskFull(f"tor cannot write {self._output.disk_full}: No space left on device", self._output.disk_full)
        return self.returncode

    def _with_output(self, exc: TorError) -> TorError:
        """The same error, its message followed by tor's last lines; :class:`TorDiskFull` if tor said
        a write found no room (whatever else went wrong after that, that is the cause)."""
        path = exc.path if isinstance(exc, TorDiskFull) else self._output.disk_full
        if path is not None:  # tor's warnings say what it could not write: the notices would bury them
            tail = self._output.tail(DISK_FULL_WARNINGS, warnings=True)
            return TorDiskFull(f"tor cannot write {path}: No space left on device\n{_quoted(self.log_path, tail)}", path, tail)
        tail = self.log_tail(LOG_TAIL_LINES)
        message = f"{exc}\n{_quoted(self.log_path, tail)}"
        try:
            return type(exc)(message)
        except TypeError:
            return TorError(message)

    def _prepare_files(self) -> None:
        """Tor's directories, its torrc, the previous log moved aside; a full disk is :class:`TorDiskFull`."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Tor refuses a DataDirectory others can read.
            os.chmod(self.directory, 0o700)
            os.chmod(self.data_dir, 0o700)
            self._port_file.unlink(missing_ok=True)
            if self.log_path.exists():
                os.replace(self.log_path, self.log_path.with_name("tor.log.1"))
            # in one step: a disk with no room for the new torrc keeps the old one whole
            write_atomic(self.torrc_path, join_torrc(self.torrc_lines()).encode(), durable=False)
        except OSError as exc:
            path = os.fspath(exc.filename or self.torrc_path)  # a write's error names no file: the torrc's
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TorDiskFull(f"cannot write {path} for tor: No space left on device", path) from exc
            raise TorError(f"cannot prepare tor's files: {path}: {exc.strerror or exc}") from exc

    async def _wait_control_port(self) -> tuple[str, int]:
        with trio.move_on_after(CONTROL_PORT_TIMEOUT):
            while True:
                code = self._exited_or_full()
                if code is not None:
                    raise TorBootstrapError(f"tor exited with code {code} before opening its control port")
                try:
                    text = self._port_file.read_text()
                except FileNotFoundError:
                    text = ""
                # Tor writes "PORT=127.0.0.1:NNNN\n"; wait for the full line.
                match = re.search(r"PORT=([0-9.]+):(\d+)\n", text)
                if match:
                    return match.group(1), int(match.group(2))
                await trio.sleep(0.05)
        raise TorBootstrapError(f"tor did not open its control port within {CONTROL_PORT_TIMEOUT:g} s")

    async def wait_exited(self) -> int:
        """Wait until the tor process ends (for whatever reason); return its exit code."""
        if self._process is None:
            raise TorError("Tor is not started")
        code = await self._process.wait()
        await self._drained()
        return code

    async def _drained(self) -> None:
        """Wait until tor's output was all read (at once once tor exited: the pipe is at its end)."""
        await trio.to_thread.run_sync(self._output.join, OUTPUT_DRAIN_TIMEOUT)

    async def aclose(self) -> None:
        """Close the control connection (so Tor exits), then make sure the process is gone."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._stop()
            await self._drained()

    async def _stop(self) -> None:
        owned = self._controller is not None
        if self._controller is not None:
            await self._controller.close()
            self._controller = None
        proc = self._process
        if proc is None or proc.poll() is not None:
            return
        if owned:
            with trio.move_on_after(STOP_TIMEOUT):
                await proc.wait()
                return
            log.warning("tor (pid %d) did not exit after its controller closed; terminating it", proc.pid)
        # else: stopped before our control connection existed, so nothing tells tor to exit
        proc.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()


class AttachedTor(TorHandle):
    """A Tor started by someone else, used through its control port.

    Give ``password`` for ``HashedControlPassword`` auth, or ``cookie_path``
    for cookie auth with that file; with neither, Tor's PROTOCOLINFO
    decides. ``socks_address`` defaults to Tor's first TCP SOCKS listener.
    ``bootstrap_timeout=None`` skips waiting for bootstrap.
    """

    def __init__(
        self,
        control_host: str = "127.0.0.1",
        control_port: int = 9051,
        *,
        password: str | None = None,
        cookie_path: str | os.PathLike[str] | None = None,
        socks_address: tuple[str, int] | None = None,
        bootstrap_timeout: float | None = DEFAULT_BOOTSTRAP_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__()
        self.control_host = control_host
        self.control_port = control_port
        self._password = password
        self._cookie = None if cookie_path is None else os.fspath(cookie_path)
        self._socks = socks_address
        self.bootstrap_timeout = bootstrap_timeout
        self._on_progress = on_progress

    async def start(self) -> None:
        if self._controller is not None:
            raise TorError("this AttachedTor is already started")
        ctl = await trio.to_thread.run_sync(
            open_controller, self.control_host, self.control_port, self._password, self._cookie
        )
        self._controller = TorController(ctl, f"{self.control_host}:{self.control_port}")
        try:
            if self._socks is None:
                self._socks = await _pick_socks(self._controller)
            if self.bootstrap_timeout is not None:
                await self._controller.wait_bootstrapped(self.bootstrap_timeout, self._on_progress)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._controller is not None:
            await self._controller.close()
            self._controller = None


def _quoted(log_path: Path, tail: str) -> str:
    return f"tor's output ({log_path}):\n{indent(tail)}"