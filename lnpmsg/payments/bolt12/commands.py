"""The ``lnpmsg`` subcommands of the offers app (:mod:`lnpmsg.payments.bolt12.app`).

``offer AMOUNT_MSAT|any --description TEXT``, ``listoffers``, ``disableoffer OFFER_ID`` and
``fetchinvoice OFFER`` call the ``offers.*`` methods of the running node (``pay lno1...`` is
the payments command's); ``decodeoffer`` reads an offer, invoice request or invoice offline.
Human output or ``--json``; exit 0, 1 on an error, 3 when no node runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnpmsg.payments.commands import _msat, subcommand_adder
from lnpmsg.rpc import commands as control_commands

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = frozenset({"offer", "listoffers", "disableoffer", "fetchinvoice", "decodeoffer", "invoicerequest", "listinvoicerequests", "sendinvoice"})


def _positive(text: str) -> int:
    value = _msat(text)
    if value is None:
        raise argparse.ArgumentTypeError("an invoice request names its amount: a whole number of millisatoshis")
    return value


def add_commands(commands: argparse._SubParsersAction, default_data_dir: Path) -> None:  # type: ignore[type-arg]
    """Add the offers subcommands to the ``lnpmsg`` parser."""

    add = subcommand_adder(commands, default_data_dir, needs="a chain and onion messages ('lnpmsg node --chain regtest')", timeout=120.0)

    p = add("offer", "make a BOLT 12 offer (lno1...): a reusable payment code; each payer fetches its own invoice over onion messages")
    p.add_argument("amount_msat", nargs="?", type=_msat, default=..., metavar="AMOUNT_MSAT",
                   help="millisatoshis (per item), or 'any' to let the payer choose (or give --amount-msat)")  # fmt: skip
    p.add_argument("--amount-msat", dest="amount_option", type=_msat, default=..., metavar="N|any", help="the same as AMOUNT_MSAT")
    p.add_argument("--description", metavar="TEXT", help="what it is for (required with an amount)")
    p.add_argument("--label", metavar="LABEL", help="a unique name for it (listoffers shows it)")
    p.add_argument("--issuer", metavar="TEXT", help="who issues it (e.g. a domain)")
    p.add_argument("--quantity-max", type=int, metavar="N", help="sell up to N items in one invoice (0: any number)")
    p.add_argument("--expiry", type=int, metavar="S", help="answer invoice requests for S seconds from now (default: until disableoffer)")
    p.add_argument("--blinded-path", action="store_true", help="also reachable along blinded paths through peers that read onion "
                   "messages (payers that cannot reach this node directly use them)")  # fmt: skip
    p.add_argument("--introduction", action="append", metavar="NODEID", help="a peer to introduce a blinded path (repeatable, up to 3; "
                   "implies --blinded-path; default: the first 3 peers reading onion messages)")  # fmt: skip
    p.add_argument("--hide-node-id", action="store_true", help="reachable only along the blinded path: neither the offer nor its "
                   "invoices name this node (implies --blinded-path)")  # fmt: skip
    add("listoffers", "list our offers: text, amount, whether still answered, invoices given")
    p = add("disableoffer", "stop answering an offer's invoice requests (invoices already given stay payable)")
    p.add_argument("offer_id", metavar="OFFER_ID", help="the offer's id (listoffers)")
    p = add("fetchinvoice", "request an invoice for a BOLT 12 offer over onion messages, and check it (without paying)")
    p.add_argument("offer", metavar="OFFER", help="the offer (lno1...)")
    p.add_argument("--amount-msat", type=_msat, metavar="N", help="the amount, for an offer without one (or to pay more)")
    p.add_argument("--quantity", type=int, metavar="N", help="how many items, for an offer that sells several")
    p.add_argument("--payer-note", metavar="TEXT", help="a note for the issuer, carried in the invoice")
    p = add("invoicerequest", "offer to pay an amount (a refund, a withdrawal): a BOLT 12 invoice request (lnr1...) not for an offer; "
            "whoever it is for answers with sendinvoice, and its invoice is paid at once (once)")
    p.add_argument("amount_msat", type=_positive, metavar="AMOUNT_MSAT", help="millisatoshis to pay")
    p.add_argument("--description", required=True, metavar="TEXT", help="what it is for")
    p.add_argument("--label", metavar="LABEL", help="a unique name for it (listinvoicerequests shows it)")
    p.add_argument("--expiry", type=int, metavar="S", help="pay an invoice for it only within S seconds from now (default: no limit)")
    p.add_argument("--blinded-path", action="store_true", help="also name blinded paths to this node through peers that read onion "
                   "messages (invreq_paths): the invoice comes along one, so one who cannot reach this node directly can answer, and the request "
                   "names a transient payer id, not this node's id (without paths it must name the node: the invoice is sent to it)")  # fmt: skip
    p.add_argument("--introduction", action="append", metavar="NODEID", help="a peer to introduce a blinded path (repeatable, up to 3; "
                   "implies --blinded-path; default: the first 3 peers reading onion messages)")  # fmt: skip
    add("listinvoicerequests", "list our invoice requests not for an offer: unpaid, paying or paid")
    p = add("sendinvoice", "answer an invoice request not for an offer (lnr1...) with an invoice for its amount, sent to its payer "
            "over onion messages; listinvoices shows when it is paid")
    p.add_argument("invreq", metavar="INVREQ", help="the invoice request (lnr1...)")
    p.add_argument("--label", metavar="LABEL", help="the label of our invoice (default: invreq ID NONCE)")
    p = add("decodeoffer", "decode a BOLT 12 offer (lno1), invoice request (lnr1) or invoice (lni1), checking what can be checked offline", node=False)
    p.add_argument("text", metavar="STRING", help="the lno1/lnr1/lni1 string")


def _print_offer(r: dict[str, Any]) -> None:
    amount = "any amount" if r["amount_msat"] is None else f"{r['amount_msat']} msat"
    state = "active" if r["active"] else "disabled"
    print(f"{r['offer_id']} ({r['label'] or 'no label'}, {amount}, {state}, {r['invoices']} invoice(s)): {r['description'] or ''}")
    print(f"    {r['bolt12']}")


def _print_each(key: str, printer: Callable[[dict[str, Any]], None], empty: str) -> Callable[[dict[str, Any]], None]:
    """A printer of a listing's ``key`` items, one by one (``empty`` when there is none)."""

    def print_all(r: dict[str, Any]) -> None:
        for item in r[key]:
            printer(item)
        if not r[key]:
            print(empty)

    return print_all


def _print_invoice(r: dict[str, Any]) -> None:
    print(r["invoice"])
    print(f"{r['amount_msat']} msat, hash {r['payment_hash']}, from {r['node_id']}, payable until {r['expires_at']} ({r['blinded_paths']} blinded path(s))")


def _print_request(r: dict[str, Any]) -> None:
    print(f"{r['id']} ({r['label'] or 'no label'}, {r['amount_msat']} msat, {r['status']}): {r['description']}")
    print(f"    {r['bolt12']}")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
    if args.command == "offer":
        params: dict[str, Any] = {"amount_msat": args.amount_msat if args.amount_msat is not ... else args.amount_option}
        for name in ("description", "label", "issuer", "quantity_max", "expiry", "introduction"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
        if args.blinded_path:
            params["blinded_path"] = True
        if args.hide_node_id:
            params["hide_node_id"] = True
        return "offers.create", params, _print_offer
    if args.command == "listoffers":
        return "offers.list", {}, _print_each("offers", _print_offer, "no offers")
    if args.command == "disableoffer":
        return "offers.disable", {"offer_id": args.offer_id}, _print_offer
    if args.command == "fetchinvoice":
        params = {"offer": args.offer}
        for name in ("amount_msat", "quantity", "payer_note"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
        return "offers.fetchinvoice", params, _print_invoice
    if args.command == "invoicerequest":
        params = {"amount_msat": args.amount_msat, "description": args.description}
        for name in ("label", "expiry", "introduction"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
        if args.blinded_path:
            params["blinded_path"] = True
        return "offers.invoicerequest", params, _print_request
    if args.command == "listinvoicerequests":
        return "offers.listinvoicerequests", {}, _print_each("invoice_requests", _print_request, "no invoice requests")
    if args.command == "sendinvoice":
        params = {"invreq": args.invreq, **({"label": args.label} if args.label else {})}
        return "offers.sendinvoice", params, lambda r: print(f"sent {r['invoice']}\n{r['amount_msat']} msat, label {r['label']}, hash {r['payment_hash']}")
    raise ValueError(f"not an offers command: {args.command}")


def _decode(args: argparse.Namespace) -> int:
    from lnpmsg.payments.bolt12 import Bolt12Error, decode_invoice, decode_invoice_request, decode_offer
    from lnpmsg.payments.bolt12.strings import decode_string

    readers = {"lno": decode_offer, "lnr": decode_invoice_request, "lni": decode_invoice}
    try:
        prefix, _ = decode_string(args.text.strip())
        if prefix not in readers:
            raise Bolt12Error(f"prefix {prefix!r}: not an offer (lno), invoice request (lnr) or invoice (lni)", "wrong_prefix")
        decoded = readers[prefix](args.text.strip())
    except Bolt12Error as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "code": exc.code}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return control_commands.EXIT_FAILED
    result = {"type": {"lno": "offer", "lnr": "invoice_request", "lni": "invoice"}[prefix], **decoded.to_dict()}
    if prefix == "lno":
        result["offer_id"] = decoded.offer_id.hex()  # type: ignore[union-attr]
    print(json.dumps(result, indent=None if args.json else 2))
    return control_commands.EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Run an offers subcommand; returns the exit status."""
    if args.command == "decodeoffer":
        return _decode(args)
    if args.command == "offer" and (args.amount_msat is ...) == (args.amount_option is ...):
        print("lnpmsg offer: give the amount once: AMOUNT_MSAT or --amount-msat (millisatoshis, or 'any')", file=sys.stderr)
        return 2
    return control_commands.run_command(
        args, _request, missing_method_hint=f"the node at {args.data_dir} runs without offers: start it with a chain and onion messages"
    )
