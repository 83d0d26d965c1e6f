"""The ``lnpmsg`` subcommands that talk to a running node over its control socket.

``getinfo``, ``connect``, ``disconnect``, ``listpeers``, ``sendmsg``, ``ping``,
``subscribe``, ``stop`` and ``call`` (any method, e.g. an app's). Each finds
the node through ``--data-dir``, prints a human summary (or the JSON result
with ``--json``) and exits 0, or prints the error and exits 1 (3 when no
node is running there). Only the control client is imported: these
commands never load the node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
from lnpmsg.rpc.control_proto import CONTROL_INFO_FILE, ErrorCode

__all__ = ["COMMANDS", "add_commands", "run_command"]

#: exit statuses
EXIT_OK, EXIT_FAILED, EXIT_NO_NODE = 0, 1, 3
#: seconds ``stop`` waits at least for the node's process to be gone (it
#: closes its apps first: the chain flushes its state)
STOP_WAIT = 30.0
#: seconds between two looks for a node that is starting or stopping
POLL_INTERVAL = 0.05


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the control subcommands to the ``lnpmsg`` parser."""

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=description or help_text)
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--json", action="store_true", help="print the JSON result (errors as {\"error\": ...})")
        parser.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        add_wait_option(parser)
        return parser

    add("getinfo", "show the running node's id, addresses, peers and apps")
    p = add("connect", "connect the node to a peer")
    p.add_argument("address", help="NODEID@host:port (or any peer address form)")
    p.add_argument("--reconnect", action="store_true", help="replace the live connection if the peer is already connected (default: keep it)")
    p = add("disconnect", "close the connection to a peer")
    p.add_argument("node_id")
    p = add("listpeers", "list connected peers (features, transport, traffic, ping round trip)")
    p.add_argument("node_id", nargs="?", help="only this peer")
    p = add("sendmsg", "send a custom message (type 32768-65535) to a peer")
    p.add_argument("node_id")
    p.add_argument("type", type=int, help="message type, 32768..65535 (odd: peers without it ignore it)")
    p.add_argument("payload", nargs="?", default="", help="payload in hex (or text with --text)")
    p.add_argument("--text", action="store_true", help="the payload is UTF-8 text, not hex")
    p = add("ping", "ping a peer and show the round trip")
    p.add_argument("node_id")
    p = add(
        "subscribe",
        "stream the node's events as JSON lines",
        "Print every event whose topic starts with one of TOPIC (all events when none is given) "
        "as one JSON line. Topics: peer.connected, peer.disconnected, message.received.TYPE, "
        "peer.warning, peer.error, error. Missed events are reported on stderr.",
    )
    p.add_argument("topics", nargs="*", metavar="TOPIC")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")
    add("stop", "stop the running node (returns once its process has exited)")
    p = add("call", "call any control method (e.g. an app's: rpc.call, pubsub.publish)")
    p.add_argument("method")
    p.add_argument("params", nargs="?", default=None, help="params as a JSON object or array")


def _print_getinfo(r: dict[str, Any]) -> None:
    print(f"node id:  {r['node_id']}")
    for address in r.get("addresses") or ["(not listening)"]:
        print(f"address:  {address}")
    print(f"network:  {r.get('network')}")
    print(f"peers:    {r.get('peers')}")
    print(f"apps:     {', '.join(r.get('apps') or []) or 'none'}")
    print(f"control:  {r.get('control')}{' (CURVE)' if r.get('curve') else ''}")
    print(f"events:   {r.get('events')}")


def _print_peer(p: dict[str, Any]) -> None:
    rtt = "-" if p.get("ping_rtt_ms") is None else f"{p['ping_rtt_ms']:.3f} ms"
    print(f"{p['node_id']}")
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
        return "disconnect", {"node_id": args.node_id}, lambda r: print(
            "disconnected" if r["disconnected"] else f"{args.node_id} was not connected"
        )
    if command == "listpeers":
        return "listpeers", ({"node_id": args.node_id} if args.node_id else None), _print_listpeers
    if command == "sendmsg":
        payload = args.payload.encode().hex() if args.text else args.payload
        return "sendcustommsg", {"node_id": args.node_id, "type": args.type, "payload": payload}, lambda r: print(
            f"sent type {r['type']} ({r['bytes']} bytes) to {args.node_id}"
        )
    if command == "ping":
        return "ping", {"node_id": args.node_id}, lambda r: print(f"pong from {args.node_id} in {r['rtt_ms']:.3f} ms")
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
    pass


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
        return EXIT_FAILED
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
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        show(result)
    return EXIT_OK


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
    try:
        return trio.run(_run, args, request)
    except NoNodeRunning as exc:
        _fail(args, f"{exc}; if it is starting, run the command again or add --wait")
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
    except KeyboardInterrupt:
        return EXIT_FAILED


#: the subcommands this module runs
COMMANDS = frozenset({"getinfo", "connect", "disconnect", "listpeers", "sendmsg", "ping", "subscribe", "stop", "call"})
