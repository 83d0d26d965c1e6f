"""The ``lnpmsg`` subcommands of the onion-messages app (:mod:`lnpmsg.onion_messages.app`).

``sendonionmessage NODEID --tlv TYPE=HEX [--via NODEID ...] [--reply-path]``,
``replyonionmessage ID --tlv TYPE=HEX`` and ``listonionmessages`` call the
``onion_messages.*`` methods of the running node, like every control command
(human output or ``--json``; exit 0, 1 on an error, 3 when no node runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.rpc import commands as control_commands

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = frozenset({"sendonionmessage", "replyonionmessage", "listonionmessages"})


def _tlv(text: str) -> tuple[str, str]:
    kind, sep, value = text.partition("=")
    if not sep or not kind.isdigit() or int(kind) < 64:
        raise argparse.ArgumentTypeError(f"TYPE=HEX with a record type of 64 or more, got {text!r}")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value is hex, got {value!r}") from None
    return kind, value


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the onion-message subcommands to the ``lnpmsg`` parser."""

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.")
        parser.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node (default: %(default)s)")
        control_commands.add_wait_option(parser)
        return parser

    p = add("sendonionmessage", "send a BOLT 4 onion message to a node (a direct peer, the hops given, or the shortest path over nodes announcing onion messages)")
    p.add_argument("node_id", metavar="NODEID", help="the recipient's node id (hex)")
    p.add_argument("--tlv", type=_tlv, action="append", default=[], metavar="TYPE=HEX", help="the record to carry (type 64 or more; one: readers ignore a message with more)")
    p.add_argument("--via", action="append", default=[], metavar="NODEID", help="pass this node first (repeatable, in order; the first is our peer), as Core Lightning's sendonionmessage hops")
    p.add_argument("--reply-path", action="store_true", help="carry a blinded path back to us; the reply shows in listonionmessages with reply_to set to this message's id")
    p = add("replyonionmessage", "answer a received onion message (listonionmessages' id) along the reply path it carried")
    p.add_argument("id", type=int, metavar="ID", help="the received message's id")
    p.add_argument("--tlv", type=_tlv, action="append", default=[], metavar="TYPE=HEX", help="the record to carry (type 64 or more)")
    add("listonionmessages", "list the last onion messages this node received (the last 100), and the counts of those relayed and dropped")


def _print_sent(result: dict[str, Any]) -> None:
    print(f"sent {result['id']} via {result['first_hop']} ({result['hops']} hop(s), {result['size']} bytes){', with a reply path' if result['reply_path'] else ''}")


def _print_received(result: dict[str, Any]) -> None:
    for m in result["messages"]:
        records = " ".join(f"{k}={v}" for k, v in m["records"].items()) or "(no records)"
        reply = f" reply to {m['reply_to']}" if m["reply_to"] else ""
        print(f"#{m['id']} from peer {m['from_peer'][:16]}...{reply}: {records}{' [reply path]' if m['has_reply_path'] else ''}")
    if not result["messages"]:
        print("no onion messages received")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], None]]:
    tlvs = dict(getattr(args, "tlv", []))
    if args.command == "sendonionmessage":
        params: dict[str, Any] = {"node_id": args.node_id, "tlvs": tlvs, "reply_path": args.reply_path}
        if args.via:
            params["via"] = list(args.via)
        return "onion_messages.send", params, _print_sent
    if args.command == "replyonionmessage":
        return "onion_messages.reply", {"id": args.id, "tlvs": tlvs}, _print_sent
    if args.command == "listonionmessages":
        return "onion_messages.received", {}, _print_received
    raise ValueError(f"not an onion-message command: {args.command}")


def run_command(args: argparse.Namespace) -> int:
    """Run an onion-message subcommand; returns the exit status."""
    return control_commands.run_command(
        args, _request, missing_method_hint=f"the node at {args.data_dir} runs without onion messages: start it without --no-onion-messages"
    )
