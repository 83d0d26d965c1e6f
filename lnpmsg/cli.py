"""The ``lnpmsg`` command.

``lnpmsg node`` runs a node with embedded defaults: a key generated on first
start in the data dir (``~/.lnpmsg``), a TCP listener on 127.0.0.1:9735. The
node is built by the composition root (:mod:`lnpmsg.runtime`) from the
flags, ``DATA_DIR/lnpmsg.toml`` and the user apps of ``--app``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from lnpmsg import __version__
from lnpmsg.io.interrupt import run_interruptible
from lnpmsg.rpc.commands import COMMANDS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_command
from lnpmsg.runtime.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    NodeSettings,
    SettingsError,
    StartError,
)

if TYPE_CHECKING:
    from lnpmsg.runtime.build import BuiltNode

__all__ = ["main", "build_parser", "hoist_global_options", "settings_from_args", "DEFAULT_DATA_DIR", "DEFAULT_LISTEN"]

log = logging.getLogger("lnpmsg")

_LEVEL_TAGS = {"DEBUG": "DBG", "INFO": "INF", "WARNING": "WRN", "ERROR": "ERR", "CRITICAL": "CRT"}
#: third-party loggers that say too much at INFO (aioquic logs every QUIC connection's events)
_CHATTY_LOGGERS = ("quic", "http3")

#: options every command that has them also takes before the command name
#: (``lnpmsg --data-dir X getinfo``, the lightning-cli habit), and whether they take a value
GLOBAL_OPTIONS = {"--data-dir": True, "--config": True, "--json": False, "--log-level": True, "--timeout": True}

EXIT_CODES_HELP = """\
exit codes:
  0    success (for 'lnpmsg node': stopped by Ctrl-C, SIGTERM or 'lnpmsg stop')
  1    failed: the node could not start, a control call failed, a peer is not connected
  2    bad usage: an unknown option or a bad value, a bad config file, an --app that does not load
  3    no node is running at the data dir (control commands)
  130  interrupted by Ctrl-C before it finished (control commands, the examples)"""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.tag = _LEVEL_TAGS.get(record.levelname, record.levelname)
        return super().format(record)


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``; aioquic's chatter stays at WARNING unless ``level`` is debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s.%(msecs)03d [%(tag)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level.lower() == "debug" else logging.WARNING)


@contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """:func:`setup_logging` for the command's run; the logging set-up before it comes back afterwards
    (``main`` called in-process, as tests do, leaves no handler on a stream that may close)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    setup_logging(level)
    try:
        yield
    finally:
        root.handlers[:], level_before, chatty = saved
        root.setLevel(level_before)
        for name, chatty_level in chatty.items():
            logging.getLogger(name).setLevel(chatty_level)


def _command_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:  # type: ignore[type-arg]
    """The ``lnpmsg`` parser without its commands, and the action commands are added to."""
    parser = argparse.ArgumentParser(
        prog="lnpmsg",
        description="A Tor-first P2P node and message framework speaking the Lightning wire protocol.",
        epilog=(
            "Run 'lnpmsg COMMAND --help' for the options of a command. The options --data-dir, --config,\n"
            "--json, --log-level and --timeout may also come before the command (lnpmsg --data-dir X getinfo).\n"
            "\n" + EXIT_CODES_HELP
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lnpmsg {__version__}")
    for option, takes_value in GLOBAL_OPTIONS.items():
        # Accepted without a command (then help is printed); main() moves them after the command name.
        parser.add_argument(option, **({"metavar": "VALUE"} if takes_value else {"action": "store_true"}), default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, commands


def _control_parser() -> argparse.ArgumentParser:
    """``lnpmsg``'s parser with the control commands only (``call``, ``getinfo``, ``stop``...):
    what ``main`` parses them with, so that they import the control client alone and not
    every app's options (a few tenths of a second per command)."""
    from lnpmsg.rpc.commands import add_commands

    parser, commands = _command_parser()
    add_commands(commands, DEFAULT_DATA_DIR)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser, commands = _command_parser()

    node = commands.add_parser(
        "node",
        help="run a node (the main job)",
        description=(
            "Run an lnpmsg node. On first start a node key is generated in the data dir\n"
            "(mode 0600) and reused afterwards. The node listens for Lightning peers\n"
            "(BOLT-8 encrypted) and keeps the peers given with --connect connected.\n"
            "Options may also come from DATA_DIR/lnpmsg.toml (see below). Stop it with Ctrl-C."
        ),
        epilog=(
            "examples:\n"
            "  lnpmsg node                                  # 127.0.0.1:9735, key in ~/.lnpmsg\n"
            "  lnpmsg node --listen 0.0.0.0:9735 --connect 02ab...@10.0.0.5:9735\n"
            "  lnpmsg node --data-dir /tmp/n2 --listen 127.0.0.1:9736 --log-level debug\n"
            "  lnpmsg node --node-key 1111...11 --no-listen  # fixed key, outbound only\n"
            "  lnpmsg node --onion-only                     # own tor; reachable only at NODEID@xyz.onion:9735\n"
            "  lnpmsg node --tor-control 127.0.0.1:9051 --tor-cookie /run/tor/control.authcookie  # system tor\n"
            "  lnpmsg node --app examples.greeter_app:app   # mount your own app: lnpmsg call greeter.hello\n"
            "\n"
            "peer addresses: NODEID@host:port (TCP; Tor when host is .onion),\n"
            "  tcp://, udp://, zmq+tcp://, zmq+ipc://NODEID@/path\n"
            "\n"
            "config file: every option can also be set in DATA_DIR/lnpmsg.toml (or the file --config\n"
            "  names). The key is the option without '--'; repeatable options take a list; switches\n"
            "  take true or false. Options on the command line override the file. Unknown keys are\n"
            "  an error. Example:\n"
            "    listen = [\"127.0.0.1:9735\", \"udp://127.0.0.1:9735\"]\n"
            "    no-gossip = true\n"
            "    app = [\"examples.greeter_app:app\"]\n"
            "\n"
            "user apps: --app MODULE:ATTR (or path/to/file.py:ATTR) names an lnpmsg.app.App, or a\n"
            "  callable returning one; MODULE is imported from the current directory first. The app\n"
            "  gets the control API (lnpmsg call APPNAME.METHOD), events and peers like built-in apps."
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
    node.add_argument("--chain", choices=["regtest"], help="run a chain, an on-chain wallet (the chain.* control calls, 'lnpmsg mine', 'withdraw'...) and Lightning channels ('lnpmsg fundchannel', 'listchannels', 'closechannel'): 'regtest' is the embedded regtest chain, validated by Bitcoin Core's consensus engine, in DATA_DIR/chain, with the wallet in DATA_DIR/wallet (default: no chain; 'lnpmsg demo' always runs one)")
    node.add_argument("--electrum-listen", metavar="HOST:PORT", help="with --chain regtest: serve the chain to Electrum wallets (Electrum protocol 1.4, plain TCP) on HOST:PORT, e.g. 127.0.0.1:50001 (port 0: a free port, shown in the start-up summary)")
    node.add_argument("--reindex", action="store_true", help="with --chain regtest: rebuild the kernel's block files and chainstate (DATA_DIR/chain/blocks, chainstate) from the chain's own checksummed block log, as Bitcoin Core's -reindex; use it when the node refuses to start because they are damaged (progress is logged)")
    node.add_argument("--chain-rpc-listen", metavar="HOST:PORT", help="with --chain regtest: serve the chain over Bitcoin Core's JSON-RPC here (other nodes: --bitcoind-rpc), cookie in DATA_DIR/chain/.cookie (port 0: any free port)")
    node.add_argument("--chain-rpc-auth", metavar="USER:PASSWORD", help="also accept this user and password on --chain-rpc-listen (besides the cookie)")
    node.add_argument("--bitcoind-rpc", metavar="URL", help="run the wallet on a chain another process owns, over Bitcoin Core's JSON-RPC: a Bitcoin Core node or another lnpmsg node's --chain-rpc-listen, http://[user:password@]host:port (network: the server's, unless --network)")
    node.add_argument("--bitcoind-cookie", type=Path, metavar="FILE", help="the cookie file for --bitcoind-rpc (bitcoind's DATADIR/[network/].cookie, lnpmsg's DATA_DIR/chain/.cookie)")
    node.add_argument("--bitcoind-poll", type=float, default=1.0, metavar="SECONDS", help="how often --bitcoind-rpc is asked for a new tip (default: %(default)g)")
    node.add_argument("--no-gossip", action="store_true", help="run without the gossip app (by default the node syncs, verifies and serves Lightning gossip, BOLT 7, with its channel graph in DATA_DIR/gossip.sqlite3: 'lnpmsg gossip ...'); without it, the gossip peers send (a private channel's channel_update too) is dropped, their connections kept")
    node.add_argument("--alias", metavar="NAME", help="the alias our node_announcement carries once we have a public channel (at most 32 bytes; default: lnpmsg- and the node id's first bytes)")
    node.add_argument("--rgb", metavar="RRGGBB", help="the color our node_announcement carries (6 hex digits; default: the node id's first bytes)")
    node.add_argument("--announce-addr", action="append", default=[], metavar="HOST:PORT", help="announce this address too (e.g. a public IP behind NAT); repeatable; never used with --onion-only")
    node.add_argument("--gossip-import", action="append", default=[], metavar="FILE", help="import a Core Lightning gossip_store file (.xz too) while starting; repeat for the parts of one store, in order")
    node.add_argument("--gossip-prune-interval", type=float, metavar="SECONDS", help="how often channels without a recent update are pruned from the graph (default: 3600; 0: never)")
    node.add_argument("--gossip-prune-after", type=float, metavar="DAYS", help="a channel with no update for this long is stale and pruned (default: 14, BOLT 7's two weeks)")
    from lnpmsg.gossip.resync import FULL_SYNCS, RESYNC_INTERVAL

    node.add_argument("--gossip-full-syncs", type=int, metavar="N", help=f"sync the whole channel graph (query_channel_range, then the channels we lack) with the first N peers that offer channels only; later peers send just their new gossip, as lnd's passive syncers, and --gossip-resync-interval brings what the first ones lacked (default: {FULL_SYNCS}; 0: sync with every peer offering gossip_queries, on mainnet the whole network's channel ids from each)")
    node.add_argument("--gossip-resync-interval", type=float, metavar="SECONDS", help=f"once --gossip-full-syncs are done, sync again with one peer this often (one never synced with, else the one synced longest ago), so that what the first peers did not know comes in the end (default: {RESYNC_INTERVAL:g}, lnd's 20 minutes; 0: never); 'lnpmsg gossip stats' shows when the next is due")
    node.add_argument("--accept-keysend", action="store_true", help="with a chain: accept keysends (bLIP 3 spontaneous payments: the payer's preimage in the onion, no invoice), each recorded as a paid invoice labelled keysend-HASHPREFIX, and announce feature bit 55 in our node_announcement (default: off, as lnd's; Core Lightning accepts them: anyone who knows the node id can then push funds without asking, with no invoice to tie them to a purpose, and the bit marks the node in the graph)")
    from lnpmsg.payments.onion.blinding import DEFAULT_PATH_LENGTH, MAX_PATH_LENGTH

    node.add_argument("--blinded-path-length", type=int, choices=range(MAX_PATH_LENGTH + 1), default=DEFAULT_PATH_LENGTH, metavar="N", help=f"pad the blinded paths this node hands out (an offer's paths, an invoice's payment paths, the reply paths of its onion messages) to N hops with dummy hops of its own at their end (BOLT 4), which it peels itself on receipt: a payer or sender cannot tell how far the introduction node is from us (default: {DEFAULT_PATH_LENGTH}; 0 or 1: no dummy hops; at most {MAX_PATH_LENGTH}). Longer paths make onions and invoices bigger")
    node.add_argument("--no-peer-storage", action="store_true", help="with a chain: do not offer BOLT 1 peer storage (by default the node announces option_provide_storage, bit 43, and keeps the last blob, at most 65531 bytes, of each peer it has a channel with, written at most once a minute and given back after each reconnection; our own static channel backup still goes to peers that offer it)")
    node.add_argument("--recover-from-peers", action="store_true", help="with a chain: restore the channels a peer's peer_storage_retrieval holds that this node lacks as soon as it arrives (a node that lost its data dir, started with its seed material; off by default: 'lnpmsg restorechannels --from-peers' does it on demand). A node that lost its peers.json does not know its peers: while recovering it finds its public channels' peers in the gossip it syncs (channel_announcements naming our node id, their peers' node_announcement addresses; onion ones through Tor) and connects to them, a few at once with back-off, until one returns the backup or an hour passed. Private channels' peers are not in gossip and cannot be found this way: connect to them with 'lnpmsg connect'")
    node.add_argument("--no-onion-messages", action="store_true", help="neither relay, receive nor send BOLT 4 onion messages (by default the node announces option_onion_messages, bit 39, relays them between peers within per-peer rate limits, and takes those for it: 'lnpmsg sendonionmessage', 'listonionmessages')")
    node.add_argument("--app", action="append", default=[], metavar="MODULE:ATTR", help="mount a user app: MODULE:ATTR or path/to/file.py:ATTR, an App or a callable returning one; repeatable")
    node.add_argument("--config", type=Path, metavar="FILE", help="read options from this TOML file instead of DATA_DIR/lnpmsg.toml (see below)")
    from lnpmsg.channels.options import add_node_options as add_channel_options

    add_channel_options(node)
    from lnpmsg import dev_options

    dev_options.add_options(node)
    _add_demo_command(commands)

    from lnpmsg.rpc.commands import add_commands

    add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.chain import commands as chain_commands

    chain_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.gossip import commands as gossip_commands

    gossip_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.channels import commands as channel_commands

    channel_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.gossip.public import commands as announce_commands

    announce_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.payments import commands as payment_commands

    payment_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.onion_messages import commands as onion_message_commands

    onion_message_commands.add_commands(commands, DEFAULT_DATA_DIR)
    from lnpmsg.payments.bolt12 import commands as offer_commands

    offer_commands.add_commands(commands, DEFAULT_DATA_DIR)
    return parser


#: the options :func:`lnpmsg.tor_app.settings_from_args` reads besides --listen and --tor-socks
#: (--tor-timeout only matters with one of them): unset, it gives no Tor and raises nothing
_TOR_OPTIONS = ("tor", "tor_control", "tor_password", "tor_cookie", "tor_path", "tor_option", "no_onion_service", "onion_only", "onion_to_onion")


def settings_from_args(args: argparse.Namespace) -> NodeSettings:
    """The :class:`NodeSettings` ``lnpmsg node``'s options (and config file) ask for; raises :class:`SettingsError`."""
    from lnpmsg.node.identity import IdentityError, key_from_hex
    from lnpmsg.transports.address import split_host_port

    from lnpmsg.channels.options import options_from_args as channel_options_from_args

    key = None
    if args.node_key:
        try:
            key = key_from_hex(args.node_key)
        except IdentityError as exc:
            raise SettingsError(str(exc)) from None
    tor_socks = None
    if args.tor_socks:
        try:
            tor_socks = split_host_port(args.tor_socks)
        except ValueError as exc:
            raise SettingsError(f"bad --tor-socks: {exc}") from None
    tor = None
    # With none of its options given the node has no Tor of its own: the Tor app (and stem) stay unloaded.
    if any(getattr(args, name) for name in _TOR_OPTIONS):
        from lnpmsg.tor_app import settings_from_args as tor_settings_from_args

        try:
            tor = tor_settings_from_args(args, tor_socks)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    from lnpmsg import dev_options

    try:
        # the apps read settings.dev: the channel app its secrets and funding depth, the wallet its keys
        dev = dev_options.from_args(args)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if dev.active:
        log.warning("developer options in use (test set-ups only, never with real funds)")
    return NodeSettings(
        data_dir=args.data_dir,
        key=key,
        key_file=args.node_key_file,
        listen=[] if args.no_listen else args.listen,
        connect=list(args.connect),
        network=args.network,
        features=list(args.feature),
        tor_socks=args.tor_socks,
        tor=tor,
        onion_only=args.onion_only,
        onion_to_onion=args.onion_to_onion,
        control=not args.no_control,
        control_endpoint=args.control,
        events_endpoint=args.events,
        chain=args.chain,
        reindex=args.reindex,
        chain_rpc_listen=args.chain_rpc_listen,
        chain_rpc_auth=args.chain_rpc_auth,
        bitcoind_rpc=args.bitcoind_rpc,
        bitcoind_cookie=args.bitcoind_cookie,
        bitcoind_poll=args.bitcoind_poll,
        electrum_listen=args.electrum_listen,
        gossip=not args.no_gossip,
        gossip_import=list(args.gossip_import),
        alias=args.alias,
        rgb=args.rgb,
        announce_addr=list(args.announce_addr),
        gossip_prune_interval=args.gossip_prune_interval,
        gossip_prune_after=args.gossip_prune_after,
        gossip_full_syncs=args.gossip_full_syncs,
        gossip_resync_interval=args.gossip_resync_interval,
        apps=list(args.app),
        channel_options=channel_options_from_args(args),
        accept_keysend=args.accept_keysend,
        blinded_path_length=args.blinded_path_length,
        peer_storage=not args.no_peer_storage,
        recover_from_peers=args.recover_from_peers,
        onion_messages=not args.no_onion_messages,
        dev=dev,
    )


async def _run_node(args: argparse.Namespace) -> int:
    from lnpmsg.runtime.build import build_node, check_settings, run_node

    try:
        settings = settings_from_args(args)
        await check_settings(settings)  # the chain options; --bitcoind-rpc without --network asks the server
        built = build_node(settings)
        await run_node(built, on_started=partial(_print_summary, as_json=args.json))
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILED
    return EXIT_OK


async def _print_summary(built: BuiltNode, *, as_json: bool) -> None:
    summary = await built.summary()
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    print(f"node id: {summary['node_id']}", flush=True)
    for address in summary["addresses"]:
        print(f"address: {address}", flush=True)
    for name in ("onion", "control", "chain", "electrum", "gossip"):
        if summary.get(name):
            print(f"{name + ':':<8} {summary[name]}", flush=True)
    if "chain_rpc" in summary:
        print(f"chain rpc: {summary['chain_rpc']['url']} (cookie {summary['chain_rpc']['cookie']})", flush=True)
    print(f"apps:    {', '.join(summary['apps'])}", flush=True)
    print("press Ctrl-C to stop", flush=True)


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


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_index(argv: Sequence[str]) -> int:
    """Where the command name is in ``argv``: after the :data:`GLOBAL_OPTIONS` (and their values) before it."""
    i = 0
    while i < len(argv):
        name, eq, _ = argv[i].partition("=")
        if name not in GLOBAL_OPTIONS:
            break
        i += 2 if GLOBAL_OPTIONS[name] and not eq else 1
    return i


def hoist_global_options(argv: Sequence[str], commands: Sequence[str]) -> list[str]:
    """``argv`` with the :data:`GLOBAL_OPTIONS` given before the command moved behind it.

    ``lnpmsg --data-dir X getinfo`` becomes ``lnpmsg getinfo --data-dir X``
    (before a ``--``, if there is one), so each command parses the options
    it has; one it does not have is argparse's usual error.
    """
    argv = list(argv)
    i = _command_index(argv)
    head = argv[:i]
    if not head or i >= len(argv) or argv[i] not in commands:
        return argv
    rest = argv[i:]
    if "--" in rest:
        cut = rest.index("--")
        return rest[:cut] + head + rest[cut:]
    return rest + head


def _apply_config_file(parser: argparse.ArgumentParser, command: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace) -> None:
    """Fill what the command line left unset from ``--config FILE`` or ``DATA_DIR/lnpmsg.toml`` (if it exists)."""
    from lnpmsg.runtime.config_file import CONFIG_FILE_NAME, apply_config, read_config

    if args.config is not None:
        values = read_config(args.config.expanduser(), command, may_set_data_dir=True)
    else:
        default = Path(args.data_dir).expanduser() / CONFIG_FILE_NAME
        if not default.exists():
            return
        values = read_config(default, command, may_set_data_dir=False)
    apply_config(parser, command, argv, args, values)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_index(argv)
    parser = _control_parser() if command < len(argv) and argv[command] in COMMANDS else build_parser()
    subcommands = _subcommands(parser)
    argv = hoist_global_options(argv, list(subcommands))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in COMMANDS:
        return run_command(args)
    from lnpmsg.chain import commands as chain_commands

    if args.command in chain_commands.COMMANDS:
        return chain_commands.run_command(args)
    from lnpmsg.gossip import commands as gossip_commands

    if args.command in gossip_commands.COMMANDS:
        return gossip_commands.run_command(args)
    from lnpmsg.channels import commands as channel_commands

    if args.command in channel_commands.COMMANDS:
        return channel_commands.run_command(args)
    from lnpmsg.gossip.public import commands as announce_commands

    if args.command in announce_commands.COMMANDS:
        return announce_commands.run_command(args)
    from lnpmsg.payments import commands as payment_commands

    if args.command in payment_commands.COMMANDS:
        return payment_commands.run_command(args)
    from lnpmsg.onion_messages import commands as onion_message_commands

    if args.command in onion_message_commands.COMMANDS:
        return onion_message_commands.run_command(args)
    from lnpmsg.payments.bolt12 import commands as offer_commands

    if args.command in offer_commands.COMMANDS:
        return offer_commands.run_command(args)
    with _logging_to_stderr(getattr(args, "log_level", "info")):
        if args.command == "node":
            try:
                _apply_config_file(parser, subcommands["node"], argv, args)
            except SettingsError as exc:
                log.error("%s", exc)
                return EXIT_USAGE
            setup_logging(args.log_level)
            # Once running, the node handles SIGINT itself (a stop: exit 0); this is Ctrl-C while it is built.
            return run_interruptible(_run_node, args)
        if args.command == "demo":
            from lnpmsg.demo import run_demo

            return run_interruptible(partial(run_demo, args.data_dir, json_output=args.json, write=lambda line: print(line, flush=True)))
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
