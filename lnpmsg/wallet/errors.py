"""The wallet's error types."""

from __future__ import annotations

__all__ = ["InsufficientFunds", "WalletError"]


class WalletError(Exception):
    """A wallet operation failed; ``reason`` says why, ``code`` tags the kind."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class InsufficientFunds(WalletError):
    """The spendable coins do not cover the amount plus the fee."""

    def __init__(self, needed_sat: int, available_sat: int, detail: str = "") -> None:
        super().__init__(
            f"insufficient funds: need {needed_sat} sat (amount + fee), "
            f"{available_sat} sat spendable{detail}",
            code="insufficient-funds",
        )
        self.needed_sat = needed_sat
        self.available_sat = available_sat
