"""The offers subcommands: what each asks the node, how results print, ``pay lno1...``, and
``decodeoffer`` offline on the spec's vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lnpmsg.cli import build_parser, main
from lnpmsg.payments import commands as payment_commands
from lnpmsg.payments.bolt12 import commands

VECTORS = json.loads((Path(__file__).parent / "data" / "bolt12" / "offers-test.json").read_text())
SIGNED_REQUEST = json.loads((Path(__file__).parent / "data" / "bolt12" / "signature-test.json").read_text())[3]["bolt12"]


def request(*argv: str) -> tuple[str, dict[str, object]]:
    args = build_parser().parse_args(list(argv))
    method, params, _ = (payment_commands if args.command == "pay" else commands)._request(args)
    return method, params


def test_each_command_calls_its_method() -> None:
    assert request("offer", "5000", "--description", "coffee", "--label", "c", "--expiry", "60") == (
        "offers.create", {"amount_msat": 5000, "description": "coffee", "label": "c", "expiry": 60})
    assert request("offer", "any", "--blinded-path", "--quantity-max", "0") == (
        "offers.create", {"amount_msat": None, "quantity_max": 0, "blinded_path": True})
    assert request("offer", "1", "--description", "d", "--hide-node-id")[1] == {"amount_msat": 1, "description": "d", "hide_node_id": True}
    assert request("listoffers") == ("offers.list", {})
    assert request("disableoffer", "ab" * 32) == ("offers.disable", {"offer_id": "ab" * 32})
    assert request("fetchinvoice", "lno1x", "--amount-msat", "7", "--payer-note", "hi") == (
        "offers.fetchinvoice", {"offer": "lno1x", "amount_msat": 7, "payer_note": "hi"})
    assert request("pay", "lno1x", "--quantity", "2") == ("offers.pay", {"offer": "lno1x", "quantity": 2})
    assert request("pay", "LNO1X") == ("offers.pay", {"offer": "LNO1X"})
    assert request("pay", "lnbcrt1x") == ("payments.pay", {"bolt11": "lnbcrt1x"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["offer", "0"])


def test_printers(capsys: pytest.CaptureFixture[str]) -> None:
    offer = {"offer_id": "11" * 32, "label": None, "amount_msat": None, "active": False, "invoices": 3, "description": "tips", "bolt12": "lno1qq"}
    commands._print_offers({"offers": [offer]})
    commands._print_offers({"offers": []})
    commands._print_invoice({"invoice": "lni1qq", "amount_msat": 5, "payment_hash": "22" * 32, "node_id": "02" * 33, "expires_at": 9,
                             "blinded_paths": 2})  # fmt: skip
    out = capsys.readouterr().out
    assert f"{'11' * 32} (no label, any amount, disabled, 3 invoice(s)): tips" in out and "lno1qq" in out and "no offers" in out
    assert "lni1qq" in out and "5 msat" in out and "2 blinded path(s)" in out


def test_decodeoffer_offline(capsys: pytest.CaptureFixture[str]) -> None:
    valid = next(v for v in VECTORS if v["description"] == "with amount")
    assert main(["decodeoffer", "--json", valid["bolt12"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["type"] == "offer" and shown["offer_amount"] == 10000 and shown["offer_description"] == "Test vectors" and len(shown["offer_id"]) == 64
    assert main(["decodeoffer", "--json", SIGNED_REQUEST]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["type"] == "invoice_request" and shown["offer_currency"] == "USD" and shown["invreq_metadata"] == "00" * 8
    invalid = next(v for v in VECTORS if v["description"] == "Missing offer_description, but has offer_amount")
    assert main(["decodeoffer", "--json", invalid["bolt12"]]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "missing_field"
    assert main(["decodeoffer", "lnbc1qqqq"]) == 1
    assert "not an offer" in capsys.readouterr().err
