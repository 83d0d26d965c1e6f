"""Bech32 (BIP 173) without the 90-character limit, as BOLT 11 reads it.

The checksum arithmetic is embit's (the BIP's reference code, already a
dependency); embit's own ``bech32_decode`` refuses strings longer than 90
characters, which BOLT 11 explicitly allows, so splitting and validating
the string happens here. Invoices use the original bech32 constant, never
bech32m.
"""

from __future__ import annotations

from embit.bech32 import (  # type: ignore[import-untyped]
    CHARSET,
    Encoding,
    bech32_create_checksum,
    bech32_hrp_expand,
    bech32_polymod,
)

__all__ = ["Bech32Error", "bech32_decode", "bech32_encode", "bytes_to_words", "int_to_words", "words_to_bytes", "words_to_int"]

_CHECKSUM_WORDS = 6
_BECH32_CONST = 1
_VALUES = {c: i for i, c in enumerate(CHARSET)}


class Bech32Error(ValueError):
    """The text is not valid bech32; ``code`` names the reason (``mixed_case``, ``no_separator``, ...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def bech32_decode(text: str, max_length: int) -> tuple[str, list[int]]:
    """Split ``text`` into its human-readable part (lower case) and data words (checksum removed)."""
    if len(text) > max_length:
        raise Bech32Error(f"too long: {len(text)} characters, at most {max_length} accepted", "too_long")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise Bech32Error("bech32 allows only printable ASCII characters", "bad_character")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("bech32 must be all lower case or all upper case, not mixed", "mixed_case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise Bech32Error("no '1' separating the human-readable part from the data", "no_separator")
    if len(text) - pos - 1 < _CHECKSUM_WORDS:
        raise Bech32Error("shorter than a bech32 checksum after the separator", "too_short")
    try:
        words = [_VALUES[c] for c in text[pos + 1 :]]
    except KeyError as exc:
        raise Bech32Error(f"character {exc.args[0]!r} is not in the bech32 alphabet", "bad_character") from None
    hrp = text[:pos]
    if bech32_polymod(bech32_hrp_expand(hrp) + words) != _BECH32_CONST:
        raise Bech32Error("bech32 checksum does not match", "bad_checksum")
    return hrp, words[:-_CHECKSUM_WORDS]


def bech32_encode(hrp: str, words: list[int]) -> str:
    """The bech32 string (lower case) of ``hrp`` and 5-bit ``words``."""
    checksum = bech32_create_checksum(Encoding.BECH32, hrp, words)
    return hrp + "1" + "".join(CHARSET[w] for w in words + checksum)


def words_to_int(words: list[int]) -> int:
    """Big-endian 5-bit words as one integer."""
    value = 0
    for w in words:
        value = value << 5 | w
    return value


def words_to_bytes(words: list[int]) -> bytes:
    """Words as bytes, the trailing bits that do not fill a byte dropped (they are padding)."""
    nbits = 5 * len(words)
    nbytes = nbits // 8
    return (words_to_int(words) >> (nbits - 8 * nbytes)).to_bytes(nbytes, "big")


def bytes_to_words(data: bytes) -> list[int]:
    """Bytes as 5-bit words, zero-padded at the end to a whole word."""
    nbits = 8 * len(data)
    nwords = -(-nbits // 5)
    value = int.from_bytes(data, "big") << (5 * nwords - nbits)
    return [(value >> (5 * (nwords - 1 - i))) & 31 for i in range(nwords)]


def int_to_words(value: int, min_words: int = 0) -> list[int]:
    """A non-negative integer as big-endian words, no leading zero words (at least ``min_words``)."""
    out: list[int] = []
    while value:
        out.append(value & 31)
        value >>= 5
    while len(out) < min_words:
        out.append(0)
    return out[::-1]
