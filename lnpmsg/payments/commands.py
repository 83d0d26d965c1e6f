"""The ``lnpmsg`` subcommands of the payments app (:mod:`lnpmsg.payments.app`).

``invoice``, ``pay``, ``keysend``, ``getroute``, ``listinvoices``, ``delinvoice``, ``settleinvoice``, ``cancelinvoice``,
``listpayments``, ``listforwards``, ``blindedpath`` and ``payblinded``
call the ``payments.*`` methods of a node started with a chain, like every
control command (human output or ``--json``; exit 0, 1 on an error, 3 when no
node runs). ``decodepay`` reads an invoice offline (no node needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.rpc import commands as control_commands

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = frozenset({"invoice", "pay", "keysend", "getroute", "decodepay", "listinvoices", "delinvoice", "settleinvoice", "cancelinvoice",
                      "listpayments", "listforwards", "blindedpath", "payblinded"})  # fmt: skip


def _msat(text: str) -> int | None:
    if text == "any":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of millisatoshis (or 'any'), got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _amount(text: str) -> int:
    value = _msat(text)
    if value is None:
        raise argparse.ArgumentTypeError("a keysend needs an amount: a whole number of millisatoshis")
    return value


def _route_hint(text: str) -> list[dict[str, Any]]:
    # here, not at the top: every 'lnpmsg node' builds the parser that imports this module
    from lnpmsg.payments.hint_params import hint_from_text

    try:
        return hint_from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _to_a_node(p: argparse.ArgumentParser) -> None:
    """The arguments of a payment to a node without an invoice (keysend, getroute): who, how much, the fee limit."""
    p.add_argument("node_id", metavar="NODEID", help="the payee's node id (hex)")
    p.add_argument("amount_msat", type=_amount, metavar="AMOUNT_MSAT", help="millisatoshis the payee gets")
    p.add_argument("--max-fee-msat", type=int, metavar="N", help="refuse routes whose fees are higher (default: no limit)")


def subcommand_adder(commands: argparse._SubParsersAction, default_data_dir: Path, *, needs: str,  # type: ignore[type-arg]
                     timeout: float) -> Callable[..., argparse.ArgumentParser]:  # fmt: skip
    """``add(name, help_text, *, node=True)``: a subcommand with ``--json`` and, when it calls a running node,
    ``--data-dir``, ``--timeout`` (TIMEOUT seconds by default) and the wait option; its description says
    the node needs NEEDS."""

    def add(name: str, help_text: str, *, node: bool = True) -> argparse.ArgumentParser:
        needed = f" Needs a node started with {needs}." if node else ""
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.{needed}")
        parser.add_argument("--json", action="store_true", help='print the JSON result (errors as {"error": ...})')
        if node:
            parser.add_argument("--data-dir", type=Path, default=default_data_dir, help="the running node's data dir (default: %(default)s)")
            parser.add_argument("--timeout", type=float, default=timeout, help="seconds to wait for the node (default: %(default)s)")
            control_commands.add_wait_option(parser)
        return parser

    return add


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the payments subcommands to the ``lnpmsg`` parser."""

    add = subcommand_adder(commands, default_data_dir, needs="a chain ('lnpmsg node --chain regtest')", timeout=180.0)

    p = add("invoice", "make a BOLT-11 invoice to get paid (lnbcrt... on regtest), with route hints for channels payers cannot find in the gossip (private, or not announced yet)")
    p.add_argument("amount_msat", type=_msat, metavar="AMOUNT_MSAT", help="millisatoshis, or 'any' to let the payer choose")
    p.add_argument("label", metavar="LABEL", help="a unique name for the invoice (listinvoices shows it)")
    p.add_argument("description", metavar="DESCRIPTION", help="what the payment is for (in the invoice)")
    p.add_argument("--expiry", type=int, default=3600, metavar="S", help="seconds the invoice stays payable (default: %(default)s)")
    p.add_argument("--hold", action="store_true", help="a hold invoice for --payment-hash: its payment is held until settleinvoice or "
                   "cancelinvoice (or failed back near its expiry)")  # fmt: skip
    p.add_argument("--payment-hash", metavar="HEX", help="the hold invoice's payment hash (the preimage stays with you)")
    p.add_argument("--min-final-cltv", type=int, metavar="BLOCKS", help="the final HTLC's expiry we ask for, in blocks from the "
                   "payment (default 24, a hold invoice's 80: held until 20 blocks before it)")  # fmt: skip
    p = add("pay", "pay a BOLT-11 invoice over our channels (multi-part when one path cannot carry it), or a BOLT 12 offer (lno1...: "
            "its invoice fetched over onion messages, paid into its blinded paths); waits for the result")
    p.add_argument("bolt11", metavar="BOLT11|OFFER", help="the invoice, or the offer")
    p.add_argument("--amount-msat", type=_msat, metavar="N", help="the amount, for an invoice or offer without one (or to pay up to twice its amount)")
    p.add_argument("--quantity", type=int, metavar="N", help="for an offer that sells several items (offer_quantity_max): how many")
    p.epilog = ("On failure the error names the hop that failed, its node and channel, and the BOLT-4 failure. "
                "New parts leave for 40 s; a payment still in flight after 55 s goes on in the node "
                "('lnpmsg listpayments' shows how it ends).")
    p = add("keysend", "pay a node without an invoice (keysend, bLIP 3: our random preimage rides in the onion); waits for the result")
    _to_a_node(p)
    p.add_argument("--force", action="store_true", help="send even when the payee's node_announcement lacks keysend's feature bit 55")
    p.epilog = ("The payee must accept keysends (lnpmsg: --accept-keysend; Core Lightning does by default, lnd with "
                "--accept-keysend), else the payment fails with incorrect_or_unknown_payment_details. When the gossip "
                "graph holds the payee's node_announcement and it sets neither bit 54 nor 55, nothing is sent: the error "
                "is KeysendNotSupported (--force sends anyway). A payee with no announcement known (a private peer) is "
                "tried. No invoice: no proof of payment beyond the preimage we chose. Single part, final expiry 40 blocks.")
    p = add("getroute", "show the route a payment to a node, or of an invoice, would take now, without paying: hops, amounts, "
            "expiries, fee")
    p.add_argument("node_id", nargs="?", metavar="NODEID", help="the payee's node id (hex); not with --invoice")
    p.add_argument("amount_msat", nargs="?", type=_amount, metavar="AMOUNT_MSAT", help="millisatoshis the payee gets; not with --invoice")
    p.add_argument("--invoice", metavar="BOLT11", help="route as pay would pay this invoice: its payee, amount, final expiry "
                   "and route hints (a payee behind private channels), in parts if it allows them and no one route carries it")  # fmt: skip
    p.add_argument("--amount-msat", dest="invoice_amount_msat", type=_amount, metavar="N", help="with --invoice: the amount, "
                   "as pay's (for an invoice without one)")  # fmt: skip
    p.add_argument("--max-fee-msat", type=int, metavar="N", help="refuse routes whose fees are higher (default: no limit; not with --invoice)")
    p.add_argument("--final-cltv", type=int, metavar="BLOCKS", help="the payee's final expiry delta (an invoice's "
                   "min_final_cltv_expiry_delta; default 24, what lnpmsg invoices ask; not with --invoice)")  # fmt: skip
    p.add_argument("--routehint", dest="route_hints", action="append", type=_route_hint, metavar="HOP[,HOP...]",
                   help="a route hint to a payee behind private channels, as an invoice's: its hops in order, each "
                   "NODEID:BLOCKxTXxOUT:FEE_BASE_MSAT:FEE_PPM:CLTV_DELTA (the node at the channel's start, the channel, "
                   "what that node asks to forward over it), the last channel ending at the payee; repeat for "
                   "several hints (not with --invoice)")  # fmt: skip
    p.epilog = ("The route pay or keysend would try first for this amount: over our channels (what each can send now) "
                "and the gossip graph, avoiding what recent failures taught. Nothing is sent. "
                "Each hop: the channel into its node, the HTLC's amount and expiry (delay: blocks from now). "
                "A node reached only over private channels has no route unless hinted: give its invoice "
                "(lnpmsg getroute --invoice lnbcrt...), or the private channels by hand, e.g. for a payee whose "
                "private channel 103x1x0 from node 02ab.. asks 1000 msat + 100 ppm and 40 blocks: "
                "--routehint 02ab..:103x1x0:1000:100:40 (decodepay shows an invoice's hints in this order).")
    p = add("blindedpath", "make a blinded path to us for our invoice LABEL (BOLT 4 route blinding), introduced by a peer")
    p.add_argument("label", metavar="LABEL", help="the invoice's label")
    p.add_argument("--introduction", metavar="NODEID", help="the peer that introduces the path (default: the one that can bring us the most)")
    p.add_argument("--expiry-blocks", type=int, metavar="N", help="blocks the path stays usable (default 1008)")
    p.epilog = "Prints the path (hex, BOLT 12's blinded_path encoding) and its payinfo, for a payer's payblinded."
    p = add("payblinded", "pay into a blinded path (as a BOLT 12 payer would with an invoice's path and payinfo); waits for the result")
    p.add_argument("blinded_path", metavar="BLINDED_PATH", help="the path (hex, BOLT 12's blinded_path encoding)")
    p.add_argument("amount_msat", type=_amount, metavar="AMOUNT_MSAT", help="millisatoshis the payee gets")
    p.add_argument("payment_hash", metavar="HASH", help="the payment hash (hex)")
    p.add_argument("--fee-base-msat", type=int, required=True, metavar="N", help="the path's payinfo: base fee")
    p.add_argument("--fee-proportional-millionths", type=int, required=True, metavar="N", help="the path's payinfo: proportional fee")
    p.add_argument("--cltv-expiry-delta", type=int, required=True, metavar="N", help="the path's payinfo: total CLTV delta")
    p.add_argument("--htlc-minimum-msat", type=int, default=0, metavar="N", help="the path's payinfo: smallest amount")
    p.add_argument("--max-fee-msat", type=int, metavar="N", help="refuse payments whose fees (the path's included) are higher")
    p = add("decodepay", "decode and verify a BOLT-11 invoice (offline)", node=False)
    p.add_argument("bolt11", metavar="BOLT11", help="the invoice")
    p = add("listinvoices", "list our invoices: status (unpaid, paid, expired; accepted, cancelled), amount, preimage when paid; "
            "keysends received (labelled keysend-...)")
    p.add_argument("--label", metavar="LABEL", help="only this invoice")
    p = add("delinvoice", "delete an unpaid or expired invoice: paying it fails from then on (unknown payment hash)")
    p.add_argument("label", metavar="LABEL", help="the invoice's label")
    p.epilog = "A paid invoice is kept: it is the record of the payment."
    p = add("settleinvoice", "settle our accepted hold invoice with its preimage: the held HTLCs are fulfilled")
    p.add_argument("preimage", metavar="PREIMAGE", help="the preimage (hex) of the hold invoice's payment hash")
    p.add_argument("--payment-hash", metavar="HEX", help="the invoice's payment hash: refused unless the preimage is its own")
    p = add("cancelinvoice", "cancel our hold invoice: its held HTLCs fail back, and so does any later payment of it")
    p.add_argument("payment_hash", metavar="HASH", help="the hold invoice's payment hash (hex)")
    p = add("listpayments", "list our payments: status, amount, fee, routes, preimage")
    p.add_argument("--payment-hash", metavar="HEX", help="only payments of this hash")
    add("listforwards", "list the HTLCs we forwarded: channels in and out, amounts, status")


def _print_invoice(r: dict[str, Any]) -> None:
    print(r["bolt11"])


def _print_pay(r: dict[str, Any]) -> None:
    print(f"paid {r['amount_msat']} msat (fee {r['fee_msat']} msat) in {r['parts']} part(s), preimage {r['preimage']}")
    for route in r["routes"]:
        print("    via " + " -> ".join(f"{h['node_id'][:16]}... ({h['short_channel_id']})" for h in route))


def _print_blinded_path(r: dict[str, Any]) -> None:
    info = r["payinfo"]
    print(r["blinded_path"])
    print(f"introduced by {r['introduction_node_id']}; payinfo: fee {info['fee_base_msat']} msat + {info['fee_proportional_millionths']} ppm, "
          f"cltv_expiry_delta {info['cltv_expiry_delta']}, htlc_minimum_msat {info['htlc_minimum_msat']}")  # fmt: skip


def _print_route(r: dict[str, Any]) -> None:
    routes = r.get("routes", [r["route"]])
    if len(routes) == 1:
        hinted = f" (with {r['route_hints']} route hint(s))" if r.get("route_hints") else ""
        print(f"{r['amount_msat']} msat to send, fee {r['fee_msat']} msat, {len(r['route'])} hop(s){hinted}:")
    else:
        print(f"{r['amount_msat']} msat to send, fee {r['fee_msat']} msat, in {len(routes)} parts:")
    for i, route in enumerate(routes):
        if len(routes) > 1:
            print(f"  part {i + 1}, {len(route)} hop(s):")
        for h in route:
            print(f"    {h['short_channel_id']} -> {h['node_id']}: {h['amount_msat']} msat, expiry {h['cltv_expiry']} (in {h['delay']} blocks)")


def _print_invoices(r: dict[str, Any]) -> None:
    for i in r["invoices"]:
        amount = "any amount" if i["amount_msat"] is None else f"{i['amount_msat']} msat"
        held = f", {i['held_msat']} msat held in {i['held_htlcs']} HTLC(s), the first expiring at {i['held_cltv_expiry']}" if "held_msat" in i else ""
        kind = " (hold)" if i.get("hold") else " (keysend)" if i.get("keysend") else ""
        print(f"{i['label']}: {i['status']}{kind}, {amount}, hash {i['payment_hash']}{held}"
              + (f", preimage {i['preimage']}" if i.get("preimage") else ""))  # fmt: skip
    if not r["invoices"]:
        print("no invoices")


def _print_deleted(r: dict[str, Any]) -> None:
    print(f"deleted invoice {r['deleted']['label']} ({r['deleted']['status']}, hash {r['deleted']['payment_hash']})")


def _print_resolved(r: dict[str, Any]) -> None:
    print(f"invoice {r['label']} {r['status']}: {r['htlcs']} HTLC(s), hash {r['payment_hash']}")


def _print_payments(r: dict[str, Any]) -> None:
    for p in r["payments"]:
        extra = f"preimage {p['preimage']}" if p["preimage"] else (p["error"] or "")
        print(f"#{p['id']} {p['status']}{' (keysend)' if p.get('keysend') else ''}: {p['amount_msat']} msat to {p['destination'][:16]}..., fee {p['fee_msat']} msat, "
              f"{len(p['routes'])} route(s); {extra}")  # fmt: skip
    if not r["payments"]:
        print("no payments")


def _print_forwards(r: dict[str, Any]) -> None:
    for f in r["forwards"]:
        print(f"{f['in_channel'][:24]}.../{f['in_htlc']} -> {(f['out_channel'] or '-')[:24]}/{f['out_htlc']}: "
              f"{f['in_msat']} -> {f['out_msat']} msat, {f['status']}")  # fmt: skip
    if not r["forwards"]:
        print("no forwards")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    if args.command == "invoice":
        params: dict[str, Any] = {"amount_msat": args.amount_msat, "label": args.label, "description": args.description, "expiry": args.expiry}
        if args.hold or args.payment_hash:
            params.update(hold=args.hold, payment_hash=args.payment_hash)
        if args.min_final_cltv is not None:
            params["min_final_cltv"] = args.min_final_cltv
        return "payments.invoice", params, _print_invoice
    if args.command == "settleinvoice":
        return "payments.settleinvoice", {"preimage": args.preimage, **({"payment_hash": args.payment_hash} if args.payment_hash else {})}, _print_resolved
    if args.command == "cancelinvoice":
        return "payments.cancelinvoice", {"payment_hash": args.payment_hash}, _print_resolved
    if args.command == "pay" and args.bolt11.strip().lower().startswith("lno"):
        params = {"offer": args.bolt11}
        for name in ("amount_msat", "quantity"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
        return "offers.pay", params, _print_pay
    if args.command == "pay":
        params = {"bolt11": args.bolt11}
        if args.amount_msat is not None:
            params["amount_msat"] = args.amount_msat
        return "payments.pay", params, _print_pay
    if args.command == "keysend":
        params = {"node_id": args.node_id, "amount_msat": args.amount_msat}
        if args.max_fee_msat is not None:
            params["max_fee_msat"] = args.max_fee_msat
        if args.force:
            params["force"] = True
        return "payments.keysend", params, _print_pay
    if args.command == "getroute" and args.invoice is not None:
        params = {"bolt11": args.invoice}
        if args.invoice_amount_msat is not None:
            params["amount_msat"] = args.invoice_amount_msat
        return "payments.getroute", params, _print_route
    if args.command == "getroute":
        params = {"node_id": args.node_id, "amount_msat": args.amount_msat}
        if args.max_fee_msat is not None:
            params["max_fee_msat"] = args.max_fee_msat
        if args.final_cltv is not None:
            params["final_cltv"] = args.final_cltv
        if args.route_hints:
            params["route_hints"] = args.route_hints
        return "payments.getroute", params, _print_route
    if args.command == "blindedpath":
        params = {"label": args.label}
        if args.introduction is not None:
            params["introduction"] = args.introduction
        if args.expiry_blocks is not None:
            params["expiry_blocks"] = args.expiry_blocks
        return "payments.blindedpath", params, _print_blinded_path
    if args.command == "payblinded":
        params = {"blinded_path": args.blinded_path, "amount_msat": args.amount_msat, "payment_hash": args.payment_hash,
                  "fee_base_msat": args.fee_base_msat, "fee_proportional_millionths": args.fee_proportional_millionths,
                  "cltv_expiry_delta": args.cltv_expiry_delta, "htlc_minimum_msat": args.htlc_minimum_msat}  # fmt: skip
        if args.max_fee_msat is not None:
            params["max_fee_msat"] = args.max_fee_msat
        return "payments.payblinded", params, _print_pay
    if args.command == "listinvoices":
        return "payments.listinvoices", {"label": args.label} if args.label else {}, _print_invoices
    if args.command == "delinvoice":
        return "payments.delinvoice", {"label": args.label}, _print_deleted
    if args.command == "listpayments":
        return "payments.listpayments", {"payment_hash": args.payment_hash} if args.payment_hash else {}, _print_payments
    if args.command == "listforwards":
        return "payments.listforwards", {}, _print_forwards
    raise ValueError(f"not a payments command: {args.command}")


def _decodepay(args: argparse.Namespace) -> int:
    # here, not at the top: every 'lnpmsg node' builds the parser that imports this module
    from lnpmsg.payments import bolt11

    try:
        decoded = bolt11.decode(args.bolt11.strip()).to_dict()
    except ValueError as exc:
        if args.json:
            print(json.dumps({"error": f"not a valid BOLT-11 invoice: {exc}"}))
        else:
            print(f"error: not a valid BOLT-11 invoice: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(decoded, indent=2))
    else:
        for key, value in decoded.items():
            print(f"{key}: {value}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run a payments subcommand; returns the exit status."""
    if args.command == "decodepay":
        return _decodepay(args)
    positional = (args.node_id, args.amount_msat) if args.command == "getroute" else ()
    if args.command == "getroute" and (None in positional if args.invoice is None else positional != (None, None)):
        print("lnpmsg getroute: give NODEID AMOUNT_MSAT, or --invoice BOLT11 [--amount-msat N] (one of the two)", file=sys.stderr)
        return 2
    if args.command == "getroute" and args.invoice is None and args.invoice_amount_msat is not None:
        print("lnpmsg getroute: --amount-msat goes with --invoice (give NODEID AMOUNT_MSAT otherwise)", file=sys.stderr)
        return 2
    if args.command == "getroute" and args.invoice is not None and args.route_hints:
        print("lnpmsg getroute: --routehint goes with NODEID AMOUNT_MSAT (an invoice carries its own hints)", file=sys.stderr)
        return 2
    return control_commands.run_command(
        args,
        _request,
        missing_method_hint=f"the node at {args.data_dir} runs without payments: start it with a chain ('lnpmsg node --chain regtest')",
    )
