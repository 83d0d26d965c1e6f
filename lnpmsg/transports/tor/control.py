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
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import trio

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
    TorError,
)
from lnpmsg.transports.tor.process import (
    base_command,
    find_tor,
    indent,
    join_torrc,
    tail_text,
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
    ``extra_torrc``: more torrc lines, e.g. those joining a private network.
    ``socks_port``/``control_port``: ``None`` lets Tor pick free ones.
    ``on_progress``: called with each new :class:`BootstrapStatus`.
    ``bootstrap_timeout=None``: :meth:`start` returns once the control
    connection is up, without waiting for bootstrap.

    Errors raised by :meth:`start` end with the tail of Tor's log.
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
        return tail_text(self.log_path, lines)

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
        log_file = await trio.to_thread.run_sync(open, self.log_path, "wb")
        with log_file:
            self._process = await trio.lowlevel.open_process(
                base_command(tor, self.torrc_path),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        log.info("started tor (pid %d), log %s", self._process.pid, self.log_path)
        try:
            host, port = await self._wait_control_port()
            self._controller = TorController(
                await trio.to_thread.run_sync(open_controller, host, port, None, str(self.cookie_path)),
                f"{host}:{port}",
            )
            self._socks = await _pick_socks(self._controller)
            if self.bootstrap_timeout is not None:
                await self._controller.wait_bootstrapped(
                    self.bootstrap_timeout, self._on_progress, lambda: self.returncode
                )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._stop()
            if isinstance(exc, TorError):
                raise _with_log(exc, self.log_path) from exc
            raise

    def _prepare_files(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Tor refuses a DataDirectory others can read.
        os.chmod(self.directory, 0o700)
        os.chmod(self.data_dir, 0o700)
        self._port_file.unlink(missing_ok=True)
        if self.log_path.exists():
            os.replace(self.log_path, self.log_path.with_name("tor.log.1"))
        self.torrc_path.write_text(join_torrc(self.torrc_lines()))

    async def _wait_control_port(self) -> tuple[str, int]:
        with trio.move_on_after(CONTROL_PORT_TIMEOUT):
            while True:
                code = self.returncode
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
        return await self._process.wait()

    async def aclose(self) -> None:
        """Close the control connection (so Tor exits), then make sure the process is gone."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._stop()

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


def _with_log(exc: TorError, log_path: Path) -> TorError:
    """The same error, its message followed by the tail of tor's log."""
    message = f"{exc}\ntor's output ({log_path}):\n{indent(tail_text(log_path))}"
    try:
        return type(exc)(message)
    except TypeError:
        return TorError(message)