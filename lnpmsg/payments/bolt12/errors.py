"""The one error of the BOLT 12 codec."""

from __future__ import annotations

__all__ = ["Bolt12Error"]


class Bolt12Error(ValueError):
    """A BOLT 12 string or TLV stream that fails a reader requirement; ``code`` names the reason
    (``bad_string``, ``malformed``, ``out_of_range``, ``missing_field``, ``bad_signature``, ...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
