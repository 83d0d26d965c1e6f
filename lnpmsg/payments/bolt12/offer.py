"""BOLT 12 offers (``lno1...``): read with every reader requirement, build, write.

:func:`decode_offer` refuses what BOLT 12 says not to respond to and can be
told from the offer alone (fields out of range, unknown even features,
``offer_amount`` without a description or zero, ``offer_currency`` without an
amount, no ``offer_issuer_id`` nor ``offer_paths``, empty ``offer_chains``, a
path without hops); :meth:`Offer.check_usable` adds the node's own conditions
(its chain, the time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.merkle import merkle_root
from lnpmsg.payments.bolt12.strings import decode_string, encode_string
from lnpmsg.payments.bolt12.tlvs import BITCOIN, OFFER_RANGES, OFFER_TLVS, decode_stream, unknown_even_bits
from lnpmsg.payments.onion.blinding import BlindedPath
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.tlv import TlvStream

__all__ = ["OFFER_HRP", "Offer", "check_offer_fields", "decode_offer"]

OFFER_HRP = "lno"


@dataclass(frozen=True, slots=True)
class Offer:
    """An offer: its records (``tlvs``, by the spec's names; unknown odd ones kept) as read or built."""

    tlvs: TlvStream

    @classmethod
    def build(cls, unknown: dict[int, bytes] | None = None, **fields: Any) -> Offer:
        """An offer of ``fields`` (the spec's names: ``offer_amount=1000, offer_description="..."``),
        checked as a reader would check it (:class:`Bolt12Error` if it would be refused)."""
        try:
            stream = OFFER_TLVS.stream(fields, unknown=unknown)
        except WireError as exc:
            raise Bolt12Error(str(exc), "malformed") from None
        return cls.from_bytes(OFFER_TLVS.encode(stream))

    @classmethod
    def from_bytes(cls, data: bytes) -> Offer:
        """Read an offer's TLV stream (:class:`Bolt12Error` for one a reader must not respond to)."""
        stream = decode_stream(OFFER_TLVS, data, OFFER_RANGES, signatures=False)
        check_offer_fields(stream)
        return cls(stream)

    def to_bytes(self) -> bytes:
        return OFFER_TLVS.encode(self.tlvs)

    def encode(self) -> str:
        """The ``lno1...`` string."""
        return encode_string(OFFER_HRP, self.to_bytes())

    @property
    def offer_id(self) -> bytes:
        """The Merkle root of the offer's records: names it (it is what an invoice request's offer part hashes to)."""
        return merkle_root(self.to_bytes())

    @property
    def chains(self) -> tuple[bytes, ...]:
        """The chains it may be paid on (bitcoin alone when it names none)."""
        return self.tlvs.get("offer_chains") or (BITCOIN,)

    @property
    def amount(self) -> int | None:
        return self.tlvs.get("offer_amount")

    @property
    def currency(self) -> str | None:
        return self.tlvs.get("offer_currency")

    @property
    def description(self) -> str | None:
        return self.tlvs.get("offer_description")

    @property
    def issuer(self) -> str | None:
        return self.tlvs.get("offer_issuer")

    @property
    def issuer_id(self) -> bytes | None:
        return self.tlvs.get("offer_issuer_id")

    @property
    def paths(self) -> tuple[BlindedPath, ...]:
        return self.tlvs.get("offer_paths") or ()

    @property
    def quantity_max(self) -> int | None:
        return self.tlvs.get("offer_quantity_max")

    @property
    def absolute_expiry(self) -> int | None:
        return self.tlvs.get("offer_absolute_expiry")

    def check_usable(self, chain: bytes, now: float) -> None:
        """:class:`Bolt12Error` unless this node may respond: the offer is for ``chain`` (``wrong_chain``)
        and not past its ``offer_absolute_expiry`` at ``now`` (``expired``)."""
        if chain not in self.chains:
            raise Bolt12Error("the offer is not for this node's chain", "wrong_chain")
        expiry = self.absolute_expiry
        if expiry is not None and now > expiry:
            raise Bolt12Error(f"the offer expired at {expiry}", "expired")

    def to_dict(self) -> dict[str, Any]:
        """The offer's fields for JSON (bytes as hex, paths as their ``blinded_path`` hex)."""
        return stream_to_dict(self.tlvs)


def stream_to_dict(stream: TlvStream) -> dict[str, Any]:
    """A decoded stream's records for JSON: bytes as hex, blinded paths and payinfos as dicts."""
    out: dict[str, Any] = {}
    for name, value in stream.items():
        out[name] = _jsonable(value)
    for kind, raw in stream.unknown.items():
        out[str(kind)] = raw.hex()
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, BlindedPath):
        return {"first_node_id": value.first_node_id.hex(), "first_path_key": value.first_path_key.hex(), "num_hops": len(value.hops)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def check_offer_fields(stream: TlvStream) -> None:
    """The offer reader rules on the ``offer_*`` records of ``stream`` (an offer's, or an invoice
    request's for an offer): :class:`Bolt12Error` for an offer not to respond to."""
    features = stream.get("offer_features")
    if features and (bits := unknown_even_bits(features)):
        raise Bolt12Error(f"offer_features requires unknown feature bit(s) {bits}", "unknown_required_feature")
    if stream.get("offer_chains") is not None and not stream["offer_chains"]:
        raise Bolt12Error("offer_chains is present but names no chain", "malformed")
    amount = stream.get("offer_amount")
    if amount is not None and stream.get("offer_description") is None:
        raise Bolt12Error("offer_amount without offer_description", "missing_field")
    if amount is not None and amount <= 0:
        raise Bolt12Error("offer_amount must be greater than zero", "malformed")
    if stream.get("offer_currency") is not None and amount is None:
        raise Bolt12Error("offer_currency without offer_amount", "missing_field")
    if stream.get("offer_issuer_id") is None and not stream.get("offer_paths"):
        raise Bolt12Error("neither offer_issuer_id nor offer_paths", "missing_field")


def decode_offer(text: str) -> Offer:
    """Read an ``lno1...`` string (:class:`Bolt12Error` for one a reader must not respond to)."""
    _, data = decode_string(text, OFFER_HRP)
    return Offer.from_bytes(data)
