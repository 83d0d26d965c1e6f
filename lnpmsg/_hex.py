"""Hex text to bytes, with errors that say what was wrong: the one parser of the
node ids, keys, hashes and other values the command line, the config file and
the control API take as hex.

:func:`parse_hex` raises ``ValueError``; each caller turns it into its own
error type (``ParamsError`` for a control call: :func:`lnpmsg.rpc.params.hex_param`,
``AddressError`` for a peer address, ...) and keeps the message.
"""

from __future__ import annotations

import binascii
import re

__all__ = ["parse_hex"]

#: characters of a bad value quoted in an error
_QUOTED = 80
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


def parse_hex(text: object, what: str, size: int | None = None, *, quote: bool = True) -> bytes:
    """``text`` as bytes: hex digits of either case and nothing else (no ``0x``, no spaces).

    ``size``: the bytes it must hold (``2 * size`` hex characters). ``what``
    names the value in the error, ``ValueError`` with one of::

        node_id must be a hex string, got int
        node_id is not hex (66 hex characters expected): '02zz...'
        node_id must be 33 bytes (66 hex characters), got 64: '02ab...'
        payload is not hex (an odd number of digits): 'abc'

    ``quote=False``: the error does not quote the text (a secret key must not
    reach a log; a caller that quotes the whole value itself).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a hex string, got {type(text).__name__}")
    quoted = f": {text[:_QUOTED]!r}" if quote else ""
    if not _HEX_DIGITS.fullmatch(text):
        expected = f" ({2 * size} hex characters expected)" if size is not None else ""
        raise ValueError(f"{what} is not hex{expected}{quoted}")
    if size is not None and len(text) != 2 * size:
        raise ValueError(f"{what} must be {size} bytes ({2 * size} hex characters), got {len(text)}{quoted}")
    if len(text) % 2:
        raise ValueError(f"{what} is not hex (an odd number of digits){quoted}")
    return binascii.unhexlify(text)
