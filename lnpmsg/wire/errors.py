"""The one exception family of the wire layer.

Every decoder and encoder in :mod:`lnpmsg.wire` raises :class:`WireError` (or
a subclass) on bad input or bad values, and nothing else: a peer can send any
bytes, and the caller needs exactly one thing to catch. It derives from
``ValueError`` because a malformed message is a bad value.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["UnknownEvenTypeError", "UnknownRequiredFeatureError", "WireError"]


class WireError(ValueError):
    """Bytes that do not decode, or a value that cannot be encoded (with the reason)."""


class UnknownEvenTypeError(WireError):
    """An even (mandatory) TLV or message type we do not know: "it's OK to be odd", not even.

    ``type`` is the offending type number.
    """

    def __init__(self, type: int, what: str = "TLV type") -> None:
        super().__init__(f"unknown even {what} {type}")
        self.type = type


class UnknownRequiredFeatureError(WireError):
    """The peer requires (even bit set) features we do not know; ``bits`` lists them."""

    def __init__(self, bits: Iterable[int]) -> None:
        self.bits = frozenset(bits)
        shown = ", ".join(str(b) for b in sorted(self.bits)[:16])
        more = "" if len(self.bits) <= 16 else f" (+{len(self.bits) - 16} more)"
        super().__init__(f"unknown required feature bit(s): {shown}{more}")
