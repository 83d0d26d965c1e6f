"""Tor's control port through stem, from trio: :class:`TorController`.

stem is blocking (its calls wait on a socket and a lock), so every call
runs in a worker thread (``trio.to_thread.run_sync``); the trio loop never
blocks on Tor. Events that stem delivers on its own thread are handed to
trio through the run's token (:meth:`TorController.events`). Connecting and
authenticating (cookie or password): :func:`open_controller`. The Tors it
controls, launched or attached: :mod:`lnpmsg.transports.tor.control`.
"""

from __future__ import annotations

import logging
import re
import socket
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import stem  # type: ignore[import-untyped]
import stem.connection  # type: ignore[import-untyped]
import stem.control  # type: ignore[import-untyped]
import stem.socket  # type: ignore[import-untyped]
import trio

from lnpmsg.transports.tor.errors import (
    TorAuthError,
    TorBootstrapError,
    TorControlError,
)

__all__ = [
    "DEFAULT_BOOTSTRAP_TIMEOUT",
    "BootstrapStatus",
    "ProgressCallback",
    "TorController",
    "TorEvent",
    "open_controller",
    "parse_bootstrap_phase",
]

#: the same logger as the Tor handles' (lnpmsg.transports.tor.control)
log = logging.getLogger("lnpmsg.transports.tor.control")

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


def open_controller(
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
