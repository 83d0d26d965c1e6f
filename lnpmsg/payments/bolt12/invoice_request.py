"""BOLT 12 invoice requests (``lnr1...``, or the ``invoice_request`` of an onion message).

:meth:`InvoiceRequest.for_offer` is the payer's writer (the offer's records
copied, ``invreq_metadata`` and a transient ``invreq_payer_id``, signed);
:meth:`InvoiceRequest.from_bytes` the reader rules that need no offer store
(required fields, ranges, features, signature, BIP 353 name, the
no-offer case); :meth:`InvoiceRequest.check_against_offer` the issuer's rules
for a request of one of its offers (quantity, the expected amount).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import coincurve

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.fields import BIP353_CHARS
from lnpmsg.payments.bolt12.merkle import verify
from lnpmsg.payments.bolt12.offer import Offer, check_offer_fields, stream_to_dict
from lnpmsg.payments.bolt12.strings import decode_string, encode_string
from lnpmsg.payments.bolt12.tlvs import BITCOIN, INVOICE_REQUEST_TLVS, INVREQ_RANGES, OFFER_TLVS, decode_stream, in_ranges, signed, unknown_even_bits
from lnpmsg.payments.onion.blinding import BlindedPath
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.tlv import TlvStream

__all__ = ["INVOICE_REQUEST_HRP", "InvoiceRequest", "decode_invoice_request"]

INVOICE_REQUEST_HRP = "lnr"
_NAME = "invoice_request"


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    """A signed invoice request: its records (the offer's among them) by the spec's names."""

    tlvs: TlvStream

    @classmethod
    def for_offer(cls, offer: Offer, payer_secret: bytes, metadata: bytes, *, amount_msat: int | None = None, quantity: int | None = None,
                  chain: bytes = BITCOIN, payer_note: str | None = None, aux: bytes | None = None) -> InvoiceRequest:  # fmt: skip
        """A request for an invoice of ``offer``, signed by the transient key ``payer_secret`` (its public key
        is ``invreq_payer_id``); ``metadata`` unpredictable bytes. ``chain`` must be one of the offer's
        (written as ``invreq_chain`` unless it is bitcoin). :class:`Bolt12Error` for a request the issuer
        must reject (no amount for an offer without one, a quantity the offer does not allow, ...)."""
        fields: dict[str, Any] = dict(offer.tlvs)
        if chain not in offer.chains:
            raise Bolt12Error("the offer is not for this chain", "wrong_chain")
        payer_id = coincurve.PrivateKey(payer_secret).public_key.format()
        fields.update(invreq_metadata=metadata, invreq_payer_id=payer_id, invreq_amount=amount_msat, invreq_quantity=quantity,
                      invreq_payer_note=payer_note, invreq_chain=None if chain == BITCOIN else chain)  # fmt: skip
        try:
            stream = INVOICE_REQUEST_TLVS.stream(fields, unknown=dict(offer.tlvs.unknown))
        except WireError as exc:
            raise Bolt12Error(str(exc), "malformed") from None
        request = cls.from_bytes(signed(INVOICE_REQUEST_TLVS, stream, _NAME, payer_secret, aux))
        request.check_against_offer()
        return request

    @classmethod
    def from_bytes(cls, data: bytes) -> InvoiceRequest:
        """Read a signed request (:class:`Bolt12Error` for one the reader must reject)."""
        stream = decode_stream(INVOICE_REQUEST_TLVS, data, INVREQ_RANGES, signatures=True)
        for name in ("invreq_payer_id", "invreq_metadata"):
            if stream.get(name) is None:
                raise Bolt12Error(f"no {name}", "missing_field")
        features = stream.get("invreq_features")
        if features and (bits := unknown_even_bits(features)):
            raise Bolt12Error(f"invreq_features requires unknown feature bit(s) {bits}", "unknown_required_feature")
        signature = stream.get("signature")
        for_offer = stream.get("offer_issuer_id") is not None or bool(stream.get("offer_paths"))
        # (a request without an offer, published as a refund, carries none: BOLT 12's writer must not sign it)
        if (signature is None and for_offer) or (signature is not None and not verify(_NAME, data, signature, stream["invreq_payer_id"])):
            raise Bolt12Error("the signature is not invreq_payer_id's", "bad_signature")
        name = stream.get("invreq_bip_353_name")
        if name is not None and not set(name.name + name.domain) <= BIP353_CHARS:
            raise Bolt12Error("invreq_bip_353_name holds characters BIP 353 does not allow", "malformed")
        request = cls(stream)
        if request.is_for_offer:
            check_offer_fields(stream)
        else:
            for name in ("offer_chains", "offer_features", "offer_quantity_max"):
                if stream.get(name) is not None:
                    raise Bolt12Error(f"{name} in a request not for an offer", "malformed")
            if stream.get("invreq_amount") is None:
                raise Bolt12Error("no invreq_amount in a request not for an offer", "missing_field")
        return request

    @classmethod
    def refund(cls, payer_id: bytes, metadata: bytes, amount_msat: int, description: str, *, chain: bytes = BITCOIN,
               absolute_expiry: int | None = None, issuer: str | None = None, paths: Sequence[BlindedPath] = ()) -> InvoiceRequest:  # fmt: skip
        """A request not for an offer (BOLT 12's merchant-pays-user flow, a refund): its payer offers to
        pay ``amount_msat``; whoever it is meant for answers with an invoice sent along one of ``paths``
        (``invreq_paths``: blinded paths to the payer), else to ``payer_id``. Unsigned."""
        fields = {"invreq_metadata": metadata, "invreq_payer_id": payer_id, "invreq_amount": amount_msat, "offer_description": description,
                  "offer_absolute_expiry": absolute_expiry, "offer_issuer": issuer, "invreq_chain": None if chain == BITCOIN else chain,
                  "invreq_paths": tuple(paths) or None}  # fmt: skip
        try:
            return cls.from_bytes(INVOICE_REQUEST_TLVS.encode(INVOICE_REQUEST_TLVS.stream(fields)))
        except WireError as exc:
            raise Bolt12Error(str(exc), "malformed") from None

    def to_bytes(self) -> bytes:
        return INVOICE_REQUEST_TLVS.encode(self.tlvs)

    def encode(self) -> str:
        """The ``lnr1...`` string."""
        return encode_string(INVOICE_REQUEST_HRP, self.to_bytes())

    @property
    def is_for_offer(self) -> bool:
        """Whether it answers an offer (it has ``offer_issuer_id`` or ``offer_paths``)."""
        return self.tlvs.get("offer_issuer_id") is not None or bool(self.tlvs.get("offer_paths"))

    def offer(self) -> Offer:
        """The offer it copies (its ``offer_*`` records and the unknown ones of the offer's ranges)."""
        names = set(OFFER_TLVS.types)
        unknown = {k: v for k, v in self.tlvs.unknown.items() if 1 <= k <= 79 or 1_000_000_000 <= k <= 1_999_999_999}
        return Offer(OFFER_TLVS.stream({k: v for k, v in self.tlvs.items() if k in names}, unknown=unknown))

    @property
    def chain(self) -> bytes:
        return self.tlvs.get("invreq_chain") or BITCOIN

    @property
    def payer_id(self) -> bytes:
        return self.tlvs["invreq_payer_id"]

    @property
    def metadata(self) -> bytes:
        return self.tlvs["invreq_metadata"]

    @property
    def amount(self) -> int | None:
        return self.tlvs.get("invreq_amount")

    @property
    def quantity(self) -> int | None:
        return self.tlvs.get("invreq_quantity")

    def expected_amount(self) -> int | None:
        """The offer's amount times the quantity (None: the offer names none). :class:`Bolt12Error`
        (``unsupported_currency``) for an amount in a currency other than the chain's: no rates here."""
        offer_amount = self.tlvs.get("offer_amount")
        if offer_amount is None:
            return None
        if self.tlvs.get("offer_currency") is not None:
            raise Bolt12Error("the offer's amount is in a currency this node does not convert", "unsupported_currency")
        return offer_amount * (self.quantity or 1)

    def check_against_offer(self) -> None:
        """The issuer's rules for a request of an offer it knows (the offer's fields matched already):
        :class:`Bolt12Error` with the ``field`` it is about (``invreq_quantity``, ``invreq_amount``)."""
        quantity_max, quantity = self.tlvs.get("offer_quantity_max"), self.quantity
        if quantity_max is not None:
            if quantity is None or quantity == 0 or (quantity_max and quantity > quantity_max):
                raise Bolt12Error(f"invreq_quantity must be 1 to {quantity_max or 'any'}", "bad_quantity")
        elif quantity is not None:
            raise Bolt12Error("invreq_quantity for an offer without offer_quantity_max", "bad_quantity")
        expected = self.expected_amount()
        if expected is None and self.amount is None:
            raise Bolt12Error("no invreq_amount for an offer without an amount", "missing_amount")
        if expected is not None and self.amount is not None and self.amount < expected:
            raise Bolt12Error(f"invreq_amount {self.amount} msat is below the offer's {expected}", "amount_too_low")

    def invoice_fields(self) -> TlvStream:
        """Every non-signature record, unknown ones included: what the invoice copies."""
        return TlvStream({k: v for k, v in self.tlvs.items() if k != "signature"},
                         unknown={k: v for k, v in self.tlvs.unknown.items() if in_ranges(k, INVREQ_RANGES)})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return stream_to_dict(self.tlvs)


def decode_invoice_request(text: str) -> InvoiceRequest:
    """Read an ``lnr1...`` string."""
    _, data = decode_string(text, INVOICE_REQUEST_HRP)
    return InvoiceRequest.from_bytes(data)
