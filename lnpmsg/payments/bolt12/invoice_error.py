"""BOLT 12 ``invoice_error``: why a request (or an invoice) was refused."""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.tlvs import INVOICE_ERROR_TLVS
from lnpmsg.wire.errors import WireError

__all__ = ["InvoiceError"]


@dataclass(frozen=True, slots=True)
class InvoiceError:
    """An ``invoice_error``: the ``error`` text, the field it is about and a value to use instead (optional)."""

    error: str
    erroneous_field: int | None = None
    suggested_value: bytes | None = None

    def __post_init__(self) -> None:
        if self.suggested_value is not None and self.erroneous_field is None:
            raise Bolt12Error("suggested_value without erroneous_field", "malformed")

    def to_bytes(self) -> bytes:
        return INVOICE_ERROR_TLVS.encode(INVOICE_ERROR_TLVS.stream(error=self.error, erroneous_field=self.erroneous_field,
                                                                   suggested_value=self.suggested_value))  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> InvoiceError:
        """Read one; an absent ``error`` reads as an empty text (the reader rules are not written yet)."""
        try:
            stream = INVOICE_ERROR_TLVS.decode_stream(data)
        except WireError as exc:
            raise Bolt12Error(str(exc), "malformed") from None
        return cls(stream.get("error") or "", stream.get("erroneous_field"), stream.get("suggested_value"))
