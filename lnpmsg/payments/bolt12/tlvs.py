"""The TLV streams of BOLT 12 (``offer``, ``invoice_request``, ``invoice``, ``invoice_error``),
their type ranges, and the decode step every reader shares (:func:`decode_stream`)."""

from __future__ import annotations

from collections.abc import Iterable

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.fields import bip353_name, blinded_paths, fallbacks, payinfos, utf8
from lnpmsg.payments.bolt12.merkle import sign
from lnpmsg.wire.bolt1 import CHAIN_HASH_MAINNET
from lnpmsg.wire.errors import UnknownEvenTypeError, WireError
from lnpmsg.wire.fields import array_of, chain_hash, fixed_bytes, point_on_curve, rest_bytes, sha256, tu32, tu64
from lnpmsg.wire.tlv import TlvSchema, TlvStream

__all__ = ["BITCOIN", "INVOICE_ERROR_TLVS", "INVOICE_REQUEST_TLVS", "INVOICE_TLVS", "OFFER_RANGES", "OFFER_TLVS", "INVREQ_RANGES",
           "INVOICE_RANGES", "SIGNATURE_RANGE", "decode_stream", "in_ranges", "signed", "types_of", "unknown_even_bits"]

#: the chain an offer without ``offer_chains`` is for
BITCOIN = CHAIN_HASH_MAINNET

_OFFER_RECORDS = {
    2: ("offer_chains", array_of(chain_hash)),
    4: ("offer_metadata", rest_bytes),
    6: ("offer_currency", utf8),
    8: ("offer_amount", tu64),
    10: ("offer_description", utf8),
    12: ("offer_features", rest_bytes),
    14: ("offer_absolute_expiry", tu64),
    16: ("offer_paths", blinded_paths),
    18: ("offer_issuer", utf8),
    20: ("offer_quantity_max", tu64),
    22: ("offer_issuer_id", point_on_curve),
}
_INVREQ_RECORDS = {
    0: ("invreq_metadata", rest_bytes),
    **_OFFER_RECORDS,
    80: ("invreq_chain", chain_hash),
    82: ("invreq_amount", tu64),
    84: ("invreq_features", rest_bytes),
    86: ("invreq_quantity", tu64),
    88: ("invreq_payer_id", point_on_curve),
    89: ("invreq_payer_note", utf8),
    90: ("invreq_paths", blinded_paths),
    91: ("invreq_bip_353_name", bip353_name),
}
_SIGNATURE = {240: ("signature", fixed_bytes(64, "bip340sig"))}

OFFER_TLVS = TlvSchema(_OFFER_RECORDS, name="offer")
INVOICE_REQUEST_TLVS = TlvSchema({**_INVREQ_RECORDS, **_SIGNATURE}, name="invoice_request")
INVOICE_TLVS = TlvSchema({
    **_INVREQ_RECORDS,
    160: ("invoice_paths", blinded_paths),
    162: ("invoice_blindedpay", payinfos),
    164: ("invoice_created_at", tu64),
    166: ("invoice_relative_expiry", tu32),
    168: ("invoice_payment_hash", sha256),
    170: ("invoice_amount", tu64),
    172: ("invoice_fallbacks", fallbacks),
    174: ("invoice_features", rest_bytes),
    176: ("invoice_node_id", point_on_curve),
    **_SIGNATURE,
}, name="invoice")  # fmt: skip
INVOICE_ERROR_TLVS = TlvSchema({1: ("erroneous_field", tu64), 3: ("suggested_value", rest_bytes), 5: ("error", utf8)}, name="invoice_error")

#: the types each form may carry (inclusive ranges); signature records (240-1000) apart
OFFER_RANGES = ((1, 79), (1_000_000_000, 1_999_999_999))
INVREQ_RANGES = ((0, 159), (1_000_000_000, 2_999_999_999))
INVOICE_RANGES = ((0, 239), (1_000_000_000, 3_999_999_999))
SIGNATURE_RANGE = (240, 1000)


def in_ranges(kind: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(low <= kind <= high for low, high in ranges)


def types_of(stream: TlvStream, schema: TlvSchema) -> list[int]:
    """Every record type in ``stream``, known and unknown."""
    return sorted([schema.types[name] for name in stream] + list(stream.unknown))


def decode_stream(schema: TlvSchema, data: bytes, ranges: Iterable[tuple[int, int]], *, signatures: bool) -> TlvStream:
    """Decode ``data`` as ``schema``, every record in ``ranges`` (or, with ``signatures``, the signature
    range). :class:`Bolt12Error`: ``malformed`` (bad TLV, unknown even type) or ``out_of_range``."""
    if not data:
        raise Bolt12Error(f"{schema.name}: empty", "malformed")
    try:
        stream = schema.decode_stream(data)
    except UnknownEvenTypeError as exc:
        raise Bolt12Error(f"{schema.name}: unknown even TLV type {exc.type}", "unknown_even_type") from None
    except WireError as exc:
        raise Bolt12Error(str(exc), "malformed") from None
    ranges = tuple(ranges) + ((SIGNATURE_RANGE,) if signatures else ())
    for kind in types_of(stream, schema):
        if not in_ranges(kind, ranges):
            raise Bolt12Error(f"{schema.name}: TLV type {kind} is outside its ranges", "out_of_range")
    return stream


def unknown_even_bits(features: bytes, known: Iterable[int] = ()) -> list[int]:
    """The even (required) bits set in ``features`` that are not in ``known``."""
    value = int.from_bytes(features, "big")
    known_set = set(known)
    return [bit for bit in range(0, value.bit_length(), 2) if value >> bit & 1 and bit not in known_set]


def signed(schema: TlvSchema, stream: TlvStream, message_name: str, secret: bytes, aux: bytes | None = None) -> bytes:
    """``stream`` (without its ``signature``) encoded with the BIP 340 ``signature`` of ``secret`` in its
    place: among the records by type (records of the experimental ranges come after it)."""
    try:
        unsigned = schema.encode(stream.replace(signature=None))
        return schema.encode(stream.replace(signature=sign(message_name, unsigned, secret, aux=aux)))
    except WireError as exc:
        raise Bolt12Error(str(exc), "malformed") from None
