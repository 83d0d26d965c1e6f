"""The payments app's events (published on the node's event bus)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaymentEvent"]


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """An ``invoice.*`` / ``payment.*`` event."""

    topic: str
    payment_hash: bytes
    amount_msat: int = 0
    fee_msat: int = 0
    label: str = ""
    preimage: bytes = b""
    reason: str = ""
