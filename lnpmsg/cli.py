"""The ``lnpmsg`` command.

``lnpmsg node`` runs a node with embedded defaults: a key generated on first
start in the data dir (``~/.lnpmsg``), a TCP listener on 127.0.0.1:9735.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from lnpmsg import __version__

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = ["main", "build_parser", "DEFAULT_DATA_DIR", "DEFAULT_LISTEN"]

DEFAULT_DATA_DIR = Path(os.environ.get("LNPMSG_DATA_DIR", "~/.lnpmsg")).expanduser()
DEFAULT_LISTEN = "127.0.0.1:9735"

log = logging.getLogger("lnpmsg")

_LEVEL_TAGS = {"DEBUG": "DBG", "INFO": "INF", "WARNING": "WRN", "ERROR": "ERR", "CRITICAL": "CRT"}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.tag = _LEVEL_TAGS.get(record.levelname, record.levelname)
        return super().format(record)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s.%(msecs)03d [%(tag)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnpmsg",
        description="A Tor-first P2P node and message framework speaking the Lightning wire protocol.",
        epilog="Run 'lnpmsg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"lnpmsg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    node = commands.add_parser(
        "node",
        help="run a node (the main job)",
        description=(
            "Run an lnpmsg node. On first start a node key is generated in the data dir "
            "(mode 0600) and reused afterwards. The node listens for Lightning peers "
            "(BOLT-8 encrypted) and keeps the peers given with --connect connected. "
            "Stop it with Ctrl-C."
        ),
        epilog=(
            "examples:\n"
            "  lnpmsg node                                  # 127.0.0.1:9735, key in ~/.lnpmsg\n"
            "  lnpmsg node --listen 0.0.0.0:9735 --connect 02ab...@10.0.0.5:9735\n"
            "  lnpmsg node --data-dir /tmp/n2 --listen 127.0.0.1:9736 --log-level debug\n"
            "  lnpmsg node --node-key 1111...11 --no-listen  # fixed key, outbound only\n"
            "  lnpmsg node --onion-only                     # own tor; reachable only at NODEID@xyz.onion:9735\n"
            "  lnpmsg node --tor-control 127.0.0.1:9051 --tor-cookie /run/tor/control.authcookie  # system tor\n"
            "\n"
            "peer addresses: NODEID@host:port (TCP; Tor when host is .onion),\n"
            "  tcp://, udp://, zmq+tcp://, zmq+ipc://NODEID@/path"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where the node keeps its key and state (default: %(default)s; env LNPMSG_DATA_DIR)")
    node.add_argument("--listen", action="append", metavar="ADDR", help=f"listen address, repeatable: host:port (TCP), udp://host:port, zmq+tcp://host:port, zmq+ipc:///path (default: {DEFAULT_LISTEN})")
    node.add_argument("--no-listen", action="store_true", help="do not listen at all (outbound connections only)")
    node.add_argument("--connect", action="append", default=[], metavar="PEER", help="peer to connect to and keep connected, NODEID@host:port; repeatable")
    key = node.add_mutually_exclusive_group()
    key.add_argument("--node-key-file", type=Path, metavar="FILE", help="use the node key in FILE (64 hex chars) instead of DATA_DIR/node_key")
    key.add_argument("--node-key", metavar="HEX", help="use this node key (64 hex chars); for reproducible test set-ups")
    node.add_argument("--tor-socks", metavar="HOST:PORT", help="Tor's SOCKS port (e.g. 127.0.0.1:9050): enables dialing .onion peers through Tor")
    tor = node.add_argument_group("Tor", "The node's own Tor: an onion service NODEID@xyz.onion:9735 (key in DATA_DIR/onion_key, same address after restarts), .onion peers dialed through Tor, Tor restarted (or re-attached) if it dies.")
    tor_source = tor.add_mutually_exclusive_group()
    tor_source.add_argument("--tor", action="store_true", help="launch and own a tor (from PATH, or --tor-path), files in DATA_DIR/tor")
    tor_source.add_argument("--tor-control", metavar="HOST:PORT", help="attach to a running Tor's control port instead (e.g. 127.0.0.1:9051)")
    tor.add_argument("--tor-password", metavar="PASSWORD", default=os.environ.get("LNPMSG_TOR_PASSWORD"), help="control-port password (HashedControlPassword; env LNPMSG_TOR_PASSWORD)")
    tor.add_argument("--tor-cookie", type=Path, metavar="FILE", help="control-port cookie file (CookieAuthentication; default: the one Tor names)")
    tor.add_argument("--tor-path", metavar="FILE", help="the tor executable to launch (default: tor on PATH)")
    tor.add_argument("--tor-option", action="append", default=[], metavar="LINE", help="extra torrc line for the launched tor, e.g. 'UseBridges 1'; repeatable")
    tor.add_argument("--tor-timeout", type=float, default=180.0, metavar="SECONDS", help="limit for Tor's bootstrap and for publishing the onion service (default: %(default)g)")
    tor.add_argument("--no-onion-service", action="store_true", help="dial through the node's Tor, publish no onion service")
    tor.add_argument("--onion-only", action="store_true", help="Tor only: no clearnet listener, every connection through Tor, only the .onion address reported (launches tor unless --tor-control or --tor-socks)")
    tor.add_argument("--onion-to-onion", action="store_true", help="--onion-only, and clearnet peers are refused instead of reached through Tor exits")
    node.add_argument("--network", default=None, choices=["bitcoin", "testnet", "signet", "regtest"], help="chain announced in init (default: bitcoin; regtest with --chain regtest)")
    node.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: %(default)s")
    node.add_argument("--json", action="store_true", help="print the start-up summary as one JSON line on stdout")
    node.add_argument("--control", metavar="ENDPOINT", help="control API socket: ipc://PATH or tcp://127.0.0.1:PORT (CURVE) (default: ipc://DATA_DIR/control.sock)")
    node.add_argument("--events", metavar="ENDPOINT", help="event PUB socket (default: ipc://DATA_DIR/events.sock; a free loopback port with a tcp:// --control)")
    node.add_argument("--no-control", action="store_true", help="serve no control API (the other commands cannot reach this node)")
    node.add_argument("--feature", action="append", type=int, default=[], metavar="BIT", help="also advertise this feature bit in init, e.g. for an app attached over the control API (odd: optional); repeatable")
    node.add_argument("--chain", choices=["regtest"], help="run a chain and an on-chain wallet (the chain.* control calls, 'lnpmsg mine', 'withdraw'...): 'regtest' is the embedded regtest chain, validated by Bitcoin Core's consensus engine, in DATA_DIR/chain, with the wallet in DATA_DIR/wallet (default: no chain; 'lnpmsg demo' always runs one)")
    node.add_argument("--electrum-listen", metavar="HOST:PORT", help="with --chain regtest: serve the chain to Electrum wallets (Electrum protocol 1.4, plain TCP) on HOST:PORT, e.g. 127.0.0.1:50001 (port 0: a free port, shown in the start-up summary)")
    node.add_argument("--reindex", action="store_true", help="with --chain regtest: rebuild the kernel's block files and chainstate (DATA_DIR/chain/blocks, chainstate) from the chain's own checksummed block log, as Bitcoin Core's -reindex; use it when the node refuses to start because they are damaged (progress is logged)")
    node.add_argument("--no-gossip", action="store_true", help="run without the gossip app (by default the node syncs, verifies and serves Lightning gossip, BOLT 7, with its channel graph in DATA_DIR/gossip.sqlite3: 'lnpmsg gossip ...')")
    node.add_argument("--gossip-import", action="append", default=[], metavar="FILE", help="import a Core Lightning gossip_store file (.xz too) while starting; repeat for the parts of one store, in order")
    node.add_argument("--gossip-prune-interval", type=float, metavar="SECONDS", help="how often channels without a recent update are pruned from the graph (default: 3600; 0: never)")
    node.add_argument("--gossip-prune-after", type=float, metavar="DAYS", help="a channel with no update for this long is stale and pruned (default: 14, BOLT 7's two weeks)")
    _add_demo_command(commands)

    from lnpmsg.rpc.commands import add_commands

    add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.chain import commands as chain_commands

    chain_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.gossip import commands as gossip_commands

    gossip_commands.add_commands(commands, DEFAULT_DATA_DIR)
    return parser


def _load_key(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lnpmsg.node.identity import key_from_hex, load_key_file, load_or_create_key

    if args.node_key:
        return key_from_hex(args.node_key), False
    if args.node_key_file:
        return load_key_file(args.node_key_file), False
    return load_or_create_key(args.data_dir)


async def _run_node(args: argparse.Namespace) -> int:
    from lnpmsg.node.identity import IdentityError
    from lnpmsg.node.node import Node, NodeConfig
    from lnpmsg.transports.base import TransportError

    try:
        key, created = _load_key(args)
    except IdentityError as exc:
        log.error("%s", exc)
        return 2
    if created:
        log.info("generated a new node key in %s", args.data_dir / "node_key")
    onion_only = args.onion_only or args.onion_to_onion
    listen = [] if args.no_listen or onion_only else (args.listen or [DEFAULT_LISTEN])
    tor_socks = None
    if args.tor_socks:
        from lnpmsg.transports.tcp import split_host_port

        try:
            tor_socks = split_host_port(args.tor_socks)
        except ValueError as exc:
            log.error("bad --tor-socks: %s", exc)
            return 2
    if args.chain and args.network not in (None, args.chain):
        log.error("--chain %s needs --network %s (the chain the node announces in init)", args.chain, args.chain)
        return 2
    if args.reindex and not args.chain:
        log.error("--reindex rebuilds the embedded chain: it needs --chain regtest")
        return 2
    args.network = args.network or args.chain or "bitcoin"
    from lnpmsg.node.tor import NodeTor, settings_from_args

    try:
        tor_settings = settings_from_args(args, tor_socks)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    config = NodeConfig(listen=listen, connect=list(args.connect), network=args.network, tor_socks=tor_socks, onion_only=onion_only, onion_to_onion=args.onion_to_onion)
    if args.feature:
        from lnpmsg.wire import Features, WireError

        try:
            config.features = config.features | Features.from_bits(args.feature)
        except WireError as exc:
            log.error("bad --feature: %s", exc)
            return 2
    try:
        node = Node(key, config)
    except TransportError as exc:  # e.g. a Tor SOCKS port that is not on loopback
        log.error("cannot start: %s", exc)
        return 2
    from lnpmsg.pubsub.peer import PeerPubSub
    from lnpmsg.rpc.control import ControlError, ControlServer
    from lnpmsg.rpc.peer import PeerRpc

    node.mount(PeerRpc())
    node.mount(PeerPubSub())
    start_errors: tuple[type[Exception], ...] = (TransportError, OSError, ValueError, ControlError)
    if args.chain:
        from lnpmsg.chain.app import ChainApp, ChainAppError

        node.mount(ChainApp(args.data_dir / "wallet", chain_dir=args.data_dir / "chain", reindex=args.reindex))
        start_errors += (ChainAppError,)
    if args.electrum_listen:
        from lnpmsg.chain.electrum.app import mount_electrum

        problem = mount_electrum(node, args.electrum_listen)
        if problem:
            log.error("%s", problem)
            return 2
    gossip_app = None
    if not args.no_gossip:
        from lnpmsg.gossip.commands import node_gossip_app
        from lnpmsg.gossip.errors import GossipError

        try:
            gossip_app = node.mount(
                node_gossip_app(
                    args.data_dir,
                    args.network,
                    args.gossip_import,
                    chain_app=node.apps.get("chain"),
                    prune_interval=args.gossip_prune_interval,
                    prune_after_days=args.gossip_prune_after,
                )
            )
        except GossipError as exc:
            log.error("cannot start: %s", exc)
            return 1
        start_errors += (GossipError,)
    elif args.gossip_import:
        log.error("--gossip-import needs the gossip app: drop --no-gossip")
        return 2
    if not args.no_control:
        try:
            # the lock now, before the apps start (the chain may replay blocks): clients wait for this node
            node.mount(ControlServer(args.data_dir, endpoint=args.control, events_endpoint=args.events)).reserve()
        except ControlError as exc:
            log.error("cannot start: %s", exc)
            return 1
    if tor_settings is not None:
        node.mount(NodeTor(tor_settings))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as outer:
            # A signal or the control API's stop call stops the node; then we exit.
            outer.start_soon(_stop_on_signal, signals, node, outer.cancel_scope)
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(node.run)
                except (TransportError, OSError, ValueError, ControlError, BaseExceptionGroup) as exc:
                    # Start-up failures come out of the node's nursery wrapped in groups.
                    cause = _first_leaf(exc)
                    if not isinstance(cause, start_errors):
                        raise
                    log.error("cannot start: %s", cause)
                    outer.cancel_scope.cancel()
                    return 1
                summary = {
                    "node_id": key.node_id.hex(),
                    "listen": node.listen_addresses,
                    "addresses": node.addresses,
                    "data_dir": str(args.data_dir),
                    "network": args.network,
                }
                if args.chain:
                    summary["chain"] = f"embedded {args.chain} in {args.data_dir / 'chain'}, wallet in {args.data_dir / 'wallet'}"
                if "electrum" in node.apps:
                    summary["electrum"] = node.apps["electrum"].address  # type: ignore[attr-defined]
                if gossip_app is not None:
                    summary["gossip"] = f"{len(gossip_app.graph)} channels in {gossip_app.store.path}"
                control = node.apps.get("control")
                if isinstance(control, ControlServer):
                    summary["control"] = control.endpoint
                    summary["events"] = control.events_endpoint
                node_tor = node.apps.get("tor")
                if isinstance(node_tor, NodeTor):
                    summary["onion"] = (await node_tor.status())["onion"]
                if args.json:
                    print(json.dumps(summary), flush=True)
                else:
                    print(f"node id: {summary['node_id']}", flush=True)
                    for address in summary["addresses"]:
                        print(f"address: {address}", flush=True)
                    if "control" in summary:
                        print(f"control: {summary['control']}", flush=True)
                    if "chain" in summary:
                        print(f"chain:   {summary['chain']}", flush=True)
                    if "gossip" in summary:
                        print(f"gossip:  {summary['gossip']}", flush=True)
                    print("press Ctrl-C to stop", flush=True)
            # node.run returned: stopped by a signal or over the control API
            outer.cancel_scope.cancel()
    log.info("stopped")
    return 0


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _stop_on_signal(signals: AsyncIterator[int], node: Node, starting: trio.CancelScope | None = None) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        node.stop()
        if starting is not None and not node.started.is_set():
            # Still starting (e.g. Tor bootstrapping): give the start up; it cleans up after itself.
            starting.cancel()
        return


# ------------------------------------------------------------------ demo

def _add_demo_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = commands.add_parser(
        "demo",
        help="try lnpmsg in one command: two nodes, a TCP link, an embedded regtest chain, wallets",
        description=(
            "Start two nodes in this process on one embedded regtest chain (Bitcoin Core's consensus "
            "engine), connect them over TCP, ping, send a custom message, mine 101 blocks, fund node A's "
            "wallet from the faucet, withdraw to node B's wallet and mine that. Prints each step and a "
            "summary; exits 0 when every step worked. Nothing else is needed: no bitcoind, no network."
        ),
    )
    demo.add_argument("--data-dir", type=Path, help="keep the nodes, wallets and chain here (default: a temporary dir, removed afterwards)")
    demo.add_argument("--json", action="store_true", help="print one JSON document (steps and summary) instead of progress")
    demo.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="node logs on stderr (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from lnpmsg.rpc.commands import COMMANDS, run_command

    if args.command in COMMANDS:
        return run_command(args)
    from lnpmsg.chain import commands as chain_commands

    if args.command in chain_commands.COMMANDS:
        return chain_commands.run_command(args)
    from lnpmsg.gossip import commands as gossip_commands

    if args.command in gossip_commands.COMMANDS:
        return gossip_commands.run_command(args)
    setup_logging(getattr(args, "log_level", "info"))
    if args.command == "node":
        return trio.run(_run_node, args)
    if args.command == "demo":
        from lnpmsg.chain.app import run_demo

        return trio.run(partial(run_demo, args.data_dir, json_output=args.json, write=lambda line: print(line, flush=True)))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
