"""The offers subcommands: what each asks the node, how results print, ``pay lno1...``,
``decodeoffer`` offline on the spec's vectors, and the commands against an ``lnpmsg node`` process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from cli_in_process import cli
from lnpmsg.cli import build_parser, main
from lnpmsg.payments import commands as payment_commands
from lnpmsg.payments.bolt12 import commands
from lnpmsg.payments.bolt12.offer import decode_offer
from lnpmsg.testing.processes import finish_process, start_node_process
from lnpmsg.payments.bolt12.invoice_request import InvoiceRequest
from lnpmsg.wire.bolt1 import CHAIN_HASH_REGTEST
from test_payments_bolt12 import BOB, _invoice, _offer

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
    assert request("invoicerequest", "7000", "--description", "refund", "--expiry", "60") == (
        "offers.invoicerequest", {"amount_msat": 7000, "description": "refund", "expiry": 60})
    assert request("invoicerequest", "7000", "--description", "refund", "--blinded-path")[1] == {
        "amount_msat": 7000, "description": "refund", "blinded_path": True}
    assert request("invoicerequest", "7000", "--description", "refund", "--introduction", "02" + "ab" * 32)[1] == {
        "amount_msat": 7000, "description": "refund", "introduction": ["02" + "ab" * 32]}
    assert request("listinvoicerequests") == ("offers.listinvoicerequests", {})
    assert request("offer", "--amount-msat", "any", "--description", "d") == ("offers.create", {"amount_msat": None, "description": "d"})
    assert request("offer", "--amount-msat", "9", "--description", "d")[1]["amount_msat"] == 9
    assert request("sendinvoice", "lnr1x", "--label", "l") == ("offers.sendinvoice", {"invreq": "lnr1x", "label": "l"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["invoicerequest", "any", "--description", "x"])
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
    print_offers = commands._print_each("offers", commands._print_offer, "no offers")
    print_offers({"offers": [offer]})
    print_offers({"offers": []})
    commands._print_invoice({"invoice": "lni1qq", "amount_msat": 5, "payment_hash": "22" * 32, "node_id": "02" * 33, "expires_at": 9,
                             "blinded_paths": 2})  # fmt: skip
    out = capsys.readouterr().out
    assert f"{'11' * 32} (no label, any amount, disabled, 3 invoice(s)): tips" in out and "lno1qq" in out and "no offers" in out
    assert "lni1qq" in out and "5 msat" in out and "2 blinded path(s)" in out


def test_offer_takes_its_amount_once(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["offer"], ["offer", "5", "--amount-msat", "5"]):
        assert main([*argv, "--description", "d"]) == 2
        assert "give the amount once" in capsys.readouterr().err


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
    # an invoice (and the request it answers): every field shown, payinfos and paths as objects
    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16, payer_note="hi")
    assert main(["decodeoffer", "--json", _invoice(request).encode()]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["type"] == "invoice" and shown["invoice_amount"] == 5000 and shown["invreq_payer_note"] == "hi"
    assert shown["invoice_blindedpay"][0]["htlc_maximum_msat"] == 10**9 and shown["invoice_paths"][0]["num_hops"] == 2
    assert main(["decodeoffer", "lnbc1qqqq"]) == 1
    assert "not an offer" in capsys.readouterr().err


async def cli_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, Any]:
    code, out, _ = await cli(capsys, *argv, "--json")
    return code, json.loads(out)


async def test_offer_commands_against_a_node_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A node started with a chain runs the offers app: offer, listoffers, disableoffer, and what each refuses."""
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, made = await cli_json(capsys, "offer", 5000, "--description", "a coffee", "--label", "coffee", "--quantity-max", 2, *d)
        assert code == 0 and made["active"] and made["amount_msat"] == 5000 and made["label"] == "coffee"
        offer = decode_offer(made["bolt12"])
        assert offer.quantity_max == 2 and offer.chains == (CHAIN_HASH_REGTEST,) and offer.offer_id.hex() == made["offer_id"]
        code, out, _ = await cli(capsys, "offer", "any", "--description", "tips", *d)
        assert code == 0 and "any amount, active, 0 invoice(s)): tips" in out and "lno1" in out
        code, out, err = await cli(capsys, "offer", 5000, *d)
        assert code == 1 and "needs a description" in err
        code, out, err = await cli(capsys, "offer", 1, "--description", "x", "--blinded-path", *d)
        assert code == 1 and "no connected peer reads onion messages" in err
        code, out, _ = await cli(capsys, "disableoffer", made["offer_id"], *d)
        assert code == 0 and "disabled" in out
        code, listed = await cli_json(capsys, "listoffers", *d)
        assert code == 0 and [(o["label"], o["active"]) for o in listed["offers"]] == [("coffee", False), (None, True)]
        code, out, err = await cli(capsys, "fetchinvoice", "lno1qqqq", *d)
        assert code == 1 and "offer:" in err
        assert (await cli(capsys, "stop", *d))[0] == 0
    except BaseException:
        process.send_signal(signal.SIGINT)
        raise
    finally:
        code, stderr = await finish_process(process)
    assert code == 0 and "Traceback" not in stderr, stderr


def test_blinded_path_length_goes_from_the_command_line_to_both_apps(tmp_path: Path) -> None:
    from lnpmsg.cli import settings_from_args
    from lnpmsg.runtime import build_node

    def settings(*argv: str) -> Any:
        return settings_from_args(build_parser().parse_args(["node", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *argv]))

    assert settings().blinded_path_length == 4  # padded by default
    from test_config_file import parse_with  # (the config file sets it as the others)

    assert settings_from_args(parse_with(tmp_path, "blinded-path-length = 2\n")).blinded_path_length == 2
    built = build_node(settings("--chain", "regtest", "--blinded-path-length", "6"))
    assert built.app("payments").blinded_path_length == built.app("onion_messages").blinded_path_length == 6
    for bad in ("9", "-1", "x"):  # (at most one hop of ours and 7 dummy hops)
        with pytest.raises(SystemExit):
            build_parser().parse_args(["node", "--blinded-path-length", bad])
