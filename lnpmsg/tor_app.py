"""The node's Tor: its own onion service, outbound dials through Tor, and recovery when Tor dies.

Mount a :class:`NodeTor` on a node and it gets a Tor before the node
listens or dials (apps start first in :meth:`Node.run
<lnpmsg.node.node.Node.run>`)::

    node = Node(key, NodeConfig(onion_only=True))
    node.mount(NodeTor(TorSettings(data_dir)))           # launch and own a tor
    node.mount(NodeTor(TorSettings(data_dir, control=("127.0.0.1", 9051), password="...")))  # attach

What it does:

- **Tor**: launches a ``tor`` (files in ``DATA_DIR/tor``, see
  :class:`~lnpmsg.transports.tor.control.LaunchedTor`) or attaches to a
  running one's control port; bootstrap progress is logged with its percent,
  and a Tor that does not finish within ``bootstrap_timeout`` is a
  :class:`~lnpmsg.transports.tor.errors.TorBootstrapError`.
- **Onion service**: a loopback listener (127.0.0.1, a free port) served by
  the node, behind the onion service ``<id>.onion:9735`` whose ED25519-V3 key
  is kept in ``DATA_DIR/onion_key`` (0600), so the address survives
  restarts. ``xyz.onion:9735`` joins :attr:`Node.listen_addresses
  <lnpmsg.node.node.Node.listen_addresses>` (what ``getinfo`` reports); the
  loopback listener does not, peers cannot dial it. The service is removed
  (``DEL_ONION``) when the node stops.
- **Outbound**: the node's ``tor`` transport (:class:`TorGate`) dials
  through the current Tor's SOCKS port. With the node's ``onion_only`` every
  dial goes there (see :class:`~lnpmsg.node.node.NodeConfig`).
- **Recovery**: Tor's death (the launched process exits, or the control
  connection drops) is logged and published as an
  :class:`~lnpmsg.node.events.ErrorReported` event; the node then launches a
  new tor (or re-attaches), with back-off, and re-publishes the same onion
  address from the same key file. Dials made meanwhile wait for Tor (up to
  their connect timeout). Peers the node keeps connected reconnect by
  themselves.
- **Full disk**: a launched tor that cannot write its files while starting
  fails the start at once with a :class:`TorDiskFull` naming the path, the
  disk's figures, the cure and tor's own warnings (they come through a pipe,
  see :mod:`lnpmsg.transports.tor.output`); a recovery attempt fails the
  same way, and is retried. A running tor's failed writes are logged as a
  warning and shown by ``tor.status`` (``disk_full``); the onion key is the
  node's file, only read once written, so the address survives.

The control API gains ``tor.status``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.app import App
from lnpmsg.node.events import ErrorReported
from lnpmsg.node.full_disk import full_disk_cure
from lnpmsg.transports.base import Transport
from lnpmsg.transports.tcp import TcpListener, format_host_port, split_host_port
from lnpmsg.transports.tor.address import OnionAddress, is_onion_host
from lnpmsg.transports.tor.control import (
    DEFAULT_BOOTSTRAP_TIMEOUT,
    AttachedTor,
    BootstrapStatus,
    LaunchedTor,
    TorHandle,
)
from lnpmsg.transports.tor.errors import ClearnetRefused, TorDiskFull, TorError
from lnpmsg.transports.tor.onion import (
    DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_VIRTUAL_PORT,
    OnionService,
)
from lnpmsg.transports.tor.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    TorConnection,
    TorTransport,
    listen_behind_onion,
    split_tor_target,
)

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = [
    "LIVENESS_INTERVAL",
    "ONION_KEY_FILE",
    "RESTART_MAX_DELAY",
    "RESTART_MIN_DELAY",
    "NodeTor",
    "TorGate",
    "TorSettings",
    "settings_from_args",
]

log = logging.getLogger(__name__)

#: the onion service's key, in the node's data dir
ONION_KEY_FILE = "onion_key"
#: how often Tor's liveness is checked (a process poll and a flag: cheap);
#: a dead Tor is noticed within this long
LIVENESS_INTERVAL = 0.5
#: back-off between attempts to bring a lost Tor back (doubled up to the max):
#: a Tor that cannot start at once (a port still held, a network gone) is not
#: retried in a tight loop
RESTART_MIN_DELAY = 1.0
RESTART_MAX_DELAY = 60.0


@dataclass(frozen=True, slots=True)
class TorSettings:
    """Where the node's Tor comes from and what is asked of it.

    ``data_dir``: the node's data dir (a launched tor's files go in
    ``data_dir/tor``, the onion key in ``data_dir/onion_key``).
    ``control``: attach to the Tor whose control port is there, with
    ``password`` or ``cookie_path`` (neither: Tor's PROTOCOLINFO decides);
    ``None`` launches a ``tor`` (``tor_path``, default: found on ``PATH``)
    with ``extra_torrc`` lines. ``socks``: the SOCKS port of an attached Tor
    (default: its first). ``onion_service=False``: outbound only.
    """

    data_dir: Path
    control: tuple[str, int] | None = None
    password: str | None = None
    cookie_path: Path | None = None
    socks: tuple[str, int] | None = None
    tor_path: str | None = None
    extra_torrc: tuple[str, ...] = ()
    onion_service: bool = True
    virtual_port: int = DEFAULT_VIRTUAL_PORT
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def key_file(self) -> Path:
        return Path(self.data_dir) / ONION_KEY_FILE

    @property
    def mode(self) -> str:
        """``"launched"`` or ``"attached"``."""
        return "launched" if self.control is None else "attached"


class TorGate(Transport):
    """The node's ``tor`` transport: dials through whichever Tor is current.

    While Tor is down (starting, or being brought back) a dial waits for it,
    up to ``connect_timeout``, then fails with :class:`TorError` naming why
    Tor is down. With ``allow_clearnet=False`` a non-onion target raises
    :class:`ClearnetRefused` at once, before any socket is opened.
    ``listen`` binds loopback addresses only (the listener behind an onion
    service).
    """

    kind = "tor"

    def __init__(self, *, allow_clearnet: bool = False, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.allow_clearnet = allow_clearnet
        self.connect_timeout = connect_timeout
        self._current: TorTransport | None = None
        self._up = trio.Event()
        self._down_reason = "Tor is not started yet"
        self._dials = itertools.count(1)

    @property
    def current(self) -> TorTransport | None:
        """The transport over the running Tor's SOCKS port, or ``None`` while Tor is down."""
        return self._current

    def set_up(self, transport: TorTransport) -> None:
        self._current = transport
        self._up.set()

    def set_down(self, reason: str) -> None:
        self._current = None
        self._down_reason = reason
        if self._up.is_set():
            self._up = trio.Event()

    async def dial(self, target: str) -> TorConnection:
        peer, host, port = split_tor_target(target)  # a malformed onion fails here, before any wait
        if not self.allow_clearnet and not is_onion_host(host):
            raise ClearnetRefused(
                f"refusing to dial {format_host_port(host, port)}: not an onion address, and this node "
                "dials onion addresses only (onion-to-onion mode)"
            )
        with trio.move_on_after(self.connect_timeout):
            await self._up.wait()
        current = self._current
        if current is None:
            raise TorError(f"cannot dial {format_host_port(host, port)} through Tor: {self._down_reason}")
        # A fresh isolation token per dial, so each attempt gets circuits of its own.
        # Tor attaches a new stream to a rendezvous circuit already waiting for the
        # same service; when the service died right after its intro point acknowledged
        # the introduction, that circuit waits for an answer that never comes, and
        # every reconnect would stall on it. Peers never share circuits either way.
        isolation = f"{peer or format_host_port(host, port)}#{next(self._dials)}"
        return await current.dial(target, isolation_key=isolation)

    async def listen(self, target: str) -> TcpListener:
        return await listen_behind_onion(target)


class NodeTor(App):
    """The node's Tor integration, mounted like an app (its name is ``tor``).

    See the module docstring. Attributes for callers and tests:
    :attr:`onion` (the service's address once published), :attr:`handle`
    (the current :class:`TorHandle`), :attr:`recoveries` (how often Tor was
    brought back), :attr:`transport` (the :class:`TorGate` installed as the
    node's ``tor`` transport).
    """

    def __init__(self, settings: TorSettings) -> None:
        # Tor recovers by itself (see the module docs); a failure past that is the node's to report.
        super().__init__("tor", handler_timeout=None)
        self.settings = settings
        self.transport = TorGate(connect_timeout=settings.connect_timeout)
        self.handle: TorHandle | None = None
        self.onion: OnionAddress | None = None
        self.recoveries = 0
        #: where Tor is: new, starting, ready, recovering, stopping, stopped (``state`` is the app's)
        self.tor_state = "new"
        self.bootstrap: BootstrapStatus | None = None
        #: set each time Tor is (again) ready and the onion service published
        self.ready = trio.Event()
        self.add_control_method("status", self.status)
        self._service: OnionService | None = None
        self._listener: TcpListener | None = None
        self._listener_served = False
        self._announced: str | None = None

    # ---------------------------------------------------------------- mounting

    def attach(self, node: Node) -> None:
        """Install :attr:`transport` as the node's ``tor`` transport."""
        super().attach(node)
        # tor:// clearnet targets (and, onion-only, every clearnet target) leave
        # through Tor exits unless the node dials onions only.
        self.transport.allow_clearnet = not node.config.onion_to_onion
        if "tor" in node.transports:
            log.info("the node's own Tor replaces the tor transport it had")
        node.transports["tor"] = self.transport

    @property
    def node(self) -> Node:
        if self._node is None:
            raise TorError("NodeTor is not mounted on a node")
        return self._node

    @property
    def onion_target(self) -> str | None:
        """``<id>.onion:9735`` once published."""
        return None if self.onion is None else f"{self.onion.hostname}:{self.settings.virtual_port}"

    @property
    def service_port(self) -> int | None:
        """The loopback port the onion service leads to."""
        return None if self._listener is None else self._listener.port

    # --------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring Tor up (raising :class:`TorError` if it cannot), then watch it until cancelled."""
        try:
            self.tor_state = "starting"
            await self._bring_up()
            task_status.started()
            while True:
                reason = await self._wait_lost()
                await self._recover(reason)
        finally:
            with trio.CancelScope(shield=True):
                self.tor_state = "stopping"
                self.transport.set_down("the node is stopping")
                await self._close_tor()
                node = self._node
                if node is not None and self._announced in node.listen_addresses:
                    node.listen_addresses.remove(self._announced)
                if self._listener is not None and not self._listener_served:
                    await self._listener.aclose()
                self.tor_state = "stopped"

    def _make_handle(self) -> TorHandle:
        s = self.settings
        if s.control is None:
            return LaunchedTor(
                s.data_dir,
                tor_path=s.tor_path,
                extra_torrc=s.extra_torrc,
                bootstrap_timeout=s.bootstrap_timeout,
                on_progress=self._on_progress,
            )
        host, port = s.control
        return AttachedTor(
            host,
            port,
            password=s.password,
            cookie_path=s.cookie_path,
            socks_address=s.socks,
            bootstrap_timeout=s.bootstrap_timeout,
            on_progress=self._on_progress,
        )

    def _on_progress(self, status: BootstrapStatus) -> None:
        self.bootstrap = status

    async def _bring_up(self) -> None:
        """Start (or attach to) a Tor, open outbound dials, publish the onion service."""
        handle = self._make_handle()
        if isinstance(handle, AttachedTor):
            log.info("attaching to Tor's control port at %s:%d", handle.control_host, handle.control_port)
        try:
            await handle.start()
        except TorDiskFull as exc:
            # The node's other stores say a full disk this way too: the path, the disk's figures, the cure.
            output = f"\ntor's last warnings:\n{exc.output}" if exc.output else ""
            raise TorDiskFull(f"cannot write {exc.path} for tor: {full_disk_cure(exc.path)}{output}", exc.path, exc.output) from exc
        self.handle = handle
        try:
            self.transport.set_up(handle.transport(allow_clearnet=self.transport.allow_clearnet, connect_timeout=self.settings.connect_timeout))
            log.info("Tor ready: SOCKS port %s", format_host_port(*handle.socks_address))
            if self.settings.onion_service:
                await self._publish(handle)
        except BaseException:
            self.transport.set_down("Tor failed while starting")
            with trio.CancelScope(shield=True):
                await self._close_tor()
            raise
        self.tor_state = "ready"
        self.ready.set()

    async def _publish(self, handle: TorHandle) -> None:
        if self._listener is None:
            self._listener = await self.transport.listen("127.0.0.1:0")
        service = OnionService(
            handle.controller,
            self.settings.key_file,
            self._listener.port,
            virtual_port=self.settings.virtual_port,
            publish_timeout=self.settings.publish_timeout,
        )
        address = await service.start()
        self._service = service
        if self.onion is not None and address != self.onion:
            # Only a replaced key file can do this; peers knew the old address.
            log.error("the onion address changed from %s to %s (was %s replaced?)", self.onion.hostname, address.hostname, self.settings.key_file)
        self.onion = address
        target = service.target
        if not self._listener_served:
            self.node.add_listener(self._listener, reachable=target)
            self._listener_served = True
            self._announced = target
        elif self._announced != target:
            node = self.node
            if self._announced in node.listen_addresses:
                node.listen_addresses.remove(self._announced)
            node.listen_addresses.append(target)
            self._announced = target
        log.info("onion service: %s@%s (-> 127.0.0.1:%d)", self.node.node_id.hex(), target, self._listener.port)

    async def _wait_lost(self) -> str:
        """Return (with the reason) once the current Tor is gone."""
        handle = self.handle
        assert handle is not None
        controller = handle.controller
        while True:
            if isinstance(handle, LaunchedTor) and (code := handle.returncode) is not None:
                full = handle.disk_full
                cause = "" if full is None else f" (it said it could not write {full}: {full_disk_cure(full)})"
                return f"tor (pid {handle.pid}) exited with code {code}{cause}"
            if not controller.is_alive:
                return f"lost the control connection to Tor at {controller.endpoint}"
            await trio.sleep(LIVENESS_INTERVAL)

    async def _recover(self, reason: str) -> None:
        """Bring Tor back after ``reason``; retries with back-off until it works (or the node stops)."""
        self.tor_state = "recovering"
        self.ready = trio.Event()
        action = "restarting it" if self.settings.control is None else "re-attaching"
        log.warning("Tor lost: %s; %s", reason, action)
        self.transport.set_down(f"Tor is being brought back ({reason})")
        self.node.events.publish(ErrorReported("tor", f"Tor lost: {reason}; {action}"))
        lost = self.handle
        await self._close_tor()
        if isinstance(lost, LaunchedTor):  # closed: its output is all read
            log.info("last lines of the lost tor's log:\n%s", lost.log_tail(10))
        self.transport.set_down(f"Tor is being brought back ({reason})")
        delay = RESTART_MIN_DELAY
        while True:
            try:
                await self._bring_up()
            except TorError as exc:
                # the retry first: the reason may end with tor's own lines
                log.warning("bringing Tor back failed (retrying in %.0f s): %s", delay, exc)
                self.node.events.publish(ErrorReported("tor", f"bringing Tor back failed: {exc}"))
                self.transport.set_down(f"Tor is being brought back ({reason}); last attempt: {exc}")
                await trio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_DELAY)
                continue
            self.recoveries += 1
            log.info("Tor is back (recovery %d)%s", self.recoveries, f"; onion service {self.onion_target} republished" if self.onion else "")
            return

    async def _close_tor(self) -> None:
        """Remove the onion service (if Tor still answers) and release the Tor."""
        with trio.CancelScope(shield=True):
            service, self._service = self._service, None
            if service is not None:
                await service.aclose()
            handle, self.handle = self.handle, None
            if handle is not None:
                await handle.aclose()

    # ------------------------------------------------------------- control API

    async def status(self) -> dict[str, Any]:
        """The node's Tor: mode, state, onion address, SOCKS and control ports, bootstrap, recoveries."""
        handle = self.handle
        socks = control = None
        if handle is not None:
            try:
                socks = format_host_port(*handle.socks_address)
                control = handle.controller.endpoint
            except TorError:
                pass  # between a start and its controller: not known yet
        node = self._node
        return {
            "mode": self.settings.mode,
            "state": self.tor_state,
            "onion": None if self.onion_target is None or node is None else f"{node.node_id.hex()}@{self.onion_target}",
            "service_port": self.service_port,
            "socks": socks,
            "control": control,
            "pid": handle.pid if isinstance(handle, LaunchedTor) else None,
            # a path tor could not write for lack of room (it runs on; a restart would fail there)
            "disk_full": handle.disk_full if isinstance(handle, LaunchedTor) else None,
            "bootstrap": None if self.bootstrap is None else str(self.bootstrap),
            "recoveries": self.recoveries,
            "onion_only": node is not None and node.config.onion_only,
            "clearnet_via_tor": self.transport.allow_clearnet,
        }



def settings_from_args(args: argparse.Namespace, tor_socks: tuple[str, int] | None = None) -> TorSettings | None:
    """The :class:`TorSettings` ``lnpmsg node``'s Tor options ask for, or ``None`` for no Tor of the node's own.

    ``--tor`` launches a tor, ``--tor-control`` attaches to one; ``--onion-only``
    alone launches one too (unless ``--tor-socks`` names a Tor to dial
    through). Raises ``ValueError`` naming the conflicting options.
    """
    onion_only = bool(args.onion_only or args.onion_to_onion)
    if onion_only and args.listen:
        raise ValueError("--onion-only: the node has no clearnet listener (peers reach it at its onion); drop --listen")
    if args.tor_password is not None and args.tor_cookie is not None:
        raise ValueError("give --tor-password or --tor-cookie, not both")
    if args.tor_control is None and (args.tor_password is not None or args.tor_cookie is not None):
        raise ValueError("--tor-password and --tor-cookie authenticate to --tor-control HOST:PORT")
    if args.tor_control is not None and (args.tor_path or args.tor_option):
        raise ValueError("--tor-path and --tor-option are for a launched tor (--tor), not an attached one (--tor-control)")
    if args.tor and tor_socks is not None:
        raise ValueError("a launched tor (--tor) brings its own SOCKS port: drop --tor-socks")
    launch = bool(args.tor) or (onion_only and args.tor_control is None and tor_socks is None)
    if not launch and args.tor_control is None:
        if args.tor_path or args.tor_option or args.no_onion_service:
            raise ValueError("--tor-path, --tor-option and --no-onion-service need --tor (or --tor-control)")
        return None
    control = None
    if args.tor_control is not None:
        try:
            control = split_host_port(args.tor_control)
        except ValueError as exc:
            raise ValueError(f"bad --tor-control: {exc}") from None
    if args.tor_timeout <= 0:
        raise ValueError("--tor-timeout must be positive")
    return TorSettings(
        Path(args.data_dir),
        control=control,
        password=args.tor_password,
        cookie_path=args.tor_cookie,
        socks=tor_socks,
        tor_path=args.tor_path,
        extra_torrc=tuple(args.tor_option),
        onion_service=not args.no_onion_service,
        bootstrap_timeout=args.tor_timeout,
        publish_timeout=args.tor_timeout,
    )
