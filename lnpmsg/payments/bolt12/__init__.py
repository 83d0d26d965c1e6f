"""BOLT 12 offers, sans-IO: the string form, the Merkle-tree signatures, and the four TLV streams.

- :mod:`.strings`: ``lno1``/``lnr1``/``lni1`` text, bech32 without checksum, ``+`` joins;
- :mod:`.merkle`: the Merkle root of a TLV stream and its BIP 340 signatures;
- :mod:`.offer`, :mod:`.invoice_request`, :mod:`.invoice`, :mod:`.invoice_error`:
  each form read with the spec's reader requirements (:class:`Bolt12Error` with
  a ``code``), built, and written.
"""

from lnpmsg.payments.bolt12.errors import Bolt12Error
from lnpmsg.payments.bolt12.fields import PayInfo
from lnpmsg.payments.bolt12.invoice import Invoice, decode_invoice
from lnpmsg.payments.bolt12.invoice_error import InvoiceError
from lnpmsg.payments.bolt12.invoice_request import InvoiceRequest, decode_invoice_request
from lnpmsg.payments.bolt12.offer import Offer, decode_offer

__all__ = ["Bolt12Error", "Invoice", "InvoiceError", "InvoiceRequest", "Offer", "PayInfo", "decode_invoice", "decode_invoice_request",
           "decode_offer"]
