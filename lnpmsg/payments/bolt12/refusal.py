"""An invoice request (or invoice) this node answers with an ``invoice_error``, or ignores."""

from __future__ import annotations

from lnpmsg.payments.bolt12.invoice_error import InvoiceError

__all__ = ["Refused", "refuse"]


class Refused(Exception):
    """Refused: ``error`` is the ``invoice_error`` to answer with, None to answer nothing."""

    def __init__(self, why: str, error: InvoiceError | None) -> None:
        super().__init__(why)
        self.error = error


def refuse(why: str, field: int | None = None) -> Refused:
    """A refusal answered with an ``invoice_error`` saying ``why`` (about TLV ``field``, if given)."""
    return Refused(why, InvoiceError(why, erroneous_field=field))
