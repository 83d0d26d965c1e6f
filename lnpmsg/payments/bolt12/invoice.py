"""BOLT 12 invoices (``lni1...``, or the ``invoice`` of an onion message).

:meth:`Invoice.for_request` is the issuer's writer (the request's records
copied, the payment terms and blinded paths added, signed by
``invoice_node_id``); :meth:`Invoice.from_bytes` the reader rules on the
invoice alone (required fields, features, paths and payinfos, signature);
:meth:`Invoice.check_response` those on an invoice answering our request
(fields mirrored exactly, the node id expected, the amount asked, not expired).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import coincurve

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.fields import PayInfo
from lnpmsg.payments.bolt12.invoice_request import InvoiceRequest
from lnpmsg.payments.bolt12.merkle import verify
from lnpmsg.payments.bolt12.offer import stream_to_dict
from lnpmsg.payments.bolt12.strings import decode_string, encode_string
from lnpmsg.payments.bolt12.tlvs import BITCOIN, INVOICE_RANGES, INVOICE_TLVS, decode_stream, in_ranges, signed, unknown_even_bits
from lnpmsg.payments.onion.blinding import BlindedPath
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.tlv import TlvStream

__all__ = ["DEFAULT_RELATIVE_EXPIRY", "INVOICE_HRP", "MIRRORED_RANGES", "MPP_OPTIONAL", "Invoice", "decode_invoice"]

INVOICE_HRP = "lni"
#: seconds an invoice without ``invoice_relative_expiry`` may be paid
DEFAULT_RELATIVE_EXPIRY = 7200
#: the records an invoice copies from the request it answers: they must match it exactly
MIRRORED_RANGES = ((0, 159), (1_000_000_000, 2_999_999_999))
#: ``invoice_features`` bits of multi-part payments (BOLT 9's basic_mpp): the payer may split the payment
#: over several parts and blinded paths (17: optional), or must be able to (16: compulsory)
MPP_BITS = (16, 17)
#: invoice feature bits a payer here can honour: MPP (it pays across several blinded paths at once)
KNOWN_INVOICE_FEATURES = MPP_BITS
#: what our invoices say: MPP optional (the payments app gathers the parts of a payment to us)
MPP_OPTIONAL = (1 << 17).to_bytes(3, "big")
_NAME = "invoice"


@dataclass(frozen=True, slots=True)
class Invoice:
    """A signed invoice: its records by the spec's names."""

    tlvs: TlvStream

    @classmethod
    def for_request(cls, request: InvoiceRequest, node_secret: bytes, *, payment_hash: bytes, amount_msat: int, created_at: int,
                    paths: Sequence[tuple[BlindedPath, PayInfo]], relative_expiry: int | None = None,
                    features: bytes | None = None, aux: bytes | None = None) -> Invoice:  # fmt: skip
        """The invoice answering ``request``, signed by ``node_secret`` (its public key is ``invoice_node_id``)."""
        base = request.invoice_fields()
        fields: dict[str, Any] = dict(base)
        fields.update(invoice_paths=tuple(p for p, _ in paths), invoice_blindedpay=tuple(i for _, i in paths), invoice_created_at=created_at,
                      invoice_relative_expiry=relative_expiry, invoice_payment_hash=payment_hash, invoice_amount=amount_msat,
                      invoice_features=features, invoice_node_id=coincurve.PrivateKey(node_secret).public_key.format())  # fmt: skip
        try:
            stream = INVOICE_TLVS.stream(fields, unknown=dict(base.unknown))
        except WireError as exc:
            raise Bolt12Error(str(exc), "malformed") from None
        return cls.from_bytes(signed(INVOICE_TLVS, stream, _NAME, node_secret, aux))

    @classmethod
    def from_bytes(cls, data: bytes) -> Invoice:
        """Read a signed invoice (:class:`Bolt12Error` for one the reader must reject)."""
        stream = decode_stream(INVOICE_TLVS, data, INVOICE_RANGES, signatures=True)
        for name in ("invoice_amount", "invoice_created_at", "invoice_payment_hash", "invoice_node_id", "invoice_blindedpay"):
            if stream.get(name) is None:
                raise Bolt12Error(f"no {name}", "missing_field")
        features = stream.get("invoice_features")
        if features and (bits := unknown_even_bits(features, KNOWN_INVOICE_FEATURES)):
            raise Bolt12Error(f"invoice_features requires unknown feature bit(s) {bits}", "unknown_required_feature")
        paths = stream.get("invoice_paths") or ()
        if not paths:
            raise Bolt12Error("no invoice_paths", "missing_field")
        if len(stream["invoice_blindedpay"]) != len(paths):
            raise Bolt12Error(f"{len(stream['invoice_blindedpay'])} blinded_payinfo for {len(paths)} paths", "malformed")
        signature = stream.get("signature")
        if signature is None or not verify(_NAME, data, signature, stream["invoice_node_id"]):
            raise Bolt12Error("the signature is not invoice_node_id's", "bad_signature")
        invoice = cls(stream)
        if not invoice.usable_paths():
            raise Bolt12Error("no blinded path whose features this node knows", "no_usable_path")
        return invoice

    def to_bytes(self) -> bytes:
        return INVOICE_TLVS.encode(self.tlvs)

    def encode(self) -> str:
        """The ``lni1...`` string."""
        return encode_string(INVOICE_HRP, self.to_bytes())

    @property
    def amount(self) -> int:
        return self.tlvs["invoice_amount"]

    @property
    def payment_hash(self) -> bytes:
        return self.tlvs["invoice_payment_hash"]

    @property
    def node_id(self) -> bytes:
        return self.tlvs["invoice_node_id"]

    @property
    def created_at(self) -> int:
        return self.tlvs["invoice_created_at"]

    @property
    def expires_at(self) -> int:
        relative = self.tlvs.get("invoice_relative_expiry")
        return self.created_at + (DEFAULT_RELATIVE_EXPIRY if relative is None else relative)

    @property
    def mpp(self) -> bool:
        """The invoice takes a payment in several parts (either MPP bit)."""
        value = int.from_bytes(self.tlvs.get("invoice_features") or b"", "big")
        return any(value >> bit & 1 for bit in MPP_BITS)

    @property
    def chain(self) -> bytes:
        return self.tlvs.get("invreq_chain") or BITCOIN

    def usable_paths(self) -> list[tuple[BlindedPath, PayInfo]]:
        """The paths, in the invoice's order of preference, whose payinfo requires no feature we do not know."""
        return [(p, i) for p, i in zip(self.tlvs["invoice_paths"], self.tlvs["invoice_blindedpay"], strict=True)
                if not unknown_even_bits(i.features)]  # fmt: skip

    def check_response(self, request: InvoiceRequest, *, chain: bytes, now: float, sent_to: bytes | None = None) -> None:
        """The rules on an invoice answering ``request`` (sent to the final blinded node ``sent_to`` of an
        offer path when the offer has no issuer id): :class:`Bolt12Error` for one to reject."""
        if self.chain != chain:
            raise Bolt12Error("the invoice is for another chain", "wrong_chain")
        if now > self.expires_at:
            raise Bolt12Error(f"the invoice expired at {self.expires_at}", "expired")
        if _mirrored(self.tlvs) != _mirrored(request.tlvs):
            raise Bolt12Error("the invoice does not repeat the request's fields exactly", "mismatch")
        issuer = request.tlvs.get("offer_issuer_id")
        expected_node = issuer if issuer is not None else sent_to
        if expected_node is not None and self.node_id != expected_node:
            raise Bolt12Error("invoice_node_id is not the offer's issuer", "wrong_node_id")
        if request.amount is not None and self.amount != request.amount:
            raise Bolt12Error(f"invoice_amount {self.amount} is not the {request.amount} msat asked", "wrong_amount")
        expected = request.expected_amount() if request.amount is None else None
        if expected is not None and self.amount != expected:
            raise Bolt12Error(f"invoice_amount {self.amount} is not the offer's {expected} msat", "wrong_amount")

    def to_dict(self) -> dict[str, Any]:
        return stream_to_dict(self.tlvs)


def _mirrored(stream: TlvStream) -> tuple[dict[str, Any], dict[int, bytes]]:
    known = {k: v for k, v in stream.items() if INVOICE_TLVS.types[k] < 160}
    return known, {k: v for k, v in stream.unknown.items() if in_ranges(k, MIRRORED_RANGES)}


def decode_invoice(text: str) -> Invoice:
    """Read an ``lni1...`` string."""
    _, data = decode_string(text, INVOICE_HRP)
    return Invoice.from_bytes(data)
