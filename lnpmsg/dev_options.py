"""``lnpmsg node``'s developer options (named as Core Lightning's ``--dev-*``),
which make the node drivable by conformance suites such as lnprototest:

- ``--dev-force-channel-secrets FUNDING/REVOCATION/PAYMENT/DELAYEDPAYMENT/HTLC/SHASEED``
- ``--dev-import-privkey HEX`` (repeatable)
- ``--dev-funding-confirms N``
- ``--dev-fast-gossip``
- ``--dev-policy-grace SECONDS``
- ``--dev-update-interval SECONDS``

The CLI calls :func:`add_options` on the node parser and :func:`from_args`
before it builds the node; the result (a
:class:`~lnpmsg.channels.dev.DevOptions`) goes to the apps that use it.
"""

from __future__ import annotations

import argparse

from lnpmsg._hex import parse_hex
from lnpmsg.channels.dev import MAX_FUNDING_CONFIRMS, DevOptions, parse_channel_secrets
from lnpmsg.channels.errors import ChannelError

__all__ = ["add_options", "from_args"]


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the "developer options" group to the ``lnpmsg node`` parser."""
    dev = parser.add_argument_group(
        "developer options",
        "For test set-ups and conformance suites (lnprototest); never with real funds: "
        "forced keys are known to anyone who reads the command line.",
    )
    dev.add_argument(
        "--dev-force-channel-secrets",
        metavar="FUNDING/REVOCATION/PAYMENT/DELAYEDPAYMENT/HTLC/SHASEED",
        help="use these six 32-byte secrets (hex, joined by '/': funding key, the four basepoint secrets, "
        "shachain seed) for every channel, as Core Lightning's option of that name",
    )
    dev.add_argument(
        "--dev-import-privkey",
        action="append",
        default=[],
        metavar="HEX",
        help="a raw private key (64 hex chars) whose P2WPKH coins the wallet watches and spends; repeatable "
        "(needs --chain or --bitcoind-rpc)",
    )
    dev.add_argument(
        "--dev-funding-confirms",
        type=int,
        metavar="N",
        help=f"confirmations to ask of a channel's funding transaction (1..{MAX_FUNDING_CONFIRMS}; default: the channel app's)",
    )
    dev.add_argument(
        "--dev-fast-gossip",
        action="store_true",
        help="flush gossip to peers every second and prune every 10 s (instead of 60 s and an hour)",
    )
    dev.add_argument(
        "--dev-policy-grace",
        type=float,
        metavar="SECONDS",
        help="how long forwards may still meet a channel's previous fee policy after 'lnpmsg setchannelfee' "
        "(default: 600, BOLT 7's 10 minutes; 0: the new policy holds at once)",
    )
    dev.add_argument(
        "--dev-update-interval",
        type=float,
        metavar="SECONDS",
        help="the least time between two of our channel_updates of one channel (e.g. a new fee policy "
        "right after the first update), and between two of our node_announcements (default: 10; 0: no limit)",
    )


def from_args(args: argparse.Namespace) -> DevOptions:
    """The developer options given; raises ``ValueError`` with a message for the user."""
    secrets = None
    if args.dev_force_channel_secrets:
        try:
            secrets = parse_channel_secrets(args.dev_force_channel_secrets)
        except ChannelError as exc:
            raise ValueError(f"bad --dev-force-channel-secrets: {exc}") from None
    keys: list[bytes] = []
    for text in args.dev_import_privkey:
        try:
            keys.append(parse_hex(text, "a key", 32, quote=False))
        except ValueError as exc:
            raise ValueError(f"bad --dev-import-privkey: {exc}") from None
    if keys and not (args.chain or args.bitcoind_rpc):
        raise ValueError("--dev-import-privkey gives keys to the wallet: add --chain regtest (or --bitcoind-rpc)")
    try:
        return DevOptions(
            channel_secrets=secrets,
            funding_confirms=args.dev_funding_confirms,
            fast_gossip=args.dev_fast_gossip,
            import_privkeys=tuple(keys),
            policy_grace=args.dev_policy_grace,
            update_interval=args.dev_update_interval,
        )
    except ChannelError as exc:
        raise ValueError(f"bad developer option: {exc}") from None
