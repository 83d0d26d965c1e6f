"""The payments subcommands: what each asks the node, how results print, decodepay offline."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import coincurve
import pytest

from lnpmsg.cli import build_parser, main
from lnpmsg.payments import bolt11, commands
from lnpmsg.payments.bolt11 import Invoice
from lnpmsg.wire import Features


def request(*argv: str) -> tuple[str, dict[str, object]]:
    args = build_parser().parse_args(list(argv))
    method, params, _ = commands._request(args)
    return method, params


def test_each_command_calls_its_method() -> None:
    assert request("invoice", "5000", "lbl", "desc", "--expiry", "60") == (
        "payments.invoice", {"amount_msat": 5000, "label": "lbl", "description": "desc", "expiry": 60})
    assert request("invoice", "any", "lbl", "desc")[1]["amount_msat"] is None
    assert request("pay", "lnbcrt1x", "--amount-msat", "7") == ("payments.pay", {"bolt11": "lnbcrt1x", "amount_msat": 7})
    assert request("listinvoices", "--label", "x") == ("payments.listinvoices", {"label": "x"})
    assert request("listpayments") == ("payments.listpayments", {})
    assert request("listforwards") == ("payments.listforwards", {})
    assert request("delinvoice", "x") == ("payments.delinvoice", {"label": "x"})
    assert request("invoice", "5000", "h", "d", "--hold", "--payment-hash", "11" * 32) == (
        "payments.invoice", {"amount_msat": 5000, "label": "h", "description": "d", "expiry": 3600, "hold": True, "payment_hash": "11" * 32})
    assert request("invoice", "5000", "h", "d", "--min-final-cltv", "144")[1]["min_final_cltv"] == 144
    assert request("settleinvoice", "22" * 32) == ("payments.settleinvoice", {"preimage": "22" * 32})
    assert request("settleinvoice", "22" * 32, "--payment-hash", "11" * 32)[1] == {"preimage": "22" * 32, "payment_hash": "11" * 32}
    assert request("cancelinvoice", "11" * 32) == ("payments.cancelinvoice", {"payment_hash": "11" * 32})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["invoice", "-5", "l", "d"])


def test_printers(capsys: pytest.CaptureFixture[str]) -> None:
    route = [{"node_id": "02" + "ab" * 32, "short_channel_id": "103x1x0"}]
    commands._print_pay({"amount_msat": 1000, "fee_msat": 1, "parts": 1, "preimage": "00" * 32, "routes": [route]})
    commands._print_invoices({"invoices": [{"label": "l", "status": "paid", "amount_msat": None, "payment_hash": "11" * 32, "preimage": "22" * 32}]})
    commands._print_payments({"payments": []})
    commands._print_deleted({"deleted": {"label": "old", "status": "expired", "payment_hash": "33" * 32}})
    commands._print_invoices({"invoices": [{"label": "h", "status": "accepted", "hold": True, "amount_msat": 5000, "payment_hash": "44" * 32,
                                            "held_htlcs": 2, "held_msat": 5000, "held_cltv_expiry": 150}]})  # fmt: skip
    commands._print_resolved({"label": "h", "status": "paid", "htlcs": 2, "payment_hash": "44" * 32})
    out = capsys.readouterr().out
    assert "paid 1000 msat (fee 1 msat) in 1 part(s)" in out and "103x1x0" in out
    assert "l: paid, any amount" in out and "no payments" in out
    assert "deleted invoice old (expired" in out
    assert "h: accepted (hold), 5000 msat" in out and "5000 msat held in 2 HTLC(s), the first expiring at 150" in out
    assert "invoice h paid: 2 HTLC(s)" in out


def test_decodepay_runs_offline(capsys: pytest.CaptureFixture[str]) -> None:
    key = os.urandom(32)
    invoice = Invoice(currency="bcrt", timestamp=int(time.time()), payment_hash=os.urandom(32), payment_secret=os.urandom(32),
                      amount_msat=2_000, description="tea", features=Features.from_bits([8, 14, 17]))  # fmt: skip
    text = bolt11.encode(bolt11.sign(invoice, key))
    assert main(["decodepay", text, "--json"]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["payee"] == coincurve.PrivateKey(key).public_key.format().hex() and decoded["amount_msat"] == 2_000
    assert main(["decodepay", text[:-1] + ("q" if text[-1] != "q" else "p"), "--json"]) == 1
    assert "not a valid BOLT-11 invoice" in json.loads(capsys.readouterr().out)["error"]


def test_keysend_calls_its_method_and_prints_as_pay(capsys: pytest.CaptureFixture[str]) -> None:
    node_id = "02" + "ab" * 32
    assert request("keysend", node_id, "5000") == ("payments.keysend", {"node_id": node_id, "amount_msat": 5000})
    assert request("keysend", node_id, "5000", "--max-fee-msat", "10")[1] == {"node_id": node_id, "amount_msat": 5000, "max_fee_msat": 10}
    assert request("keysend", node_id, "5000", "--force")[1] == {"node_id": node_id, "amount_msat": 5000, "force": True}
    for amount in ("any", "0", "-3"):  # a keysend has no invoice to take an amount from
        with pytest.raises(SystemExit):
            build_parser().parse_args(["keysend", node_id, amount])
    commands._print_invoices({"invoices": [{"label": "keysend-0011223344556677", "status": "paid", "keysend": True, "amount_msat": 5000,
                                            "payment_hash": "00112233445566778899" + "aa" * 22, "preimage": "22" * 32}]})  # fmt: skip
    commands._print_payments({"payments": [{"id": 3, "status": "complete", "keysend": True, "amount_msat": 5000, "destination": node_id,
                                            "fee_msat": 1, "routes": [[]], "preimage": "22" * 32, "error": None}]})  # fmt: skip
    out = capsys.readouterr().out
    assert "keysend-0011223344556677: paid (keysend), 5000 msat" in out and "#3 complete (keysend): 5000 msat to 02ababababababab..." in out


def test_accept_keysend_goes_from_the_command_line_to_the_payments_app(tmp_path: Path) -> None:
    from lnpmsg.cli import settings_from_args
    from lnpmsg.runtime import build_node
    from lnpmsg.runtime.settings import SettingsError

    def settings(*argv: str) -> Any:
        return settings_from_args(build_parser().parse_args(["node", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *argv]))

    assert settings().accept_keysend is False  # off unless asked
    from test_config_file import parse_with  # (the config file: a switch like the others)

    assert settings_from_args(parse_with(tmp_path, "accept-keysend = true\n")).accept_keysend is True
    built = build_node(settings("--chain", "regtest", "--accept-keysend"))
    app = built.app("payments")
    assert app.accept_keysend is True and app.node_announcement_features.bits() == [55]
    with pytest.raises(SettingsError, match="--accept-keysend needs"):
        build_node(settings("--accept-keysend"))


def test_getroute_calls_its_method_and_prints_the_hops(capsys: pytest.CaptureFixture[str]) -> None:
    node_id = "02" + "ab" * 32
    assert request("getroute", node_id, "5000") == ("payments.getroute", {"node_id": node_id, "amount_msat": 5000})
    assert request("getroute", node_id, "5000", "--max-fee-msat", "10", "--final-cltv", "144")[1] == {
        "node_id": node_id, "amount_msat": 5000, "max_fee_msat": 10, "final_cltv": 144}
    for amount in ("any", "0"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["getroute", node_id, amount])
    commands._print_route({"amount_msat": 5001, "fee_msat": 1, "route": [
        {"short_channel_id": "103x1x0", "node_id": "02" + "cd" * 32, "amount_msat": 5001, "cltv_expiry": 160, "delay": 64},
        {"short_channel_id": "104x2x1", "node_id": node_id, "amount_msat": 5000, "cltv_expiry": 120, "delay": 24}]})  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("5001 msat to send, fee 1 msat, 2 hop(s):\n")
    assert f"    104x2x1 -> {node_id}: 5000 msat, expiry 120 (in 24 blocks)\n" in out
    # an invoice's route: its payee, amount and hints are the node's to read (an amount only for one without)
    assert request("getroute", "--invoice", "lnbcrt1x") == ("payments.getroute", {"bolt11": "lnbcrt1x"})
    assert request("getroute", "--invoice", "lnbcrt1x", "--amount-msat", "7000")[1] == {"bolt11": "lnbcrt1x", "amount_msat": 7000}
    from lnpmsg.cli import main

    for wrong in (["getroute"], ["getroute", node_id], ["getroute", node_id, "5000", "--invoice", "lnbcrt1x"],
                  ["getroute", node_id, "--invoice", "lnbcrt1x"], ["getroute", node_id, "5000", "--amount-msat", "5"]):  # fmt: skip
        assert main(["--data-dir", "/nonexistent", *wrong]) == 2
        assert "lnpmsg getroute: " in capsys.readouterr().err
    hop = {"short_channel_id": "103x1x0", "node_id": node_id, "amount_msat": 2500, "cltv_expiry": 120, "delay": 24}
    commands._print_route({"amount_msat": 5000, "fee_msat": 0, "route": [hop], "routes": [[hop], [hop]]})
    out = capsys.readouterr().out
    assert out.startswith("5000 msat to send, fee 0 msat, in 2 parts:\n  part 1, 1 hop(s):\n") and "  part 2, 1 hop(s):\n" in out


def test_getroute_takes_route_hints_in_a_compact_form(capsys: pytest.CaptureFixture[str]) -> None:
    """--routehint HOP[,HOP...] (repeatable) becomes route_hints in decodepay's shape; a malformed hint is
    refused before the node is asked, and hints do not go with an invoice (it carries its own)."""
    payee, b, c = "02" + "ab" * 32, "03" + "bb" * 32, "02" + "cc" * 32
    params = request("getroute", payee, "5000", "--routehint", f"{b}:103x1x0:1000:100:40,{c}:104x2x1:0:1:144",
                     "--routehint", f"{b}:105x1x1:1:2:18")[1]  # fmt: skip
    hop = dict.fromkeys(("node_id", "short_channel_id", "fee_base_msat", "fee_proportional_millionths", "cltv_expiry_delta"))
    assert params == {"node_id": payee, "amount_msat": 5000, "route_hints": [
        [{**hop, "node_id": b, "short_channel_id": "103x1x0", "fee_base_msat": 1000, "fee_proportional_millionths": 100, "cltv_expiry_delta": 40},
         {**hop, "node_id": c, "short_channel_id": "104x2x1", "fee_base_msat": 0, "fee_proportional_millionths": 1, "cltv_expiry_delta": 144}],
        [{**hop, "node_id": b, "short_channel_id": "105x1x1", "fee_base_msat": 1, "fee_proportional_millionths": 2, "cltv_expiry_delta": 18}]]}  # fmt: skip
    assert "route_hints" not in request("getroute", payee, "5000")[1]
    for bad in (f"{b}:103x1x0:1000:100", f"{b}:103x1x0:1000:100:40:7", f"{b}:103x1x0:-1:100:40", f"{b}:103x1x0:1k:100:40", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["getroute", payee, "5000", "--routehint", bad])
        assert "--routehint" in capsys.readouterr().err
    assert main(["--data-dir", "/nonexistent", "getroute", "--invoice", "lnbcrt1x", "--routehint", f"{b}:103x1x0:1:1:40"]) == 2
    assert "lnpmsg getroute: --routehint goes with NODEID AMOUNT_MSAT" in capsys.readouterr().err
    commands._print_route({"amount_msat": 5001, "fee_msat": 1, "route_hints": 2, "route": [
        {"short_channel_id": "103x1x0", "node_id": payee, "amount_msat": 5001, "cltv_expiry": 160, "delay": 64}]})  # fmt: skip
    assert capsys.readouterr().out.startswith("5001 msat to send, fee 1 msat, 1 hop(s) (with 2 route hint(s)):\n")


def test_blinded_path_commands_call_their_methods(capsys: pytest.CaptureFixture[str]) -> None:
    node_id = "02" + "ab" * 32
    assert request("blindedpath", "lbl") == ("payments.blindedpath", {"label": "lbl"})
    assert request("blindedpath", "lbl", "--introduction", node_id, "--expiry-blocks", "144")[1] == {
        "label": "lbl", "introduction": node_id, "expiry_blocks": 144}  # fmt: skip
    assert request("payblinded", "aa" * 40, "5000", "11" * 32, "--fee-base-msat", "1000", "--fee-proportional-millionths", "10",
                   "--cltv-expiry-delta", "64", "--max-fee-msat", "2000") == ("payments.payblinded", {  # fmt: skip
        "blinded_path": "aa" * 40, "amount_msat": 5000, "payment_hash": "11" * 32, "fee_base_msat": 1000, "fee_proportional_millionths": 10,
        "cltv_expiry_delta": 64, "htlc_minimum_msat": 0, "max_fee_msat": 2000})  # fmt: skip
    with pytest.raises(SystemExit):  # the payinfo is needed: the path alone does not say what it costs
        build_parser().parse_args(["payblinded", "aa" * 40, "5000", "11" * 32])
    commands._print_blinded_path({"blinded_path": "cafe", "introduction_node_id": node_id,
                                  "payinfo": {"fee_base_msat": 1000, "fee_proportional_millionths": 10, "cltv_expiry_delta": 64,
                                              "htlc_minimum_msat": 1}})  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("cafe\n") and "fee 1000 msat + 10 ppm, cltv_expiry_delta 64" in out
