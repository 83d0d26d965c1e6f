"""BOLT 12's codec (:mod:`lnpmsg.payments.bolt12`) against every vector of the spec's bolt12/*.json
(copied in tests/data/bolt12, see its README), and the reader rules the vectors do not cover:
an offer -> invoice request -> invoice exchange built, then each check that must refuse a
changed one (signature, mirrored fields, node id, amount, expiry, quantity)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.payments.blinded import PathHop, PaymentRelay, create_payment_path
from lnpmsg.payments.bolt12 import Bolt12Error, Invoice, InvoiceError, InvoiceRequest, Offer, PayInfo, decode_invoice, decode_offer
from lnpmsg.payments.bolt12.invoice_request import decode_invoice_request
from lnpmsg.payments.bolt12.merkle import merkle_root, signature_digest, split_records, tagged_hash, verify
from lnpmsg.payments.bolt12.strings import decode_string, encode_string
from lnpmsg.payments.bolt12.tlvs import INVOICE_TLVS, signed
from lnpmsg.wire.bolt1 import CHAIN_HASH_MAINNET, CHAIN_HASH_TESTNET

DATA = Path(__file__).parent / "data" / "bolt12"


def _vectors(name: str) -> list[dict[str, Any]]:
    return json.loads((DATA / name).read_text())


FORMAT = _vectors("format-string-test.json")
OFFERS = _vectors("offers-test.json")
SIGNATURES = _vectors("signature-test.json")
ALICE, BOB, CAROL = b"\x41" * 32, b"\x42" * 32, b"\x43" * 32
NOW = 1_800_000_000


def _pub(secret: bytes) -> bytes:
    return coincurve.PrivateKey(secret).public_key.format()


# ------------------------------------------------------------------ the spec's vectors


@pytest.mark.parametrize("vector", FORMAT, ids=[f"{i}-{v['comment']}" for i, v in enumerate(FORMAT)])
def test_format_string_vectors(vector: dict[str, Any]) -> None:
    if vector["valid"]:
        offer = decode_offer(vector["string"])
        assert offer.encode() == FORMAT[0]["string"]
    else:
        with pytest.raises(Bolt12Error) as err:
            decode_offer(vector["string"])
        assert err.value.code == "bad_string"


@pytest.mark.parametrize("vector", OFFERS, ids=[f"{i}-{v['description']}" for i, v in enumerate(OFFERS)])
def test_offer_vectors(vector: dict[str, Any]) -> None:
    if not vector["valid"]:
        with pytest.raises(Bolt12Error):
            decode_offer(vector["bolt12"])
        return
    offer = decode_offer(vector["bolt12"])
    assert offer.encode() == vector["bolt12"]
    records = [(kind, whole) for kind, _, whole in split_records(offer.to_bytes())]
    assert [k for k, _ in records] == [f["type"] for f in vector["fields"]]
    for (_, whole), f in zip(records, vector["fields"], strict=True):
        assert whole.hex().endswith(f["hex"]) and len(whole) - len(f["hex"]) // 2 <= 2 + 8 and f["length"] == len(bytes.fromhex(f["hex"]))


def test_offer_vector_fields_read_as_named() -> None:
    by_name = {v["description"]: decode_offer(v["bolt12"]) for v in OFFERS if v["valid"]}
    assert by_name["with amount"].amount == 10000 and by_name["with amount"].description == "Test vectors"
    assert by_name["with currency"].currency == "USD"
    assert by_name["for testnet"].chains == (CHAIN_HASH_TESTNET,)
    assert by_name["Minimal bolt12 offer"].chains == (CHAIN_HASH_MAINNET,)
    assert by_name["with unlimited (or unknown) quantity"].quantity_max == 0
    assert by_name["unknown odd field"].tlvs.unknown == {33: b"helloworld"}
    assert len(by_name["... and with second blinded path via 1x2x3 (direction 1), path_key 020202..."].paths) == 2
    assert not by_name["same, with blinded path first_node_id using sciddir"].paths[0].introduction_is_node_id


def _hexes(key: str) -> str:
    return re.search(r",([0-9a-f]+)\)$", key).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("vector", SIGNATURES, ids=[v["comment"][:40] for v in SIGNATURES])
def test_signature_vectors(vector: dict[str, Any]) -> None:
    if "bolt12" in vector:
        _, stream = decode_string(vector["bolt12"], "lnr")
    else:  # the stream is the leaves' records, in order
        stream = bytes.fromhex("".join(_hexes(next(iter(leaf))) for leaf in vector["leaves"]))
    first = bytes.fromhex(vector["first-tlv"])
    records = [r for r in split_records(stream) if not 240 <= r[0] <= 1000]
    for leaf, (_, type_bytes, whole) in zip(vector["leaves"], records, strict=True):
        values = list(leaf.values())
        assert tagged_hash(b"LnLeaf", whole).hex() == values[0]
        assert tagged_hash(b"LnNonce" + first, type_bytes).hex() == values[1]
    assert merkle_root(stream).hex() == vector["merkle"]
    if "signature" in vector:
        assert vector["signature_tag"] == "lightninginvoice_requestsignature"
        assert signature_digest("invoice_request", "signature", merkle_root(stream)).hex() == vector["H(signature_tag,merkle)"]
        request = decode_invoice_request(vector["bolt12"])
        assert request.tlvs["signature"].hex() == vector["signature"]
        assert request.payer_id == _pub(BOB) and request.tlvs["offer_issuer_id"] == _pub(ALICE)
        assert verify("invoice_request", stream, bytes.fromhex(vector["signature"]), _pub(BOB))
        assert not verify("invoice_request", stream, bytes.fromhex(vector["signature"]), _pub(ALICE))
        assert request.encode() == vector["bolt12"]


# ------------------------------------------------------------------ strings


def test_string_round_trip_and_padding() -> None:
    for n in range(0, 12):
        data = bytes(range(n))
        text = encode_string("lnx", data)
        assert decode_string(text) == ("lnx", data)
        assert decode_string(text.upper()) == ("lnx", data)
    with pytest.raises(Bolt12Error):  # 4 bits of padding, not zero
        decode_string("lno1ql")
    with pytest.raises(Bolt12Error) as err:
        decode_string(FORMAT[0]["string"], "lni")
    assert err.value.code == "wrong_prefix"


# ------------------------------------------------------------------ a whole exchange


def _offer(**fields: Any) -> Offer:
    return Offer.build(offer_issuer_id=_pub(ALICE), **{"offer_description": "coffee", **fields})


def _paths() -> list[tuple[Any, PayInfo]]:
    relay = PaymentRelay(40, 1000, 1)
    path, info = create_payment_path(b"\x07" * 32, [PathHop(_pub(CAROL), 1 << 40, relay)], _pub(ALICE), b"\x01" * 32, 900_000, 18)
    return [(path, PayInfo.from_blinded(info, 10**9))]


def _invoice(request: InvoiceRequest, **overrides: Any) -> Invoice:
    terms: dict[str, Any] = {"payment_hash": b"\x99" * 32, "amount_msat": request.amount or request.expected_amount(), "created_at": NOW,
                             "paths": _paths()}  # fmt: skip
    terms.update(overrides)
    secret = terms.pop("secret", ALICE)
    return Invoice.for_request(request, secret, **terms)


def test_offer_request_invoice_exchange() -> None:
    offer = _offer(offer_amount=5000, unknown={33: b"odd"})
    assert decode_offer(offer.encode()) == offer
    request = InvoiceRequest.for_offer(offer, BOB, b"\x05" * 16, payer_note="thanks")
    again = decode_invoice_request(request.encode())
    assert again == request and again.offer() == offer and again.offer().offer_id == offer.offer_id
    assert request.tlvs.unknown == {33: b"odd"} and request.expected_amount() == 5000
    invoice = _invoice(request)
    assert decode_invoice(invoice.encode()) == invoice
    assert invoice.amount == 5000 and invoice.node_id == _pub(ALICE) and invoice.tlvs.unknown == {33: b"odd"}
    assert invoice.expires_at == NOW + 7200 and len(invoice.usable_paths()) == 1
    invoice.check_response(request, chain=CHAIN_HASH_MAINNET, now=NOW + 10)


def _resigned(invoice: Invoice, secret: bytes = ALICE, unknown: dict[int, bytes] | None = None, **changes: Any) -> Invoice:
    """``invoice`` with fields changed, signed again by ``secret`` (a consistent invoice, but not the one asked for)."""
    stream = INVOICE_TLVS.stream({**dict(invoice.tlvs), **changes}, unknown=dict(invoice.tlvs.unknown) | (unknown or {}))
    return Invoice.from_bytes(signed(INVOICE_TLVS, stream, "invoice", secret))


def test_invoice_checks_refuse() -> None:
    offer = _offer(offer_amount=5000)
    request = InvoiceRequest.for_offer(offer, BOB, b"\x05" * 16)
    invoice = _invoice(request)
    cases = {
        "mismatch": _resigned(invoice, offer_description="tea"),
        "wrong_node_id": _resigned(invoice, CAROL, invoice_node_id=_pub(CAROL)),
        "wrong_amount": _resigned(invoice, invoice_amount=5001),
    }
    for code, bad in cases.items():
        with pytest.raises(Bolt12Error) as err:
            bad.check_response(request, chain=CHAIN_HASH_MAINNET, now=NOW)
        assert err.value.code == code
    with pytest.raises(Bolt12Error) as err:
        invoice.check_response(request, chain=CHAIN_HASH_MAINNET, now=NOW + 7201)
    assert err.value.code == "expired"
    with pytest.raises(Bolt12Error) as err:
        invoice.check_response(request, chain=CHAIN_HASH_TESTNET, now=NOW)
    assert err.value.code == "wrong_chain"
    # a signature by another key, or over other bytes
    raw = bytearray(invoice.to_bytes())
    raw[-1] ^= 1
    with pytest.raises(Bolt12Error) as err:
        Invoice.from_bytes(bytes(raw))
    assert err.value.code == "bad_signature"
    with pytest.raises(Bolt12Error) as err:
        _resigned(invoice, CAROL)  # invoice_node_id still Alice's
    assert err.value.code == "bad_signature"


def test_invoice_reader_rules() -> None:
    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16)
    invoice = _invoice(request)
    bad_path = replace(_paths()[0][1], features=b"\x01")  # bit 0 required: unknown
    with pytest.raises(Bolt12Error) as err:
        _invoice(request, paths=[(_paths()[0][0], bad_path)])
    assert err.value.code == "no_usable_path"
    two = _invoice(request, paths=[(_paths()[0][0], bad_path), _paths()[0]])
    assert [i for _, i in two.usable_paths()] == [_paths()[0][1]]
    assert invoice.tlvs.get("invoice_features") is None


def test_invoice_features_known_and_unknown() -> None:
    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16)
    assert _invoice(request, features=b"\x02\x00\x00").tlvs["invoice_features"] == b"\x02\x00\x00"  # bit 17
    # MPP, optional (17) or compulsory (16): the payer splits over the paths; none: one part
    assert _invoice(request, features=b"\x02\x00\x00").mpp and _invoice(request, features=b"\x01\x00\x00").mpp and not _invoice(request).mpp
    with pytest.raises(Bolt12Error) as err:
        _invoice(request, features=b"\x04\x00\x00")  # bit 18: unknown, compulsory
    assert err.value.code == "unknown_required_feature"
    for missing in ("invoice_amount", "invoice_payment_hash", "invoice_created_at", "invoice_node_id", "invoice_blindedpay"):
        fields = {**dict(_invoice(request).tlvs), missing: None, "signature": None}
        with pytest.raises(Bolt12Error) as err:
            Invoice.from_bytes(INVOICE_TLVS.encode(INVOICE_TLVS.stream(fields)))
        assert err.value.code == "missing_field"


def test_request_against_offer() -> None:
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.for_offer(_offer(), BOB, b"\x05" * 16)
    assert err.value.code == "missing_amount"
    any_amount = InvoiceRequest.for_offer(_offer(), BOB, b"\x05" * 16, amount_msat=1234)
    assert _invoice(any_amount).amount == 1234
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16, amount_msat=4999)
    assert err.value.code == "amount_too_low"
    limited = _offer(offer_amount=100, offer_quantity_max=3)
    assert InvoiceRequest.for_offer(limited, BOB, b"\x05" * 16, quantity=3).expected_amount() == 300
    for quantity in (None, 0, 4):
        with pytest.raises(Bolt12Error) as err:
            InvoiceRequest.for_offer(limited, BOB, b"\x05" * 16, quantity=quantity)
        assert err.value.code == "bad_quantity"
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.for_offer(_offer(offer_amount=100), BOB, b"\x05" * 16, quantity=1)
    assert err.value.code == "bad_quantity"
    unlimited = _offer(offer_amount=100, offer_quantity_max=0)
    assert InvoiceRequest.for_offer(unlimited, BOB, b"\x05" * 16, quantity=50).expected_amount() == 5000
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.for_offer(_offer(offer_amount=100, offer_currency="USD"), BOB, b"\x05" * 16)
    assert err.value.code == "unsupported_currency"
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.for_offer(_offer(), BOB, b"\x05" * 16, amount_msat=1, chain=CHAIN_HASH_TESTNET)
    assert err.value.code == "wrong_chain"


def test_offer_usable() -> None:
    offer = _offer(offer_absolute_expiry=NOW)
    offer.check_usable(CHAIN_HASH_MAINNET, NOW)
    with pytest.raises(Bolt12Error) as err:
        offer.check_usable(CHAIN_HASH_MAINNET, NOW + 1)
    assert err.value.code == "expired"
    with pytest.raises(Bolt12Error) as err:
        offer.check_usable(CHAIN_HASH_TESTNET, NOW)
    assert err.value.code == "wrong_chain"


def test_request_reader_rules() -> None:
    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16)
    raw = bytearray(request.to_bytes())
    raw[-1] ^= 1
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.from_bytes(bytes(raw))
    assert err.value.code == "bad_signature"
    # (a type outside the ranges: the unknown odd 161 between the invreq and signature records)
    from lnpmsg.payments.bolt12.tlvs import INVOICE_REQUEST_TLVS

    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.from_bytes(signed(INVOICE_REQUEST_TLVS, INVOICE_REQUEST_TLVS.stream(dict(request.tlvs), unknown={161: b"x"}), "invoice_request", BOB))
    assert err.value.code == "out_of_range"
    # not for an offer: an amount is required, offer-only fields refused
    fields = {"invreq_metadata": b"\x01", "invreq_payer_id": _pub(BOB), "offer_description": "refund"}
    for extra, code in (({}, "missing_field"), ({"invreq_amount": 5, "offer_quantity_max": 2}, "malformed")):
        with pytest.raises(Bolt12Error) as err:
            InvoiceRequest.from_bytes(signed(INVOICE_REQUEST_TLVS, INVOICE_REQUEST_TLVS.stream({**fields, **extra}), "invoice_request", BOB))
        assert err.value.code == code


def test_invoice_error_round_trip() -> None:
    error = InvoiceError("amount too low", erroneous_field=82, suggested_value=b"\x13\x88")
    assert InvoiceError.from_bytes(error.to_bytes()) == error
    assert InvoiceError.from_bytes(InvoiceError("no").to_bytes()) == InvoiceError("no")
    with pytest.raises(Bolt12Error):
        InvoiceError("x", suggested_value=b"\x01")


def test_recipient_blinded_secret_signs_as_the_paths_last_id() -> None:
    from lnpmsg.onion_messages.packet import blinded_path_to
    from lnpmsg.payments.bolt12.keys import offer_path_session_key, recipient_blinded_secret

    session = offer_path_session_key(ALICE, b"salt")
    assert session == offer_path_session_key(ALICE, b"salt") != offer_path_session_key(ALICE, b"other")
    for via in ([], [_pub(BOB)], [_pub(BOB), _pub(CAROL)]):
        path = blinded_path_to(session, [*via, _pub(ALICE)], path_id=b"\x01" * 24)
        secret = recipient_blinded_secret(session, [*via, _pub(ALICE)], ALICE)
        assert _pub(secret) == path.hops[-1].blinded_node_id != _pub(ALICE)


def test_a_payer_key_is_its_requests_own_and_derived_again() -> None:
    """The transient invreq_payer_id: from the node secret and the request's metadata, the same each time (the
    payer signs with it again, nothing stored), another for other metadata or another node, never the node id,
    nor an offer path's key of the same bytes (each use of the node secret has a label of its own)."""
    from lnpmsg.payments.bolt12.keys import offer_path_session_key, payer_id, payer_secret

    metadata = b"\x05" * 16
    key = payer_secret(ALICE, metadata)
    assert key == payer_secret(ALICE, metadata) and _pub(key) == payer_id(ALICE, metadata) != _pub(ALICE)
    assert len({payer_id(ALICE, metadata), payer_id(ALICE, b"\x06" * 16), payer_id(BOB, metadata)}) == 3
    assert key != offer_path_session_key(ALICE, metadata)
    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), key, metadata)
    assert request.payer_id == payer_id(ALICE, metadata)  # (and its signature verified as it was read back)
    assert InvoiceRequest.from_bytes(request.to_bytes()) == request


def test_a_refund_request_and_its_invoice() -> None:
    """A request not for an offer (merchant pays user): unsigned, its amount required; the invoice answering it."""
    refund = InvoiceRequest.refund(_pub(BOB), b"\x06" * 16, 7000, "a refund", absolute_expiry=NOW + 60)
    assert "signature" not in refund.tlvs and not refund.is_for_offer and refund.amount == 7000
    assert decode_invoice_request(refund.encode()) == refund
    invoice = _invoice(refund, secret=CAROL)
    invoice.check_response(refund, chain=CHAIN_HASH_MAINNET, now=NOW)
    assert invoice.node_id == _pub(CAROL) and invoice.amount == 7000
    with pytest.raises(Bolt12Error) as err:
        _resigned(invoice, CAROL, invoice_amount=7001).check_response(refund, chain=CHAIN_HASH_MAINNET, now=NOW)
    assert err.value.code == "wrong_amount"
    # an offer's request must be signed; a refund's signature, when there is one, must be right
    from lnpmsg.payments.bolt12.tlvs import INVOICE_REQUEST_TLVS

    request = InvoiceRequest.for_offer(_offer(offer_amount=5000), BOB, b"\x05" * 16)
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.from_bytes(INVOICE_REQUEST_TLVS.encode(request.tlvs.replace(signature=None)))
    assert err.value.code == "bad_signature"
    with pytest.raises(Bolt12Error) as err:
        InvoiceRequest.from_bytes(INVOICE_REQUEST_TLVS.encode(refund.tlvs.replace(signature=b"\x01" * 64)))
    assert err.value.code == "bad_signature"


_TEXT = st.text(max_size=40)


@settings(max_examples=60, deadline=None)
@given(amount=st.none() | st.integers(1, 2**64 - 1), description=_TEXT, issuer=st.none() | _TEXT, quantity_max=st.none() | st.integers(0, 2**64 - 1),
       expiry=st.none() | st.integers(0, 2**64 - 1), metadata=st.none() | st.binary(max_size=40),
       unknown=st.dictionaries(st.sampled_from([1, 33, 79, 1_000_000_001, 1_999_999_999]), st.binary(max_size=20), max_size=3))  # fmt: skip
def test_offers_round_trip(amount: int | None, description: str, issuer: str | None, quantity_max: int | None, expiry: int | None,
                           metadata: bytes | None, unknown: dict[int, bytes]) -> None:  # fmt: skip
    """Any offer built (every field's range, unknown odd records) reads back the same from its string,
    upper case and split by '+' too; its request and invoice carry it unchanged."""
    offer = _offer(offer_amount=amount, offer_description=description or "d", offer_issuer=issuer, offer_quantity_max=quantity_max,
                   offer_absolute_expiry=expiry, offer_metadata=metadata, unknown=unknown)  # fmt: skip
    text = offer.encode()
    assert decode_offer(text) == offer and decode_offer(text.upper()) == offer
    assert decode_offer("+\n".join(text[i : i + 50] for i in range(0, len(text), 50))) == offer
    quantity = None if quantity_max is None else max(1, min(quantity_max, 3)) if quantity_max else 7
    request = InvoiceRequest.for_offer(offer, BOB, b"\x05" * 16, amount_msat=None if amount else 1000, quantity=quantity)
    assert request.offer() == offer and request.offer().offer_id == offer.offer_id
    if (request.amount or request.expected_amount()) >= 2**64:  # (the offer's amount times the quantity: no invoice can ask it)
        with pytest.raises(Bolt12Error, match="out of range"):
            _invoice(request)
        return
    invoice = _invoice(request)
    assert decode_invoice(invoice.encode()) == invoice and invoice.tlvs.unknown == offer.tlvs.unknown
    invoice.check_response(request, chain=CHAIN_HASH_MAINNET, now=NOW)


_SIGNED_INVOICE = _invoice(InvoiceRequest.for_offer(_offer(offer_amount=5000, offer_paths=(_paths()[0][0],)), BOB, b"\x05" * 16)).to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_SIGNED_INVOICE) - 1), st.integers(1, 255), st.integers(0, 40))
def test_a_changed_invoice_is_refused_cleanly(position: int, xor: int, cut: int) -> None:
    """Any byte of a signed invoice changed (or its end cut off): refused with Bolt12Error, never another exception."""
    changed = bytearray(_SIGNED_INVOICE)
    changed[position] ^= xor
    for data in (bytes(changed), _SIGNED_INVOICE[: len(_SIGNED_INVOICE) - 1 - cut]):
        with pytest.raises(Bolt12Error):
            Invoice.from_bytes(data)
