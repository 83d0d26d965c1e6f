"""The ``lnpmsg`` subcommands of the chain and wallet app (:mod:`lnpmsg.wallet.app`).

``getchaininfo``, ``mine``, ``faucet``, ``newaddr``, ``listfunds``,
``getbalance``, ``withdraw``, ``releasecoins`` and ``bumpfee`` call the ``chain.*`` methods of a node started with ``--chain``;
they run like every other control command (:mod:`lnpmsg.rpc.commands`):
human output or ``--json``, exit 0, 1 on an error, 3 when no node runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.rpc import commands as control_commands

__all__ = ["COMMANDS", "add_commands", "run_command"]

#: control subcommands of the chain app (``lnpmsg.wallet.app``): they need a node started with ``--chain``
COMMANDS = frozenset({"getchaininfo", "mine", "faucet", "newaddr", "listfunds", "getbalance", "withdraw", "releasecoins", "bumpfee"})


def _amount(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an amount is whole satoshis or 'all', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"an amount must be positive, got {value}")
    return value


def _sat_per_vb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fee rate is sat/vB (e.g. 12 or 2.5), got {text!r}") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a fee rate must be at least 1 sat/vB (the relay floor), got {text}")
    return value


_BUMPFEE_EPILOG = """\
Two ways to raise the fee of a transaction stuck under a fee spike:

  cpfp (default)  Child Pays For Parent: a new transaction (the child) spends an
                  output of the stuck one that pays this wallet (its change, or a
                  payment to our address), adding confirmed coins if that output is
                  too small, back to a new address of ours, with a fee that brings
                  parent and child together to SAT_PER_VB. The stuck transaction
                  stays as it is: the method for a channel's funding transaction
                  (the channel is built on its txid), and for a payment to us
                  that the chain's mempool shows (the embedded chain).
  rbf             Replace-By-Fee (BIP 125): a new version of one of the wallet's own
                  spends ('withdraw') with the same inputs, the same amounts to the
                  recipients and a smaller change (confirmed coins added if needed),
                  replacing it in the mempool. Cheaper than CPFP (one transaction,
                  not two) but the txid changes, so never for a channel's funding,
                  which is refused. Refused too when another unconfirmed wallet
                  transaction spends its change: bump that one.

Either is refused when the transaction is confirmed already or SAT_PER_VB is not
above its own rate. The coins the bump spends are reserved like any spend's and
freed if the chain refuses it; the wallet stores the new transaction before
broadcasting it. After an RBF the wallet counts the replacement's change, not the
replaced one's. Mine a block (regtest) to confirm."""


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the chain and wallet subcommands to the ``lnpmsg`` parser."""
    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}. Needs a node started with 'lnpmsg node --chain regtest'."
        )
        parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
        parser.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        parser.add_argument("--timeout", type=float, default=65.0, help="seconds to wait for the node (default: %(default)s)")
        control_commands.add_wait_option(parser)
        return parser

    add("getchaininfo", "show the chain's tip and the wallet's balance")
    p = add("mine", "mine blocks on the embedded regtest chain")
    p.add_argument("blocks", type=int, nargs="?", default=1, metavar="N", help="how many blocks (default: 1; at most 1000 per call)")
    p.add_argument("--address", help="pay the block rewards to this address (default: the chain's faucet)")
    p = add("faucet", "pay regtest coins from the embedded chain's faucet and mine a block to confirm them")
    p.add_argument("amount_sat", type=int, metavar="AMOUNT", help="satoshis")
    p.add_argument("--address", help="pay this address (default: a new address of the node's wallet)")
    p.add_argument("--no-confirm", action="store_true", help="do not mine: leave the payment waiting for the next block")
    add("newaddr", "print a new receive address of the node's wallet")
    add("listfunds", "list the coins of the node's wallet (confirmed, and its own unconfirmed change)")
    add("getbalance", "show the wallet's satoshis: confirmed, unconfirmed change, immature, reserved")
    p = add("withdraw", "send coins from the node's wallet to an address (mine a block to confirm; the change can be spent at once)")
    p.add_argument("address", help="the address to pay (the node's network: bcrt1... on regtest)")
    p.add_argument("amount", type=_amount, metavar="AMOUNT|all", help="satoshis, or 'all' (everything, less the fee)")
    p.add_argument("--feerate", type=int, metavar="PER_KW", help="fee rate in sat per 1000 weight units, 253 or more (250 = 1 sat/vB; default: the chain's estimate)")
    p = add(
        "releasecoins",
        "free wallet coins reserved for a transaction that will never confirm (like lnd's releaseoutput)",
    )
    p.epilog = (
        "A coin is reserved while a transaction spending it waits to confirm; 'listfunds' shows "
        "'reserved by TXID'. At start the node broadcasts its unconfirmed withdrawals again and "
        "releases those the chain rejects for good, so this is for the rest, e.g. an abandoned "
        "channel funding. Releasing a coin whose spend still waits in the mempool does no harm: "
        "spending it again is refused by the chain."
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("target", nargs="?", metavar="TXID|OUTPOINT", help="the transaction whose coins to free, or one coin as TXID:VOUT")
    what.add_argument("--all", action="store_true", help="free every reserved coin")
    p = add("bumpfee", "raise the fee of an unconfirmed transaction of the node's wallet (CPFP, or RBF with --method rbf)")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _BUMPFEE_EPILOG
    p.add_argument("txid", metavar="TXID", help="the unconfirmed transaction (a withdrawal, a channel's funding...)")
    p.add_argument("--feerate", type=_sat_per_vb, required=True, metavar="SAT_PER_VB",
                   help="the fee rate to reach, in sat/vB (CPFP: parent and child together)")  # fmt: skip
    p.add_argument("--method", choices=("cpfp", "rbf"), default="cpfp", help="how (default: %(default)s; see below)")


def _print_chaininfo(r: dict[str, Any]) -> None:
    mempool = f", {r['mempool']} transaction(s) waiting" if "mempool" in r else ""
    print(f"network:  {r['network']} ({r['backend']}){mempool}")
    print(f"height:   {r['height']}")
    print(f"tip:      {r['tip']}")
    pending = f", {r['pending_sat']} sat unconfirmed change" if r.get("pending_sat") else ""
    print(f"wallet:   {r['balance_sat']} sat spendable{pending}")


def _print_balance(r: dict[str, Any]) -> None:
    print(f"confirmed:   {r['confirmed_sat']} sat")
    print(f"unconfirmed: {r['unconfirmed_sat']} sat (own change, spendable)")
    print(f"immature:    {r['immature_sat']} sat (coinbase, under 100 blocks)")
    print(f"reserved:    {r['reserved_sat']} sat (held for unconfirmed transactions)")
    print(f"spendable:   {r['spendable_sat']} sat of {r['total_sat']} sat")


def _print_released(r: dict[str, Any]) -> None:
    for coin in r["released"]:
        print(f"released {coin['outpoint']} (was reserved by {coin['reserved_by']})")
    if not r["released"]:
        print("no coins were reserved")


def _print_bump(r: dict[str, Any]) -> None:
    if r["method"] == "cpfp":
        print(f"sent child {r['txid']} (fee {r['fee_sat']} sat) spending {r['parent_txid']}: together "
              f"{r['package_feerate_sat_per_vb']} sat/vB (the parent alone {r['parent_feerate_sat_per_vb']})")  # fmt: skip
    else:
        print(f"sent {r['txid']} (fee {r['fee_sat']} sat, {r['feerate_sat_per_vb']} sat/vB) replacing {r['replaced_txid']} "
              f"(fee {r['replaced_fee_sat']} sat)")  # fmt: skip


def _print_listfunds(r: dict[str, Any]) -> None:
    for o in r["outputs"]:
        notes = [f"{o['confirmations']} conf" if o.get("status", "confirmed") == "confirmed" else "unconfirmed change"]
        if o["coinbase"]:
            notes.append("coinbase")
        if o["reserved_by"]:
            notes.append(f"reserved by {o['reserved_by']}")
        elif not o["spendable"]:
            notes.append("not yet spendable")
        print(f"{o['outpoint']}  {o['amount_sat']:>12} sat  {o['address']}  {', '.join(notes)}")
    if not r["outputs"]:
        print("no funds")
    print(f"total: {r['total_sat']} sat, spendable: {r['spendable_sat']} sat")
    for c in r.get("channels", []):
        if c["state"] == "open":
            print(f"channel {c['channel_id']}: {c['our_amount_sat']} sat ours in the open channel")
            continue
        print(f"channel {c['channel_id']} ({c['state']} on chain): {c['locked_sat']} sat still locked")
        for o in c["outputs"]:
            when = f"spendable at {o['spendable_at']}" if o.get("spendable_at") else "claim broadcast"
            print(f"    {o['outpoint']}  {o['amount_sat']:>12} sat  {o['what']}, {when}")


def _chain_request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    """The chain app's control call for a command, and how to print its result."""
    command = args.command
    if command == "getchaininfo":
        return "chain.getchaininfo", {}, _print_chaininfo
    if command == "mine":
        params: dict[str, Any] = {"blocks": args.blocks}
        if args.address:
            params["address"] = args.address
        return "chain.mine", params, lambda r: print(f"mined {len(r['blocks'])} block(s): height {r['height']}, tip {r['tip']}")
    if command == "faucet":
        params = {"amount_sat": args.amount_sat, "confirm": not args.no_confirm}
        if args.address:
            params["address"] = args.address
        return "chain.faucet", params, lambda r: print(
            f"faucet paid {r['amount_sat']} sat to {r['address']} in {r['txid']}:{r['vout']}"
            + (f", confirmed at height {r['height']}" if r["confirmed"] else ", waiting for a block")
        )
    if command == "newaddr":
        return "chain.newaddr", {}, lambda r: print(r["address"])
    if command == "listfunds":
        return "chain.listfunds", {}, _print_listfunds
    if command == "getbalance":
        return "chain.getbalance", {}, _print_balance
    if command == "releasecoins":
        if args.all:
            params = {"all": True}
        elif ":" in args.target:
            params = {"outpoint": args.target}
        else:
            params = {"txid": args.target}
        return "chain.releasecoins", params, _print_released
    if command == "withdraw":
        params = {"address": args.address, "amount_sat": args.amount}
        if args.feerate is not None:
            params["feerate_per_kw"] = args.feerate
        return "chain.withdraw", params, lambda r: print(
            f"sent {r['amount_sat']} sat to {r['address']} (fee {r['fee_sat']} sat) in {r['txid']}; it confirms in the next block"
        )
    if command == "bumpfee":
        params = {"txid": args.txid, "feerate_sat_per_vb": args.feerate, "method": args.method}
        return "chain.bumpfee", params, _print_bump
    raise ValueError(f"not a chain command: {command}")


def run_command(args: argparse.Namespace) -> int:
    """Call the chain app of the running node; returns the exit status."""
    return control_commands.run_command(
        args,
        _chain_request,
        missing_method_hint=f"the node at {args.data_dir} runs without a chain: start it with 'lnpmsg node --chain regtest'",
    )
