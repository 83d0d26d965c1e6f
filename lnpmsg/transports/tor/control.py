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

Both give :attr:`TorHandle.socks_address` and :attr:`TorHandle.controller`.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import socket
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import stem  # type: ignore[import-untyped]
import stem.connection  # type: ignore[import-untyped]
import stem.control  # type: ignore[import-untyped]
import stem.socket  # type: ignore[import-untyped]
import trio

from lnpmsg.transports.tor.errors import (
    TorAuthError,
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

# stem sets its own logger to TRACE when imported, so an application that
# logs at INFO would print every control command stem sends, and dozens of
# "Error while receiving a control message (SocketClosed)" lines from its
# reader thread whenever a control connection closes. What matters is
# logged here, in our words; stem keeps its warnings.
STEM_LOG_LEVEL = logging.WARNING
logging.getLogger("stem").setLevel(STEM_LOG_LEVEL)

T = TypeVar("T")

#: how long Tor may take to reach 100 %: a fresh Tor on the public network
#: often needs 30-60 s on a slow link, a private test network a few seconds
DEFAULT_BOOTSTRAP_TIMEOUT = 180.0

#: how long a launched tor may take to open its control port (it parses its
#: config and binds its ports first; seconds even on a loaded machine)
CONTROL_PORT_TIMEOUT = 30.0

#: how long a launched tor may take to exit after its owning control
#: connection closed, before it is terminated (then killed)
STOP_TIMEOUT = 5.0

#: bootstrap progress is polled this often (GETINFO is cheap)
BOOTSTRAP_POLL_INTERVAL = 0.2

#: events buffered for a slow consumer before new ones are dropped (logged)
EVENT_BUFFER = 1000

ProgressCallback = Callable[["BootstrapStatus"], None]

#: a parsed control-port event (``stem.response.events.Event``; stem has no type hints)
TorEvent = Any


@dataclass(frozen=True, slots=True)
class BootstrapStatus:
    """Tor's bootstrap phase (``GETINFO status/bootstrap-phase``)."""

    progress: int
    tag: str
    summary: str
    warning: str | None = None

    @property
    def done(self) -> bool:
        return self.progress >= 100

    def __str__(self) -> str:
        text = f"{self.progress}% ({self.tag}): {self.summary}"
        return f"{text}; warning: {self.warning}" if self.warning else text


_PHASE_FIELD = re.compile(r'([A-Z_]+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_bootstrap_phase(text: str) -> BootstrapStatus:
    """Parse ``NOTICE BOOTSTRAP PROGRESS=85 TAG=ap_conn_done SUMMARY="..."`` (and WARN lines)."""
    fields: dict[str, str] = {}
    for key, value in _PHASE_FIELD.findall(text):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[key] = value
    try:
        progress = int(fields["PROGRESS"])
    except (KeyError, ValueError):
        raise TorControlError(f"unexpected bootstrap status from Tor: {text!r}") from None
    warning = fields.get("WARNING")
    if warning and fields.get("REASON"):
        warning = f"{warning} (reason: {fields['REASON']})"
    return BootstrapStatus(progress, fields.get("TAG", "?"), fields.get("SUMMARY", ""), warning)


class TorController:
    """Async face of a connected, authenticated stem ``Controller``.

    Each method runs the stem call in a worker thread and turns stem's
    exceptions into :class:`TorControlError`.
    """

    def __init__(self, controller: stem.control.Controller, endpoint: str) -> None:
        self._ctl = controller
        self.endpoint = endpoint

    @property
    def stem(self) -> stem.control.Controller:
        """The stem controller itself (its methods block: call them through :meth:`call`)."""
        return self._ctl

    @property
    def is_alive(self) -> bool:
        """False once the control connection is closed or lost."""
        return bool(self._ctl.is_alive())

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run the blocking ``fn(*args, **kwargs)`` in a worker thread, mapping stem's errors."""

        def run() -> T:
            return fn(*args, **kwargs)

        try:
            return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
        except stem.SocketError as exc:
            raise TorControlError(f"lost the control connection to Tor at {self.endpoint}: {exc or 'closed'}") from exc
        except stem.ControllerError as exc:
            raise TorControlError(f"Tor at {self.endpoint} rejected the request: {exc}") from exc

    async def get_info(self, key: str) -> str:
        """``GETINFO key``."""
        return str(await self.call(self._ctl.get_info, key))

    async def get_conf(self, key: str) -> str | None:
        """``GETCONF key`` (``None`` when unset)."""
        value = await self.call(self._ctl.get_conf, key, None)
        return None if value is None else str(value)

    async def set_conf(self, key: str, value: str) -> None:
        """``SETCONF key=value``."""
        await self.call(self._ctl.set_conf, key, value)

    async def version(self) -> str:
        return str(await self.call(self._ctl.get_version))

    async def socks_addresses(self) -> list[tuple[str, int]]:
        """Tor's TCP SOCKS listeners, e.g. ``[("127.0.0.1", 9050)]``."""
        text = await self.get_info("net/listeners/socks")
        result = []
        for item in text.split():
            item = item.strip('"')
            if item.startswith("unix:"):
                continue
            host, _, port = item.rpartition(":")
            if port.isdigit():
                result.append((host.strip("[]"), int(port)))
        return result

    async def bootstrap_status(self) -> BootstrapStatus:
        return parse_bootstrap_phase(await self.get_info("status/bootstrap-phase"))

    async def wait_bootstrapped(
        self,
        timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
        on_progress: ProgressCallback | None = None,
        exited: Callable[[], int | None] | None = None,
    ) -> BootstrapStatus:
        """Return once Tor reports 100 %; report every change of phase on the way.

        Each new phase is logged (``tor bootstrap 85% ...``) and passed to
        ``on_progress``. ``exited`` (for a launched tor) returns the exit
        code once the process ended, so its death is reported at once.

        Raises :class:`TorBootstrapError` after ``timeout`` seconds, naming
        the phase Tor was stuck in and its last warning.
        """
        deadline = trio.current_time() + timeout
        last: BootstrapStatus | None = None
        while True:
            if exited is not None and (code := exited()) is not None:
                raise TorBootstrapError(f"tor exited with code {code} while bootstrapping (at {last or '0%'})")
            status = await self.bootstrap_status()
            if status != last:
                last = status
                log.info("tor bootstrap %d%% (%s): %s", status.progress, status.tag, status.summary)
                if status.warning:
                    log.warning("tor bootstrap warning: %s", status.warning)
                if on_progress is not None:
                    on_progress(status)
            if status.done:
                return status
            if trio.current_time() >= deadline:
                raise TorBootstrapError(
                    f"Tor did not finish bootstrapping within {timeout:g} s: stuck at {status}. "
                    "Check the network, the clock, and the bridges/directory settings"
                )
            await trio.sleep(BOOTSTRAP_POLL_INTERVAL)

    @asynccontextmanager
    async def events(self, *event_types: str) -> AsyncIterator[trio.MemoryReceiveChannel[TorEvent]]:
        """Subscribe to control-port events (e.g. ``"HS_DESC"``) for the ``async with`` block.

        Subscribe *before* issuing the command whose events you wait for, so
        none is missed.
        """
        send, receive = trio.open_memory_channel[TorEvent](EVENT_BUFFER)
        token = trio.lowlevel.current_trio_token()

        def deliver(event: TorEvent) -> None:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                log.warning("dropped a Tor %s event: consumer too slow", event.type)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        def listener(event: TorEvent) -> None:
            # called on stem's event thread
            try:
                token.run_sync_soon(deliver, event)
            except trio.RunFinishedError:
                pass

        await self.call(self._ctl.add_event_listener, listener, *event_types)
        try:
            yield receive
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.call(self._ctl.remove_event_listener, listener)
                except TorControlError:
                    pass  # connection already gone: nothing to unsubscribe
            send.close()

    async def close(self) -> None:
        """Close the control connection (idempotent)."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._ctl.close)


class _ControlPort(stem.socket.ControlPort):  # type: ignore[misc]
    """stem's ControlPort, but a failed connect closes its socket (stem's leaks it)."""

    def _make_socket(self) -> socket.socket:
        try:
            return socket.create_connection((self.address, self.port))
        except OSError as exc:
            raise stem.SocketError(exc) from exc


def _open_controller(
    host: str, port: int, password: str | None, cookie_path: str | None
) -> stem.control.Controller:
    """Connect and authenticate (blocking: run in a thread).

    A given password means password authentication only, a given cookie
    path cookie authentication only with that file; with neither, Tor's
    PROTOCOLINFO decides (no auth, or its own cookie file).
    """
    # stem 1.8 starts its reader threads with the deprecated Thread.setDaemon
    # (on connect, and on the reconnect after a failed authentication).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"setDaemon\(\) is deprecated", category=DeprecationWarning)
        return _open_controller_quietly(host, port, password, cookie_path)


def _open_controller_quietly(
    host: str, port: int, password: str | None, cookie_path: str | None
) -> stem.control.Controller:
    endpoint = f"{host}:{port}"
    try:
        ctl = stem.control.Controller(_ControlPort(host, port))
    except stem.SocketError as exc:
        raise TorControlError(f"cannot connect to Tor's control port at {endpoint}: {exc} (is Tor running, with ControlPort {port}?)") from exc
    try:
        info = stem.connection.get_protocolinfo(ctl)
        offered = set(info.auth_methods)
        names = ", ".join(sorted(m.lower() for m in offered)) or "nothing"
        AuthMethod = stem.connection.AuthMethod
        if password is not None:
            if AuthMethod.PASSWORD not in offered:
                raise TorAuthError(f"Tor's control port at {endpoint} does not accept a password (it offers: {names})")
            info.auth_methods = (AuthMethod.PASSWORD,)
        elif cookie_path is not None:
            cookie = tuple(m for m in (AuthMethod.SAFECOOKIE, AuthMethod.COOKIE) if m in offered)
            if not cookie:
                raise TorAuthError(f"Tor's control port at {endpoint} does not accept cookie authentication (it offers: {names})")
            info.auth_methods = cookie
            info.cookie_path = cookie_path
        stem.connection.authenticate(ctl, password=password, protocolinfo_response=info)
    except stem.connection.AuthenticationFailure as exc:
        ctl.close()
        raise TorAuthError(_auth_failure_message(exc, endpoint)) from exc
    except (stem.ControllerError, stem.SocketError) as exc:
        ctl.close()
        raise TorControlError(f"Tor's control port at {endpoint} failed during authentication: {exc}") from exc
    except BaseException:
        ctl.close()
        raise
    return ctl


def _auth_failure_message(exc: stem.connection.AuthenticationFailure, endpoint: str) -> str:
    conn = stem.connection
    where = f"Tor's control port at {endpoint}"
    path = getattr(exc, "cookie_path", None)
    if isinstance(exc, conn.MissingPassword):
        return f"{where} requires a password (HashedControlPassword) and none was given"
    if isinstance(exc, conn.PasswordAuthFailed):
        return f"{where} rejected the password: wrong control-port password ({exc})"
    if isinstance(exc, conn.UnreadableCookieFile):
        return f"cannot read Tor's authentication cookie {path}: {exc}"
    if isinstance(exc, conn.IncorrectCookieSize):
        return f"{path} is not a Tor authentication cookie (a cookie file holds exactly 32 bytes)"
    if isinstance(exc, conn.CookieAuthFailed):
        return f"{where} rejected the authentication cookie from {path}: wrong or stale cookie (is it this Tor's cookie file?)"
    if isinstance(exc, conn.NoAuthCookie):
        return f"{where} wants cookie authentication but did not say where its cookie file is"
    return f"authentication to {where} failed: {exc}"


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
                await trio.to_thread.run_sync(_open_controller, host, port, None, str(self.cookie_path)),
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
            _open_controller, self.control_host, self.control_port, self._password, self._cookie
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
