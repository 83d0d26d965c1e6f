"""The ``lnpmsg gossip`` subcommands, and the gossip app of ``lnpmsg node``.

The subcommands call the ``gossip.*`` control methods of a running node
(:class:`~lnpmsg.gossip.app.GossipApp`, mounted by ``lnpmsg node`` unless
``--no-gossip``) and run like every other control command
(:mod:`lnpmsg.rpc.commands`): human output or ``--json``, exit 0, 1 on an
error, 3 when no node runs::

    lnpmsg gossip listchannels [--node ID] [--after SCID] [--limit N]
    lnpmsg gossip listnodes [--after ID] [--limit N]
    lnpmsg gossip getnode ID
    lnpmsg gossip getchannel SCID
    lnpmsg gossip stats
    lnpmsg gossip sync [--wait SECONDS] [--follow [--count N]]
    lnpmsg gossip resync [--peer ID]
    lnpmsg gossip subscribe [--type T]... [--node ID]... [--scid S]... [--count N]

``getnode`` and ``getchannel`` fail (exit 1) for what the graph does not
hold. ``sync`` polls ``gossip.progress`` until the initial sync is done: a
progress bar on a terminal, a line per change otherwise, JSON lines with
``--json``; with ``--follow`` it carries on, telling each re-sync as it
starts and ends (:class:`~lnpmsg.gossip.progress_text.ResyncFollow`).
``resync`` starts a re-sync now (``gossip.resync``), with ``--peer`` or the
peer the periodic re-sync would pick; it fails (exit 1) with the reason
when it cannot start. ``subscribe`` prints the node's gossip events (``gossip.<type>``:
``raw`` hex, the decoded ``message``, ``source``, ``short_channel_id``,
``node_ids``) as JSON lines, keeping those that concern any ``--node`` or
``--scid`` given.

Only the control client is loaded by these commands; :func:`node_gossip_app`
(the node side, used by ``lnpmsg node``) loads the app when called.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.gossip.progress_text import ResyncFollow, duration, progress_bar, resync_summary, sync_summary
from lnpmsg.rpc import commands as control_commands
from lnpmsg.rpc.control_client import (
    ControlCallError,
    ControlClient,
    ControlClientError,
    NoNodeRunning,
)
from lnpmsg.rpc.control_proto import ErrorCode

if TYPE_CHECKING:
    from lnpmsg.gossip.app import FundingCheck, GossipApp
    from lnpmsg.node.node import Mountable

__all__ = ["COMMANDS", "EVENT_TYPES", "FAST_FLUSH_INTERVAL", "FAST_PRUNE_INTERVAL", "add_commands", "node_gossip_app", "progress_bar", "run_command"]

#: the top-level subcommand of this module (its own subcommands are in ``args.gossip_command``)
COMMANDS = frozenset({"gossip"})
#: --dev-fast-gossip: seconds between relay flushes (BOLT 7's staggered broadcast is 60)
FAST_FLUSH_INTERVAL = 1.0
#: --dev-fast-gossip: seconds between prunes of stale channels (normally an hour)
FAST_PRUNE_INTERVAL = 10.0
#: the gossip event types ``subscribe --type`` takes (topics ``gossip.<type>``)
EVENT_TYPES = ("channel_announcement", "node_announcement", "channel_update", "channel_removed", "rejected")
#: seconds between ``gossip.progress`` calls of ``sync``
SYNC_POLL = 0.5

_SCID = re.compile(r"^\d+x\d+x\d+$")
_NODE_ID = re.compile(r"^(02|03)[0-9a-fA-F]{64}$")
_NO_GOSSIP_HINT = "the node at {} runs without the gossip app: start it without --no-gossip"


# ------------------------------------------------------------------ arguments


def _node_id(text: str) -> str:
    if not _NODE_ID.match(text):
        raise argparse.ArgumentTypeError(f"a node id is 66 hex characters starting 02 or 03, got {text!r}")
    return text.lower()


def _scid(text: str) -> str:
    if not _SCID.match(text):
        raise argparse.ArgumentTypeError(f"a short channel id is BLOCKxTXxOUTPUT (e.g. 700000x1234x0), got {text!r}")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _event_type(text: str) -> str:
    name = text.removeprefix("gossip.")
    if name not in EVENT_TYPES:
        raise argparse.ArgumentTypeError(f"an event type is one of {', '.join(EVENT_TYPES)}, got {text!r}")
    return name


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add ``lnpmsg gossip`` and its subcommands to the ``lnpmsg`` parser."""
    gossip = commands.add_parser(
        "gossip",
        help="query and follow the node's Lightning gossip (the channel graph)",
        description=(
            "Query the channel graph of a running node and follow its gossip (BOLT 7). "
            "Needs a node started with the gossip app (the default of 'lnpmsg node')."
        ),
    )
    sub = gossip.add_subparsers(dest="gossip_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description or f"{help_text[0].upper()}{help_text[1:]}.")
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        parser.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        if name not in _SESSIONS:
            # one call through the shared runner, which can wait for a node to start
            # ('sync' has a --wait of its own: how long to wait for the sync)
            control_commands.add_wait_option(parser)
        return parser

    p = add("listchannels", "list channels with both directions' policies, by short channel id")
    p.add_argument("--node", type=_node_id, metavar="ID", help="only the channels of this node")
    p.add_argument("--after", type=_scid, metavar="SCID", help="start after this channel (to page through)")
    p.add_argument("--limit", type=_positive, default=1000, metavar="N", help="at most N channels (default: %(default)s)")
    p = add("listnodes", "list the nodes that have a channel (announced or not), by node id")
    p.add_argument("--after", type=_node_id, metavar="ID", help="start after this node (to page through)")
    p.add_argument("--limit", type=_positive, default=1000, metavar="N", help="at most N nodes (default: %(default)s)")
    p = add("getnode", "show a node: its announcement and channels")
    p.add_argument("node_id", type=_node_id, metavar="ID", help="the node's id (66 hex chars)")
    p = add("getchannel", "show a channel and its policies")
    p.add_argument("short_channel_id", type=_scid, metavar="SCID", help="BLOCKxTXxOUTPUT")
    add("stats", "show counts: the graph, the store, decisions and their reasons, relay, sync")
    p = add(
        "sync",
        "follow the initial gossip sync until it is done (--follow: and the re-syncs after)",
        "Show the progress of the node's initial gossip sync with its peers (a bar on a terminal, "
        "a line per change otherwise, JSON lines with --json) until it is done. With --follow, carry on "
        "after it and tell each re-sync (the periodic ones, every --gossip-resync-interval, and those "
        "'lnpmsg gossip resync' asks for) as it starts and ends: its peer, the channels it offered and "
        "those we asked for, or why it failed (with --json: a progress line at each change). "
        "Ctrl-C stops watching, not the sync.",
    )
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="give up (exit 1) if not synced after this long (default: wait until done)")
    p.add_argument("--follow", action="store_true", help="once synced, keep following: tell each re-sync as it starts and ends (until Ctrl-C or --count)")
    p.add_argument("--count", type=_positive, metavar="N", help="with --follow: exit (0) once N re-syncs have ended")
    p = add(
        "resync",
        "start a re-sync of the channel graph now, with a peer or the schedule's choice",
        "Ask the node for one more range sync now (query_channel_range, then the channels it lacks; "
        "with gossip_queries_ex only what is newer than ours comes), as the periodic re-sync every "
        "--gossip-resync-interval does: with --peer, or with the peer the timer would pick (one never "
        "synced with, at random, else the one synced with longest ago). It goes the timer's way: one "
        "re-sync at a time, within the node's syncs at a time (sync_peers); it leaves the periodic "
        "schedule alone (the next periodic re-sync stays due when it was; 'gossip stats' counts these "
        "apart). Follow it with 'lnpmsg gossip sync --follow'. Fails (exit 1) saying why: no connected "
        "peer offers gossip_queries, the peer is not connected or offers no gossip_queries, a sync with "
        "it runs already, another re-sync runs, or the syncs at a time are all running "
        '(with --json: {"error": {..., "data": {"code": ...}}}).',
    )
    p.add_argument("--peer", type=_node_id, metavar="ID", help="re-sync with this connected peer (default: the one the periodic re-sync would pick)")
    p = add(
        "subscribe",
        "stream the node's verified gossip as JSON lines",
        "Print every gossip message the node accepts as one JSON line: topic (gossip.TYPE), seq, time, "
        "raw (hex), message (decoded), source (the peer, null if imported), short_channel_id, node_ids. "
        "With --node or --scid, only the messages concerning any of them. Missed events are reported on stderr.",
    )
    p.add_argument("--type", action="append", type=_event_type, default=[], metavar="TYPE", help=f"only this message type ({', '.join(EVENT_TYPES)}); repeatable")
    p.add_argument("--node", action="append", type=_node_id, default=[], metavar="ID", help="only messages about this node (its channels, their updates, its announcement); repeatable")
    p.add_argument("--scid", action="append", type=_scid, default=[], metavar="SCID", help="only messages about this channel; repeatable")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N messages")


# ------------------------------------------------------------------ printing


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))


def _policy_text(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return "no update"
    state = "active" if policy["active"] else "disabled"
    return (
        f"fee {policy['fee_base_msat']} msat + {policy['fee_proportional_millionths']} ppm, "
        f"cltv delta {policy['cltv_expiry_delta']}, htlc {policy['htlc_minimum_msat']}..{policy['htlc_maximum_msat']} msat, "
        f"{state}, updated {_when(policy['timestamp'])}"
    )


def _capacity(channel: dict[str, Any]) -> str:
    return "? sat" if channel.get("capacity_sat") is None else f"{channel['capacity_sat']} sat"


def _print_listchannels(r: dict[str, Any], limit: int) -> None:
    channels = r["channels"]
    for c in channels:
        updates = sum(p is not None for p in c["policies"])
        print(f"{c['short_channel_id']:<18} {c['node_id_1']} {c['node_id_2']} {_capacity(c):>16}  {updates}/2 updates")
    print(f"{len(channels)} channel(s)" + (f"; more after {channels[-1]['short_channel_id']} (--after)" if channels and len(channels) >= limit else ""))


def _print_listnodes(r: dict[str, Any], limit: int) -> None:
    nodes = r["nodes"]
    for n in nodes:
        if n["announced"]:
            addresses = ", ".join(n["addresses"]) or "no address"
            print(f"{n['node_id']}  {n['alias'] or '(no alias)'}  #{n['rgb_color']}  {addresses}")
        else:
            print(f"{n['node_id']}  (not announced)")
    print(f"{len(nodes)} node(s)" + (f"; more after {nodes[-1]['node_id']} (--after)" if nodes and len(nodes) >= limit else ""))


def _print_node(n: dict[str, Any]) -> None:
    print(f"node:      {n['node_id']}")
    if n["announced"]:
        print(f"alias:     {n['alias'] or '(none)'}")
        print(f"color:     #{n['rgb_color']}")
        print(f"addresses: {', '.join(n['addresses']) or 'none'}")
        print(f"features:  {', '.join(n['feature_names']) or 'none'}")
        print(f"announced: {_when(n['timestamp'])}")
    else:
        print("announced: no node_announcement")
    print(f"channels:  {len(n['channels'])}: {' '.join(n['channels'])}")


def _print_channel(c: dict[str, Any]) -> None:
    print(f"channel:   {c['short_channel_id']} ({_capacity(c)}, first seen {_when(c['first_seen'])})")
    print(f"node 1:    {c['node_id_1']}")
    print(f"node 2:    {c['node_id_2']}")
    print(f"features:  {c['features'] or 'none'}")
    print(f"1 -> 2:    {_policy_text(c['policies'][0])}")
    print(f"2 -> 1:    {_policy_text(c['policies'][1])}")


def _print_stats(r: dict[str, Any]) -> None:
    store = r["store"]
    sync = r["sync"]
    print(f"channels:           {r['channels']}")
    print(f"channel updates:    {r['channel_updates']}")
    print(f"nodes:              {r['nodes']} ({r['node_announcements']} announced)")
    print(f"store:              {store['channels']} channels, {store['updates']} updates, {store['node_announcements']} node announcements, {store['size_bytes']} bytes")
    backlog = r.get("store_backlog") or {}
    if backlog.get("error"):
        print(f"store NOT WRITING:  {backlog['error']}: {backlog['waiting']} message(s) waiting, {backlog['not_kept']} not kept")
    for decision, n in sorted(r["decisions"].items()):
        print(f"  {decision}: {n}")
    for reason, n in sorted(r["reasons"].items(), key=lambda kv: -kv[1]):
        print(f"  not accepted, {reason}: {n}")
    print(f"signature checks:   {r['signature_checks']}")
    print(f"relay:              {r['relayed']} sent, {r['relay_queued']} queued, {r['relay_dropped']} dropped")
    print(f"queries answered:   {r['queries_answered']} ({r['replies_sent']} replies)")
    print(f"warnings sent:      {r['warnings_sent']}, peers disconnected: {r['peers_disconnected']}")
    print(f"sync:               {sync_summary(sync)}")
    if sync.get("resync"):
        print(f"re-sync:            {resync_summary(sync['resync'])}")


def _print_resync(r: dict[str, Any], data_dir: Path) -> None:
    how = "the peer given" if r["chosen"] == "given" else "chosen as the periodic re-sync would: never synced with, else synced with longest ago"
    print(f"re-sync with {r['peer']} started ({how})")
    periodic = "no periodic re-sync" if r["next_in"] is None else f"the next periodic re-sync stays due in {duration(r['next_in'])}"
    print(f"{periodic}; follow it: lnpmsg gossip sync --follow --data-dir {data_dir}")


# ------------------------------------------------------------------ the calls


def _gossip_request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    """The gossip app's control call for a plain subcommand, and how to print its result."""
    command = args.gossip_command
    if command == "listchannels":
        params: dict[str, Any] = {"limit": args.limit}
        if args.node:
            params["node_id"] = args.node
        if args.after:
            params["after"] = args.after
        return "gossip.listchannels", params, lambda r: _print_listchannels(r, args.limit)
    if command == "listnodes":
        params = {"limit": args.limit}
        if args.after:
            params["after"] = args.after
        return "gossip.listnodes", params, lambda r: _print_listnodes(r, args.limit)
    if command == "stats":
        return "gossip.stats", {}, _print_stats
    if command == "resync":
        return "gossip.resync", {"peer": args.peer} if args.peer else {}, lambda r: _print_resync(r, args.data_dir)
    raise ValueError(f"not a plain gossip command: {command}")


class _Failed(Exception):
    """A gossip command failed (the message is for the user)."""


def _fail(args: argparse.Namespace, message: str, code: int | None = None) -> None:
    if args.json:
        error: dict[str, Any] = {"message": message}
        if code is not None:
            error["code"] = code
        print(json.dumps({"error": error}), flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


async def _lookup(client: ControlClient, args: argparse.Namespace) -> None:
    if args.gossip_command == "getnode":
        result = await client.call("gossip.getnode", {"node_id": args.node_id}, timeout=args.timeout)
        if result["node"] is None:
            raise _Failed(f"node {args.node_id} is not in the gossip graph (no known channel)")
        show: Callable[[Any], None] = _print_node
        found = result["node"]
    else:
        result = await client.call("gossip.getchannel", {"short_channel_id": args.short_channel_id}, timeout=args.timeout)
        if result["channel"] is None:
            raise _Failed(f"channel {args.short_channel_id} is not in the gossip graph")
        show, found = _print_channel, result["channel"]
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        show(found)


async def _sync(client: ControlClient, args: argparse.Namespace) -> None:
    tty = not args.json and sys.stdout.isatty()
    deadline = trio.current_time() + args.wait if args.wait > 0 else float("inf")
    last: tuple[Any, ...] | None = None
    told_waiting = False
    failures: set[str] = set()
    follow = ResyncFollow() if args.follow else None
    synced = False
    said = ""  # the last progress line printed (not on a terminal)

    def note(text: str) -> None:
        # On a terminal the bar's line stays: the note goes below it.
        print(f"\n{text}" if tty else text, file=sys.stderr, flush=True)

    def say(text: str) -> None:
        # A line of the follow: on a terminal in the bar's place (the bar comes again below).
        if tty:
            sys.stdout.write(f"\r\x1b[K{text}\n")
            sys.stdout.flush()
        elif not args.json:
            print(text, flush=True)

    try:
        while True:
            progress = await client.call("gossip.progress", timeout=args.timeout)
            key: tuple[Any, ...] = (round(progress["percent"]), progress["synced"], progress["syncing"], progress["channels"], len(progress["peers"]))
            resync = progress.get("resync")
            if follow is not None and args.json and resync is not None:
                # a JSON line at each re-sync's start and end too (people get ResyncFollow's lines)
                key += (resync["peer"], resync["started"], resync.get("manual", 0))
            if args.json:
                if key != last:
                    print(json.dumps(progress), flush=True)
            elif tty:
                sys.stdout.write("\r\x1b[K" + progress_bar(progress))
                sys.stdout.flush()
            elif key != last:
                line = f"gossip sync: {sync_summary(progress)}"
                if not (synced and line == said):  # following: a re-sync's record changes nothing here
                    print(line, flush=True)
                said = line
            last = key
            if follow is not None and synced:
                for line in follow.update(progress):
                    say(line)
                failures |= follow.failed
                if args.count and follow.ended >= args.count:
                    break
            for peer, state in progress["peers"].items():
                if state["state"] == "failed" and peer not in failures:
                    failures.add(peer)
                    note(f"gossip sync with {peer} failed: {state['reason']}")
            if progress["synced"] and not synced:
                synced = True
                if follow is None:
                    break
                say(f"gossip synced: {progress['channels']} channels")
                print(follow.intro(progress), file=sys.stderr, flush=True)  # (a terminal's line is fresh after say)
                follow.update(progress)  # the starting point
            if not synced:
                if not progress["peers"] and not told_waiting:
                    told_waiting = True
                    note(f"waiting for a peer offering gossip_queries (connect one: lnpmsg connect NODEID@HOST:PORT --data-dir {args.data_dir})")
                if trio.current_time() >= deadline:
                    raise _Failed(f"gossip not synced after {args.wait:g} s ({sync_summary(progress)})")
            await trio.sleep(SYNC_POLL)
    finally:
        if tty:
            print(flush=True)
    if not args.json and follow is None:
        print(f"gossip synced: {progress['channels']} channels", flush=True)


def _concerns(data: dict[str, Any], nodes: set[str], scids: set[str]) -> bool:
    if not nodes and not scids:
        return True
    if nodes and nodes.intersection(data.get("node_ids") or ()):
        return True
    return bool(scids) and data.get("short_channel_id") in scids


async def _subscribe(client: ControlClient, args: argparse.Namespace) -> None:
    topics = tuple(f"gossip.{t}" for t in (dict.fromkeys(args.type) or EVENT_TYPES))
    nodes, scids = set(args.node), set(args.scid)
    # The event socket takes any topic: ask the app first, so that a node without it says so.
    await client.call("gossip.progress", timeout=args.timeout)
    async with await client.subscribe(*topics, lifecycle=True) as events:
        print(f"subscribed to {', '.join(topics)}", file=sys.stderr, flush=True)
        received = 0
        async for event in events:
            if event.topic.startswith("node."):
                print(_LIFECYCLE.get(event.topic, event.topic).format(**event.data), file=sys.stderr, flush=True)
                continue
            if event.missed:
                print(f"missed {event.missed} {event.topic} event(s): this subscriber fell behind", file=sys.stderr, flush=True)
            if not _concerns(event.data, nodes, scids):
                continue
            sys.stdout.write(event.raw.decode() + "\n")
            sys.stdout.flush()
            received += 1
            if args.count and received >= args.count:
                return


_LIFECYCLE = {
    "node.stopping": "the node is stopping ({reason}); waiting for it to come back",
    "node.restarted": "the node restarted: event numbers (seq) begin again",
    "node.silent": "no word from the node for {seconds:g} s (not even a heartbeat): is it still running?",
}

_SESSIONS = {"getnode": _lookup, "getchannel": _lookup, "sync": _sync, "subscribe": _subscribe}


async def _session(args: argparse.Namespace) -> None:
    async with ControlClient.open(args.data_dir) as client:
        await _SESSIONS[args.gossip_command](client, args)


def run_command(args: argparse.Namespace) -> int:
    """Run an ``lnpmsg gossip`` subcommand against the running node; returns the exit status."""
    hint = _NO_GOSSIP_HINT.format(args.data_dir)
    if args.gossip_command == "sync" and args.count and not args.follow:
        _fail(args, "--count counts the re-syncs --follow tells: add --follow")
        return control_commands.EXIT_USAGE
    if args.gossip_command not in _SESSIONS:
        return control_commands.run_command(args, _gossip_request, missing_method_hint=hint)
    try:
        trio.run(_session, args)
    except NoNodeRunning as exc:
        _fail(args, str(exc))
        return control_commands.EXIT_NO_NODE
    except ControlCallError as exc:
        if exc.code == ErrorCode.METHOD_NOT_FOUND:
            _fail(args, hint, exc.code)
        else:
            _fail(args, exc.message, exc.code)
        return control_commands.EXIT_FAILED
    except (ControlClientError, _Failed) as exc:
        _fail(args, str(exc))
        return control_commands.EXIT_FAILED
    except BaseException as exc:
        if control_commands.is_interrupt(exc):  # Ctrl-C (perhaps wrapped in trio's exception groups): 130, as every command
            return control_commands.EXIT_INTERRUPTED
        raise
    return control_commands.EXIT_OK


# ------------------------------------------------------------------ the node side


def node_gossip_app(
    data_dir: Path,
    network: str,
    import_files: Sequence[str | Path] = (),
    *,
    chain_app: Mountable | None = None,
    prune_interval: float | None = None,
    prune_after_days: float | None = None,
    full_syncs: int | None = None,
    resync_interval: float | None = None,
    fast: bool = False,
) -> GossipApp:
    """The gossip app ``lnpmsg node`` mounts: its store in ``data_dir``, for ``network``.

    ``import_files``: Core Lightning gossip_store files (``.xz`` too), the
    parts of one store in order, imported while the node starts.
    ``chain_app``: a :class:`~lnpmsg.wallet.app.ChainApp` whose chain checks
    every announced funding output; without one, channels are accepted on
    their four signatures alone. ``prune_interval`` (seconds, 0: never) and
    ``prune_after_days`` (the stale horizon) override :class:`GossipConfig`'s,
    as ``full_syncs`` (0: every peer) and ``resync_interval`` (seconds, 0: never) do.
    ``fast`` (``--dev-fast-gossip``): relay flushes every :data:`FAST_FLUSH_INTERVAL`
    seconds and, unless ``prune_interval`` is given, prunes every
    :data:`FAST_PRUNE_INTERVAL`, so that tests see gossip move in seconds.
    Raises :class:`~lnpmsg.gossip.errors.GossipError`
    (a file that is missing, a store that cannot be opened or is another chain's).
    """
    from lnpmsg.gossip.app import GossipApp, GossipConfig
    from lnpmsg.gossip.errors import GossipError
    from lnpmsg.gossip.store import DB_FILE_NAME, GossipStore
    from lnpmsg.wire import CHAIN_HASHES

    for name in import_files:
        if not Path(name).is_file():
            raise GossipError(f"--gossip-import: no such file: {name}")
    config = GossipConfig()
    if prune_interval is not None:
        if prune_interval < 0:
            raise GossipError("--gossip-prune-interval: seconds, 0 or more (0: never prune)")
        config.prune_interval = prune_interval
    if prune_after_days is not None:
        if prune_after_days <= 0:
            raise GossipError("--gossip-prune-after: days, more than 0")
        config.stale_after = int(prune_after_days * 86400)
    if full_syncs is not None:
        if full_syncs < 0:
            raise GossipError("--gossip-full-syncs: peers, 0 or more (0: sync with every peer)")
        config.full_syncs = full_syncs
    if resync_interval is not None:
        if resync_interval < 0:
            raise GossipError("--gossip-resync-interval: seconds, 0 or more (0: never re-sync)")
        config.resync_interval = resync_interval
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = GossipStore(data_dir / DB_FILE_NAME, CHAIN_HASHES[network])
    funding = _chain_app_funding_check(chain_app) if chain_app is not None else None
    if fast:
        config.flush_interval = FAST_FLUSH_INTERVAL
        if prune_interval is None:
            config.prune_interval = FAST_PRUNE_INTERVAL
    return GossipApp(store, config=config, funding_check=funding, import_at_start=[str(f) for f in import_files])


def _chain_app_funding_check(chain_app: Mountable) -> FundingCheck:
    """A funding check on the chain app's source, which exists only while that app runs."""
    from lnpmsg.gossip.app import FundingResult
    from lnpmsg.gossip.funding import chain_funding_check
    from lnpmsg.gossip.messages import ChannelAnnouncement

    check: FundingCheck | None = None

    async def funding(announcement: ChannelAnnouncement) -> FundingResult:
        nonlocal check
        if check is None:
            check = chain_funding_check(chain_app.source)  # type: ignore[attr-defined]
        return await check(announcement)

    return funding
