"""BOLT-11 invoices: every example of 11-payment-encoding.md (parsed from the file),
round trips, fallbacks per network, limits, fuzzing."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.payments import bolt11
from lnpmsg.payments.bech32 import bech32_encode
from lnpmsg.payments.bolt11 import Fallback, Invoice, InvoiceError, RouteHintHop
from lnpmsg.wire.features import Features

SPEC = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts" / "11-payment-encoding.md"
SPEC_TEXT = SPEC.read_text()


def _examples(text: str) -> list[tuple[str, str, str]]:
    """(heading, invoice, breakdown text) for every example in ``text``."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        heading = re.match(r"^> #+ (.*)$", lines[i])
        if heading is None:
            i += 1
            continue
        j = i + 1
        while not lines[j].lstrip("> ").strip():
            j += 1
        invoice = lines[j].lstrip("> ").strip()
        k = j + 1
        while k < len(lines) and not lines[k].startswith("> #") and not lines[k].startswith("# "):
            k += 1
        out.append((heading.group(1), invoice, "\n".join(lines[j + 1 : k])))
        i = k
    return out


_VALID_PART, _INVALID_PART = SPEC_TEXT.split("# Examples of Invalid Invoices")
VALID = _examples(_VALID_PART.split("# Examples", 1)[1])
INVALID = _examples(_INVALID_PART)
PRIV_KEY = bytes.fromhex(re.search(r"signed with `priv_key`=`([0-9a-f]{64})`", SPEC_TEXT).group(1))
PAYEE = coincurve.PrivateKey(PRIV_KEY).public_key.format()
DEFAULT_SECRET = bytes.fromhex(re.search(r"`payment_secret`=`([0-9a-f]{64})`", SPEC_TEXT).group(1))

#: invalid example heading words -> the error code that must name the reason
INVALID_CODES = {
    "unknown feature 100": "unknown_required_feature",
    "checksum is invalid": "bad_checksum",
    "(no 1)": "no_separator",
    "(mixed case)": "mixed_case",
    "not recoverable": "unrecoverable_signature",
    "too short": "too_short",
    "Invalid multiplier": "bad_multiplier",
    "sub-millisatoshi": "sub_msat_precision",
    "Missing required `s`": "missing_payment_secret",
    "high-S) with 'n'": "high_s_signature",
}
_UNITS = {"milli": 10**8, "micro": 10**5, "nano": 100}


def test_the_spec_file_holds_the_examples():
    assert len(VALID) == 16
    assert len(INVALID) == len(INVALID_CODES) == 10
    assert PAYEE.hex() == re.search(r"to me @([0-9a-f]{66})", SPEC_TEXT).group(1)


def _expected(heading: str, breakdown: str) -> dict:
    """What the spec's words say about one example."""
    want: dict = {}
    if m := re.search(r": amount \((\d+) (milli|micro|nano|pico)-bitcoin", breakdown):
        want["amount_msat"] = int(m.group(1)) // 10 if m.group(2) == "pico" else int(m.group(1)) * _UNITS[m.group(2)]
    if m := re.search(r"= (\d+) milli satoshi", breakdown):
        assert want["amount_msat"] == int(m.group(1))
    if m := re.search(r": timestamp \((\d+)\)", breakdown):
        want["timestamp"] = int(m.group(1))
    if m := re.search(r"payment hash ([0-9a-f]{64})", breakdown):
        want["payment_hash"] = bytes.fromhex(m.group(1))
    if m := re.search(r"secret (?:0x)?([0-9a-f]{64})", heading + breakdown):
        want["payment_secret"] = bytes.fromhex(m.group(1))
    if m := re.search(r"\* `d`: short description\n  \* `\w+`: `data_length`.*\n  \* `\w+`: '(.*)'", breakdown):
        want["description"] = m.group(1).replace('\\"', '"')
    if m := re.search(r"SHA256 of '(.*)'  \(SHA256 hex: `([0-9a-f]{64})`\)", breakdown):
        assert hashlib.sha256(m.group(1).encode()).hexdigest() == m.group(2)
        want["description_hash"] = bytes.fromhex(m.group(2))
    if m := re.search(r": (\d+) seconds", breakdown):
        want["expiry"] = int(m.group(1))
    if m := re.search(r"min_final_cltv_expiry_delta = (\d+)", breakdown):
        want["min_final_cltv_expiry_delta"] = int(m.group(1))
    if m := re.search(r"fallback (?:\(\w+\) )?address (\w+)", heading):
        want["fallback_address"] = m.group(1)
    pubkeys = re.findall(r"pubkey: `?([0-9a-f]{66})", breakdown)
    if pubkeys:
        scids = re.findall(r"short_channel_id`?: (\d+)x(\d+)x(\d+)", breakdown)
        bases = re.findall(r"fee_base_msat`?\s*[:=]\s*(\d+)", breakdown)
        ppms = re.findall(r"fee_proportional_millionths`?\s*[:=]\s*(\d+)", breakdown)
        cltvs = re.findall(r"(?<!final_)cltv_expiry_delta`?\s*[:=]\s*(\d+)", breakdown)
        want["route_hint"] = [
            (bytes.fromhex(p), (int(b) << 40) | (int(t) << 16) | int(o), int(fb), int(pp), int(c))
            for p, (b, t, o), fb, pp, c in zip(pubkeys, scids, bases, ppms, cltvs, strict=True)
        ]
    if m := re.search(r"supports features ([\d, and]+),", heading):
        want["feature_bits"] = sorted(int(x) for x in re.findall(r"\d+", m.group(1)))
    elif m := re.search(r"= (\d+(?: \+ \d+)+)", breakdown):
        want["feature_bits"] = sorted(int(x) for x in m.group(1).split(" + "))
    elif m := re.search(r"`\w+`: b([01]+)\n", breakdown):
        want["feature_bits"] = [i for i, bit in enumerate(reversed(m.group(1))) if bit == "1"]
    if m := re.search(r"payment metadata 0x([0-9a-f]+)", heading):
        want["payment_metadata"] = bytes.fromhex(m.group(1))
    if m := re.search(r"`([0-9a-f]{128})` hex of signature data", breakdown):
        recovery = int(re.search(r"`(\d)` \(int\) recovery flag", breakdown).group(1))
        want["signature"] = bytes.fromhex(m.group(1)) + bytes([recovery])
    if m := re.search(r"`([0-9a-f]+)` hex of data for signing", breakdown):
        want["signing_message"] = bytes.fromhex(m.group(1))
        want["signing_digest"] = bytes.fromhex(re.search(r"`([0-9a-f]{64})` hex of SHA256 of the preimage", breakdown).group(1))
    return want


def _all_expected() -> list[dict]:
    """Per valid example; a "Same, but ..." example inherits what the one before says."""
    out: list[dict] = []
    for heading, _, breakdown in VALID:
        own = _expected(heading, breakdown)
        out.append({**out[-1], **own} if heading.startswith("Same") else own)
    return out


@pytest.mark.parametrize(("heading", "text", "want"), [(h, t, w) for (h, t, _), w in zip(VALID, _all_expected())], ids=[h[:50] for h, _, _ in VALID])
def test_valid_example_decodes_as_the_spec_says(heading, text, want):
    invoice = bolt11.decode(text)
    assert invoice.payee == PAYEE
    assert invoice.currency == ("tb" if text.lower().startswith("lntb") else "bc")
    assert invoice.amount_msat == want.get("amount_msat")
    assert invoice.timestamp == want.get("timestamp", 1496314658)
    assert invoice.payment_hash == want.get("payment_hash", bytes(range(10)) * 3 + b"\x01\x02")
    assert invoice.payment_secret == want.get("payment_secret", DEFAULT_SECRET)
    if "description" in want:
        assert invoice.description == want["description"]
    elif "description_hash" in want or "hashed" in heading or "fallback" in heading:
        assert invoice.description is None
        assert invoice.description_hash == hashlib.sha256(
            re.search(r"SHA256 of '(.*)'  \(SHA256", _VALID_PART).group(1).encode()
        ).digest()
    assert invoice.expiry == want.get("expiry")
    assert invoice.expiry_seconds == want.get("expiry", 3600)
    assert invoice.min_final_cltv_expiry_delta == want.get("min_final_cltv_expiry_delta")
    if "fallback_address" in want:
        assert [fb.address(invoice.currency) for fb in invoice.fallbacks] == [want["fallback_address"]]
        assert Fallback.from_address(want["fallback_address"], invoice.currency) == invoice.fallbacks[0]
    else:
        assert invoice.fallbacks == ()
    if "route_hint" in want:
        assert [dataclasses.astuple(h) for h in invoice.route_hints[0]] == want["route_hint"]
        assert len(invoice.route_hints) == 1
    else:
        assert invoice.route_hints == ()
    if "feature_bits" in want:
        assert invoice.features.bits() == want["feature_bits"]
    assert invoice.payment_metadata == want.get("payment_metadata")
    if "signature" in want and not heading.startswith("Same"):
        assert invoice.signature == want["signature"]
    if "signing_message" in want and not heading.startswith("Same"):
        assert bolt11.signing_message(invoice) == want["signing_message"]
        assert hashlib.sha256(want["signing_message"]).digest() == want["signing_digest"]


@pytest.mark.parametrize(("heading", "text", "breakdown"), VALID, ids=[h[:50] for h, _, _ in VALID])
def test_valid_example_reencodes_byte_identical(heading, text, breakdown):
    invoice = bolt11.decode(text)
    assert bolt11.encode(invoice) == text.lower()
    # From the typed fields alone (same order), signed again with the spec's key:
    # RFC 6979 makes the same signature, except for the hand-made high-S one.
    unsigned = dataclasses.replace(invoice, signature=None, payee=None)
    resigned = bolt11.sign(unsigned, PRIV_KEY)
    if "high-S" in heading:
        assert resigned.signature != invoice.signature
        assert bolt11.encode(dataclasses.replace(resigned, signature=invoice.signature)) == text.lower()
    else:
        assert bolt11.encode(resigned) == text.lower()


def test_upper_case_example_is_the_lower_case_one():
    upper = next(t for h, t, _ in VALID if "upper case" in h)
    assert upper.isupper()
    assert bolt11.decode(upper) == bolt11.decode(upper.lower())


def test_ignored_fields_are_skipped_but_kept():
    heading, text, _ = next(e for e in VALID if "must be ignored" in e[0])
    invoice = bolt11.decode(text)
    plain = bolt11.decode(next(t for h, t, _ in VALID if "coffee beans" in h))
    assert len(invoice.skipped) == 10
    assert [tag for tag, _ in invoice.skipped][:2] == [10, 9]  # unknown type '2', fallback version 19
    for name in ("payment_hash", "payment_secret", "description", "features", "fallbacks", "payee", "include_node_id"):
        assert getattr(invoice, name) == getattr(plain, name)


@pytest.mark.parametrize(("heading", "text", "breakdown"), INVALID, ids=[h[:50] for h, _, _ in INVALID])
def test_invalid_example_fails_naming_the_reason(heading, text, breakdown):
    (code,) = [c for key, c in INVALID_CODES.items() if key in heading]
    with pytest.raises(InvoiceError) as info:
        bolt11.decode(text)
    assert info.value.code == code
    assert str(info.value)


# ------------------------------------------------------------ building our own


def _invoice(**kw) -> Invoice:
    base = dict(currency="bcrt", timestamp=1_700_000_000, payment_hash=b"\x01" * 32, payment_secret=b"\x02" * 32, description="coffee")
    base.update(kw)
    return Invoice(**base)


@pytest.mark.parametrize(
    ("currency", "network", "address"),
    [
        ("bcrt", "regtest", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"),
        ("tbs", "signet", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),
        ("tb", "testnet", "mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP"),
        ("bc", "mainnet", "bc1pptdvg0d2nj99568qn6ssdy4cygnwuxgw2ukmnwgwz7jpqjz2kszse2s3lm"),
        ("bc", "mainnet", "3EktnHQD7RiAE6uzMj2ZifT9YgRrkSgzQX"),
    ],
)
def test_prefixes_and_fallbacks_per_network(currency, network, address):
    fallback = Fallback.from_address(address, currency)
    invoice = bolt11.sign(_invoice(currency=currency, amount_msat=1234, fallbacks=(fallback,)), PRIV_KEY)
    text = bolt11.encode(invoice)
    assert text.startswith(f"ln{currency}12340p1")
    decoded = bolt11.decode(text)
    assert decoded.network == network
    assert decoded.fallbacks[0].address(currency) == address
    assert decoded.to_dict()["fallbacks"] == [address]


def test_fallback_of_another_network_is_refused():
    with pytest.raises(InvoiceError) as info:
        Fallback.from_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bcrt")
    assert info.value.code == "bad_fallback"


@pytest.mark.parametrize(
    ("msat", "text"),
    [(100_000_000_000, "1"), (250_000_000, "2500u"), (2_000_000_000, "20m"), (100, "1n"), (967_878_534, "9678785340p"), (1, "10p")],
)
def test_amount_uses_the_shortest_multiplier(msat, text):
    assert _invoice(amount_msat=msat).hrp == "lnbcrt" + text
    assert bolt11.decode(bolt11.encode(bolt11.sign(_invoice(amount_msat=msat), PRIV_KEY))).amount_msat == msat


def test_non_largest_multiplier_is_read():
    assert bolt11._parse_hrp("lnbc2500000n") == ("bc", 250_000_000, "2500000n")
    assert bolt11._parse_hrp("lnbc2500u") == ("bc", 250_000_000, None)
    # signed as written, the long form survives decoding and encoding again
    long_form = bolt11.sign(_invoice(amount_msat=250_000_000, amount_text="2500000n"), PRIV_KEY)
    text = bolt11.encode(long_form)
    assert text.startswith("lnbcrt2500000n1")
    assert bolt11.encode(bolt11.decode(text)) == text
    assert bolt11.decode(text).amount_msat == 250_000_000
    # a stale amount_text (the amount changed) is not used
    assert dataclasses.replace(long_form, amount_msat=1000).hrp == "lnbcrt10n"
    for hrp, code in (("lnbc0u", "bad_amount"), ("lnbc025u", "bad_amount"), ("lnxx1u", "unknown_currency"), ("lnbc1u2", "bad_prefix")):
        with pytest.raises(InvoiceError) as info:
            bolt11._parse_hrp(hrp)
        assert info.value.code == code


def test_limits_and_local_errors():
    signed = bolt11.sign(_invoice(), PRIV_KEY)
    text = bolt11.encode(signed)
    assert bolt11.decode("lightning:" + text.upper()) == bolt11.decode(text)
    with pytest.raises(InvoiceError) as info:
        bolt11.decode(text, max_length=len(text) - 1)
    assert info.value.code == "too_long"
    with pytest.raises(InvoiceError) as info:
        bolt11.encode(bolt11.sign(_invoice(description="x" * 640), PRIV_KEY))
    assert info.value.code == "field_too_long" and "description_hash" in str(info.value)
    with pytest.raises(InvoiceError) as info:
        bolt11.encode(_invoice())
    assert info.value.code == "unsigned"
    with pytest.raises(InvoiceError) as info:
        _invoice(description_hash=b"\x00" * 32)
    assert info.value.code == "bad_description"
    assert bolt11.sign(_invoice(expiry=60), PRIV_KEY).is_expired(1_700_000_060)
    assert not bolt11.sign(_invoice(), PRIV_KEY).is_expired(1_700_003_599)


def test_explicit_node_id_is_used_and_checked():
    signed = bolt11.sign(_invoice(include_node_id=True), PRIV_KEY)
    decoded = bolt11.decode(bolt11.encode(signed))
    assert decoded.include_node_id and decoded.payee == PAYEE
    other = coincurve.PrivateKey(b"\x07" * 32).public_key.format()
    forged = dataclasses.replace(signed, payee=other)  # n names another key, same signature
    with pytest.raises(InvoiceError) as info:
        bolt11.decode(bolt11.encode(forged))
    assert info.value.code == "bad_signature"


def test_unknown_even_feature_and_missing_dependency_fail():
    for bits, code in (([102], "unknown_required_feature"), ([17], "feature_dependency")):
        text = bolt11.encode(bolt11.sign(_invoice(features=Features.from_bits(bits)), PRIV_KEY))
        with pytest.raises(InvoiceError) as info:
            bolt11.decode(text)
        assert info.value.code == code


def test_non_minimal_expiry_is_refused():
    invoice = bolt11.sign(_invoice(expiry=60), PRIV_KEY)
    # hand-made x field with a leading zero word, signed properly
    bad = dataclasses.replace(invoice, expiry=None, field_order=("?",), skipped=((6, (0, 1, 28)),), signature=None, payee=None)
    with pytest.raises(InvoiceError) as info:
        bolt11.decode(bolt11.encode(bolt11.sign(bad, PRIV_KEY)))
    assert info.value.code == "non_minimal_field"


# ------------------------------------------------------------ properties

_node_ids = st.binary(min_size=32, max_size=32).map(lambda b: b"\x02" + b)
_hops = st.builds(
    RouteHintHop,
    _node_ids,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
)
_fallbacks = st.one_of(
    st.builds(Fallback, st.just(0), st.binary(min_size=20, max_size=20) | st.binary(min_size=32, max_size=32)),
    st.builds(Fallback, st.integers(1, 16), st.binary(min_size=2, max_size=40)),
    st.builds(Fallback, st.sampled_from([17, 18]), st.binary(min_size=20, max_size=20)),
)
_features = st.sets(st.sampled_from([8, 9, 14, 15, 25, 49, 99, 101, 255])).map(Features.from_bits) | st.just(Features.from_bits([14, 17]))
_secrets = st.integers(1, bolt11._CURVE_ORDER - 1).map(lambda n: n.to_bytes(32, "big"))


@st.composite
def invoices(draw):
    hashed = draw(st.booleans())
    return Invoice(
        currency=draw(st.sampled_from(sorted(bolt11.CURRENCIES))),
        timestamp=draw(st.integers(0, 2**35 - 1)),
        payment_hash=draw(st.binary(min_size=32, max_size=32)),
        payment_secret=draw(st.binary(min_size=32, max_size=32)),
        amount_msat=draw(st.none() | st.integers(1, bolt11.MAX_AMOUNT_MSAT)),
        description=None if hashed else draw(st.text(max_size=60)),
        description_hash=draw(st.binary(min_size=32, max_size=32)) if hashed else None,
        expiry=draw(st.none() | st.integers(0, 2**40)),
        min_final_cltv_expiry_delta=draw(st.none() | st.integers(0, 2**16)),
        fallbacks=tuple(draw(st.lists(_fallbacks, max_size=3))),
        route_hints=tuple(tuple(r) for r in draw(st.lists(st.lists(_hops, min_size=1, max_size=3), max_size=3))),
        features=draw(_features),
        payment_metadata=draw(st.none() | st.binary(max_size=50)),
        include_node_id=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(invoices(), _secrets)
def test_round_trip(invoice, secret):
    signed = bolt11.sign(invoice, secret)
    text = bolt11.encode(signed)
    decoded = bolt11.decode(text)
    assert dataclasses.replace(decoded, field_order=(), skipped=()) == signed
    assert bolt11.encode(decoded) == text
    assert bolt11.decode(text.upper()) == decoded


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 31), max_size=400), st.sampled_from(["lnbc", "lnbcrt", "lntb10u", "lnbc9p", "lnbc"]))
def test_any_checksummed_string_decodes_or_fails_cleanly(words, hrp):
    try:
        bolt11.decode(bech32_encode(hrp, words))
    except InvoiceError as exc:
        assert exc.code


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_examples_fail_cleanly(data):
    text = data.draw(st.sampled_from([t for _, t, _ in VALID])).lower()
    pos = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.sampled_from("qpzry9x8gf2tvdw0s3jn54khce6mua7l1"))
    mutated = text[:pos] + char + text[pos + 1 :]
    if mutated != text:
        with pytest.raises(InvoiceError):
            bolt11.decode(mutated)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=50) | st.none() | st.integers())
def test_any_input_decodes_or_fails_cleanly(value):
    with pytest.raises(InvoiceError) as info:
        bolt11.decode(value)
    assert info.value.code
