"""The composition root: a node and its apps, built from :class:`NodeSettings`.

``lnpmsg node``, ``lnpmsg demo``, tests and programs that embed a node all
build it here, so a node is wired one way only::

    from lnpmsg.runtime import NodeSettings, build_node

    built = build_node(NodeSettings(data_dir=Path("/tmp/n1"), listen=["127.0.0.1:0"], apps=[greeter]))
    async with built.running() as node:         # started; stopped on the way out
        peer = await node.connect(address)

or, as a daemon that stops on Ctrl-C / SIGTERM / the control API's ``stop``::

    await run_node(settings)

What gets mounted, in this order (apps start in mount order, before the
node listens): peer RPC and peer pub/sub, the chain and wallet app
(``chain``) with the chain's servers (``chainrpc``, ``electrum``; see
:mod:`lnpmsg.wallet.node_setup`), with a chain peer storage (``peer_storage``) and the channels (``channels``,
after the chain app whose source and wallet it uses), gossip (``gossip``), with both
the public channels (``announce``: announcement_signatures and our own gossip), onion
messages (``onion_messages``, unless ``onion_messages=False``) and with payments BOLT 12 offers
(``offers``), the user apps of
``settings.apps``, the control API (``control``, last among apps so it
serves every app's calls from the start), the node's Tor (``tor``).
"""

from __future__ import annotations

import logging
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg._hex import parse_hex
from lnpmsg.runtime.gc_policy import node_gc
from lnpmsg.runtime.malloc_policy import tune_malloc
from lnpmsg.runtime.settings import DEFAULT_LISTEN, NodeSettings, SettingsError, StartError
from lnpmsg.runtime.user_apps import resolve_app

if TYPE_CHECKING:
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import Node, NodeConfig

__all__ = ["BuiltNode", "build_node", "check_settings", "run_node"]

log = logging.getLogger("lnpmsg")

NETWORKS = ("bitcoin", "testnet", "signet", "regtest")
CHAINS = ("regtest",)


@dataclass
class BuiltNode:
    """A node with its apps mounted, not yet running."""

    node: Node
    settings: NodeSettings
    #: the node key was generated now (first start in this data dir)
    key_created: bool = False
    #: exceptions that, raised while the node starts, mean "could not start" (a clear message, not a crash)
    start_errors: tuple[type[BaseException], ...] = field(default=())

    @property
    def network(self) -> str:
        return self.node.config.network

    def app(self, name: str) -> Any:
        """The mounted app called ``name`` (None if there is none)."""
        return self.node.apps.get(name)

    async def start(self, nursery: trio.Nursery) -> None:
        """Run the node in ``nursery`` and return once it listens; :class:`StartError` if it cannot start."""
        try:
            await nursery.start(self.node.run)
        except BaseException as exc:
            from lnpmsg.rpc.control import ControlServer

            control = self.app("control")
            if isinstance(control, ControlServer):
                control.release()  # the data dir's lock, taken while building: free for the next start
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
            # Start-up failures come out of the node's nursery wrapped in groups.
            cause = _first_leaf(exc)
            failed = self._failed_app(cause)
            full_disk = self._full_disk(cause)
            if full_disk is not None:  # a raw error a store let through: what it means and what to do
                raise StartError(f"app {failed!r} failed to start: {full_disk}" if failed else full_disk) from exc
            if isinstance(cause, self.start_errors):
                raise StartError(str(cause)) from exc
            if failed is not None:
                # An app that raised before it started (a user app's missing database...): one line, the
                # traceback at debug level for whoever debugs the app.
                log.debug("app %s failed to start", failed, exc_info=cause)
                raise StartError(f"app {failed!r} failed to start: {_describe(cause)}") from exc
            raise

    def _full_disk(self, cause: BaseException) -> str | None:
        """What to tell of an ``OSError`` or SQLite error that a full disk raised, or None.

        The stores say it themselves, naming their file (:mod:`lnpmsg.node.full_disk`); this
        covers a write none of them wraps (a user app's, a new file's)."""
        from lnpmsg.node.full_disk import cannot, is_full_disk

        if not isinstance(cause, OSError) and not getattr(cause, "sqlite_errorname", None):
            return None
        filename = getattr(cause, "filename", None)  # a write's OSError names no file: its data dir then
        what, where = ("write", filename) if filename else ("write in", self.settings.data_dir)
        return cannot(what, where, cause) if is_full_disk(cause, where) else None

    def _failed_app(self, cause: BaseException) -> str | None:
        """The app whose start raised ``cause`` (it is stopped, with the reason), if one did."""
        from lnpmsg.app import AppState

        if isinstance(cause, trio.Cancelled):
            return None
        for name, app in self.node.apps.items():
            if getattr(app, "state", None) is AppState.STOPPED and getattr(app, "stop_reason", None):
                return name
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """Run the node for the duration of the block (stopped on the way out); :class:`StartError` if it cannot start."""
        failure: StartError | None = None
        async with trio.open_nursery() as nursery:
            try:
                await self.start(nursery)
            except StartError as exc:
                failure = exc  # raised below, not wrapped in the nursery's exception group
            else:
                try:
                    yield self.node
                finally:
                    self.node.stop()
        if failure is not None:
            raise failure

    async def summary(self) -> dict[str, Any]:
        """What a user needs to reach the running node: id, dialable addresses, sockets, apps."""
        node = self.node
        settings = self.settings
        out: dict[str, Any] = {
            "node_id": node.node_id.hex(),
            "listen": list(node.listen_addresses),
            "addresses": node.addresses,
            "data_dir": str(settings.data_dir),
            "network": self.network,
            "apps": sorted(node.apps),
        }
        if settings.chain_source is not None:
            out["chain"] = f"shared, wallet in {settings.data_dir / 'wallet'}"
        else:
            from lnpmsg.wallet import node_setup

            out.update(node_setup.summary(settings, node))  # type: ignore[arg-type]
        electrum = self.app("electrum")
        if electrum is not None and hasattr(electrum, "address"):
            out["electrum"] = electrum.address
        gossip = self.app("gossip")
        if gossip is not None and hasattr(gossip, "graph"):
            out["gossip"] = f"{len(gossip.graph)} channels in {gossip.store.path}"
        control = self.app("control")
        if control is not None and hasattr(control, "endpoint"):
            out["control"] = control.endpoint
            out["events"] = control.events_endpoint
        tor = self.app("tor")
        if tor is not None and hasattr(tor, "status"):
            out["onion"] = (await tor.status())["onion"]
        return out


def build_node(settings: NodeSettings) -> BuiltNode:
    """Build the node ``settings`` describe, its apps mounted; nothing runs yet.

    Raises :class:`SettingsError` for settings that cannot work (a bad key,
    options that contradict each other, a user app that does not load or
    clashes with another) and :class:`StartError` for a store or socket
    that cannot be opened.
    """
    from lnpmsg.node.node import Node, NodeConfig
    from lnpmsg.transports.base import TransportError

    start_errors: list[type[BaseException]] = [TransportError, OSError, ValueError]
    key, created = _load_key(settings)
    network = _network(settings)
    onion_only = settings.onion_only or settings.onion_to_onion
    if settings.listen is None:
        listen = [] if onion_only else [DEFAULT_LISTEN]
    else:
        listen = list(settings.listen)
    if onion_only and listen:
        raise SettingsError("onion-only: the node has no clearnet listener (peers reach it at its onion); drop --listen")
    config = NodeConfig(
        listen=listen,
        connect=list(settings.connect),
        network=network,
        tor_socks=_tor_socks(settings.tor_socks),
        onion_only=onion_only,
        onion_to_onion=settings.onion_to_onion,
    )
    config = _config_overrides(config, settings.node_config)
    if settings.features:
        from lnpmsg.wire import Features, WireError

        try:
            config.features = config.features | Features.from_bits(settings.features)
        except WireError as exc:
            raise SettingsError(f"bad --feature: {exc}") from None
    try:
        node = Node(key, config)
    except (TransportError, ValueError) as exc:  # e.g. a Tor SOCKS port that is not on loopback
        raise SettingsError(f"cannot start: {exc}") from None
    built = BuiltNode(node, settings, key_created=created)
    if settings.peer_rpc:
        from lnpmsg.rpc.peer import PeerRpc

        node.mount(PeerRpc())
    if settings.peer_pubsub:
        from lnpmsg.pubsub.peer import PeerPubSub

        node.mount(PeerPubSub())
    start_errors += _mount_chain(node, settings)
    start_errors += _mount_channels(node, settings)
    start_errors += _mount_gossip(node, settings, network)
    _mount_announce(node, settings)
    if settings.onion_messages:
        from lnpmsg.onion_messages.app import OnionMessagesApp

        node.mount(OnionMessagesApp(blinded_path_length=settings.blinded_path_length))
        if "payments" in node.apps:
            from lnpmsg.payments.bolt12.app import OffersApp
            from lnpmsg.payments.bolt12.store import OffersStoreError

            node.mount(OffersApp(settings.data_dir / "offers"))
            start_errors.append(OffersStoreError)
    for spec in settings.apps:
        _mount_user_app(node, spec, settings)
    if "gossip" not in node.apps:
        from lnpmsg.gossip.ignore import ignore_gossip

        # peers' gossip (a private channel's channel_update above all) is dropped, not a reason to fail them
        ignore_gossip(node)
    if settings.control:
        from lnpmsg.rpc.control import ControlError, ControlServer

        try:
            control = node.mount(ControlServer(settings.data_dir, endpoint=settings.control_endpoint, events_endpoint=settings.events_endpoint))
            # the lock now, before the apps start (the chain may replay blocks): clients wait for this node
            control.reserve()
        except ControlError as exc:
            raise StartError(str(exc)) from None
        start_errors.append(ControlError)
    if settings.tor is not None:
        from lnpmsg.tor_app import NodeTor

        node.mount(NodeTor(settings.tor))
    built.start_errors = tuple(start_errors)
    return built


async def check_settings(settings: NodeSettings) -> None:
    """Check what needs I/O to check: the chain options, and the network a ``bitcoind_rpc``
    server runs (filled into ``settings.network`` when it is None). Raises :class:`SettingsError`.

    :func:`run_node` calls it; call it before :func:`build_node` for settings with chain options.
    """
    from lnpmsg.wallet import node_setup

    problem = await node_setup.check(settings)  # type: ignore[arg-type]  # NodeSettings has the options' names
    if problem:
        raise SettingsError(problem)


async def run_node(
    settings: NodeSettings | BuiltNode,
    *,
    on_started: Callable[[BuiltNode], Awaitable[None] | None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Build (unless given a built node) and run a node until it is stopped.

    SIGINT and SIGTERM stop it (``handle_signals``; in the main thread
    only), as does :meth:`Node.stop` (the control API's ``stop``). A signal
    while the node is still starting (e.g. Tor bootstrapping) gives the
    start up. ``on_started`` is called once the node listens. The garbage
    collector runs at a node's pace meanwhile (:mod:`lnpmsg.runtime.gc_policy`), and the C
    allocator keeps the pages of a node's buffers (:mod:`lnpmsg.runtime.malloc_policy`). Raises
    :class:`SettingsError` or :class:`StartError` when the node cannot be
    built or started; returns once it stopped.
    """
    if isinstance(settings, BuiltNode):
        built = settings
    else:
        await check_settings(settings)
        built = build_node(settings)
    node = built.node
    tune_malloc()
    failure: StartError | None = None
    signals = trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) if handle_signals else _NoSignals()
    with signals as received, node_gc():
        async with trio.open_nursery() as outer:
            outer.start_soon(_stop_on_signal, received, node, outer.cancel_scope)
            async with trio.open_nursery() as nursery:
                try:
                    await built.start(nursery)
                except StartError as exc:
                    failure = exc
                    outer.cancel_scope.cancel()
                else:
                    if on_started is not None:
                        result = on_started(built)
                        if result is not None:
                            await result
            # node.run returned: stopped by a signal, by node.stop() or over the control API
            outer.cancel_scope.cancel()
    if failure is not None:
        raise failure
    log.info("stopped")


# ------------------------------------------------------------------ parts


def _load_key(settings: NodeSettings) -> tuple[NodeKey, bool]:
    from lnpmsg.node.identity import IdentityError, KeyNotWritten, load_key_file, load_or_create_key

    if settings.key is not None and settings.key_file is not None:
        raise SettingsError("give a node key or a node key file, not both")
    try:
        if settings.key is not None:
            return settings.key, False
        if settings.key_file is not None:
            return load_key_file(settings.key_file), False
        key, created = load_or_create_key(settings.data_dir)
    except KeyNotWritten as exc:  # a full disk: the node cannot start, the settings are fine
        raise StartError(str(exc)) from None
    except IdentityError as exc:
        raise SettingsError(str(exc)) from None
    if created:
        log.info("generated a new node key in %s", settings.data_dir / "node_key")
    return key, created


def _network(settings: NodeSettings) -> str:
    if settings.chain is not None and settings.chain not in CHAINS:
        raise SettingsError(f"--chain {settings.chain}: the chains are {', '.join(CHAINS)}")
    if settings.network is not None and settings.network not in NETWORKS:
        raise SettingsError(f"--network {settings.network}: the networks are {', '.join(NETWORKS)}")
    if settings.chain and settings.network not in (None, settings.chain):
        raise SettingsError(f"--chain {settings.chain} needs --network {settings.chain} (the chain the node announces in init)")
    if settings.bitcoind_rpc and settings.network is None:
        raise SettingsError("bitcoind_rpc needs the network it serves (lnpmsg node asks the server when --network is not given)")
    return settings.network or settings.chain or "bitcoin"


def _config_overrides(config: NodeConfig, overrides: dict[str, Any]) -> NodeConfig:
    """``config`` with ``settings.node_config`` applied: only fields no other setting sets."""
    from dataclasses import fields

    from lnpmsg.node.node import NodeConfig

    settable = {f.name for f in fields(NodeConfig)} - _CONFIG_FROM_SETTINGS
    wrong = sorted(set(overrides) - settable)
    if wrong:
        raise SettingsError(f"node_config: {', '.join(wrong)} cannot be set there (it takes {', '.join(sorted(settable))})")
    return replace(config, **overrides)


#: the NodeConfig fields build_node fills from NodeSettings' own fields
_CONFIG_FROM_SETTINGS = frozenset({"listen", "connect", "network", "features", "tor_socks", "onion_only", "onion_to_onion"})


def _tor_socks(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    from lnpmsg.transports.address import split_host_port

    try:
        return split_host_port(text)
    except ValueError as exc:
        raise SettingsError(f"bad --tor-socks: {exc}") from None


def _mount_chain(node: Node, settings: NodeSettings) -> list[type[BaseException]]:
    """The chain and wallet apps (and the chain's servers) the settings ask for."""
    embedded = settings.chain is not None
    if settings.reindex and not embedded:
        raise SettingsError("--reindex rebuilds the embedded chain: it needs --chain regtest")
    if settings.electrum_listen is not None and not embedded:
        raise SettingsError("--electrum-listen needs --chain regtest (the node serves its own embedded chain)")
    errors: list[type[BaseException]] = []
    if settings.chain_source is not None:
        if embedded or settings.bitcoind_rpc:
            raise SettingsError("chain_source is the node's chain: no --chain or --bitcoind-rpc with it")
        from lnpmsg.wallet.app import ChainApp, ChainAppError

        node.mount(ChainApp(settings.data_dir / "wallet", source=settings.chain_source, import_privkeys=settings.dev.import_privkeys))
        errors.append(ChainAppError)
    else:
        from lnpmsg.wallet import node_setup

        try:
            errors += node_setup.mount(settings, node)  # type: ignore[arg-type]  # NodeSettings has the options' names
        except ValueError as exc:  # e.g. a --bitcoind-rpc URL without credentials
            raise SettingsError(str(exc)) from None
    if settings.electrum_listen is not None:
        from lnpmsg.chain.electrum.app import mount_electrum

        problem = mount_electrum(node, settings.electrum_listen)
        if problem:
            raise SettingsError(problem)
    return errors


def _mount_channels(node: Node, settings: NodeSettings) -> list[type[BaseException]]:
    """The channel and payments apps, when the node has a chain (funding, depth and closes need one)."""
    if "chain" not in node.apps:
        if settings.accept_keysend:
            raise SettingsError("--accept-keysend needs payments, so a chain: --chain regtest or --bitcoind-rpc")
        return []
    from lnpmsg.channels.app import ChannelsApp
    from lnpmsg.channels.options import HRPS, channel_settings

    try:
        config, policy = channel_settings(settings.channel_options, HRPS.get(node.config.network, "bcrt"))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    from lnpmsg.channels.peer_storage import PeerStorageApp

    # before the channel app: its peer_storage_retrieval leaves before any channel_reestablish (BOLT 1)
    node.mount(PeerStorageApp(settings.data_dir / "peer_storage", provide=settings.peer_storage, recover=settings.recover_from_peers))
    node.mount(ChannelsApp(settings.data_dir / "channels", config=config, policy=policy, dev=settings.dev))
    from lnpmsg.payments.app import PaymentsApp

    node.mount(PaymentsApp(settings.data_dir / "payments", accept_keysend=settings.accept_keysend, blinded_path_length=settings.blinded_path_length))
    from lnpmsg.channels.errors import ChannelStoreError
    from lnpmsg.payments.store import PaymentsStoreError

    return [ChannelStoreError, PaymentsStoreError]


def _mount_gossip(node: Node, settings: NodeSettings, network: str) -> list[type[BaseException]]:
    if not settings.gossip:
        if settings.gossip_import:
            raise SettingsError("--gossip-import needs the gossip app: drop --no-gossip")
        return []
    from lnpmsg.gossip.commands import node_gossip_app
    from lnpmsg.gossip.errors import GossipError

    try:
        node.mount(
            node_gossip_app(
                settings.data_dir,
                network,
                settings.gossip_import,
                chain_app=node.apps.get("chain"),
                prune_interval=settings.gossip_prune_interval,
                prune_after_days=settings.gossip_prune_after,
                full_syncs=settings.gossip_full_syncs,
                resync_interval=settings.gossip_resync_interval,
                fast=settings.dev.fast_gossip,
            )
        )
    except GossipError as exc:
        raise StartError(str(exc)) from None
    return [GossipError]


def _mount_announce(node: Node, settings: NodeSettings) -> None:
    """Public channels (announcement_signatures, our gossip), when the node has channels and gossip."""
    if "channels" not in node.apps or "gossip" not in node.apps:
        return
    from lnpmsg.gossip.public.app import AnnounceApp, AnnounceConfig

    if settings.alias is not None and len(settings.alias.encode("utf-8")) > 32:
        raise SettingsError(f"--alias: at most 32 bytes, got {len(settings.alias.encode('utf-8'))}")
    rgb = None
    if settings.rgb is not None:
        try:
            rgb = parse_hex(settings.rgb.removeprefix("#"), "--rgb (RRGGBB)", 3, quote=False)
        except ValueError as exc:
            raise SettingsError(f"{exc}: {settings.rgb!r}") from None
    config = AnnounceConfig(alias=settings.alias, rgb_color=rgb, extra_addresses=tuple(settings.announce_addr))
    if settings.dev.policy_grace is not None:
        config = replace(config, policy_grace=settings.dev.policy_grace)
    if settings.dev.update_interval is not None:
        config = replace(config, min_interval=settings.dev.update_interval)
    node.mount(AnnounceApp(config))


def _mount_user_app(node: Node, spec: Any, settings: NodeSettings) -> None:
    app = resolve_app(spec, settings, where=f"--app {spec!r}" if isinstance(spec, str) else None)
    try:
        node.mount(app)
    except Exception as exc:  # a name or a message type already taken, a bad declaration
        where = f"--app {spec!r}" if isinstance(spec, str) else f"app {getattr(app, 'name', app)!r}"
        raise SettingsError(f"{where}: cannot mount it: {exc}") from exc
    log.info("mounted app %s", app.name)


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class _NoSignals:
    """Stands in for ``trio.open_signal_receiver`` when the caller handles signals itself."""

    def __enter__(self) -> AsyncIterator[int]:
        return self._never()

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    async def _never() -> AsyncIterator[int]:
        await trio.sleep_forever()
        yield 0  # pragma: no cover


async def _stop_on_signal(signals: AsyncIterator[int], node: Node, starting: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        node.stop()
        if not node.started.is_set():
            # Still starting (e.g. Tor bootstrapping): give the start up; it cleans up after itself.
            starting.cancel()
        return
