"""The ``lnpmsg`` subcommands of the channel app (:mod:`lnpmsg.channels.app`).

``fundchannel``, ``bumpchannelopen``, ``splice``, ``bumpsplice``, ``abandonsplice``, ``listchannels`` and ``closechannel`` call the
``channels.*`` methods of a node started with a chain (``--chain regtest``
or ``--bitcoind-rpc``), like every control command (:mod:`lnpmsg.rpc.commands`):
human output or ``--json``, exit 0, 1 on an error, 3 when no node runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.rpc import commands as control_commands
from lnpmsg.rpc.commands import named_alias

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = frozenset({"fundchannel", "bumpchannelopen", "splice", "bumpsplice", "abandonsplice", "listchannels", "closechannel",
                      "exportchannelbackup", "listchannelbackup", "restorechannels", "listpeerstorage"})  # fmt: skip


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _signed_amount(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of satoshis, +N or -N, got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("+N adds N satoshis, -N takes N out: not 0")
    return value


def _add_bump_feerate(parser: argparse.ArgumentParser, what: str) -> None:
    """A fee bump's --feerate (BOLT 2 tx_init_rbf: at least 25/24 of the last version's)."""
    parser.add_argument("--feerate", type=_positive, metavar="SAT_PER_VB",
                        help=f"the new {what}'s fee rate in sat per vbyte (default: the least the peer must take, 25/24 "
                             "of the last version's rate, or the chain's estimate if higher)")


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the channel subcommands to the ``lnpmsg`` parser."""

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Needs a node started with a chain "
                        "('lnpmsg node --chain regtest' or '--bitcoind-rpc URL').",
        )  # fmt: skip
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        parser.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        control_commands.add_wait_option(parser)
        return parser

    p = add("fundchannel", "open a channel to a connected peer, funded by the node's wallet")
    p.add_argument("node_id", metavar="NODEID", help="the peer (connect to it first: 'lnpmsg connect')")
    p.add_argument("amount_sat", type=_positive, metavar="AMOUNT_SAT", help="the channel's capacity in satoshis")
    p.add_argument("--push-msat", type=int, default=0, metavar="N", help="give the peer N millisatoshis at the start (default: 0)")
    p.add_argument("--feerate", type=_positive, metavar="PER_KW", help="the funding transaction's fee rate in sat per 1000 weight (default: the chain's estimate)")
    p.add_argument("--announce", action="store_true", help="ask for a public channel (channel_flags bit 0)")
    # (options.CHANNEL_TYPE_CHOICES: not imported here, the command line stays light)
    p.add_argument("--channel-type", choices=("static_remotekey", "anchors", "scid_alias", "static_remotekey+scid_alias", "anchors+scid_alias"),
                   help="the commitment format (default: anchors_zero_fee_htlc_tx when the peer offers it, else static_remotekey); "
                        "+scid_alias (or scid_alias alone): a private channel known by its aliases only (option_scid_alias)")
    p.add_argument("--zeroconf", action="store_true",
                   help="ask a zero-conf channel (option_zeroconf): usable before the funding confirms, if the peer trusts us (lnpmsg: --zeroconf-peer)")
    p.add_argument("--v2", action="store_true",
                   help="channel establishment v2 (option_dual_fund; used anyway when both nodes offer it, lnpmsg: --dual-fund)")
    p.epilog = "Returns once the peer signed our first commitment and the funding is broadcast; the channel is ready after its confirmations (the peer's minimum_depth)."
    p = add("bumpchannelopen", "fee-bump the unconfirmed funding transaction of a dual-funded channel we opened (BOLT 2 tx_init_rbf)")
    p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex) or key, of a channel opened with v2 ('fundchannel --v2' or --dual-fund)")
    _add_bump_feerate(p, "funding")
    p.epilog = ("The peer answers tx_ack_rbf (or refuses with tx_abort: the channel stays as it was); both build "
                "a new version of the funding from the same coins, sign its first commitments, then the funding; "
                "it is broadcast and replaces the earlier one in mempools (BIP 125 also asks for more absolute fee: "
                "bump by more than the 25/24 minimum). Until one confirms, every version may: the channel opens on "
                "the one that does. Possible until the funding confirms; not for a zero-conf channel.")
    p = add("splice", "resize a channel without closing it (BOLT 2 splicing): add funds from the wallet, or send funds out to an address")
    p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex), short channel id (BLOCKxTXxOUT) or key, with a peer that offers option_splice")
    p.add_argument("--amount-sat", type=_signed_amount, required=True, metavar="+N|-N",
                   help="+N: splice N satoshis in from the node's wallet (our balance and the capacity grow by N); "
                        "-N: splice N satoshis out to --address (our balance shrinks by N and the splice's fee)")
    p.add_argument("--feerate", type=_positive, metavar="SAT_PER_VB", help="the splice transaction's fee rate in sat per vbyte (default: the chain's estimate)")
    p.add_argument("--address", metavar="ADDRESS", help="where a splice-out pays (default: a new address of the node's wallet)")
    p.epilog = ("The node quiesces the channel (stfu), proposes the splice (splice_init), builds the splice transaction "
                "with the peer (it spends the current funding output and creates the new one), both sign the "
                "commitments on the new funding, then the transaction; it is broadcast and the command returns. "
                "Until it confirms the channel keeps its old funding and goes on working, each commitment signed for "
                "both fundings (listchannels shows the pending splice); at the channel's minimum depth both send splice_locked and the channel runs on "
                "the new funding, with its new capacity and short channel id. Example: "
                "'lnpmsg splice 103x1x0 --amount-sat -200000 --address bcrt1q...'.")
    p = add("bumpsplice", "fee-bump a channel's pending splice transaction, not yet locked (BOLT 2 tx_init_rbf)")
    p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex), short channel id (BLOCKxTXxOUT) or key, with a splice pending ('listchannels' shows it)")
    _add_bump_feerate(p, "version")
    p.epilog = ("Either side may bump a splice, whoever started it. The node quiesces the channel again (stfu), "
                "proposes the new feerate (tx_init_rbf), the peer answers tx_ack_rbf (or tx_abort: the splice stays "
                "as it was); both build a new version of the splice transaction spending the same funding output, "
                "with each side's coins and outputs as before (what a side owes more comes out of its change, or "
                "else its channel balance; the bumper also pays the shared fields); both sign "
                "its commitments and the transaction; it is broadcast and the command returns. Every version may "
                "confirm until one does: the channel locks on that one (splice_locked names it) and the others are "
                "dropped. Refused: once a version is in a block, after our splice_locked, on a zero-conf channel, below 25/24 of the last rate, "
                "past 10 pending bumps (BIP 125 also asks for more absolute fee: bump by more than the minimum). "
                "Example: 'lnpmsg bumpsplice 103x1x0 --feerate 20'.")
    p = add("abandonsplice", "end a pending splice the peer forgot (listchannels: peer_forgot) by spending our coins in it back to the wallet")
    p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex), short channel id (BLOCKxTXxOUT) or key, whose pending splice the peer forgot")
    p.add_argument("--feerate", type=_positive, metavar="SAT_PER_VB", help="the spend's fee rate in sat per vbyte (default: the chain's estimate)")
    p.epilog = ("A peer that answered tx_abort after our tx_signatures left holds our signatures and may still complete "
                "the splice: BOLT 2 keeps it until one of its inputs is spent by another transaction, and no other "
                "splice may start meanwhile. This spends our coins in it back to a new address of the node's wallet "
                "(a double-spend of the splice); once that spend is 6 blocks deep the splice ends, its coins are "
                "free and the channel may splice again. Refused when the splice holds no coin of ours (it ends "
                "when the peer spends one of its own), or when it confirmed (it is then taken up). "
                "Example: 'lnpmsg abandonsplice 103x1x0 --feerate 5'.")
    p = add("listchannels", "list the node's channels: state, capacity, balances, HTLCs, short channel id, funding outpoint, "
                           "the peer's alias (from its node_announcement in the gossip, when known)")
    p.add_argument("--peer", metavar="NODEID", help="only the channels with this peer")
    p = add("closechannel", "close a channel cooperatively (shutdown, then closing_signed), or --force it on chain")
    p.add_argument("channel", metavar="CHANNEL", help="a channel id (hex), short channel id (BLOCKxTXxOUT) or key")
    p.add_argument("--feerate", type=_positive, metavar="PER_KW", help="the closing fee rate we aim at (default: the chain's estimate)")
    p.add_argument("--destination", metavar="ADDRESS", help="pay our side here (default: a new address of the node's wallet)")
    p.add_argument("--force", action="store_true",
                   help="unilateral close: broadcast our latest commitment now; the node's channel monitor sweeps "
                        "our outputs to the wallet after their delays (to_self_delay, HTLC expiries)")
    p = add("exportchannelbackup", "write the node's static channel backup (encrypted) to FILE, or print where the node keeps it")
    p.add_argument("file", nargs="?", type=Path, metavar="FILE", help="write the backup here (it is also kept, always current, as channels.backup in the channel store)")
    p = add("listchannelbackup", "list the channels of a static channel backup without restoring them: each channel, "
            "its peer and the peer's alias, its funding and capacity, and whether this node has it")
    p.add_argument("file", nargs="?", type=Path, metavar="FILE", help="a channels.backup (or an exportchannelbackup FILE) "
                   "made by a node with this node's seed (default: the node's current backup)")  # fmt: skip
    p.epilog = ("The alias is the one the peer's node_announcement carried in the gossip when the backup was made "
                "(none for a peer that announces nothing, or in a backup older than aliases, or one a peer kept for us: "
                "its room is for channels). A channel on this node makes restorechannels refuse the backup.")
    p = add("restorechannels", "recover the channels of a static channel backup on a node with the same seed: each peer is asked to force-close, and our output of its commitment is swept to the wallet")
    p.add_argument("file", type=Path, nargs="?", metavar="FILE", help="a channels.backup (or an exportchannelbackup FILE)")
    p.add_argument("--from-peers", action="store_true",
                   help="instead of a FILE: the backups our peers returned (BOLT 1 peer storage), the channels this node lacks; "
                        "when none returned one yet, the node looks for its public channels' peers in gossip and connects "
                        "to them (private channels' peers cannot be found so: connect to them with 'lnpmsg connect')")
    p.epilog = ("Only for a node that lost its channel store: the restored channels are never used again and "
                "nothing of ours is broadcast; a backup with a channel the node still has is refused.")
    add("listpeerstorage", "BOLT 1 peer storage: the blobs we keep for peers and the backups peers returned to us (sizes and times)")


def _msat(value: int | None) -> str:
    return "-" if value is None else f"{value // 1000} sat" if value % 1000 == 0 else f"{value} msat"


def _print_channel(c: dict[str, Any]) -> None:
    scid = c["short_channel_id"] or "-"
    print(f"{c['channel_id']}  {c['state']:<14} {scid:<14} peer {c['peer_id'][:16]}...{named_alias(c.get('peer_alias'))}  {c['capacity_sat']} sat")
    print(f"    local {_msat(c['to_local_msat'])}, remote {_msat(c['to_remote_msat'])}, opener {c['opener']}, "
          f"{c['channel_type']}, funding {c['funding_outpoint'] or '-'}{'' if c['connected'] else ', peer offline'}")  # fmt: skip
    if c.get("local_alias") or c.get("remote_alias"):
        print(f"    aliases: ours {c.get('local_alias') or '-'}, the peer's {c.get('remote_alias') or '-'}"
              f"{', scid_alias (real id never routed)' if c.get('scid_alias') else ''}{', zero-conf' if c.get('zeroconf') else ''}")  # fmt: skip
    for h in c["htlcs"]:
        print(f"    htlc {h['direction']:<3} #{h['id']} {h['amount_msat']} msat hash {h['payment_hash']} expiry {h['cltv_expiry']}")
    splice = c.get("splice")
    if splice:
        print(f"    splice {splice['stage']}: {splice['funding_txid'] or '-'}, {splice['new_capacity_sat']} sat once locked"
              f" (ours {splice['our_contribution_sat']:+d} sat, theirs {splice['their_contribution_sat']:+d} sat)")  # fmt: skip
        for v in splice.get("previous_versions") or ():
            print(f"      replaces {v['txid']} ({v['feerate_per_kw']} sat/kw): whichever confirms is the one")
    if c.get("restored"):
        print("    restored from a channel backup: never used again; the peer is asked to close, then our output is swept")
    elif c.get("behind"):
        print("    we lost channel state (the peer proved it): not broadcasting ours, waiting for the peer's commitment")
    elif c.get("failure"):
        print(f"    failed: {c['failure']}")
    if c.get("commitment_waits_for_funding"):
        print("    our commitment is kept back until the chain sees the funding (it spends nothing yet)")
    onchain = c.get("onchain")
    if onchain and onchain.get("state") != "open":
        commitment = onchain.get("commitment")
        what = f"{commitment['kind']} commitment {commitment['txid']} at {commitment['height']}" if commitment else (
            f"closing transaction {onchain.get('closing_txid', '-')}")
        print(f"    on chain: {onchain['state']}, {what}, {onchain['locked_sat']} sat still locked")
        for o in onchain["outputs"]:
            if o["state"] == "awaiting_timelock":
                when = f"awaiting {'HTLC timeout' if 'htlc' in o['what'] else 'CSV'} until {o['spendable_at']}"
            elif o["state"] == "swept":
                when = f"swept by {o['by']} at {o['height']} ({o['txid']})"
            elif o["state"] == "in_wallet":
                when = f"to the wallet at {o['height']}"
            else:
                when = "claim broadcast"
            print(f"      {o['what']:<16} {o['amount_sat']} sat {o['outpoint']}: {when}")


def _print_list(r: dict[str, Any]) -> None:
    for c in r["channels"]:
        _print_channel(c)
    if not r["channels"]:
        print("no channels")


def _print_restored(r: dict[str, Any]) -> None:
    for c in r["channels"]:
        print(f"channel {c['channel_id']} with {c['peer_id']}{named_alias(c.get('alias'))} restored: the peer is asked to force-close")


def _print_backup(r: dict[str, Any]) -> None:
    for c in r["channels"]:
        here = ", on this node" if c["on_this_node"] else ""
        print(f"{c['channel_id']}  {c['capacity_sat']} sat with {c['peer_id']}{named_alias(c['alias'])}{here}")
        print(f"    funding {c['funding_outpoint']}, short channel id {c['short_channel_id'] or '-'}, "
              f"addresses {', '.join(c['addresses']) or '-'}")  # fmt: skip
    if not r["channels"]:
        print("no channels in the backup")


def _print_peer_storage(r: dict[str, Any]) -> None:
    print(f"we keep blobs for peers: {'yes' if r['provides'] else 'no (--no-peer-storage)'}")
    for b in r["held_for_peers"]:
        state = "channel open" if b["channel_open"] else f"no channel since height {b['closed_at_height'] or '-'}"
        print(f"  for {b['peer_id']}: {b['size']} bytes, received {b['received']}, {state}"
              + (", an update waiting" if b["update_waiting"] else ""))
    for b in r["held_by_peers"]:
        lacking = b.get("channels_lacking")
        print(f"  by  {b['peer_id']}: {b['size']} bytes, returned {b['received']}, {b.get('channels', '?')} channel(s)"
              + (f", {lacking} this node lacks (lnpmsg restorechannels --from-peers)" if lacking else ""))
    if not r["held_for_peers"] and not r["held_by_peers"]:
        print("  nothing kept either way")


def _channel_and_feerate(args: argparse.Namespace) -> dict[str, Any]:
    """The params of a command on CHANNEL with an optional --feerate."""
    return {"channel": args.channel, **({"feerate": args.feerate} if args.feerate is not None else {})}


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    """The channel app's control call for a command, and how to print its result."""
    if args.command == "fundchannel":
        params: dict[str, Any] = {"node_id": args.node_id, "amount_sat": args.amount_sat, "push_msat": args.push_msat, "announce": args.announce}
        if args.feerate is not None:
            params["feerate"] = args.feerate
        if getattr(args, "channel_type", None):
            params["channel_type"] = args.channel_type
        if getattr(args, "zeroconf", False):
            params["zeroconf"] = True
        if getattr(args, "v2", False):
            params["v2"] = True
        return "channels.fundchannel", params, lambda r: print(
            f"channel {r['channel_id']} funded by {r['funding_txid']}, waiting for confirmations ({r['state']})"
        )
    if args.command == "bumpchannelopen":
        return "channels.bumpchannelopen", _channel_and_feerate(args), lambda r: print(
            f"channel {r['channel_id']}: funding bumped to {r['feerate_per_kw']} sat/kw by {r['funding_txid']} "
            f"(replacing {', '.join(r['previous_funding_txids'])}), waiting for confirmations"
        )
    if args.command == "splice":
        params = {"channel": args.channel, "amount_sat": args.amount_sat}
        if args.feerate is not None:
            params["feerate"] = args.feerate
        if args.address:
            params["address"] = args.address
        return "channels.splice", params, lambda r: print(
            f"channel {r['channel_id']}: splice {r['splice_txid']} broadcast ({'+' if r['contribution_sat'] > 0 else ''}"
            f"{r['contribution_sat']} sat to our balance), {r['new_capacity_sat']} sat once locked at the channel's depth"
        )
    if args.command == "bumpsplice":
        return "channels.bumpsplice", _channel_and_feerate(args), lambda r: print(
            f"channel {r['channel_id']}: splice bumped to {r['feerate_per_kw']} sat/kw by {r['splice_txid']} "
            f"(replacing {', '.join(r['previous_splice_txids'])}), {r['new_capacity_sat']} sat once locked"
        )
    if args.command == "abandonsplice":
        return "channels.abandonsplice", _channel_and_feerate(args), lambda r: print(
            f"channel {r['channel_id']}: our coins in the forgotten splice ({', '.join(r['spent'])}) spent back to the "
            f"wallet by {r['abandon_txid']} (fee {r['fee_sat']} sat); the splice ends once it is {r['ends_at_depth']} blocks deep"
        )
    if args.command == "listchannels":
        return "channels.listchannels", {"peer_id": args.peer} if args.peer else {}, _print_list
    if args.command == "closechannel":
        params = {"channel": args.channel}
        if args.feerate is not None:
            params["feerate"] = args.feerate
        if args.destination:
            params["destination"] = args.destination
        if args.force:
            params["force"] = True
        return "channels.closechannel", params, lambda r: print(
            f"channel {r['channel_id']} {r['state']}" + (f": closing transaction {r['closing_txid']}" if r.get("closing_txid") else "")
            + (f": commitment {r['commitment_txid']} " + ("kept back until the chain sees the funding" if r.get("commitment_waits_for_funding")
                                                           else "broadcast") if r.get("commitment_txid") else "")  # fmt: skip
        )
    if args.command == "exportchannelbackup":
        params = {"file": str(args.file.resolve())} if args.file else {}
        return "channels.exportchannelbackup", params, lambda r: print(
            f"{r['channels']} channel(s) written to {r['file']}" if r.get("file")
            else f"{r['channels']} channel(s); the node keeps the backup current in {r['path']}"
        )
    if args.command == "listchannelbackup":
        return "channels.listchannelbackup", {"file": str(args.file.resolve())} if args.file else {}, _print_backup
    if args.command == "restorechannels":
        if args.from_peers:
            return "peer_storage.restorechannels", {}, _print_restored
        return "channels.restorechannels", {"file": str(args.file.resolve())}, _print_restored
    if args.command == "listpeerstorage":
        return "peer_storage.listpeerstorage", {}, _print_peer_storage
    raise ValueError(f"not a channel command: {args.command}")


def run_command(args: argparse.Namespace) -> int:
    """Call the channel app of the running node; returns the exit status."""
    if args.command == "restorechannels" and args.from_peers == (args.file is not None):
        print("lnpmsg restorechannels: give a FILE or --from-peers (one of the two)", file=sys.stderr)
        return 2
    return control_commands.run_command(
        args,
        _request,
        missing_method_hint=f"the node at {args.data_dir} runs without channels: start it with a chain ('lnpmsg node --chain regtest')",
    )
