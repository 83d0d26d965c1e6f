"""The ``lnpmsg`` subcommands that talk to a running node over its control socket.

``getinfo``, ``connect``, ``disconnect``, ``listpeers``, ``sendmsg``, ``ping``,
``signmessage``, ``checkmessage``, ``subscribe``, ``stop`` and ``call`` (any method,
e.g. an app's). ``checkmessage --pubkey`` needs no node: it checks the signature here. Each finds
the node through ``--data-dir``, prints a human summary (or the JSON result
with ``--json``) and exits 0; on failure it prints the error and exits 1
(the call failed, or names a peer that is not connected), 2 (bad
arguments, found before anything is sent), 3 (no node is running there)
or 130 (Ctrl-C). Only the control client is imported: these commands
never load the node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lnpmsg.rpc.control_client import (
    ControlCallError,
    ControlClient,
    ControlClientError,
    ControlEndpoints,
    ControlTimeout,
    NodeStarting,
    NoNodeRunning,
    locate,
    node_running,
)
from lnpmsg.io.interrupt import EXIT_INTERRUPTED, is_interrupt
from lnpmsg.rpc.control_proto import CONTROL_INFO_FILE, ErrorCode

__all__ = ["COMMANDS", "EVENT_TOPICS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NO_NODE", "EXIT_OK", "EXIT_USAGE", "add_commands", "is_interrupt", "run_command"]

#: exit statuses of every ``lnpmsg`` command (``lnpmsg --help``, README "Exit codes"); 130 after Ctrl-C
EXIT_OK = 0
#: the command failed: the node could not start, a control call failed, the peer is not connected
EXIT_FAILED = 1
#: bad usage, found before anything was done: an unknown option, a bad value, a bad config file or --app
EXIT_USAGE = 2
#: no node is running at the data dir
EXIT_NO_NODE = 3

#: the largest custom message payload: a message is at most 65535 bytes, two of them the type
MAX_PAYLOAD = 65533
#: what ``lnpmsg subscribe --help`` lists: the topics a node publishes (a prefix selects all below it)
EVENT_TOPICS = (
    ("peer.connected", "a peer is ready: node_id, address, transport, outbound, features"),
    ("peer.disconnected", "a peer left: node_id, address, reason"),
    ("peer.replaced", "a new connection of a peer replaced its live one: node_id, old_address, new_address"),
    ("message.received.N", "a custom message of type N that no app of the node handles: node_id, type, payload (hex)"),
    ("peer.warning", "a BOLT-1 warning from a peer: node_id, channel_id, text"),
    ("peer.error", "a BOLT-1 error from a peer: node_id, channel_id, text"),
    ("error", "a failure inside the node (e.g. an app handler that raised): source, text, node_id"),
    ("app.state", "an app is running, restarting or stopped: app, state, reason"),
    ("gossip.channel_announcement", "accepted gossip, with the gossip app (also gossip.node_announcement,"),
    ("", "gossip.channel_update; 'lnpmsg gossip subscribe' filters them by node and channel)"),
    ("gossip.channel_removed", "a channel left the graph (pruned or closed): short_channel_id, reason"),
    ("gossip.rejected", "a peer's gossip message rejected: type, subject, source, reason"),
    ("gossip.sync", "the progress of the initial gossip sync"),
    ("chain.tip", "the chain's tip moved (a node started with --chain): height, block_hash"),
    ("channel.", "a channel's life (with --chain): channel.opened, .ready, .confirmed, .htlc,"),
    ("", ".quiescent, .closed, .failed, .spent, .bump_aborted: channel_id, node_id, state, ..."),
    ("onchain.", "a channel on chain: onchain.commitment, .closed, .swept, .to_wallet, .htlc,"),
    ("", ".irrevocable, .reorged: channel_id and the detail"),
    ("invoice.", "our invoices: invoice.created, .accepted, .paid, .cancelled, .deleted: payment_hash, ..."),
    ("payment.", "payment.sent, .failed, .forwarded: payment_hash, amount_msat, fee_msat, ..."),
    ("onion_message.received", "an onion message for us: id, records, reply_to, has_reply_path"),
    ("control.sync.TOKEN", "the answer to an eventsync call"),
    ("APP.", "the events of a user app, e.g. greeter.received (examples/greeter_app.py)"),
)
#: seconds ``stop`` waits at least for the node's process to be gone (it
#: closes its apps first: the chain flushes its state)
STOP_WAIT = 30.0
#: seconds between two looks for a node that is starting or stopping
POLL_INTERVAL = 0.05


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the control subcommands to the ``lnpmsg`` parser."""

    def add(name: str, help_text: str, description: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            # the raw formatter keeps the epilog's table; the description is wrapped here instead
            description=textwrap.fill(description or help_text, 78) if epilog else description or help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
        )
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--json", action="store_true", help="print the JSON result (errors as {\"error\": ...})")
        parser.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        add_wait_option(parser)
        return parser

    add("getinfo", "show the running node's id, addresses, peers and apps")
    p = add("connect", "connect the node to a peer")
    p.add_argument("address", help="NODEID@host:port (or any peer address form)")
    p.add_argument("--reconnect", action="store_true", help="replace the live connection if the peer is already connected (default: keep it)")
    p = add("disconnect", "close the connection to a peer (exit 1 if it is not connected)")
    p.add_argument("node_id", help="the peer's node id (66 hex chars, as listpeers shows it)")
    p = add("listpeers", "list connected peers (features, transport, traffic, ping round trip, alias from the gossip when known)")
    p.add_argument("node_id", nargs="?", help="only this peer (exit 1 if it is not connected)")
    p = add(
        "sendmsg",
        "send a custom message (type 32768-65535) to a peer",
        epilog=(
            "examples:\n"
            "  lnpmsg sendmsg NODEID 32769 68656c6c6f         # payload in hex\n"
            "  lnpmsg sendmsg NODEID 32769 --text 'hello'\n"
            "  xxd -p big.bin | lnpmsg sendmsg NODEID 32769 -  # hex from stdin (up to 65533 bytes)\n"
            "  lnpmsg sendmsg NODEID 32769 @big.bin --text    # the file's bytes as they are\n"
            "\n"
            "BOLT 1 'it's OK to be odd': a peer that does not know an odd type ignores it, but one\n"
            "that does not know an even type closes the connection. Use odd types unless the\n"
            "peer's app handles the even one; sending an even type needs --even."
        ),
    )
    p.add_argument("node_id", help="the connected peer to send it to (node id, 66 hex chars)")
    p.add_argument("type", type=int, help="message type, 32768..65535 (odd: peers without it ignore it)")
    p.add_argument("payload", nargs="?", default="", help="payload in hex (or text with --text); '-' reads it from stdin, '@FILE' from FILE")
    p.add_argument("--text", action="store_true", help="the payload is the bytes themselves (UTF-8 text on the command line), not hex")
    p.add_argument("--even", action="store_true", help="allow an even type (a peer without a handler for it closes the connection)")
    p = add("ping", "ping a peer and show the round trip")
    p.add_argument("node_id", help="the connected peer to ping (node id, 66 hex chars)")
    p = add("signmessage", "sign a message with the node key; prints the zbase signature (lnd and Core Lightning check it)")
    p.add_argument("message", help="the text to sign (its UTF-8 bytes are signed)")
    p = add(
        "checkmessage",
        "check a message's zbase signature (from signmessage of lnpmsg, lnd or Core Lightning)",
        "Check that ZBASE signs MESSAGE: by --pubkey if given (offline: no node needed), else by a node "
        "the running node knows (itself, or a node in its gossip graph). Exit 1 when not verified "
        "(with --json the error's data holds the result: without --pubkey, the key that signed).",
    )
    p.add_argument("message", help="the message, as signed (UTF-8)")
    p.add_argument("zbase", help="the signature in zbase32 (signmessage's zbase)")
    p.add_argument("--pubkey", metavar="NODEID", help="the node id the signature must be from (then checked offline)")
    p = add(
        "subscribe",
        "stream the node's events as JSON lines",
        "Print every event whose topic starts with one of TOPIC (all events when none is given) "
        "as one JSON line (topic, seq, time and the fields below). Missed events are reported on "
        "stderr. Stop it with Ctrl-C (exit 130) or --count.",
        "topics:\n" + "\n".join(f"  {topic:<28}{text}" for topic, text in EVENT_TOPICS),
    )
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="a topic or its start, e.g. channel. (repeatable; default: every event)")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")
    add("stop", "stop the running node (returns once its process has exited)")
    p = add("call", "call any control method (e.g. an app's: rpc.call, pubsub.publish)")
    p.add_argument("method", help="the control method, e.g. getinfo or channels.listchannels (an app's: APP.NAME)")
    p.add_argument("params", nargs="?", default=None, help="params as a JSON object or array")


def _print_checked(r: dict[str, Any]) -> None:
    print(f"verified: signed by {r['pubkey']}")


def _print_getinfo(r: dict[str, Any]) -> None:
    print(f"node id:  {r['node_id']}")
    for address in r.get("addresses") or ["(not listening)"]:
        print(f"address:  {address}")
    print(f"network:  {r.get('network')}")
    print(f"peers:    {r.get('peers')}")
    print(f"apps:     {', '.join(r.get('apps') or []) or 'none'}")
    print(f"control:  {r.get('control')}{' (CURVE)' if r.get('curve') else ''}")
    print(f"events:   {r.get('events')}")


def named_alias(alias: str | None) -> str:
    """A node's alias for a line of text (`` (alias)``; nothing without one): another node's words, so
    what would move the cursor or end the line is shown escaped."""
    return "" if not alias else f" ({alias!r})" if not alias.isprintable() else f" ({alias})"


def _print_peer(p: dict[str, Any]) -> None:
    rtt = "-" if p.get("ping_rtt_ms") is None else f"{p['ping_rtt_ms']:.3f} ms"
    print(f"{p['node_id']}{named_alias(p.get('alias'))}")
    print(f"    {p['transport']} {p['address']} ({'outbound' if p['outbound'] else 'inbound'}), up {p['connected_seconds']:.0f} s")
    print(f"    bytes in/out: {p['bytes_in']}/{p['bytes_out']}, messages in/out: {p['messages_in']}/{p['messages_out']}, ping: {rtt}")
    print(f"    features: {', '.join(p.get('feature_names') or []) or 'none'}; apps: {', '.join(p.get('apps') or []) or 'none'}")


def _print_listpeers(r: dict[str, Any]) -> None:
    peers = r.get("peers", [])
    if not peers:
        print("no peers connected")
    for p in peers:
        _print_peer(p)


Request = tuple[str, Any, Callable[[Any], None]]


def _request(args: argparse.Namespace) -> Request:
    """The control call for a command, and how to print its result."""
    command = args.command
    if command == "getinfo":
        return "getinfo", None, _print_getinfo
    if command == "connect":
        params = {"address": args.address, "timeout": min(args.timeout, 60.0), "reconnect": args.reconnect}
        return "connect", params, lambda r: print(
            f"connected to {r['node_id']} ({r['transport']} {r['address']})"
        )
    if command == "disconnect":
        return "disconnect", {"node_id": args.node_id}, lambda r: print("disconnected")
    if command == "listpeers":
        return "listpeers", ({"node_id": args.node_id} if args.node_id else None), _print_listpeers
    if command == "sendmsg":
        return "sendcustommsg", {"node_id": args.node_id, "type": _message_type(args), "payload": _payload(args).hex()}, lambda r: print(
            f"sent type {r['type']} ({r['bytes']} bytes) to {args.node_id}"
        )
    if command == "ping":
        return "ping", {"node_id": args.node_id}, lambda r: print(f"pong from {args.node_id} in {r['rtt_ms']:.3f} ms")
    if command == "signmessage":
        return "signmessage", {"message": args.message}, lambda r: print(r["zbase"])
    if command == "checkmessage":
        return "checkmessage", {"message": args.message, "zbase": args.zbase}, _print_checked
    if command == "stop":
        return "stop", None, lambda r: print("node stopped")
    if command == "subscribe":
        return "eventsync", None, lambda r: None
    if command == "call":
        params = None
        if args.params is not None:
            try:
                params = json.loads(args.params)
            except ValueError as exc:
                raise _UsageError(f"params are not JSON: {exc}") from None
        return args.method, params, lambda r: print(json.dumps(r, indent=2))
    raise _UsageError(f"unknown command {command}")


class _UsageError(Exception):
    """The arguments are wrong (found before anything is sent): exit 2."""


class _Failed(Exception):
    """The call went through but the answer is a failure for the user (e.g. no such peer): exit 1."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data


def _message_type(args: argparse.Namespace) -> int:
    # Types outside the custom range go to the node, which names the range.
    if 32768 <= args.type <= 65535 and args.type % 2 == 0 and not args.even:
        raise _UsageError(
            f"type {args.type} is even: a peer without a handler for it closes the connection "
            "(BOLT 1: it's OK to be odd). Use an odd type, or --even if the peer's app handles this one"
        )
    return int(args.type)


def _payload(args: argparse.Namespace) -> bytes:
    """The payload bytes: the argument, stdin (``-``) or a file (``@FILE``); hex unless ``--text``."""
    source = args.payload
    if source == "-":
        data = sys.stdin.buffer.read(4 * MAX_PAYLOAD + 2)
        where = "stdin"
    elif source.startswith("@"):
        try:
            with open(Path(source[1:]).expanduser(), "rb") as file:
                data = file.read(4 * MAX_PAYLOAD + 2)
        except OSError as exc:
            raise _UsageError(f"cannot read the payload from {source[1:]}: {exc.strerror or exc}") from None
        where = source[1:]
    else:
        data = source.encode()
        where = "the payload"
    if len(data) > 4 * MAX_PAYLOAD:
        raise _UsageError(f"{where}: too large; a message's payload is at most {MAX_PAYLOAD} bytes")
    if not args.text:
        try:
            data = bytes.fromhex(data.decode("ascii"))  # fromhex skips whitespace: files end in newlines
        except (UnicodeDecodeError, ValueError):
            raise _UsageError(f"{where} is not hex (give --text for the bytes as they are)") from None
    if len(data) > MAX_PAYLOAD:
        raise _UsageError(f"{where}: {len(data)} bytes or more; a message's payload is at most {MAX_PAYLOAD} bytes")
    return data


def _check_result(args: argparse.Namespace, result: Any) -> None:
    """Raise :class:`_Failed` for answers that are failures to the user (the node reports them as results)."""
    if args.command == "disconnect" and not result.get("disconnected"):
        raise _Failed(f"peer {args.node_id} is not connected")
    if args.command == "listpeers" and args.node_id and not result.get("peers"):
        raise _Failed(f"peer {args.node_id} is not connected")
    if args.command == "checkmessage" and not result.get("verified"):
        if args.pubkey:
            raise _Failed(f"not verified: this is no signature of the message by {args.pubkey}", result)
        raise _Failed(f"not verified: the signature is by {result.get('pubkey') or 'no key'}, not a node the node knows", result)


def _checkmessage_offline(args: argparse.Namespace) -> int:
    """``checkmessage --pubkey``: the check needs no node, so none is asked."""
    from lnpmsg.node.signed_message import recover_signer  # (coincurve: only for this command)

    try:
        expected = bytes.fromhex(args.pubkey)
        if len(expected) != 33:
            raise ValueError(f"a node id is 33 bytes (66 hex digits), got {len(expected)}")
    except ValueError as exc:
        _fail(args, f"--pubkey is not a node id: {exc}")
        return EXIT_USAGE
    try:
        signer = recover_signer(args.message, args.zbase)
    except ValueError as exc:
        _fail(args, f"zbase is not a signature: {exc}")
        return EXIT_FAILED
    return _show(args, {"pubkey": expected.hex(), "verified": signer == expected}, _print_checked)


def _show(args: argparse.Namespace, result: Any, show: Callable[[Any], None]) -> int:
    """Print a call's result (or, for an answer that is a failure to the user, the failure: exit 1)."""
    try:
        _check_result(args, result)
    except _Failed as exc:
        _fail(args, str(exc), data=exc.data)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        show(result)
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str, code: int | None = None, data: dict[str, Any] | None = None) -> None:
    if args.json:
        error: dict[str, Any] = {"message": message}
        if code is not None:
            error["code"] = code
        if data:
            error["data"] = data
        print(json.dumps({"error": error}), flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, request: Callable[[argparse.Namespace], Request]) -> int:
    try:
        method, params, show = request(args)
    except _UsageError as exc:
        _fail(args, str(exc))
        return EXIT_USAGE
    endpoints = await _locate_waiting(args)
    async with ControlClient.open(endpoints=endpoints) as client:
        if args.command == "subscribe":
            return await _subscribe(client, args)
        if args.command == "stop":
            pid = _node_pid(endpoints.data_dir)
            try:
                result = await client.call(method, params, timeout=min(args.timeout, 5.0))
            except ControlTimeout:
                # The node may stop before its reply leaves: being gone is the answer.
                result = {"stopping": True}
            wait = max(STOP_WAIT, args.timeout)
            if not await _wait_gone(endpoints.data_dir, pid, wait):
                raise ControlClientError(f"the node at {args.data_dir} is still running after {wait:g} s")
        else:
            result = await client.call(method, params, timeout=args.timeout)
    return _show(args, result, show)


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    """``--wait``: wait for a node that is not running yet (scripts that start one)."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if no node runs at the data dir yet, wait for one to start (up to --timeout) instead of "
        "failing at once, like bitcoin-cli -rpcwait; a node that is starting is always waited for",
    )


async def _locate_waiting(args: argparse.Namespace) -> ControlEndpoints:
    """The node's endpoints; waits (up to ``--timeout``) while it starts, or with
    ``--wait`` until one runs at all."""
    told = False
    with trio.move_on_after(args.timeout):
        while True:
            try:
                return locate(args.data_dir)
            except NodeStarting:
                if not told:
                    print(f"the node at {args.data_dir} is starting: waiting for it (up to {args.timeout:g} s)", file=sys.stderr, flush=True)
                    told = True
            except NoNodeRunning:
                if not getattr(args, "wait", False):
                    raise
            await trio.sleep(POLL_INTERVAL)
    return locate(args.data_dir)  # the last word: starting (an error) or running


def _node_pid(data_dir: Path) -> int | None:
    """The node's process id from its control.json (None: unknown, or this very process)."""
    try:
        pid = json.loads((data_dir / CONTROL_INFO_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 and pid != os.getpid() else None


def _process_gone(pid: int) -> bool:
    """Has the process exited, every thread of it? (A zombie, exited but not
    yet reaped by its parent, has.)

    The main thread's state alone does not say: when a process exits, its
    main thread can be a zombie while its other threads are still ending
    (a worker thread in a long write, on a busy machine), and until the last
    of them has, the process holds its files and cannot be reaped.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    # the state follows the command name in parentheses, which may itself hold ')'
    exited = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] in (b"Z", b"X")
    return exited and threads in ([], [str(pid)])


async def _wait_gone(data_dir: Path, pid: int | None, wait: float) -> bool:
    """Wait until the node's process has exited (or, its pid unknown, released the data dir)."""
    with trio.move_on_after(wait):
        while node_running(data_dir) or (pid is not None and not _process_gone(pid)):
            await trio.sleep(POLL_INTERVAL)
        return True
    return False


async def _subscribe(client: ControlClient, args: argparse.Namespace) -> int:
    topics = tuple(args.topics) or ("",)
    async with await client.subscribe(*topics) as events:
        print(f"subscribed to {', '.join(repr(t) for t in topics)}", file=sys.stderr, flush=True)
        received = 0
        async for event in events:
            if event.missed:
                print(f"missed {event.missed} {event.topic} event(s): this subscriber fell behind", file=sys.stderr, flush=True)
            sys.stdout.write(event.raw.decode() + "\n")
            sys.stdout.flush()
            received += 1
            if args.count and received >= args.count:
                break
    return EXIT_OK


def run_command(
    args: argparse.Namespace,
    request: Callable[[argparse.Namespace], Request] = _request,
    *,
    missing_method_hint: str | None = None,
) -> int:
    """Run a control subcommand; returns the exit status.

    ``request`` maps the parsed arguments to the call and its printer (apps
    with commands of their own pass theirs); ``missing_method_hint`` replaces
    the node's "method not found" with advice (e.g. which option enables it).
    """
    if args.command == "checkmessage" and args.pubkey is not None:
        return _checkmessage_offline(args)
    try:
        return trio.run(_run, args, request)
    except NoNodeRunning as exc:
        offline = "; or give --pubkey to check the signature without a node" if args.command == "checkmessage" else ""
        _fail(args, f"{exc}; if it is starting, run the command again or add --wait{offline}")
        return EXIT_NO_NODE
    except ControlCallError as exc:
        if missing_method_hint and exc.code == ErrorCode.METHOD_NOT_FOUND:
            _fail(args, missing_method_hint, exc.code)
        else:
            _fail(args, exc.message, exc.code, exc.data)
        return EXIT_FAILED
    except ControlClientError as exc:
        _fail(args, str(exc))
        return EXIT_FAILED
    except BaseException as exc:
        if is_interrupt(exc):  # Ctrl-C, perhaps wrapped in trio's exception groups
            return EXIT_INTERRUPTED
        raise


#: the subcommands this module runs
COMMANDS = frozenset({"getinfo", "connect", "disconnect", "listpeers", "sendmsg", "ping", "signmessage", "checkmessage", "subscribe", "stop", "call"})
