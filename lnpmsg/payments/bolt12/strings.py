"""The text form of BOLT 12 objects: ``hrp`` ``1`` bech32 data, no checksum (BOLT 12 "Encoding").

Readers accept all lower or all upper case, and drop a ``+`` followed by
whitespace between two characters (a long string split over lines or posts);
a ``+`` anywhere else fails. The data's last bits are padding: fewer than 5
bits, all zero (as BIP 173 has them), else the string is refused.
"""

from __future__ import annotations

import re

from lnpmsg.payments.bech32 import bytes_to_words
from lnpmsg.payments.bolt12.errors import Bolt12Error

__all__ = ["MAX_STRING_LENGTH", "decode_string", "encode_string"]

#: the longest string read: 7089 is what a QR code holds (as BOLT 11's limit here), and bounds the work
#: a pasted string causes; an offer with a few blinded paths takes well under half of it
MAX_STRING_LENGTH = 7089 * 2
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {c: i for i, c in enumerate(_CHARSET)}
#: a ``+`` and the whitespace after it, between two characters of the string
_JOIN = re.compile(r"(?<=[0-9A-Za-z])\+\s*(?=[0-9A-Za-z])")


def decode_string(text: str, hrp: str | None = None) -> tuple[str, bytes]:
    """The human-readable prefix (lower case) and the data bytes of a BOLT 12 string; ``hrp`` given,
    the prefix must be it. :class:`Bolt12Error` (code ``bad_string``) for anything else."""
    if not isinstance(text, str):
        raise Bolt12Error("a BOLT 12 string must be text", "bad_string")
    if len(text) > MAX_STRING_LENGTH:
        raise Bolt12Error(f"{len(text)} characters: at most {MAX_STRING_LENGTH} are read", "bad_string")
    joined = _JOIN.sub("", text)
    if not joined.isascii() or not joined.isalnum():
        raise Bolt12Error("only letters and digits, with '+' (then optional whitespace) between two of them", "bad_string")
    if joined.lower() != joined and joined.upper() != joined:
        raise Bolt12Error("all lower case or all upper case, not mixed", "bad_string")
    joined = joined.lower()
    prefix, sep, data = joined.partition("1")
    if not sep or not prefix:
        raise Bolt12Error("no human-readable prefix before a '1'", "bad_string")
    if hrp is not None and prefix != hrp:
        raise Bolt12Error(f"prefix {prefix!r}, expected {hrp!r}", "wrong_prefix")
    try:
        words = [_VALUES[c] for c in data]
    except KeyError as exc:
        raise Bolt12Error(f"character {exc.args[0]!r} is not in the bech32 alphabet", "bad_string") from None
    nbits = 5 * len(words)
    pad = nbits % 8
    if pad >= 5:
        raise Bolt12Error(f"{pad} bits of padding: bech32 pads with at most 4", "bad_string")
    value = 0
    for w in words:
        value = value << 5 | w
    if value & ((1 << pad) - 1):
        raise Bolt12Error("non-zero padding bits", "bad_string")
    return prefix, (value >> pad).to_bytes(nbits // 8, "big")


def encode_string(hrp: str, data: bytes) -> str:
    """The lower-case string of ``data`` under prefix ``hrp`` (no ``+`` splits)."""
    return hrp + "1" + "".join(_CHARSET[w] for w in bytes_to_words(data))
