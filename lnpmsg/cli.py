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
    node.add_argument("--network", default="bitcoin", choices=["bitcoin", "testnet", "signet", "regtest"], help="chain announced in init (default: %(default)s)")
    node.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: %(default)s")
    node.add_argument("--json", action="store_true", help="print the start-up summary as one JSON line on stdout")
    node.add_argument("--control", metavar="ENDPOINT", help="control API socket: ipc://PATH or tcp://127.0.0.1:PORT (CURVE) (default: ipc://DATA_DIR/control.sock)")
    node.add_argument("--events", metavar="ENDPOINT", help="event PUB socket (default: ipc://DATA_DIR/events.sock; a free loopback port with a tcp:// --control)")
    node.add_argument("--no-control", action="store_true", help="serve no control API (the other commands cannot reach this node)")
    node.add_argument("--feature", action="append", type=int, default=[], metavar="BIT", help="also advertise this feature bit in init, e.g. for an app attached over the control API (odd: optional); repeatable")

    from lnpmsg.rpc.commands import add_commands

    add_commands(commands, DEFAULT_DATA_DIR)
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
    listen = [] if args.no_listen else (args.listen or [DEFAULT_LISTEN])
    tor_socks = None
    if args.tor_socks:
        from lnpmsg.transports.tcp import split_host_port

        try:
            tor_socks = split_host_port(args.tor_socks)
        except ValueError as exc:
            log.error("bad --tor-socks: %s", exc)
            return 2
    config = NodeConfig(listen=listen, connect=list(args.connect), network=args.network, tor_socks=tor_socks)
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
    if not args.no_control:
        try:
            node.mount(ControlServer(args.data_dir, endpoint=args.control, events_endpoint=args.events))
        except ControlError as exc:
            log.error("cannot start: %s", exc)
            return 1
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as outer:
            # A signal or the control API's stop call stops the node; then we exit.
            outer.start_soon(_stop_on_signal, signals, node)
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(node.run)
                except (TransportError, OSError, ValueError, ControlError, BaseExceptionGroup) as exc:
                    # Start-up failures come out of the node's nursery wrapped in groups.
                    cause = _first_leaf(exc)
                    if not isinstance(cause, (TransportError, OSError, ValueError, ControlError)):
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
                control = node.apps.get("control")
                if isinstance(control, ControlServer):
                    summary["control"] = control.endpoint
                    summary["events"] = control.events_endpoint
                if args.json:
                    print(json.dumps(summary), flush=True)
                else:
                    print(f"node id: {summary['node_id']}", flush=True)
                    for address in summary["addresses"]:
                        print(f"address: {address}", flush=True)
                    if "control" in summary:
                        print(f"control: {summary['control']}", flush=True)
                    print("press Ctrl-C to stop", flush=True)
            # node.run returned: stopped by a signal or over the control API
            outer.cancel_scope.cancel()
    log.info("stopped")
    return 0


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _stop_on_signal(signals: AsyncIterator[int], node: Node) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        node.stop()
        return


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from lnpmsg.rpc.commands import COMMANDS, run_command

    if args.command in COMMANDS:
        return run_command(args)
    setup_logging(getattr(args, "log_level", "info"))
    if args.command == "node":
        return trio.run(_run_node, args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
