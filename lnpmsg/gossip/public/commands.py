"""``lnpmsg setchannelfee`` and ``lnpmsg listchannelfees``: the announce app's commands.

``setchannelfee`` calls ``channels.setfee`` (like Core Lightning's
``setchannel`` and lnd's ``updatechanpolicy``): the forwarding policy of one
channel or all of them; a public channel's channel_update goes out again.
Human output or ``--json``; exit 0, 1 on an error, 3 when no node runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.rpc import commands as control_commands

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = frozenset({"setchannelfee", "listchannelfees"})


def _amount(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the fee policy subcommands to the ``lnpmsg`` parser."""
    for name, help_text in (
        ("setchannelfee", "set a channel's forwarding fees and limits (re-announced for public channels)"),
        ("listchannelfees", "list each channel's forwarding policy and whether it is public"),
    ):
        p = commands.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}. Needs a node started with a chain.")
        p.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        p.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        p.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        control_commands.add_wait_option(p)
        if name == "setchannelfee":
            p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex), short channel id (BLOCKxTXxOUT), key, or 'all'")
            p.add_argument("--base-msat", type=_amount, metavar="N", help="the base fee per forwarded HTLC in millisatoshis")
            p.add_argument("--ppm", type=_amount, metavar="N", help="the proportional fee in millionths of the amount")
            p.add_argument("--cltv-delta", type=_amount, metavar="BLOCKS", help="cltv_expiry_delta: blocks we ask between incoming and outgoing expiry")
            p.add_argument("--htlc-min-msat", type=_amount, metavar="N", help="the smallest HTLC we forward")
            p.add_argument("--htlc-max-msat", type=_amount, metavar="N", help="the largest HTLC we forward (default: the capacity)")
            p.epilog = "Left-out values keep theirs. Example: lnpmsg setchannelfee all --base-msat 0 --ppm 100"


def _print_policies(r: dict[str, Any]) -> None:
    for c in r["channels"]:
        public = "" if "public" not in c else ("public  " if c["public"] else "private ")
        maximum = "capacity" if c["htlc_maximum_msat"] is None else f"{c['htlc_maximum_msat']} msat"
        print(f"{c['short_channel_id']:<16} {public}fee {c['fee_base_msat']} msat + {c['fee_proportional_millionths']} ppm, "
              f"cltv delta {c['cltv_expiry_delta']}, htlc {c['htlc_minimum_msat']} msat..{maximum}")  # fmt: skip
    if not r["channels"]:
        print("no channels")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    if args.command == "listchannelfees":
        return "announce.listpolicies", {}, _print_policies
    params: dict[str, Any] = {"channel": args.channel}
    for option, name in (("base_msat", "fee_base_msat"), ("ppm", "fee_ppm"), ("cltv_delta", "cltv_expiry_delta"),
                         ("htlc_min_msat", "htlc_minimum_msat"), ("htlc_max_msat", "htlc_maximum_msat")):  # fmt: skip
        value = getattr(args, option)
        if value is not None:
            params[name] = value
    return "channels.setfee", params, _print_policies


def run_command(args: argparse.Namespace) -> int:
    """Call the running node; returns the exit status."""
    return control_commands.run_command(
        args,
        _request,
        missing_method_hint=f"the node at {args.data_dir} runs without public channels: start it with a chain and gossip ('lnpmsg node --chain regtest')",
    )
