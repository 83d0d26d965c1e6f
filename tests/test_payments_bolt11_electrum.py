"""BOLT-11 interop with Electrum 4.3.4 (a separate program on Debian's Python):
Electrum decodes our invoices to the same values, and we decode Electrum's."""

from __future__ import annotations

import json
import subprocess

import coincurve

from lnpmsg.payments import bolt11
from lnpmsg.payments.bolt11 import Fallback, Invoice, RouteHintHop
from lnpmsg.testing.electrum import ELECTRUM_PYTHON
from lnpmsg.wire.features import Features

KEY = b"\x11" * 32
PAYEE = coincurve.PrivateKey(KEY).public_key.format()

# Runs inside Electrum's interpreter: decode what we give, encode one invoice of its own.
ELECTRUM_SIDE = r"""
import json, sys
from decimal import Decimal
from electrum import constants
from electrum.lnaddr import LnAddr, lndecode, lnencode
constants.set_regtest()
req = json.load(sys.stdin)
decoded = []
for text in req["ours"]:
    a = lndecode(text)
    decoded.append({
        "amount_msat": a.get_amount_msat(),
        "date": a.date,
        "payment_hash": a.paymenthash.hex(),
        "payment_secret": a.payment_secret.hex(),
        "payee": a.pubkey.serialize().hex(),
        "description": a.get_description(),
        "min_final_cltv": a.get_min_final_cltv_expiry(),
        "expiry": a.get_expiry(),
        "fallback": a.get_fallback_address(),
        "features": int(a.get_features()),
        "routes": [[[p.hex(), scid.hex(), fb, fr, cltv] for p, scid, fb, fr, cltv in r] for r in a.get_routing_info("r")],
    })
addr = LnAddr(
    paymenthash=bytes.fromhex(req["hash"]), amount=Decimal("0.00012345"), net=constants.net, date=req["date"],
    payment_secret=bytes.fromhex(req["secret"]),
    tags=[("d", "from electrum"), ("x", 600), ("c", 144), ("9", req["features"])],
)
print(json.dumps({"decoded": decoded, "encoded": lnencode(addr, bytes.fromhex(req["key"]))}))
"""


def _electrum(request: dict) -> dict:
    out = subprocess.run([ELECTRUM_PYTHON, "-c", ELECTRUM_SIDE], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_electrum_reads_ours_and_we_read_electrums():
    hint = (RouteHintHop(b"\x02" + b"\x33" * 32, (700_000 << 40) | (12 << 16) | 1, 1000, 250, 40),)
    ours = [
        Invoice(
            currency="bcrt",
            timestamp=1_700_000_000,
            payment_hash=b"\x05" * 32,
            payment_secret=b"\x06" * 32,
            amount_msat=123_456_789,
            description="lnpmsg coffee ☕",
            expiry=7200,
            min_final_cltv_expiry_delta=80,
            fallbacks=(Fallback.from_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "bcrt"),),
            route_hints=(hint,),
            features=Features.from_bits([8, 14, 17]),
        ),
        Invoice(currency="bcrt", timestamp=1_700_000_001, payment_hash=b"\x07" * 32, payment_secret=b"\x08" * 32, description="", include_node_id=True),
    ]
    texts = [bolt11.encode(bolt11.sign(inv, KEY)) for inv in ours]
    features = Features.from_bits([8, 14, 17]).value
    result = _electrum({"ours": texts, "hash": "09" * 32, "secret": "0a" * 32, "date": 1_700_000_100, "key": KEY.hex(), "features": features})

    first, second = result["decoded"]
    assert first == {
        "amount_msat": 123_456_789,
        "date": 1_700_000_000,
        "payment_hash": "05" * 32,
        "payment_secret": "06" * 32,
        "payee": PAYEE.hex(),
        "description": "lnpmsg coffee ☕",
        "min_final_cltv": 80,
        "expiry": 7200,
        "fallback": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        "features": features,
        "routes": [[[hint[0].node_id.hex(), hint[0].short_channel_id.to_bytes(8, "big").hex(), 1000, 250, 40]]],
    }
    assert second["amount_msat"] is None and second["payee"] == PAYEE.hex() and second["expiry"] == 3600

    theirs = bolt11.decode(result["encoded"])
    assert theirs.network == "regtest" and theirs.hrp == "lnbcrt123450n"
    assert theirs.amount_msat == 12_345_000
    assert (theirs.payment_hash, theirs.payment_secret) == (b"\x09" * 32, b"\x0a" * 32)
    assert (theirs.description, theirs.expiry, theirs.min_final_cltv_expiry_delta) == ("from electrum", 600, 144)
    assert theirs.features.value == features and theirs.payee == PAYEE and theirs.timestamp == 1_700_000_100
    assert bolt11.encode(theirs) == result["encoded"]
