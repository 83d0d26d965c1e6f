"""BOLT 12 offers: the sans-IO codec, and the app that makes, answers and pays offers.

- :mod:`.strings`: ``lno1``/``lnr1``/``lni1`` text, bech32 without checksum, ``+`` joins;
- :mod:`.merkle`: the Merkle root of a TLV stream and its BIP 340 signatures;
- :mod:`.offer`, :mod:`.invoice_request`, :mod:`.invoice`, :mod:`.invoice_error`:
  each form read with the spec's reader requirements (:class:`Bolt12Error` with
  a ``code``), built, and written;
- :mod:`.keys`: keys derived from the node secret (each request's transient
  ``invreq_payer_id``, the signing key of an offer that hides the node);
- :mod:`.app` (``OffersApp``), :mod:`.refunds` (its requests not for an offer), :mod:`.store`,
  :mod:`.commands`: the shells.

Every name resolves on first use, so the CLI's parser loads none of them.
"""

from lnpmsg._lazy import lazy_exports

#: the modules of this package that are trio or file shells; every other module is sans-IO
SHELL_MODULES = frozenset({"app", "refunds", "store", "commands"})

__all__ = ["SHELL_MODULES", "Bolt12Error", "Invoice", "InvoiceError", "InvoiceRequest", "OffersApp", "Offer", "PayInfo", "decode_invoice",
           "decode_invoice_request", "decode_offer"]

_P = "lnpmsg.payments.bolt12."
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "Bolt12Error": _P + "errors",
        "PayInfo": _P + "fields",
        "Invoice": _P + "invoice",
        "decode_invoice": _P + "invoice",
        "InvoiceError": _P + "invoice_error",
        "InvoiceRequest": _P + "invoice_request",
        "decode_invoice_request": _P + "invoice_request",
        "Offer": _P + "offer",
        "decode_offer": _P + "offer",
        "OffersApp": _P + "app",
    },
)
